"""Session fixtures shared by the teacher tests: frozen encoders, a tiny captioned set, a world
and a head trained on it (each built once per xdist worker)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from sugar.data.world import generate_world
from sugar.teachers import ImageFeatures, TextFeatures

TEACHER_WORLD: dict[str, Any] = {
    "train_per_task": 1000,
    "val_per_task": 12,
    "test_per_task": 500,
    "image_size": 64,
}
"""Enough captions for the head's R@5 check (500 held-out candidates, 1,000 training pairs)."""

COLOURS = {"red": (230, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 230)}
SHAPES = ("circle", "square")


@pytest.fixture(scope="session")
def encoders() -> tuple[ImageFeatures, TextFeatures]:
    """The real frozen encoders at 64 px, pooled (no cache)."""
    return ImageFeatures(image_size=64, grid=1), TextFeatures()


def _draw(colour: str, shape: str, left: bool) -> Image.Image:
    image = Image.new("RGB", (64, 64), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    box = (4, 20, 28, 44) if left else (36, 20, 60, 44)
    (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLOURS[colour])
    return image


@pytest.fixture(scope="session")
def tiny_captions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """caption.jsonl of 12 image-caption samples (split train) with hard negatives, and images."""
    root = tmp_path_factory.mktemp("tiny_captions")
    lines = []
    for i, (colour, shape, left) in enumerate(
        (c, s, left) for c in COLOURS for s in SHAPES for left in (True, False)
    ):
        rel = f"images/{i:02d}.png"
        (root / "images").mkdir(exist_ok=True)
        _draw(colour, shape, left).save(root / rel)
        side = "left" if left else "right"
        other = next(c for c in COLOURS if c != colour)
        caption = f"A {colour} {shape} on the {side}."
        negatives = [
            {"kind": "wrong_colour", "caption": f"A {other} {shape} on the {side}."},
            {"kind": "relation_swap", "caption": caption.replace(side, "middle")},
        ]
        sample = {
            "id": f"s{i}",
            "task": "caption",
            "segments": [
                {"kind": "image", "image": rel, "role": "context"},
                {"kind": "text", "text": caption, "role": "target"},
            ],
            "meta": {"split": "train", "negatives": negatives},
        }
        lines.append(json.dumps(sample))
    (root / "caption.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / "caption.jsonl"


@pytest.fixture(scope="session")
def teacher_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("teacher_world") / "w"
    generate_world(root, seed=3, **TEACHER_WORLD)
    return root


@pytest.fixture(scope="session")
def trained_head(teacher_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A head trained with the defaults (128 px, 300 steps) on the world's training captions."""
    from sugar.teachers.training import train_teacher

    out = tmp_path_factory.mktemp("teacher_head")
    train_teacher(
        data=teacher_world / "caption" / "train.jsonl",
        root=teacher_world,
        out_dir=out,
        feature_cache_dir=tmp_path_factory.mktemp("teacher_cache"),
    )
    return out
