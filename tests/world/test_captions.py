"""Captions, hard negatives and Winoground pairs, checked against the scene metadata."""

from __future__ import annotations

import pytest

from sugar.data.world import (
    NEGATIVE_KINDS,
    WINOGROUND_SWAPS,
    caption_fits,
    describe,
    parse_caption,
    plan_counts,
)
from sugar.data.world.language import caption_text
from tests.world.helpers import (
    COLOURS,
    NUMBERS,
    SHAPES,
    SIZES,
    SMALL,
    World,
    naive_fits,
    scene,
    words,
)

SPLITS = ("train", "val", "test")
_CLASSES = {"colour": COLOURS, "size": SIZES, "shape": SHAPES}


def _sentence_of(text: str, position: int) -> int:
    """Index of the sentence holding word ``position`` of ``text``."""
    return sum(w.endswith(".") for w in text.split()[:position])


@pytest.mark.parametrize("split", SPLITS)
def test_captions_describe_their_scene(world: World, split: str) -> None:
    samples = world.samples("caption", split)
    assert len(samples) == world.manifest["world"]["tasks"]["caption"][split]
    for s in samples:
        image, text = s.segments
        assert image.kind == "image" and text.role == "target" and text.text is not None
        assert s.meta["split"] == split
        assert text.text == describe(scene(s.meta["scene"]))
        assert caption_fits(text.text, scene(s.meta["scene"]))
        assert naive_fits(text.text, s.meta["scene"])
        assert caption_text(parse_caption(text.text)) == text.text  # the parser inverts the text


def test_captions_read_as_short_english(world: World) -> None:
    texts = [s.segments[1].text or "" for s in world.samples("caption", "train")]
    assert all(t[0].isupper() and t.endswith(".") for t in texts)
    assert {t.count(".") for t in texts} >= {1, 2, 3}  # one to three sentences
    assert any(t.startswith("A small") for t in texts) and any("There are" in t for t in texts)


@pytest.mark.parametrize("split", SPLITS)
def test_every_negative_differs_exactly_in_its_stated_way(world: World, split: str) -> None:
    seen = dict.fromkeys(NEGATIVE_KINDS, 0)
    for s in world.samples("caption", split):
        positive = s.segments[1].text or ""
        meta_scene = s.meta["scene"]
        present_colours = {o["colour"] for o in meta_scene["objects"]}
        kinds = [n["kind"] for n in s.meta["negatives"]]
        has_count = "There are" in positive or "There is one" in positive
        expected = [k for k in NEGATIVE_KINDS if k != "wrong_count" or has_count]
        assert kinds == expected, (positive, kinds)
        for neg in s.meta["negatives"]:
            seen[neg["kind"]] += 1
            text = neg["caption"]
            assert not naive_fits(text, meta_scene), (positive, text)  # false of the image
            assert not caption_fits(text, scene(meta_scene))
            p, n = words(positive), words(text)
            assert len(p) == len(n)
            diff = [i for i in range(len(p)) if p[i] != n[i]]
            edit = neg["edit"]
            assert {_sentence_of(positive, i) for i in diff} == {edit["sentence"]}
            if neg["kind"] == "attribute_swap":
                i, j = diff  # exactly two words trade places, both of the stated attribute
                assert (p[i], p[j]) == (n[j], n[i])
                assert {p[i], p[j]} <= _CLASSES[edit["attribute"]]
            elif neg["kind"] == "relation_swap":
                (i,) = diff
                assert {p[i], n[i]} in ({"left", "right"}, {"above", "below"})
            elif neg["kind"] == "wrong_count":
                (i,) = diff
                assert p[i] in NUMBERS and n[i] in NUMBERS and p[i] != n[i]
                assert NUMBERS.index(n[i]) >= 2 and NUMBERS.index(n[i]) == edit["number"]
            else:
                (i,) = diff
                assert p[i] in COLOURS and n[i] == edit["colour"]
                assert n[i] not in present_colours  # a colour absent from the scene
    minimum = plan_counts(**SMALL)["negatives_min"][split]
    assert all(seen[k] >= minimum[k] for k in NEGATIVE_KINDS)
    assert seen == world.manifest["world"]["negatives"][split]


@pytest.mark.parametrize("split", SPLITS)
def test_winoground_pairs_are_permutations_matching_their_own_image_only(
    world: World, split: str
) -> None:
    samples = world.samples("winoground", split)
    assert {s.meta["swap"] for s in samples} == set(WINOGROUND_SWAPS)
    for s in samples:
        c0, c1 = s.meta["captions"]
        s0, s1 = s.meta["scenes"]
        assert sorted(words(c0)) == sorted(words(c1)) and words(c0) != words(c1)
        assert naive_fits(c0, s0) and naive_fits(c1, s1)
        assert not naive_fits(c0, s1) and not naive_fits(c1, s0)
        assert caption_fits(c0, scene(s0)) and not caption_fits(c0, scene(s1))
        image, text = s.segments
        assert image.image == s.meta["images"][0] and text.text == c0 and text.role == "target"
        assert (world.root / s.meta["images"][1]).is_file()
