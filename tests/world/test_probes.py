"""VQA answers and POPE negatives, checked from the scene metadata and training statistics."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from sugar.data.world import POPE_SETTINGS, QUESTION_TYPES, answer_question
from tests.world.helpers import NUMBERS, World, naive_relation, scene, words

SPLITS = ("train", "val", "test")


def _naive_vqa(question: str, objs: list[dict[str, Any]]) -> str:
    """Answer a VQA question by brute force (independent of sugar.data.world.questions)."""
    w = words(question)
    if w[:3] == ["what", "colour", "is"]:
        ref = w[4:]
        (o,) = [o for o in objs if o["shape"] == ref[-1] and (len(ref) == 1 or o["size"] == ref[0])]
        return o["colour"]
    if w[:3] == ["what", "shape", "is"]:
        ref = w[4:-1]
        (o,) = [
            o for o in objs if o["colour"] == ref[-1] and (len(ref) == 1 or o["size"] == ref[0])
        ]
        return o["shape"]
    if w[:2] == ["how", "many"]:
        if w[2] == "objects":
            return NUMBERS[len(objs)]
        if w[3] == "objects":
            return NUMBERS[sum(o["colour"] == w[2] for o in objs)]
        return NUMBERS[sum(o["shape"] + "s" == w[2] or o["shape"] + "es" == w[2] for o in objs)]
    assert w[:2] == ["where", "is"]
    (a,) = [o for o in objs if [o["colour"], o["shape"]] == w[3:5]]
    (b,) = [o for o in objs if [o["colour"], o["shape"]] == w[-2:]]
    relation = naive_relation(a, b)
    assert relation is not None
    return relation


@pytest.mark.parametrize("split", SPLITS)
def test_vqa_answers_follow_from_the_scene(world: World, split: str) -> None:
    samples = world.samples("vqa", split)
    assert Counter(s.meta["question_type"] for s in samples).keys() == set(QUESTION_TYPES)
    for s in samples:
        image, question, answer = s.segments
        assert image.kind == "image" and question.role == "context" and answer.role == "target"
        assert question.text is not None
        objs = s.meta["scene"]["objects"]
        assert answer.text == s.meta["answer"] == _naive_vqa(question.text, objs)
        assert answer_question(scene(s.meta["scene"]), question.text) == answer.text


def _absent(objs: list[dict[str, Any]], world: World, split: str) -> list[str]:
    present = {f"{o['colour']} {o['shape']}" for o in objs}
    held = {f"{c} {s}" for c, s in world.heldout}
    names = [f"{c} {s}" for c in world.config["colours"] for s in world.config["shapes"]]
    return [n for n in names if n not in present and not (split == "train" and n in held)]


def test_pope_statistics_are_the_training_pool(world: World) -> None:
    frequency: Counter[str] = Counter()
    cooc: Counter[tuple[str, str]] = Counter()
    for s in world.samples("caption", "train"):
        names = [f"{o['colour']} {o['shape']}" for o in s.meta["scene"]["objects"]]
        frequency.update(names)
        cooc.update((a, b) for a in names for b in names if a != b)
    stats = world.pope_stats()
    assert {k: v for k, v in stats["frequency"].items() if v} == dict(frequency)
    flat = {(a, b): n for a, row in stats["cooccurrence"].items() for b, n in row.items()}
    assert flat == dict(cooc)


@pytest.mark.parametrize("split", SPLITS)
def test_pope_negatives_follow_their_definitions(world: World, split: str) -> None:
    stats = world.pope_stats()
    k = world.config["pope_top_k"]
    samples = world.samples("pope", split)
    kinds = Counter(s.meta["negative_kind"] for s in samples)
    assert set(kinds) == {None, *POPE_SETTINGS}
    settings = [kinds[k] for k in POPE_SETTINGS]
    assert max(settings) - min(settings) <= 1
    if split == "train":  # half yes, half no: no "no" prior to learn
        assert abs(kinds[None] - sum(settings)) <= 1
    else:  # every setting: all yes + its own no, balanced
        assert abs(kinds[None] - max(settings)) <= 1
    differ = 0
    for s in samples:
        objs = s.meta["scene"]["objects"]
        present = {f"{o['colour']} {o['shape']}" for o in objs}
        question = s.segments[1].text or ""
        assert s.segments[2].text == s.meta["answer"]
        assert " ".join(words(question)[3:5]) == s.meta["object"]
        if s.meta["answer"] == "yes":
            assert s.meta["negative_kind"] is None and s.meta["object"] in present
            continue
        kind = s.meta["negative_kind"]
        absent = _absent(objs, world, split)
        assert s.meta["object"] in absent  # truly absent (and never held out in train)
        freq = {n: stats["frequency"][n] for n in absent}
        score = {n: sum(stats["cooccurrence"][p].get(n, 0) for p in present) for n in absent}
        top_freq = sorted(freq.values(), reverse=True)[k - 1]
        top_score = sorted(score.values(), reverse=True)[k - 1]
        if kind == "popular":
            assert freq[s.meta["object"]] >= top_freq
        elif kind == "adversarial":
            assert score[s.meta["object"]] >= top_score
        popular = {n for n in absent if freq[n] >= top_freq}
        adversarial = {n for n in absent if score[n] >= top_score}
        differ += popular != adversarial
    assert differ > 0  # co-occurrence is not just frequency: the two kinds are distinct


@pytest.mark.parametrize("split", SPLITS)
def test_pope_groups_share_an_image_and_open_with_a_yes(world: World, split: str) -> None:
    samples = world.samples("pope", split)
    group = 2 if split == "train" else 4  # train: (yes, no) pairs; val/test: yes + 3 settings
    for start in range(0, len(samples) - group + 1, group):
        members = samples[start : start + group]
        assert len({s.segments[0].image for s in members}) == 1
        assert [s.meta["answer"] for s in members] == ["yes"] + ["no"] * (group - 1)
    negatives = [s.meta["negative_kind"] for s in samples[1 : 6 * group : group]]
    if split == "train":  # one no per pair, its setting cycling from pair to pair
        assert negatives == [*POPE_SETTINGS, *POPE_SETTINGS]
    else:
        assert [s.meta["negative_kind"] for s in samples[:4]] == [None, *POPE_SETTINGS]


def test_pope_random_negatives_spread_over_the_vocabulary(world: World) -> None:
    chosen = Counter(
        s.meta["object"]
        for s in world.samples("pope", "train")
        if s.meta["negative_kind"] == "random"
    )
    assert len(chosen) >= 0.5 * sum(chosen.values()) or len(chosen) >= 20
