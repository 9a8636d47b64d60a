"""Needle probes: one useful pair, keyword-sharing distractors, uniform positions."""

from __future__ import annotations

from collections import Counter

import pytest

from sugar.data.world import answer_question
from tests.world.helpers import COLOURS, SHAPES, World, naive_relation, scene, words

SPLITS = ("train", "val", "test")


def _holds(scene_dict: dict, combo: list[str]) -> list[dict]:
    return [o for o in scene_dict["objects"] if [o["colour"], o["shape"]] == combo]


@pytest.mark.parametrize("split", SPLITS)
def test_exactly_one_useful_pair_and_distractors_share_words(world: World, split: str) -> None:
    pairs = world.config["needle_pairs"]
    for s in world.samples("needle", split):
        segs = s.segments
        assert [g.kind for g in segs] == ["image", "text"] * pairs + ["text", "text"]
        assert segs[-1].role == "target" and segs[-1].text == s.meta["answer"]
        assert all(g.role == "context" for g in segs[:-1])
        question = segs[-2].text or ""
        a, b = (o.split() for o in s.meta["objects"])
        keys = {*a, *b}
        useful = [k for k, sc in enumerate(s.meta["scenes"]) if _holds(sc, a) and _holds(sc, b)]
        assert useful == [s.meta["needle_position"]]
        (oa,), (ob,) = (_holds(s.meta["scenes"][useful[0]], c) for c in (a, b))
        true = naive_relation(oa, ob)
        assert (s.meta["answer"] == "yes") == (true == s.meta["relation"])
        overlap = []
        for k, (sc, caption) in enumerate(zip(s.meta["scenes"], s.meta["captions"], strict=True)):
            assert segs[2 * k + 1].text == caption
            got = answer_question(scene(sc), question)
            assert got == (s.meta["answer"] if k == useful[0] else None)
            cw = set(words(caption))
            overlap.append(len(cw & keys))
            if k != useful[0]:  # shares a colour and a shape word with the question
                assert cw & keys & COLOURS and cw & keys & SHAPES
        best = max(overlap)
        assert overlap[useful[0]] <= max(o for k, o in enumerate(overlap) if k != useful[0])
        assert overlap.count(best) >= 2  # keyword overlap cannot single out the useful pair


def test_positions_are_uniform_and_every_variant_trains(world: World) -> None:
    pairs = world.config["needle_pairs"]
    samples = world.samples("needle", "train") + world.samples("needle", "test")
    counts = Counter(s.meta["needle_position"] for s in samples)
    expected = len(samples) / pairs
    chi2 = sum((counts[p] - expected) ** 2 / expected for p in range(pairs))
    assert chi2 < 20.5  # chi-square, 5 degrees of freedom, p = 0.001
    assert max(abs(counts[p] - expected) for p in range(pairs)) <= 0.1 * expected
    train = {s.meta["variant"] for s in world.samples("needle", "train")}
    assert train == {f"{p}-{a}" for p in range(pairs) for a in ("yes", "no")}
