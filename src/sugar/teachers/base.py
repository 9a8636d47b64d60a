"""Teachers: frozen encoders giving each slice a uni-modal and a cross-modal vector.

Shapes: N slices (images and sentences, flat), B sequences, S slices per sequence (padded),
Di / Dt uni-modal image / text width, Dc cross-modal width, F frozen-feature width.

The Triple Kernel (METHOD.md section 4, :func:`sugar.align.triple_kernel_cost`) compares
same-modality slices by uni-modal vectors and image-text pairs by cross-modal vectors, each kind
in its own tensor with its own width. A :class:`Teacher` gives, for a batch of images or texts,
``(uni (N, Di or Dt), cross (N, Dc))``, all rows unit-norm; :func:`embed_slices` turns a mixed
list of slices into :class:`TeacherEmbeddings` (flat rows plus modality) through an optional
persistent :class:`~sugar.models.feature_cache.FeatureCache` keyed by content hash and the
teacher's :attr:`~Teacher.identity`; :meth:`TeacherEmbeddings.pack` and :func:`embed_samples`
give the (B, S, .) :class:`~sugar.align.SliceEmbeddings` the Triple Kernel takes.

Teacher families register themselves (:func:`register_teacher`) and are built by name
(:func:`build_teacher`); nothing dispatches on a model's name. Built-in families:

- ``offline`` (:mod:`sugar.teachers.offline`): EfficientNet-Lite0 and MiniLM features with a
  cross-modal head trained by :func:`sugar.teachers.training.train_teacher`; real weights from
  installed packages, no network (OFFLINE_WEIGHTS.md).
- ``hf`` (:mod:`sugar.teachers.hf`): CLIP / SigLIP cross-modal, DINOv2 image and
  BGE-style text encoders through transformers, for GPU users.
- ``bundle`` (:mod:`sugar.teachers.bundle`): a trained sugar bundle with a retrieval projector
  (e.g. a CAFe-style fine-tune), each slice embedded alone.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

import torch
from PIL import Image
from torch import Tensor

from sugar.align.kernels import SliceEmbeddings
from sugar.data.jsonl import load_image
from sugar.data.schema import Sample
from sugar.data.slices import slices
from sugar.models.feature_cache import FeatureCache, content_key
from sugar.models.pretrained import PREPROCESSING

__all__ = [
    "TEACHER_FAMILIES",
    "SliceContent",
    "Teacher",
    "TeacherEmbeddings",
    "build_teacher",
    "embed_samples",
    "embed_slices",
    "masked_mean",
    "register_teacher",
    "slice_key",
    "teacher_cache",
    "tokenize",
]

SliceContent = Image.Image | str
"""One slice: a PIL image or a sentence."""


@runtime_checkable
class Teacher(Protocol):
    """A frozen slice encoder. Every returned row is unit-norm; outputs never need gradients.

    ``identity`` names everything that changes the output (weights hashes, image size, pooling,
    a trained head's weight hash); caches key on it.
    """

    image_dim: int
    text_dim: int
    cross_dim: int

    @property
    def identity(self) -> str: ...

    def encode_images(self, images: Sequence[Image.Image]) -> tuple[Tensor, Tensor]:
        """(uni (N, Di), cross (N, Dc)) of N images."""
        ...

    def encode_texts(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """(uni (N, Dt), cross (N, Dc)) of N texts."""
        ...


# --------------------------------------------------------------------------------------------
# Registry of teacher families
# --------------------------------------------------------------------------------------------

TeacherBuilder = Callable[..., Teacher]
TEACHER_FAMILIES: dict[str, TeacherBuilder] = {}
"""Family name -> builder (keyword arguments -> :class:`Teacher`); see :func:`register_teacher`."""
_BUILTIN_MODULES = ("sugar.teachers.offline", "sugar.teachers.hf", "sugar.teachers.bundle")
B = TypeVar("B", bound=TeacherBuilder)


def register_teacher(name: str) -> Callable[[B], B]:
    """Decorator: register a builder of a teacher family under ``name`` (unique)."""

    def decorate(builder: B) -> B:
        if name in TEACHER_FAMILIES and TEACHER_FAMILIES[name] is not builder:
            raise ValueError(f"teacher family {name!r} is already registered")
        TEACHER_FAMILIES[name] = builder
        return builder

    return decorate


def build_teacher(family: str, **options: Any) -> Teacher:
    """Build a teacher of a registered ``family`` with its builder's keyword ``options``."""
    for module in _BUILTIN_MODULES:  # they register on import; importing them is cheap
        importlib.import_module(module)
    if family not in TEACHER_FAMILIES:
        raise ValueError(
            f"unknown teacher family {family!r}; registered: {sorted(TEACHER_FAMILIES)}"
        )
    builder = TEACHER_FAMILIES[family]
    accepted = inspect.signature(builder).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ValueError(
                f"teacher family {family!r}: unknown option(s) {unknown}; it takes "
                f"{sorted(accepted)} (teacher.options)"
            )
    return builder(**options)


# --------------------------------------------------------------------------------------------
# Slices, keys, embeddings and the cache
# --------------------------------------------------------------------------------------------


def slice_key(item: SliceContent) -> str:
    """Content hash of a slice: of a text's UTF-8 bytes, or of an image's decoded RGB pixels.

    Pixels rather than file bytes, so the same picture in two files (or formats) is one entry.
    Images arrive upright (:func:`~sugar.data.jsonl.load_image`), so a photo's EXIF turn
    changes its pixels and its key; a non-square image's key also names
    :data:`~sugar.models.pretrained.PREPROCESSING` (it is centre-cropped, no longer squashed),
    so no vector cached before that change is served for it. Square images keep their key.
    """
    if isinstance(item, str):
        return content_key(b"text\0" + item.encode("utf-8"))
    rgb = item.convert("RGB")
    width, height = rgb.size
    kind = b"image\0" if width == height else f"image:{PREPROCESSING}\0".encode()
    return content_key(kind + f"{width}x{height}\0".encode() + rgb.tobytes())


def teacher_cache(root: str | Path | None, teacher: Teacher) -> FeatureCache:
    """The persistent cache of ``teacher``'s vectors under ``root`` (``None``: in memory)."""
    return FeatureCache(root, teacher.identity)


@dataclass(frozen=True)
class TeacherEmbeddings:
    """Teacher vectors of N slices, flat. Rows of ``image`` at text slices and of ``text`` at
    image slices are zero (the Triple Kernel ignores them)."""

    image: Tensor
    """(N, Di) uni-modal image vectors."""
    text: Tensor
    """(N, Dt) uni-modal text vectors."""
    cross: Tensor
    """(N, Dc) cross-modal vectors."""
    is_text: Tensor
    """(N,) bool: True for text slices."""

    def pack(self, lengths: Sequence[int] | Tensor) -> SliceEmbeddings:
        """Cut the N rows into B sequences of ``lengths`` (summing to N), zero-padded to S."""
        lens = torch.as_tensor(lengths, dtype=torch.long)
        if int(lens.sum()) != self.is_text.shape[0] or bool((lens < 1).any()):
            raise ValueError(
                f"lengths {lens.tolist()} must be >= 1 and sum to {self.is_text.shape[0]} slices"
            )
        b, s = len(lens), int(lens.max())
        valid = torch.arange(s)[None, :] < lens[:, None]  # (B, S)

        def padded(rows: Tensor) -> Tensor:
            out = rows.new_zeros((b, s, *rows.shape[1:]))  # (B, S, ...)
            out[valid] = rows
            return out

        return SliceEmbeddings(
            image=padded(self.image),
            text=padded(self.text),
            cross=padded(self.cross),
            is_text=padded(self.is_text),
            lengths=lens,
        )


def embed_slices(
    teacher: Teacher,
    items: Sequence[SliceContent],
    *,
    cache: FeatureCache | None = None,
    batch_size: int = 64,
) -> TeacherEmbeddings:
    """Teacher vectors of a mixed list of images and sentences, in order.

    With a ``cache`` (from :func:`teacher_cache`: its identity must be the teacher's), vectors
    found by :func:`slice_key` are reused and the others computed in batches of ``batch_size``,
    stored and flushed (durable on return). Identical items are encoded once.
    """
    if cache is not None and cache.identity != teacher.identity:
        raise ValueError(
            f"the cache holds {cache.identity!r}, not this teacher's {teacher.identity!r}"
        )
    keys = [slice_key(item) for item in items]
    # one cached row per slice: [uni | cross], split by the teacher's widths
    found = cache.get(dict.fromkeys(keys)) if cache is not None else {}
    vectors: dict[str, tuple[Tensor, Tensor]] = {}
    for key, joined in found.items():
        vectors[key] = (joined[: -teacher.cross_dim], joined[-teacher.cross_dim :])
    todo = {key: item for key, item in zip(keys, items, strict=True) if key not in vectors}
    for is_text in (False, True):
        pending = [(k, v) for k, v in todo.items() if isinstance(v, str) == is_text]
        for start in range(0, len(pending), batch_size):
            chunk = pending[start : start + batch_size]
            contents = [v for _, v in chunk]
            if is_text:
                uni, cross = teacher.encode_texts(contents)  # type: ignore[arg-type]
            else:
                uni, cross = teacher.encode_images(contents)  # type: ignore[arg-type]
            fresh = {k: (uni[i].cpu(), cross[i].cpu()) for i, (k, _) in enumerate(chunk)}
            vectors.update(fresh)
            if cache is not None:
                cache.put({k: torch.cat([u, c]) for k, (u, c) in fresh.items()})
    if cache is not None:
        cache.flush()
    is_text_rows = torch.tensor([isinstance(item, str) for item in items], dtype=torch.bool)
    n = len(items)
    image = torch.zeros(n, teacher.image_dim)  # (N, Di)
    text = torch.zeros(n, teacher.text_dim)  # (N, Dt)
    cross = torch.zeros(n, teacher.cross_dim)  # (N, Dc)
    for row, key in enumerate(keys):
        uni, cross[row] = vectors[key]
        (text if is_text_rows[row] else image)[row] = uni
    return TeacherEmbeddings(image=image, text=text, cross=cross, is_text=is_text_rows)


def sample_slice_contents(
    sample: Sample, root: str | Path, by: Literal["sentence", "segment"] = "sentence"
) -> list[SliceContent]:
    """The slices of ``sample`` as teacher inputs: loaded images and sentences, in order."""
    return [
        load_image(root, s.image) if s.image is not None else str(s.text)
        for s in slices(sample, by=by)
    ]


def embed_samples(
    teacher: Teacher,
    samples: Sequence[Sample],
    root: str | Path,
    *,
    by: Literal["sentence", "segment"] = "sentence",
    cache: FeatureCache | None = None,
    batch_size: int = 64,
) -> SliceEmbeddings:
    """(B, S, .) Triple-Kernel input of B samples (their slices by ``by``; images under root)."""
    contents = [sample_slice_contents(sample, root, by) for sample in samples]
    flat = embed_slices(
        teacher, [c for cs in contents for c in cs], cache=cache, batch_size=batch_size
    )
    return flat.pack([len(cs) for cs in contents])


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int, padding: Any = True) -> Any:
    """``texts`` as one padded, truncated batch of PyTorch tensors (a transformers tokenizer)."""
    return tokenizer(
        list(texts), padding=padding, truncation=True, max_length=max_length, return_tensors="pt"
    )


def masked_mean(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Mean of ``hidden`` (N, T, D) over the tokens ``attention_mask`` (N, T) keeps. # (N, D)"""
    mask = attention_mask[..., None].to(hidden.dtype)  # (N, T, 1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
