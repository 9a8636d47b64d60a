"""Training the offline teacher's cross-modal head on an image-caption JSONL (training split).

Shapes: N training pairs, Fi / Ft frozen image / text feature widths, D the head's width.

The two frozen encoders (EfficientNet-Lite0, MiniLM; :mod:`sugar.teachers`) run once
over every pair, through the persistent feature cache when one is given; the head
(:class:`~sugar.teachers.heads.CrossModalHead`) then trains on the features alone with symmetric
InfoNCE and a learnable temperature (:func:`sugar.losses.clip_contrastive_loss`), AdamW,
random batches without replacement within each pass. Everything random comes from ``seed``:
same data, options and seed -> bit-identical head on one machine.

A pair is a sample's first image and its text segments joined by a space. Samples marked
``meta.split`` other than ``train`` are an error (the head must never see evaluation data);
so is a sample with no image or no text.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from sugar.data.jsonl import iter_samples, load_image
from sugar.io import write_manifest
from sugar.losses.contrastive import clip_contrastive_loss
from sugar.owned import claim_directory
from sugar.teachers import ImageFeatures, TextFeatures
from sugar.teachers.heads import CrossModalHead, save_head

__all__ = ["read_pairs", "train_teacher"]


def read_pairs(data: str | Path, root: str | Path | None = None) -> tuple[list[str], list[str]]:
    """(image paths, texts) of the training pairs of ``data`` (rules in the module doc)."""
    images, texts = [], []
    for sample in iter_samples(data, root, check_images=False):
        split = sample.meta.get("split", "train")
        if split != "train":
            raise ValueError(
                f"{data}: sample {sample.id!r} is from split {split!r}; the teacher head trains "
                "on the training split only"
            )
        text = " ".join(s.text for s in sample.segments if s.text is not None)
        if not sample.images or not text:
            raise ValueError(f"{data}: sample {sample.id!r} needs an image and a text")
        images.append(sample.images[0])
        texts.append(text)
    if len(images) < 2:
        raise ValueError(f"{data}: needs at least 2 image-text pairs, found {len(images)}")
    return images, texts


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
    paths, texts = read_pairs(data, root)
    if image_features is None:
        image_features = ImageFeatures(image_size, grid, feature_cache_dir)
    if text_features is None:
        text_features = TextFeatures(feature_cache_dir)
    if (image_features.image_size, image_features.encoder.grid) != (image_size, grid):
        raise ValueError(
            f"image_features are {image_features.identity!r}, not {image_size} px grid {grid}"
        )
    started = time.perf_counter()
    image_feats = image_features([load_image(root, p) for p in paths])  # (N, Fi)
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
            parts = clip_contrastive_loss(
                head.encode_image(image_feats[batch]),  # (B, D)
                head.encode_text(text_feats[batch]),  # (B, D)
                head.logit_scale,
            )
            optimizer.zero_grad(set_to_none=True)
            parts["contrastive_loss"].backward()
            optimizer.step()
    head.eval()
    summary = {
        "pairs": n,
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
