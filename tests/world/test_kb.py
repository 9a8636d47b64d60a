"""The knowledge base: keys, payloads, and test facts that no training file contains."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from sugar.data.world import TASKS
from sugar.data.world.kb import CITIES, NAMES
from tests.world.helpers import World

SPLITS = ("train", "val", "test")


@pytest.mark.parametrize("split", SPLITS)
def test_items_and_questions_agree(world: World, split: str) -> None:
    items = {s.meta["fact_id"]: s for s in world.samples("kb_items", split)}
    questions = world.samples("kb", split)
    assert len(items) == len(questions)
    for q in questions:
        item = items[q.meta["fact_id"]]
        assert q.segments[:-1] == item.segments  # the question is the key
        assert q.segments[-1].role == "target" and q.segments[-1].text == q.meta["answer"]
        assert item.meta["answer"] == q.meta["answer"] and q.meta["answer"] in item.meta["payload"]
        if item.meta["kind"] == "owner":
            assert [g.kind for g in item.segments] == ["image", "text"]
            assert q.meta["answer"] in NAMES
        else:
            assert [g.kind for g in item.segments] == ["text"]
            assert q.meta["answer"] in CITIES
        assert all(g.role == "context" for g in item.segments)


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
