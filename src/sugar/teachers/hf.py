"""Hugging Face teachers for GPU users: CLIP / SigLIP cross-modal, DINOv2 image, BGE text.

Shapes: N images or texts, Di / Dt / Dc the image / text / cross-modal widths.

The ``hf`` family (:func:`build_hf_teacher`) composes three frozen transformers models, as the
paper does (DINOv2 + BGE + CLIP ViT-L/14): each is loaded with transformers' public
``AutoModel`` / ``AutoTokenizer`` / ``AutoImageProcessor.from_pretrained`` from a local
directory or a hub name, put in eval mode with gradients off, and run under ``no_grad``.

- :class:`HFImageEncoder` (DINOv2-style): the model's ``pooler_output`` (DINOv2: the
  layer-normed CLS token), L2-normalised.
- :class:`HFTextEncoder` (BGE-style): CLS (BGE's pooling) or attention-masked mean pooling of
  the last hidden state, L2-normalised.
- :class:`HFCrossEncoder` (CLIP / SigLIP): ``get_image_features`` / ``get_text_features``,
  L2-normalised. SigLIP was trained on texts padded to a fixed length and pools the last
  position, so model types in :data:`PAD_TO_MAX_LENGTH` pad to ``max_length``; others pad to
  the longest text.

Nothing downloads when ``HF_HUB_OFFLINE=1`` (or ``offline=True``): a name that is neither a
local directory nor in the local cache raises ``FileNotFoundError`` naming the model.
Identities hash the weight files (read once at load) or use the hub commit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image
from torch import Tensor, nn
from torch.nn import functional

from sugar.models.hub import load_local
from sugar.teachers.base import masked_mean, register_teacher, tokenize

__all__ = [
    "PAD_TO_MAX_LENGTH",
    "HFCrossEncoder",
    "HFImageEncoder",
    "HFTeacher",
    "HFTextEncoder",
    "build_hf_teacher",
]

PAD_TO_MAX_LENGTH = frozenset({"siglip", "siglip2"})
"""``config.model_type`` values whose text tower expects fixed-length padding."""


def _identity(kind: str, name: str, model: nn.Module) -> str:
    """Names the weights: the hub commit when known, else a hash of the weight files."""
    commit = getattr(model.config, "_commit_hash", None)
    if commit:
        return f"hf-{kind}:{name}@{commit}"
    digest = hashlib.sha256()
    path = Path(name)
    files = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")) if path.is_dir() else []
    for file in files:
        with open(file, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    if not files:  # an in-memory model: hash the tensors
        for key, tensor in sorted(model.state_dict().items()):
            digest.update(key.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    return f"hf-{kind}:{path.name or name}:{digest.hexdigest()[:16]}"


def _frozen(model: Any, device: str) -> Any:
    return model.to(device).eval().requires_grad_(False)


def _pooled(output: Any) -> Tensor:
    """Features from a model call: a tensor, or an output's ``pooler_output``."""
    return output if isinstance(output, Tensor) else output.pooler_output


class HFImageEncoder:
    """DINOv2-style uni-modal image encoder: images -> (N, Di) unit-norm."""

    def __init__(self, name: str, device: str = "cpu", offline: bool | None = None) -> None:
        from transformers import AutoImageProcessor, AutoModel

        self.model = _frozen(load_local(AutoModel, name, "image model", offline), device)
        self.processor = load_local(AutoImageProcessor, name, "image processor", offline)
        self.device = device
        self.dim = int(self.model.config.hidden_size)
        self.identity = _identity("image", name, self.model)

    @torch.no_grad()
    def __call__(self, images: Sequence[Image.Image]) -> Tensor:
        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        out = self.model(pixel_values=pixels.to(self.device))
        return functional.normalize(out.pooler_output.float(), dim=-1)  # (N, Di)


class HFTextEncoder:
    """BGE-style uni-modal text encoder: texts -> (N, Dt) unit-norm (CLS or mean pooling)."""

    def __init__(
        self,
        name: str,
        pooling: Literal["cls", "mean"] = "cls",
        max_length: int = 512,
        device: str = "cpu",
        offline: bool | None = None,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling={pooling!r}: must be 'cls' or 'mean'")
        self.model = _frozen(load_local(AutoModel, name, "text model", offline), device)
        self.tokenizer = load_local(AutoTokenizer, name, "tokenizer", offline)
        self.pooling, self.max_length, self.device = pooling, max_length, device
        self.dim = int(self.model.config.hidden_size)
        self.identity = f"{_identity('text', name, self.model)}:{pooling}{max_length}"

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> Tensor:
        batch = tokenize(self.tokenizer, texts, self.max_length).to(self.device)
        hidden = self.model(**batch).last_hidden_state.float()  # (N, T, Dt)
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            pooled = masked_mean(hidden, batch["attention_mask"])
        return functional.normalize(pooled, dim=-1)  # (N, Dt)


class HFCrossEncoder:
    """CLIP / SigLIP cross-modal encoder: images and texts -> (N, Dc) unit-norm."""

    def __init__(self, name: str, device: str = "cpu", offline: bool | None = None) -> None:
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        self.model = _frozen(load_local(AutoModel, name, "cross-modal model", offline), device)
        self.processor = load_local(AutoImageProcessor, name, "image processor", offline)
        self.tokenizer = load_local(AutoTokenizer, name, "tokenizer", offline)
        config: Any = self.model.config
        self.dim = int(config.projection_dim if hasattr(config, "projection_dim") else 0) or int(
            config.text_config.hidden_size
        )
        self.max_length = int(config.text_config.max_position_embeddings)
        self.padding = "max_length" if config.model_type in PAD_TO_MAX_LENGTH else "longest"
        self.device = device
        self.identity = _identity("cross", name, self.model)

    @torch.no_grad()
    def images(self, images: Sequence[Image.Image]) -> Tensor:
        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        out = _pooled(self.model.get_image_features(pixel_values=pixels.to(self.device)))
        return functional.normalize(out.float(), dim=-1)  # (N, Dc)

    @torch.no_grad()
    def texts(self, texts: Sequence[str]) -> Tensor:
        batch = tokenize(self.tokenizer, texts, self.max_length, self.padding).to(self.device)
        inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")}
        out = _pooled(self.model.get_text_features(**inputs))
        return functional.normalize(out.float(), dim=-1)  # (N, Dc)


class HFTeacher:
    """A :class:`~sugar.teachers.Teacher` from three frozen Hugging Face encoders."""

    def __init__(self, image: HFImageEncoder, text: HFTextEncoder, cross: HFCrossEncoder) -> None:
        self.image, self.text, self.cross = image, text, cross
        self.image_dim, self.text_dim, self.cross_dim = image.dim, text.dim, cross.dim

    @property
    def identity(self) -> str:
        return (
            f"hf[image={self.image.identity};text={self.text.identity};cross={self.cross.identity}]"
        )

    def encode_images(self, images: Sequence[Image.Image]) -> tuple[Tensor, Tensor]:
        return self.image(images).cpu(), self.cross.images(images).cpu()

    def encode_texts(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        return self.text(texts).cpu(), self.cross.texts(texts).cpu()


@register_teacher("hf")
def build_hf_teacher(
    cross: str = "openai/clip-vit-large-patch14",
    image: str = "facebook/dinov2-base",
    text: str = "BAAI/bge-base-en-v1.5",
    text_pooling: Literal["cls", "mean"] = "cls",
    device: str = "cpu",
    offline: bool | None = None,
) -> HFTeacher:
    """The ``hf`` family: names or local directories of the three encoders (paper defaults)."""
    return HFTeacher(
        HFImageEncoder(image, device, offline),
        HFTextEncoder(text, text_pooling, device=device, offline=offline),
        HFCrossEncoder(cross, device, offline),
    )
