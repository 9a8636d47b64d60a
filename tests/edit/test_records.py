"""Edit sets: the world's generator, the edit-sample reader and MMEdit's converter."""

from __future__ import annotations

import json

import pytest

from sugar.data.schema import Sample, Segment
from sugar.data.world.edits import build_edit_set, rephrase_question
from sugar.edit.records import edit_from_sample, from_mmedit, read_edits
from tests.edit.conftest import EditWorld


def test_world_edit_set_is_deterministic_and_consistent(edit_world: EditWorld, tmp_path) -> None:
    root = edit_world.root
    first = (root / "edit" / "test.jsonl").read_bytes()
    build_edit_set(root, "test", 6, locality_split="val")
    assert (root / "edit" / "test.jsonl").read_bytes() == first
    records = [json.loads(line) for line in first.decode().splitlines()]
    kb = {json.loads(line)["id"]: json.loads(line) for line in (root / "kb" / "test.jsonl").open()}
    for record in records:
        meta = record["meta"]
        fact = kb[meta["fact_id"]]
        assert record["segments"][-1]["text"] != meta["old_answer"] == fact["meta"]["answer"]
        assert meta["payload"].endswith(record["segments"][-1]["text"] + ".")
        assert meta["rephrase"] != record["segments"][-2]["text"]
        if meta["kind"] == "owner":
            original = root / record["segments"][0]["image"]
            rendered = root / meta["image_rephrase"]
            assert rendered.is_file() and rendered.read_bytes() != original.read_bytes()
        else:
            assert meta["image_rephrase"] is None
        assert meta["locality_text"]["question"] not in {r["segments"][-2]["text"] for r in records}
    assert [e.id for e in edit_world.edits] == [r["id"] for r in records]
    assert set(edit_world.edits[0].probes) == {
        "text_generality", "image_generality", "text_locality", "image_locality",
    }  # fmt: skip
    assert "image_generality" not in edit_world.edits[1].probes


def test_same_split_locality_leaves_edited_facts_out(edit_world: EditWorld) -> None:
    edited = {e.question for e in edit_world.support}
    assert all(
        e.probes["text_locality"].segments[-1].text not in edited for e in edit_world.support
    )


def test_rephrase_refuses_unknown_questions() -> None:
    assert rephrase_question("Who owns the red square in this image?") == (
        "Who is the owner of the red square in this image?"
    )
    with pytest.raises(ValueError, match="no knowledge-base template"):
        rephrase_question("What colour is the sky?")


def test_edit_from_sample_names_the_problem() -> None:
    no_target = Sample("x", [Segment.text_("Where?")])
    with pytest.raises(ValueError, match=r"edits\.jsonl:3: an edit ends in exactly one target"):
        edit_from_sample(no_target, "edits.jsonl:3")
    bad = Sample("y", [Segment.text_("Q?"), Segment.text_("A", role="target")],
                 meta={"locality_text": 7})  # fmt: skip
    with pytest.raises(ValueError, match=r"e\.jsonl:1: meta\.locality_text"):
        edit_from_sample(bad, "e.jsonl:1")
    plain = edit_from_sample(Sample("z", [Segment.text_("Q?"), Segment.text_("A", role="target")]))
    assert plain.payload == "Q? A" and plain.probes == {}


def test_read_edits_names_file_and_line(tmp_path) -> None:
    path = tmp_path / "edits.jsonl"
    good = Sample("a", [Segment.text_("Q?"), Segment.text_("A", role="target")])
    path.write_text(good.to_json() + "\n" + Sample("b", [Segment.text_("Q?")]).to_json() + "\n")
    with pytest.raises(ValueError, match=r"edits.jsonl:2"):
        read_edits(path)


def test_from_mmedit_maps_every_field() -> None:
    record = {"src": "What is this?", "alt": "a fox", "image": "a.jpg", "rephrase": "What's this?",
              "image_rephrase": "b.jpg", "loc": "nq question: who wrote it?", "loc_ans": "Tolstoy",
              "m_loc": "c.jpg", "m_loc_q": "What colour is it?", "m_loc_a": "red"}  # fmt: skip
    (sample,) = from_mmedit([record])
    edit = edit_from_sample(sample)
    assert edit.answer == "a fox" and edit.image == "a.jpg" and edit.question == "What is this?"
    assert edit.probes["text_generality"].segments[-1].text == "What's this?"
    assert edit.probes["image_generality"].segments[0].image == "b.jpg"
    assert edit.probes["text_locality"].segments[-1].text == "nq question: who wrote it?"
    assert [g.image for g in edit.probes["image_locality"].segments] == ["c.jpg", None]
    with pytest.raises(ValueError, match="missing"):
        from_mmedit([{"src": "q"}])
