"""Training the offline teacher's cross-modal head on an image-caption JSONL (training split).

Shapes: N training pairs, Fi / Ft frozen image / text feature widths, D the head's width.

The two frozen encoders (EfficientNet-Lite0, MiniLM; :mod:`sugar.teachers`) run once
over every pair, through the persistent feature cache when one is given; the head
(:class:`~sugar.teachers.heads.CrossModalHead`) then trains on the features alone with symmetric
InfoNCE and a learnable temperature (:func:`sugar.losses.clip_contrastive_loss`, with the
false negatives masked:
:func:`~sugar.losses.contrastive.contrastive_loss_without_false_negatives`), AdamW, random
batches without replacement within each pass. Everything random comes from ``seed``:
same data, options and seed -> bit-identical head on one machine.

A pair is a sample's first image and its text segments joined by a space. Samples marked
``meta.split`` other than ``train`` or ``restval`` (Karpathy's COCO split: training images
taken from the validation set) are an error (the head must never see evaluation data); so is a
sample with no image or no text.

Caption sets name one image in several samples (COCO: five captions per image). Each distinct
image path is decoded once and encoded in bounded chunks (:func:`image_feature_rows`), so memory
holds the features plus one chunk of decoded photos, however large the set. Images are told
apart by picture (their decoded pixels, :func:`~sugar.teachers.slice_key`), not by file: a pair
repeated exactly (same picture, same text) is trained on once (``duplicate_pairs`` in the
summary counts the others), and in a batch the captions of one picture are not each other's
negatives (:func:`~sugar.losses.contrastive.contrastive_loss_without_false_negatives`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from sugar.data.jsonl import iter_samples, load_image
from sugar.io import write_manifest
from sugar.losses.contrastive import contrastive_loss_without_false_negatives, same_image_mask
from sugar.owned import claim_directory
from sugar.teachers import ImageFeatures, TextFeatures, slice_key
from sugar.teachers.heads import CrossModalHead, save_head

if TYPE_CHECKING:
    from sugar.config import TeacherConfig

__all__ = [
    "TRAINING_SPLITS",
    "head_options",
    "image_feature_rows",
    "image_feature_table",
    "read_pairs",
    "train_teacher",
]

TRAINING_SPLITS = ("train", "restval")
"""The ``meta.split`` values the head trains on (``restval``: Karpathy's COCO training images
drawn from the validation set); a sample without ``meta.split`` counts as ``train``."""


def head_options(teacher: TeacherConfig) -> dict[str, Any]:
    """The :func:`train_teacher` keyword options that a ``teacher`` config section sets (all but
    the data, the output, the steps, the seed and the cache, which each caller decides)."""
    return {
        "batch_size": teacher.batch_size,
        "learning_rate": teacher.learning_rate,
        "weight_decay": teacher.weight_decay,
        "dropout": teacher.dropout,
        "dim": teacher.head_dim,
        "image_size": teacher.image_size,
        "grid": teacher.grid,
    }


def read_pairs(data: str | Path, root: str | Path | None = None) -> tuple[list[str], list[str]]:
    """(image paths, texts) of the training pairs of ``data``, in file order, repeats kept.

    Every sample's ``meta.split`` (default ``train``) must be one of :data:`TRAINING_SPLITS`
    (``train``, or Karpathy's ``restval``); anything else is a ``ValueError`` naming the sample
    and the accepted values. Other rules: the module doc.
    """
    images, texts = [], []
    for sample in iter_samples(data, root, check_images=False):
        split = sample.meta.get("split", "train")
        if split not in TRAINING_SPLITS:
            raise ValueError(
                f"{data}: sample {sample.id!r} is from split {split!r}; the teacher head trains "
                f"on training data only (meta.split one of {list(TRAINING_SPLITS)})"
            )
        text = " ".join(s.text for s in sample.segments if s.text is not None)
        if not sample.images or not text:
            raise ValueError(f"{data}: sample {sample.id!r} needs an image and a text")
        images.append(sample.images[0])
        texts.append(text)
    if len(images) < 2:
        raise ValueError(f"{data}: needs at least 2 image-text pairs, found {len(images)}")
    return images, texts


ENCODE_BATCH = 64
"""Images per encoder pass in :func:`image_feature_rows` (``ImageFeatures``' default batch)."""
DECODE_CHUNK = 4 * ENCODE_BATCH
"""Most distinct decoded images :func:`image_feature_rows` holds at once."""
DECODE_BYTES = 512 << 20
"""Decoded RGB bytes at which :func:`image_feature_rows` encodes its chunk early: 512 MiB,
which 256 COCO photos (640 x 480, 0.9 MB each) stay under and 15 twelve-megapixel ones reach."""


def image_feature_rows(
    image_features: ImageFeatures,
    root: str | Path,
    paths: Sequence[str],
    chunk: int = DECODE_CHUNK,
    chunk_bytes: int = DECODE_BYTES,
) -> Tensor:
    """(N, Fi) frozen features of the image at each of ``paths`` (under ``root``), row by row:
    :func:`image_feature_table`'s table at its rows."""
    table, rows = image_feature_table(image_features, root, paths, chunk, chunk_bytes)
    return table[rows]


def image_feature_table(
    image_features: ImageFeatures,
    root: str | Path,
    paths: Sequence[str],
    chunk: int = DECODE_CHUNK,
    chunk_bytes: int = DECODE_BYTES,
) -> tuple[Tensor, Tensor]:
    """((P, Fi) frozen features of the P distinct pictures among ``paths`` (under ``root``),
    (N,) each path's picture row).

    The same features, under the same cache keys, as
    ``image_features([load_image(root, p) for p in paths])``, without holding N decoded
    images: each distinct path is decoded once, and each distinct picture (by
    :func:`~sugar.teachers.slice_key`, the cache's key: two files of one picture are encoded
    once, as before) joins a pending chunk that is encoded and dropped when it holds ``chunk``
    images or ``chunk_bytes`` of decoded pixels. Peak memory: the features plus one chunk.
    ``chunk`` is a multiple of ``ENCODE_BATCH``, so when a chunk fills by count (COCO-sized
    photos; the built-in world) and the cache holds none of them, the encoder sees exactly the
    batches of one call over every image; a chunk cut by bytes, or one with cached images, is
    encoded in other batches (equal features up to float rounding). Two files of one picture
    share a row, which is how :func:`train_teacher`'s in-batch mask tells pictures apart.
    """
    if chunk < 1 or chunk % ENCODE_BATCH:
        raise ValueError(f"chunk={chunk}: must be a positive multiple of {ENCODE_BATCH}")
    row_of_key: dict[str, int] = {}
    row_of_path: dict[str, int] = {}
    rows: list[int] = []  # (N,) the feature row of each path
    pending: list[Image.Image] = []
    pending_keys: list[str] = []
    pending_bytes = 0
    parts: list[Tensor] = []  # (chunk, Fi) each
    for path in paths:
        if path not in row_of_path:
            image = load_image(root, path)
            key = slice_key(image)
            if key not in row_of_key:
                row_of_key[key] = len(row_of_key)
                pending.append(image)
                pending_keys.append(key)
                pending_bytes += image.width * image.height * 3
                if len(pending) == chunk or pending_bytes >= chunk_bytes:
                    parts.append(image_features(pending, ENCODE_BATCH, pending_keys))
                    pending, pending_keys, pending_bytes = [], [], 0
            row_of_path[path] = row_of_key[key]
        rows.append(row_of_path[path])
    if pending:
        parts.append(image_features(pending, ENCODE_BATCH, pending_keys))
    if not parts:
        raise ValueError("no images to encode")
    return torch.cat(parts), torch.tensor(rows, dtype=torch.long)


HEAD_ENTRIES = (
    "head.safetensors", "head.safetensors.sha256", "head.json", "manifest.json", "sensitivity.json",
)  # fmt: skip
"""What a teacher head directory holds (``sugar train-teacher``, ``sugar teachers report``)."""


def train_teacher(
    *,
    data: str | Path,
    out_dir: str | Path,
    root: str | Path | None = None,
    steps: int = 300,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.1,
    dropout: float = 0.7,
    dim: int = 256,
    image_size: int = 128,
    grid: int = 1,
    seed: int = 0,
    feature_cache_dir: str | Path | None = None,
    image_features: ImageFeatures | None = None,
    text_features: TextFeatures | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train a cross-modal head on ``data`` and save it to ``out_dir``; returns the summary.

    ``root``: the dataset root for image paths (default: ``data``'s folder). ``image_size`` and
    ``grid`` choose the frozen image features (:class:`~sugar.teachers.ImageFeatures`);
    already-loaded encoders may be passed instead (they must match ``image_size``/``grid``).
    ``out_dir`` gets ``head.safetensors``, ``head.json`` (config, weight hash, the frozen
    features' identities, the summary) and ``manifest.json``. Load the teacher with
    :meth:`sugar.teachers.OfflineTeacher.from_dir`.
    """
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"{name}={value}: must be >= 1")
    claim_directory(out_dir, "teacher head", HEAD_ENTRIES, create=False)  # before the work
    data = Path(data)
    root = data.parent if root is None else Path(root)
    pairs = list(zip(*read_pairs(data, root), strict=True))
    distinct = list(dict.fromkeys(pairs))  # an exact repeat would count twice as a positive
    paths, texts = [p for p, _ in distinct], [t for _, t in distinct]
    images = len(set(paths))
    if len(distinct) < 2 or images < 2:  # with one image every in-batch negative is masked
        raise ValueError(
            f"{data}: needs image-text pairs of at least 2 distinct images, found "
            f"{len(distinct)} distinct pairs of {images} image(s)"
        )
    if image_features is None:
        image_features = ImageFeatures(image_size, grid, feature_cache_dir)
    if text_features is None:
        text_features = TextFeatures(feature_cache_dir)
    if (image_features.image_size, image_features.encoder.grid) != (image_size, grid):
        raise ValueError(
            f"image_features are {image_features.identity!r}, not {image_size} px grid {grid}"
        )
    started = time.perf_counter()
    table, pictures = image_feature_table(image_features, root, paths)  # (P, Fi), (N,)
    # two files of one picture with one caption are one pair, and each other's positives
    seen: dict[tuple[int, str], int] = {}
    for i, key in enumerate(zip(pictures.tolist(), texts, strict=True)):
        seen.setdefault(key, i)
    kept = list(seen.values())
    if len(kept) < len(paths):
        paths, texts, pictures = [paths[i] for i in kept], [texts[i] for i in kept], pictures[kept]
    if len(set(pictures.tolist())) < 2:
        raise ValueError(
            f"{data}: needs image-text pairs of at least 2 distinct images, found "
            f"{len(set(paths))} image files of one picture"
        )
    image_feats = table[pictures]  # (N, Fi)
    text_feats = text_features(texts)  # (N, Ft)
    feature_seconds = time.perf_counter() - started

    n = len(paths)
    started = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        head = CrossModalHead(image_features.dim, text_features.dim, dim, dropout)
        head.set_feature_statistics(image_feats, text_feats)
        optimizer = torch.optim.AdamW(
            head.parameters(), lr=learning_rate, weight_decay=weight_decay
        )
        order = torch.Generator().manual_seed(seed)
        permutation, cursor = torch.randperm(n, generator=order), 0
        size = min(batch_size, n)
        head.train()
        parts: dict[str, torch.Tensor] = {}
        for _ in tqdm(range(steps), desc="teacher head", unit="step", disable=not progress):
            if cursor + size > n:  # a new pass over the pairs
                permutation, cursor = torch.randperm(n, generator=order), 0
            batch = permutation[cursor : cursor + size]
            cursor += size
            parts = contrastive_loss_without_false_negatives(
                head.encode_image(image_feats[batch]),  # (B, D)
                head.encode_text(text_feats[batch]),  # (B, D)
                head.logit_scale,
                same_image_mask(pictures[batch].tolist()),  # (B, B), by picture
            )
            optimizer.zero_grad(set_to_none=True)
            parts["contrastive_loss"].backward()
            optimizer.step()
    head.eval()
    summary = {
        "pairs": n,
        "duplicate_pairs": len(pairs) - n,
        "steps": steps,
        "batch_size": size,
        "learning_rate": learning_rate,
        "weight_decay": weight_decay,
        "seed": seed,
        "final_loss": float(parts["contrastive_loss"].detach()),
        "final_logit_scale": float(parts["logit_scale"]),
        "feature_seconds": round(feature_seconds, 3),
        "train_seconds": round(time.perf_counter() - started, 3),
        "data": str(data),
    }
    out_dir = claim_directory(out_dir, "teacher head", HEAD_ENTRIES)
    save_head(
        head,
        out_dir,
        image_size=image_size,
        grid=grid,
        image_features=image_features.identity,
        text_features=text_features.identity,
        training=summary,
    )
    write_manifest(out_dir, seed, inputs={"data": data}, extra={"teacher_head": summary})
    return {**summary, "out_dir": str(out_dir), "weight_hash": head.weight_hash()}
