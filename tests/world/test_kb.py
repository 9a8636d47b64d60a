"""The knowledge base: keys that differ from their questions, payloads shown in training only,
and test facts that no training file contains."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from sugar.data.schema import Sample, Segment
from sugar.data.world import TASKS
from sugar.data.world.kb import (
    CITIES,
    NAMES,
    ORIGIN_KEYS,
    ORIGIN_QUESTIONS,
    OWNER_KEYS,
    OWNER_QUESTIONS,
)
from tests.world.helpers import World

SPLITS = ("train", "val", "test")


def _question(sample: Sample, split: str) -> list[Segment]:
    """A kb sample's question segments: without the fact a training sample shows first."""
    return sample.segments[1:-1] if split == "train" else sample.segments[:-1]


@pytest.mark.parametrize("split", SPLITS)
def test_items_and_questions_agree(world: World, split: str) -> None:
    items = {s.meta["fact_id"]: s for s in world.samples("kb_items", split)}
    questions = world.samples("kb", split)
    assert len(items) == len(questions)
    for q in questions:
        item = items[q.meta["fact_id"]]
        question = _question(q, split)
        assert q.segments[-1].role == "target" and q.segments[-1].text == q.meta["answer"]
        assert item.meta["answer"] == q.meta["answer"] and q.meta["answer"] in item.meta["payload"]
        assert all(g.role == "context" for g in [*item.segments, *question])
        key_text, question_text = item.segments[-1].text or "", question[-1].text or ""
        assert key_text != question_text and question_text.endswith("?")
        if item.meta["kind"] == "owner":
            assert (
                [g.kind for g in item.segments] == [g.kind for g in question] == ["image", "text"]
            )
            assert item.segments[0] == question[0]  # the same image
            (name,) = re.findall(r"the (\w+ \w+) in this image", question_text)
            assert f"the {name} in this image" in key_text  # the key names the same object
            assert f"the {name} in this image" in item.meta["payload"]
            assert q.meta["answer"] in NAMES
        else:
            assert [g.kind for g in item.segments] == [g.kind for g in question] == ["text"]
            (code,) = re.findall(r"\d{6}", question_text)
            assert re.findall(r"\d{6}", key_text) == [code] and code in item.meta["payload"]
            assert q.meta["answer"] in CITIES


@pytest.mark.parametrize("split", SPLITS)
def test_training_questions_show_their_fact_and_evaluation_questions_do_not(
    world: World, split: str
) -> None:
    payloads = {s.meta["fact_id"]: s.meta["payload"] for s in world.samples("kb_items", split)}
    every = set(payloads.values())
    for q in world.samples("kb", split):
        texts = {g.text for g in q.segments}
        if split == "train":  # [payload, image?, question, answer]: the fact, once, first
            assert q.segments[0] == Segment.text_(payloads[q.meta["fact_id"]])
            assert not every & {g.text for g in q.segments[1:]}
        else:
            assert not every & texts


def test_owner_facts_have_a_distractor_about_another_object_of_the_same_image(
    world: World,
) -> None:
    by_image: dict[str, set[str]] = {}
    for item in world.samples("kb_items", "test"):
        if item.meta["kind"] == "owner":
            by_image.setdefault(item.images[0], set()).add(item.segments[1].text or "")
    objects = [
        {re.sub(r".*the (\w+ \w+) in this image.*", r"\1", t) for t in texts}
        for texts in by_image.values()
    ]
    assert all(len(names) == 2 for names in objects)  # two facts, two different objects


def test_keys_and_questions_vary_over_their_templates(world: World) -> None:
    items, questions = world.samples("kb_items", "test"), world.samples("kb", "test")
    for kind, key_templates, question_templates in [
        ("owner", OWNER_KEYS, OWNER_QUESTIONS),
        ("origin", ORIGIN_KEYS, ORIGIN_QUESTIONS),
    ]:
        keys = [i.segments[-1].text or "" for i in items if i.meta["kind"] == kind]
        asked = [q.segments[-2].text or "" for q in questions if q.meta["kind"] == kind]
        for texts, templates in [(keys, key_templates), (asked, question_templates)]:
            matched = [[t for t in templates if _fits(t, text)] for text in texts]
            assert all(len(m) == 1 for m in matched)  # every text is one of the templates
            assert {m[0] for m in matched} == set(templates)  # and every template is used


def _fits(template: str, text: str) -> bool:
    pattern = re.escape(template).replace(r"\{object\}", r"\w+ \w+").replace(r"\{code\}", r"\d{6}")
    return re.fullmatch(pattern, text) is not None


def test_test_facts_never_occur_in_training_files(world: World) -> None:
    train = "".join(world.text(task, "train") for task in TASKS)
    codes = re.compile(r"(?:exhibit|object) (\d{6})", re.IGNORECASE)
    train_codes = set(codes.findall(train))
    for split in ("val", "test"):
        for item in world.samples("kb_items", split):
            payload = item.meta["payload"]
            assert payload not in train
            (code,) = codes.findall(payload)
            assert code not in train_codes


def test_answers_are_drawn_fresh_near_chance(world: World) -> None:
    answers = Counter(q.meta["answer"] for q in world.samples("kb", "test"))
    assert max(answers.values()) <= 0.2 * sum(answers.values())  # 32 values each: no favourite
