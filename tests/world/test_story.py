"""Stories: layout, per-step truth, and the retrieval criterion, checked from metadata."""

from __future__ import annotations

from typing import Any

import pytest

from sugar.data.world import caption_fits, plan_counts
from tests.world.helpers import SMALL, World, naive_fits, scene

SPLITS = ("train", "val", "test")


def _multiset(scene_dict: dict[str, Any]) -> list[tuple[str, str, str]]:
    return sorted((o["size"], o["colour"], o["shape"]) for o in scene_dict["objects"])


@pytest.mark.parametrize("split", SPLITS)
def test_story_layout_and_captions(world: World, split: str) -> None:
    samples = world.samples("story", split)
    assert len(samples) == plan_counts(**SMALL)["tasks"]["story"][split]
    for s in samples:
        kinds = [seg.kind for seg in s.segments]
        assert kinds == ["text", "image"] * 4 + ["text"]
        assert all(seg.role == "context" for seg in s.segments)
        assert [seg.text for seg in s.segments if seg.kind == "text"] == s.meta["captions"]
        assert [seg.image for seg in s.segments if seg.kind == "image"] == s.meta["images"][:4]
        assert s.meta["target_image"] == s.meta["images"][4]
        for caption, scene_dict in zip(s.meta["captions"], s.meta["scenes"], strict=True):
            assert naive_fits(caption, scene_dict)  # each caption is true of its own step
            assert caption_fits(caption, scene(scene_dict))
        fourth, fifth = s.meta["scenes"][3], s.meta["scenes"][4]
        added = [o for o in _multiset(fifth) if o not in _multiset(fourth)]
        if s.meta["events"][4]["event"] == "appear":  # the story leads to the fifth scene
            assert len(fifth["objects"]) == len(fourth["objects"]) + 1 and len(added) == 1
        else:
            assert _multiset(fifth) == _multiset(fourth)


@pytest.mark.parametrize("split", SPLITS)
def test_caption5_fits_three_pool_images_and_the_story_exactly_one(
    world: World, split: str
) -> None:
    samples = world.samples("story", split)
    pool = [s.meta["scenes"][4] for s in samples]  # the split's fifth images
    for index, s in enumerate(samples):
        c5 = s.meta["captions"][4]
        alone = [j for j, p in enumerate(pool) if naive_fits(c5, p)]
        whole = [j for j in alone if _multiset(pool[j]) == _multiset(s.meta["scenes"][4])]
        assert len(alone) >= 3, (c5, alone)
        assert whole == [index]
