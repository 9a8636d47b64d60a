"""Held-out combinations and images, over every file of the small world."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sugar.data.world import TASKS, Scene, render_scene
from tests.world.helpers import World

SPLITS = ("train", "val", "test")


def _scenes(meta: dict[str, Any]) -> list[dict[str, Any]]:
    found = [meta["scene"]] if "scene" in meta else []
    return found + list(meta.get("scenes", []))


def test_heldout_combinations_are_absent_from_training_entirely(world: World) -> None:
    held = world.heldout
    assert held
    pattern = re.compile(
        "|".join(rf"\b{c} {s}(e?s)?\b" for c, s in held), re.IGNORECASE
    )  # any mention, captions, negatives, questions, payloads and metadata alike
    for task in TASKS:
        text = world.text(task, "train")
        assert pattern.search(text) is None, (task, pattern.search(text))
        for sample in world.samples(task, "train"):
            for sc in _scenes(sample.meta):
                assert not {(o["colour"], o["shape"]) for o in sc["objects"]} & set(held)


def test_heldout_combinations_do_occur_in_test(world: World) -> None:
    flagged = [s for s in world.samples("caption", "test") if s.meta["heldout_combo"]]
    share = len(flagged) / len(world.samples("caption", "test"))
    assert share >= 0.5 * world.config["heldout_scene_fraction"]
    held = set(world.heldout)
    for s in flagged:
        assert {(o["colour"], o["shape"]) for o in s.meta["scene"]["objects"]} & held


def test_every_image_decodes_at_the_configured_size(world: World) -> None:
    size = world.config["image_size"]
    referenced: set[str] = set()
    for task in TASKS:
        for split in SPLITS:
            for sample in world.samples(task, split):
                referenced.update(sample.images)
                referenced.update(sample.meta.get("images", []))
    files = {p.relative_to(world.root).as_posix() for p in world.root.glob("images/**/*.png")}
    assert referenced <= files
    assert len(files) == world.manifest["world"]["images"]
    for rel in sorted(files):
        with Image.open(world.root / rel) as image:
            assert image.format == "PNG" and image.mode == "RGB" and image.size == (size, size)
            image.load()


def test_images_show_their_scene(world: World) -> None:
    cfg = world.config
    for sample in world.samples("caption", "test")[:20]:
        scene = Scene.from_dict(sample.meta["scene"])
        expected = render_scene(scene, cfg["image_size"], cfg["small_size"], cfg["large_size"])
        path: Path = world.root / sample.images[0]
        with Image.open(path) as image:
            assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(expected))
