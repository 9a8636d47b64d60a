"""sentence-transformers over a sugar bundle: ``SentenceTransformer``-style code runs unchanged.

>>> from sugar.st import sentence_transformer
>>> model = sentence_transformer("runs/demo/model")           # doctest: +SKIP
>>> model.encode(["A red square.", pil_image]).shape           # doctest: +SKIP
(2, 256)
>>> model.similarity(model.encode_query(["a"]), model.encode_document(["b"]))  # doctest: +SKIP

:class:`SugarEncoder` is a sentence-transformers input module (the library's documented
extension point, ``sentence_transformers.base.modules.InputModule``, from v6) whose
``preprocess`` turns texts, PIL images and ``{"text", "image"}`` dicts into sugar samples and
whose ``forward`` returns ``sentence_embedding`` from the bundle (unit rows, as
:meth:`sugar.api.SugarModel.encode`). ``model.save(path)`` writes a sentence-transformers folder
that records the bundle's absolute path; ``SentenceTransformer(path, trust_remote_code=True)``
loads it back (the module class is ``sugar.st.SugarEncoder``, so sugar must be importable).
Needs ``sentence-transformers>=6`` (an older one raises ``ImportError`` saying so).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sugar.api import SugarModel, load
from sugar.embed import embed_vectors
from sugar.encoding import staged_samples

try:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.input_module import InputModule
except ImportError as exc:  # pragma: no cover - depends on the installed version
    raise ImportError(
        "sugar.st needs sentence-transformers>=6 (its InputModule extension point): "
        f"pip install -U sentence-transformers ({exc})"
    ) from exc

__all__ = ["SugarEncoder", "sentence_transformer"]


class SugarEncoder(InputModule):
    """A sugar bundle as a sentence-transformers input module (see the module docstring)."""

    config_keys = ["bundle", "root"]  # noqa: RUF012  (the base class's own type)
    config_file_name = "sugar_encoder.json"

    def __init__(self, bundle: str | Path, root: str | Path = ".") -> None:
        super().__init__()
        self.bundle, self.root = str(bundle), str(root)
        self.sugar: SugarModel = load(bundle)
        self.backbone = self.sugar.backbone  # registered, so .to(device) moves it
        self.projector = self.sugar.projector

    @property
    def modalities(self) -> list[Any]:
        return ["text", "image", ("image", "text")]  # a {"text", "image"} dict: one input

    def preprocess(self, inputs: Any, prompt: str | None = None, **kwargs: Any) -> dict[str, Any]:
        items = [_plain(item) for item in inputs]
        return {"sugar_items": items, "sugar_prompt": prompt}

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        with staged_samples(features["sugar_items"], self.root, features["sugar_prompt"]) as (
            samples,
            root,
        ):
            vectors = embed_vectors(
                self.backbone, self.projector, samples, root,
                **self.sugar.embed_options(batch_size=max(len(samples), 1)),
            )  # fmt: skip
        device = next(self.projector.parameters()).device
        features["sentence_embedding"] = vectors.to(device)
        return features

    def get_embedding_dimension(self) -> int:
        return self.projector.dim

    def save(self, output_path: str, *args: Any, **kwargs: Any) -> None:
        config = {"bundle": str(Path(self.bundle).resolve()), "root": self.root}
        with open(os.path.join(output_path, self.config_file_name), "w") as handle:
            json.dump(config, handle, indent=2)

    @classmethod
    def load(cls, model_name_or_path: str, *args: Any, **kwargs: Any) -> SugarEncoder:
        with open(os.path.join(model_name_or_path, cls.config_file_name)) as handle:
            config = json.load(handle)
        return cls(config["bundle"], config["root"])


def _plain(item: Any) -> Any:
    """sentence-transformers may hand a dict input over as a message-like mapping; keep the
    ``text``/``image`` keys sugar reads."""
    if isinstance(item, dict):
        return {key: item[key] for key in ("text", "image") if key in item}
    return item


def sentence_transformer(
    bundle: str | Path, root: str | Path = ".", device: str | None = None
) -> SentenceTransformer:
    """A ``SentenceTransformer`` whose one module is :class:`SugarEncoder` of ``bundle``."""
    model = SentenceTransformer(modules=[SugarEncoder(bundle, root)], device=device or "cpu")
    return model
