"""``sugar.load(dir)``: a trained model bundle as one object that generates, scores, embeds,
searches and answers with retrieval -- all with the same weights.

Usage::

    import sugar
    model = sugar.load("runs/demo/model")
    model.generate([sample], root="runs/world")   # ['A red square is left of a blue circle.']
    model.score([sample], root="runs/world")      # tensor([-7.31])
    model.embed(texts=["A red square."])          # (1, 256) unit rows
    model.encode(["A red square.", {"text": "Left of it.", "image": pil_image}])  # numpy (2, 256)
    model.search("A red square.", k=5, index="runs/kb_index")   # [{"id", "score", "metadata"}]
    model.ask("Where was object 271828 made?", index="runs/kb_index")   # RagAnswer

A bundle written by ``sugar train-control`` also carries a control branch (:mod:`sugar.control`):
``encode_query(..., instruction=...)``, ``search(..., instruction=...)`` and ``ask(...,
instruction=...)`` then steer the query through it; everything without an instruction is the
base model's, bit for bit. ``search`` and ``ask`` refuse an instruction when the bundle has no
branch (``encode_query`` then prefixes it as text, sentence-transformers' ``prompt``).

``embed``, ``search`` and ``ask`` need the bundle's retrieval projector (training saves it as
the extra module ``projector``); a bundle without one raises ``ValueError`` saying so. An index
opened here must have been built with this bundle's embeddings (its model identity is checked).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, cast

import yaml
from torch import Tensor

from sugar.control.branch import ControlBranch
from sugar.control.bundle import control_from_extras
from sugar.control.embed import embed_instructed
from sugar.data.schema import Sample, Segment
from sugar.edit.base import Editor, build_editor
from sugar.edit.records import EditRequest, edit_from_sample, read_edits
from sugar.edit.store import load_editor, save_edited
from sugar.embed import embed_samples, embed_vectors
from sugar.encoding import EncodeInput, encoded, is_single, staged_samples
from sugar.index.base import Index, ModelIdentityError
from sugar.models.base import MLLM
from sugar.models.bundle import LoadedBundle, load_bundle
from sugar.models.prefix import RetrievalProjector, projector_from_extras
from sugar.rag import (
    PromptTemplate,
    RagAnswer,
    answer,
    question_sample,
)

__all__ = ["SugarModel", "load"]


class SugarModel:
    """A loaded bundle: the backbone plus its extra modules, in eval mode.

    The user-facing wrapper (generation options, embeddings with the run's slicing, indexes).
    The evaluation tasks use :class:`sugar.eval.tasks.EvalModel` instead: a plain record of the
    pieces the :class:`~sugar.eval.tasks.Evaluable` protocol needs, with a batch size and a
    name per compared model, and no file-backed state; a teacher under evaluation
    (:class:`sugar.teachers.sensitivity.TeacherEvalModel`) is not a bundle at all.
    """

    def __init__(self, bundle: LoadedBundle) -> None:
        self.bundle = bundle
        self.backbone: MLLM = bundle.model.eval()
        self._projector: RetrievalProjector | None = None
        self.image_pool: Literal["mean", "last"] = "mean"
        """How image slices are pooled for embeddings (saved with the projector)."""
        self.slice_text_by: Literal["sentence", "segment"] = _slice_text_by(bundle.config)
        """How texts are sliced for embeddings (the run's ``structure.slice_text_by``)."""
        self.prompts = {}
        self.editor: Editor | None = load_editor(bundle)
        """The knowledge edits applied to this model (:meth:`edit`), None when unedited."""
        self._control: ControlBranch | None = None
        self._control_read = False

    @property
    def identity(self) -> str:
        """The bundle identity (``model.json``); indexes record it."""
        return self.bundle.identity

    @property
    def directory(self) -> Path:
        return self.bundle.directory

    def generate(
        self,
        samples: Sequence[Sample],
        root: str | Path = ".",
        *,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_k: int | None = None,
        seed: int | None = None,
    ) -> list[str]:
        """Continue each sample's prompt (its segments before the first target); image paths
        are relative to ``root``. Greedy at ``temperature=0``; seeded sampling otherwise."""
        if self.editor is not None:
            samples = self.editor.rewrite(samples)
        return self.backbone.generate(
            samples, root, max_new_tokens=max_new_tokens, temperature=temperature,
            top_k=top_k, seed=seed,
        )  # fmt: skip

    def score(self, samples: Sequence[Sample], root: str | Path = ".") -> Tensor:
        """Log-likelihood of each sample's target text given the rest. # (B,)"""
        if self.editor is not None:
            samples = self.editor.rewrite(samples)
        return self.backbone.score(samples, root)

    # ---- knowledge editing (sugar.edit) ----------------------------------------------------

    def edit(
        self,
        edits: Sequence[Sample | EditRequest] | str | Path,
        *,
        method: str = "unike",
        root: str | Path = ".",
        support: Sequence[Sample | EditRequest] | str | Path = (),
        **options: Any,
    ) -> None:
        """Apply knowledge edits one after another (``sugar.edit``): edit samples
        ``[image?, question, new answer]``, :class:`~sugar.edit.records.EditRequest` s or an
        edit-set JSONL path; images under ``root``. ``support``: edits of another split that
        ``patcher`` and ``unike`` learn from (required by ``unike`` on an unedited model).
        A model keeps one method: adding with another raises ``ValueError``. In memory only;
        :meth:`save` writes the edited bundle."""
        requests = _edit_requests(edits, root)
        if self.editor is None:
            helpers = _edit_requests(support, root) if support else []
            self.editor = build_editor(method, self.backbone, root, helpers, **options)
        elif self.editor.method != method:
            raise ValueError(f"this model is edited with {self.editor.method!r}, not {method!r}")
        self.editor.root = Path(root)
        for request in requests:
            self.editor.add(request)

    def remove_edit(self, edit_id: str) -> None:
        """Undo the edit ``edit_id`` (``ValueError`` naming the applied ones when unknown)."""
        if self.editor is None:
            raise ValueError(f"no edit {edit_id!r}: this model has no edits")
        self.editor.remove(edit_id)

    @property
    def edits(self) -> list[str]:
        """Ids of the applied edits, in order."""
        return list(self.editor.edits) if self.editor is not None else []

    def save(self, directory: str | Path) -> str:
        """Write this model with its edits as a new bundle (atomic); returns its identity."""
        if self.editor is None:
            raise ValueError("nothing to save: the model is unedited (copy its bundle instead)")
        return save_edited(directory, self.bundle, self.editor)

    # ---- retrieval -----------------------------------------------------------------------------

    @property
    def projector(self) -> RetrievalProjector:
        """The retrieval projector rebuilt from the bundle (``ValueError`` when it has none)."""
        if self._projector is None:
            projector, image_pool = projector_from_extras(
                self.bundle.extras, self.bundle.extra_specs, str(self.directory)
            )
            if projector is None:
                raise ValueError(
                    f"{self.directory}: this bundle has no retrieval projector (a generative-only "
                    "model?); embed, search and ask need a bundle trained with one"
                )
            self._projector, self.image_pool = projector, image_pool
        return self._projector

    @property
    def control(self) -> ControlBranch | None:
        """The bundle's control branch (``sugar train-control``), or None."""
        if not self._control_read:
            self._control = control_from_extras(
                self.bundle.extras, self.bundle.extra_specs, str(self.directory)
            )
            self._control_read = True
        return self._control

    def instructed_vectors(
        self, samples: Sequence[Sample], instruction: str, root: str | Path, batch_size: int = 32
    ) -> Tensor:
        """Query vectors steered by ``instruction``: through the control branch when the
        bundle has one, else with the instruction prefixed as text (off-distribution for a
        Sugar model: measure first). # (B, P)"""
        if self.control is None:
            options = self.embed_options(batch_size)
            with staged_samples(list(samples), root, instruction) as (prefixed, staged):
                return embed_vectors(self.backbone, self.projector, prefixed, staged, **options)
        return self.steered_vectors(samples, instruction, root, batch_size)

    def steered_vectors(
        self, samples: Sequence[Sample], instruction: str, root: str | Path, batch_size: int = 32
    ) -> Tensor:
        """Query vectors steered by ``instruction`` through the bundle's control branch;
        ``ValueError`` when the bundle has none or the instruction is empty. # (B, P)"""
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(f"instruction={instruction!r}: must be non-empty text")
        branch = self.control
        if branch is None:
            raise ValueError(
                f"instruction: the bundle {self.directory} has no control branch, so an "
                "instruction cannot steer its queries (train one with sugar train-control, "
                "or put the instruction in the query text)"
            )
        return embed_instructed(
            self.backbone, self.projector, branch, samples, [instruction] * len(samples),
            root, batch_size=batch_size, image_pool=self.image_pool,
            slice_text_by=self.slice_text_by,
        )  # fmt: skip

    def embed_options(self, batch_size: int = 32, progress: bool = False) -> dict[str, Any]:
        """Keyword arguments of :func:`sugar.embed.embed_samples` for this bundle."""
        self.projector  # noqa: B018  (loads it, which sets image_pool)
        return {
            "batch_size": batch_size,
            "image_pool": self.image_pool,
            "slice_text_by": self.slice_text_by,
            "progress": progress,
        }

    def embed(
        self,
        samples: Sequence[Sample] | None = None,
        *,
        texts: Sequence[str] | None = None,
        images: Sequence[str] | None = None,
        root: str | Path = ".",
        prefixes: bool = False,
        batch_size: int = 32,
        progress: bool = False,
    ) -> Tensor | list[Tensor]:
        """Unit vectors of exactly one of ``samples`` (interleaved), ``texts`` or ``images``
        (paths relative to ``root``): (B, P), or with ``prefixes=True`` a list of (S_b, P),
        one row per slice end (:func:`sugar.embed.embed_samples`)."""
        given = [name for name, x in (("samples", samples), ("texts", texts),
                                      ("images", images)) if x is not None]  # fmt: skip
        if len(given) != 1:
            raise ValueError(f"embed: give exactly one of samples, texts, images (got {given})")
        if texts is not None:
            samples = [Sample(f"text-{i}", [Segment.text_(text)]) for i, text in enumerate(texts)]
        elif images is not None:
            samples = [Sample(f"image-{i}", [Segment.image_(p)]) for i, p in enumerate(images)]
        assert samples is not None
        return embed_samples(
            self.backbone, self.projector, samples, root, prefixes=prefixes,
            **self.embed_options(batch_size, progress),
        )  # fmt: skip

    def open_index(self, directory: str | Path) -> Index:
        """Load the index at ``directory``, refusing one built with another model's embeddings
        (:class:`sugar.index.ModelIdentityError`)."""
        return Index.load(directory, expected_model_identity=self.identity)

    def _index(self, index: Index | str | Path) -> Index:
        if isinstance(index, Index):
            if index.model_identity != self.identity:
                raise ModelIdentityError(
                    f"the index holds embeddings of model {index.model_identity[:12]}, "
                    f"not of this model {self.identity[:12]}"
                )
            return index
        return self.open_index(index)

    prompts: dict[str, str]
    """Named prompts for ``encode(prompt_name=...)`` (sentence-transformers' ``prompts``);
    empty: Sugar is trained without instructions, so any prompt is off-distribution."""

    def encode(
        self,
        inputs: EncodeInput | Sequence[EncodeInput],
        batch_size: int = 32,
        show_progress_bar: bool = False,
        normalize_embeddings: bool = False,
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        prompt: str | None = None,
        prompt_name: str | None = None,
        truncate_dim: int | None = None,
        *,
        root: str | Path = ".",
    ) -> Any:
        """sentence-transformers' ``encode``: vectors of texts, PIL images, ``{"text",
        "image"}`` dicts or samples (image paths relative to ``root``;
        :mod:`sugar.encoding`). A numpy array (B, P) by default, a tensor with
        ``convert_to_tensor``, a list of 1-D tensors with neither; one row for a single input.
        ``prompt`` (or ``prompts[prompt_name]``) is prepended as a context text segment.
        Vectors are unit rows already; ``truncate_dim`` keeps the first coordinates and
        ``normalize_embeddings`` then renormalises them.

        >>> model.encode(["A red square.", {"image": pil_image}]).shape   # doctest: +SKIP
        (2, 256)
        """
        if prompt is None and prompt_name is not None:
            if prompt_name not in self.prompts:
                raise ValueError(
                    f"prompt_name={prompt_name!r}: not in this model's prompts "
                    f"{sorted(self.prompts)}"
                )
            prompt = self.prompts[prompt_name]
        single = is_single(inputs)
        items = [cast(EncodeInput, inputs)] if single else list(cast(Sequence[EncodeInput], inputs))
        with staged_samples(items, root, prompt) as (samples, staged_root):
            vectors = embed_vectors(
                self.backbone, self.projector, samples, staged_root,
                **self.embed_options(batch_size, show_progress_bar),
            )  # fmt: skip
        convert: Literal["numpy", "tensor", "list"] = (
            "tensor" if convert_to_tensor else "numpy" if convert_to_numpy else "list"
        )
        return encoded(
            vectors, single=single, normalize_embeddings=normalize_embeddings,
            truncate_dim=truncate_dim, convert_to=convert,
        )  # fmt: skip

    def encode_query(
        self,
        inputs: EncodeInput | Sequence[EncodeInput],
        root: str | Path = ".",
        *,
        instruction: str | None = None,
        **options: Any,
    ) -> Any:
        """:meth:`encode` for queries: ``prompt_name="query"`` when :attr:`prompts` has one
        (sentence-transformers' rule). ``instruction``: through the bundle's control branch
        when it has one (:mod:`sugar.control`); otherwise a ``prompt``, off-distribution for
        a Sugar model (:func:`sugar.embed.encode_query`)."""
        if instruction and self.control is not None:
            single = is_single(inputs)
            items = (
                [cast(EncodeInput, inputs)] if single
                else list(cast(Sequence[EncodeInput], inputs))
            )  # fmt: skip
            batch_size = int(options.pop("batch_size", 32))
            convert: Literal["numpy", "tensor", "list"] = (
                "tensor" if options.pop("convert_to_tensor", False)
                else "numpy" if options.pop("convert_to_numpy", True) else "list"
            )  # fmt: skip
            with staged_samples(items, root) as (samples, staged_root):
                vectors = self.instructed_vectors(samples, instruction, staged_root, batch_size)
            return encoded(
                vectors, single=single, convert_to=convert,
                normalize_embeddings=bool(options.pop("normalize_embeddings", False)),
                truncate_dim=options.pop("truncate_dim", None),
            )  # fmt: skip
        if instruction is not None:
            options.setdefault("prompt", instruction)
        if "query" in self.prompts:
            options.setdefault("prompt_name", "query")
        return self.encode(inputs, root=root, **options)

    def encode_document(
        self, inputs: EncodeInput | Sequence[EncodeInput], root: str | Path = ".", **options: Any
    ) -> Any:
        """:meth:`encode` for documents (``prompt_name="document"`` when :attr:`prompts` has
        one). Queries and documents share one embedding space."""
        if "document" in self.prompts:
            options.setdefault("prompt_name", "document")
        return self.encode(inputs, root=root, **options)

    def search(
        self,
        query: str | Sample,
        k: int = 10,
        *,
        index: Index | str | Path,
        image: str | None = None,
        root: str | Path = ".",
        instruction: str | None = None,
    ) -> list[dict[str, Any]]:
        """The ``k`` best entries of ``index`` for one query: a text (with an optional image,
        relative to ``root``, placed before it) or a sample, steered by ``instruction`` through
        the bundle's control branch when given (:meth:`steered_vectors`; an error without a
        branch). Returns ``[{"id", "score", "metadata"}]``, best first."""
        if isinstance(query, str):
            query = question_sample(query, image)
        elif image is not None:
            raise ValueError("search: image= goes with a text query, not a sample")
        vectors: Any
        if instruction is not None:
            vectors = self.steered_vectors([query], instruction, root)
        else:
            vectors = self.embed([query], root=root)
        return self._index(index).search(vectors, k, with_metadata=True)[0]

    def ask(
        self,
        question: str,
        image: str | None = None,
        k: int = 3,
        retrieval: bool = True,
        *,
        index: Index | str | Path | None = None,
        root: str | Path = ".",
        template: PromptTemplate | None = None,
        max_new_tokens: int = 32,
        instruction: str | None = None,
    ) -> RagAnswer:
        """Answer ``question`` (with an optional image relative to ``root``): retrieve ``k``
        knowledge items from ``index``, place their payloads in the prompt
        (:class:`sugar.rag.PromptTemplate`) and generate greedily. ``retrieval=False``
        generates from the plain prompt and needs neither index nor projector.
        ``instruction`` steers the retrieval query through the bundle's control branch (an
        error without one); the prompt and the answer are the base model's, as without it."""
        sample = question_sample(question, image)
        if instruction is not None:
            if not retrieval or index is None:
                raise ValueError("ask: an instruction steers retrieval: it needs an index")
            return answer(
                self.backbone, self.projector, self._index(index), [sample], root, k=k,
                template=template, max_new_tokens=max_new_tokens,
                embed_queries=lambda queries: self.steered_vectors(queries, instruction, root),
            )[0]  # fmt: skip
        if not retrieval:
            return answer(
                self.backbone, None, None, [sample], root, retrieval=False,
                template=template, max_new_tokens=max_new_tokens,
            )[0]  # fmt: skip
        if index is None:
            raise ValueError("ask: retrieval needs an index (or pass retrieval=False)")
        return answer(
            self.backbone, self.projector, self._index(index), [sample], root, k=k,
            template=template, max_new_tokens=max_new_tokens, **self.embed_options(),
        )[0]  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"SugarModel(family={self.backbone.family!r}, directory={str(self.directory)!r}, "
            f"identity={self.identity[:12]})"
        )


def _edit_requests(
    edits: Sequence[Sample | EditRequest] | str | Path, root: str | Path
) -> list[EditRequest]:
    if isinstance(edits, str | Path):
        return read_edits(edits, root)
    return [e if isinstance(e, EditRequest) else edit_from_sample(e) for e in edits]


def _slice_text_by(config: str | None) -> Literal["sentence", "segment"]:
    """The bundle run's ``structure.slice_text_by`` (the default, ``sentence``, without a
    config). Read from the raw YAML rather than :func:`sugar.config.load_config` so that a
    bundle stays loadable when later versions add or rename unrelated config fields."""
    data = yaml.safe_load(config) if config else None
    structure = data.get("structure") if isinstance(data, dict) else None
    value = structure.get("slice_text_by") if isinstance(structure, dict) else None
    if value is None:
        return "sentence"
    if value not in ("sentence", "segment"):
        raise ValueError(f"bundle config: structure.slice_text_by={value!r}")
    return value


def load(directory: str | Path) -> SugarModel:
    """Load the bundle at ``directory`` (verified against its recorded hashes)."""
    return SugarModel(load_bundle(directory))
