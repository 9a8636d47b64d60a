"""The instructed world task (relevance re-derived from the scenes by a naive rule, disjoint
wordings, the held-out intent) and the user-data converter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sugar.data.instructed import (
    InstructedSet,
    convert_instructed,
    read_instructed,
    write_instructed,
)
from sugar.data.jsonl import read_samples
from sugar.data.schema import Sample, Segment
from sugar.data.world.instructed import (
    HELDOUT_INTENTS,
    INTENTS,
    build_instructed,
    synthesise_instructions,
    wordings,
)
from tests.control.conftest import ControlWorld


def naive_triples(objects: list[dict]) -> set[tuple[str, str, str]]:
    """(shape, where, shape) for every ordered pair, the relation written out from positions."""
    out = set()
    for i, a in enumerate(objects):
        for j, b in enumerate(objects):
            dx, dy = a["x"] - b["x"], a["y"] - b["y"]
            if i == j or abs(dx) == abs(dy):
                continue
            if abs(dx) > abs(dy):
                out.add((a["shape"], "left" if dx < 0 else "right", b["shape"]))
            else:
                out.add((a["shape"], "above" if dy < 0 else "below", b["shape"]))
    return out


def naive_positives(captions: list, query: int, intent: str) -> list[str]:
    """The relevant corpus ids, written out plainly from the scenes."""
    if intent == "caption":
        return [f"caption/{captions[query].id}"]
    mine = captions[query].meta["scene"]["objects"]
    out = []
    for j, other in enumerate(captions):
        theirs = other.meta["scene"]["objects"]
        if j == query:
            continue
        if intent == "same_count" and len(theirs) == len(mine):
            out.append(f"image/{other.id}")
        if intent == "same_shapes" and {o["shape"] for o in theirs} == {o["shape"] for o in mine}:
            out.append(f"image/{other.id}")
        if intent == "same_colours" and {o["colour"] for o in theirs} == {
            o["colour"] for o in mine
        }:
            out.append(f"image/{other.id}")
        if intent == "same_relation" and naive_triples(theirs) == naive_triples(mine):
            out.append(f"image/{other.id}")
    return out


@pytest.mark.parametrize("split", ["train", "test"])
def test_positives_follow_the_naive_rule(control_world: ControlWorld, split: str) -> None:
    root = control_world.root
    captions = read_samples(root / "caption" / f"{split}.jsonl", root)
    data = read_instructed(root / "instructed" / f"{split}.jsonl", root)
    seen = set()
    for query in data.queries:
        intent = query.meta["intent"]
        q = int(query.id.split("-")[2])  # instructed-<split>-<caption index>-<intent>
        assert query.meta["positives"] == naive_positives(captions, q, intent)
        assert not set(query.meta["negatives"]) & set(query.meta["positives"])
        assert query.meta["exclude"] == [f"image/{captions[q].id}"]
        seen.add((q, intent))
    # every (query, intent) with a relevant candidate is there, and no other
    for q in range(len(captions)):
        for intent in INTENTS:
            expected = bool(naive_positives(captions, q, intent))
            if split == "train" and intent in HELDOUT_INTENTS:
                expected = False
            assert ((q, intent) in seen) == expected, (q, intent)
    assert len(data.corpus) == 2 * len(captions)


def test_wordings_are_disjoint_and_the_heldout_intent_never_trains(
    control_world: ControlWorld,
) -> None:
    for intent in INTENTS:
        split = wordings(intent)
        assert not set(split["train"]) & set(split["test"])
        assert sorted(split["train"] + split["test"]) == sorted(synthesise_instructions(intent))
        assert len(set(synthesise_instructions(intent))) == 32
    root = control_world.root
    for name in ("train", "val", "test"):
        for query in read_samples(root / "instructed" / f"{name}.jsonl", root):
            pool = wordings(query.meta["intent"])["train" if name == "train" else "test"]
            assert query.meta["instruction"] in pool
            assert query.meta["heldout_intent"] == (query.meta["intent"] in HELDOUT_INTENTS)
            if name == "train":
                assert query.meta["intent"] not in HELDOUT_INTENTS
    with pytest.raises(ValueError, match="intent 'colour': unknown"):
        synthesise_instructions("colour")


def test_build_is_deterministic(control_world: ControlWorld) -> None:
    root = control_world.root
    captions = read_samples(root / "caption" / "val.jsonl", root)
    first, second = build_instructed(captions, "val", 3), build_instructed(captions, "val", 3)
    assert [s.to_json() for s in first[0]] == [s.to_json() for s in second[0]]
    written = (root / "instructed" / "val.jsonl").read_text().splitlines()
    assert written == [s.to_json() for s in first[0]]


def test_user_rows_convert_and_read_back(tmp_path: Path) -> None:
    rows = [
        {"query": "a red square", "instruction": "find its caption", "positive": "Red square.",
         "negatives": ["Blue circle."]},
        {"query": {"text": "what is it"}, "instruction": "find a blue thing",
         "positive": "Blue circle.", "intent": "colour"},
    ]  # fmt: skip
    queries, corpus = convert_instructed(rows, "test")
    assert [c.segments[0].text for c in corpus] == ["Red square.", "Blue circle."]
    assert queries[1].meta["positives"] == ["doc-1"] and queries[0].meta["negatives"] == ["doc-1"]
    write_instructed(tmp_path, "test", queries, corpus)
    data = read_instructed(tmp_path / "instructed" / "test.jsonl", tmp_path)
    assert data.relevance.tolist() == [[True, False], [False, True]]
    with pytest.raises(ValueError, match=r"rows.*row 1: missing \['positive'\]"):
        convert_instructed([{"query": "q", "instruction": "i"}], "test")
    broken = json.loads(queries[0].to_json())
    broken["meta"]["positives"] = ["doc-9"]
    with pytest.raises(ValueError, match="positives names 'doc-9', not in the corpus"):
        InstructedSet([type(queries[0]).from_dict(broken)], corpus)


def _caption(index: int, objects: list[tuple[str, str, float, float]]) -> Sample:
    scene = {"objects": [{"shape": s, "colour": c, "size": "small", "x": x, "y": y}
                         for s, c, x, y in objects]}  # fmt: skip
    segments = [Segment.image_(f"images/{index}.png"), Segment.text_(f"caption {index}")]
    return Sample(f"caption-test-{index:06d}", segments, "caption", {"scene": scene})


def test_same_relation_needs_the_same_shapes_in_the_same_relations() -> None:
    captions = [
        _caption(0, [("circle", "red", 0.2, 0.5), ("square", "blue", 0.7, 0.45)]),
        _caption(1, [("circle", "green", 0.1, 0.3), ("square", "green", 0.6, 0.35)]),
        _caption(2, [("square", "red", 0.2, 0.5), ("circle", "blue", 0.7, 0.45)]),  # swapped
        _caption(3, [("circle", "red", 0.5, 0.2), ("square", "blue", 0.45, 0.8)]),  # vertical
    ]
    assert naive_triples(captions[0].meta["scene"]["objects"]) == {
        ("circle", "left", "square"), ("square", "right", "circle")
    }  # fmt: skip
    queries, _ = build_instructed(captions, "test", 0)
    by_id = {q.id: q.meta for q in queries}
    relation = by_id["instructed-test-000000-same_relation"]
    assert relation["positives"] == ["image/caption-test-000001"]
    # images with the same shapes in other relations are its stated negatives
    assert relation["negatives"][1:] == ["image/caption-test-000002", "image/caption-test-000003"]
    shapes = by_id["instructed-test-000000-same_shapes"]["positives"]
    assert shapes == [f"image/caption-test-00000{i}" for i in (1, 2, 3)]
    assert "instructed-test-000003-same_relation" not in by_id  # no other vertical pair
    for q in range(len(captions)):
        got = by_id.get(f"instructed-test-{q:06d}-same_relation", {}).get("positives", [])
        assert got == naive_positives(captions, q, "same_relation")
