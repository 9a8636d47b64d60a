"""Key tokens (sugar.edit.keys) against naive references, the site's token ids with and
without the KV cache, and UniKE keeping a question that differs only in its key tokens out of
an edit's scope."""

from __future__ import annotations

import copy
import random

import pytest
import torch

from sugar.data.jsonl import read_samples
from sugar.data.schema import Sample, Segment
from sugar.edit.base import build_editor
from sugar.edit.evaluate import answer_argmax
from sugar.edit.keys import KeySpanIndex, document_frequency, key_spans, spans_seen
from sugar.models.tiny import TinyMLLM
from tests.edit.conftest import EditWorld


def _naive_seen(row: list[int], spans: list[list[int]], t: int) -> bool:
    prefix = row[: t + 1]
    return all(
        any(prefix[s : s + len(span)] == span for s in range(len(prefix) - len(span) + 1))
        for span in spans
    )


def test_spans_seen_matches_a_naive_scan() -> None:
    rng = random.Random(0)
    for _ in range(50):
        ids = [[rng.randrange(4) for _ in range(rng.randrange(1, 12))] for _ in range(3)]
        width = max(len(r) for r in ids)
        ids = [r + [9] * (width - len(r)) for r in ids]  # 9: padding, in no span
        spans = [[rng.randrange(4) for _ in range(rng.randrange(1, 4))]
                 for _ in range(rng.randrange(0, 3))]  # fmt: skip
        seen = spans_seen(torch.tensor(ids), spans)
        expected = [[_naive_seen(r, spans, t) for t in range(width)] for r in ids]
        assert seen.tolist() == expected, (ids, spans)


def test_key_span_index_matches_one_scan_per_edit() -> None:
    """All edits in one pass equal spans_seen per edit: shared spans, edits without spans,
    spans longer than the ids, and only the last positions."""
    rng = random.Random(1)
    for _ in range(50):
        width = rng.randrange(1, 12)
        ids = torch.tensor([[rng.randrange(4) for _ in range(width)] for _ in range(3)])
        edits = [[[rng.randrange(4) for _ in range(rng.randrange(1, 5))]
                  for _ in range(rng.randrange(0, 3))]
                 for _ in range(rng.randrange(0, 6))]  # fmt: skip
        edits.append(edits[0] if edits else [])  # a repeated edit: its spans are shared
        expected = torch.stack([spans_seen(ids, spans) for spans in edits], dim=-1)
        index = KeySpanIndex(edits)
        assert torch.equal(index.seen(ids), expected), (ids, edits)
        last = rng.randrange(1, width + 1)
        assert torch.equal(index.seen(ids, last=last), expected[:, width - last :])
    assert KeySpanIndex([]).seen(torch.tensor([[1, 2]])).shape == (1, 2, 0)
    with pytest.raises(ValueError, match="edit 1: an empty key span"):
        KeySpanIndex([[[1]], [[]]])


def test_unike_gate_follows_added_and_removed_edits(edit_world: EditWorld, tiny: TinyMLLM) -> None:
    """The memory's one-pass key check equals one scan per edit, and it and the cached slot
    tables are rebuilt when an edit is added or removed."""
    editor = build_editor("unike", tiny, edit_world.root, edit_world.support,
                          scope_steps=10, steps=2, lr=0.2, threshold=0.0)  # fmt: skip
    ids = torch.tensor(editor.prompt_ids([e.prompt for e in edit_world.edits[:1]] * 2))
    memory = editor.memory

    def scanned() -> torch.Tensor:
        columns = [spans_seen(ids, memory.key_tokens[edit_id])[..., None].expand(-1, -1, len(k))
                   for edit_id, (k, _) in memory.slots.items()]  # fmt: skip
        return torch.cat(columns, dim=-1)

    for edit in edit_world.edits[:3]:
        editor.add(edit)  # its training forwards set the site's ids: set ours after
        editor.site.token_ids = ids
        assert torch.equal(memory.keys_present(2, ids.shape[1]), scanned())
    assert memory.keys_present(2, ids.shape[1])[0, -1].any()  # the first edit's own question
    editor.remove(edit_world.edits[0].id)
    assert torch.equal(memory.keys_present(2, 3), scanned()[:, -3:])
    values = torch.cat([v + memory.corrections[i] for i, (_, v) in memory.slots.items()])
    assert torch.equal(memory.values(), values)  # the cached facts follow the removal too
    rows = torch.tensor([[0, len(values) - 1]])
    assert torch.equal(memory.values(rows), values[rows])


def test_document_frequency_and_key_spans_by_hand() -> None:
    rows = [[1, 2, 3], [1, 4, 5], [1, 2, 6]]
    frequency = document_frequency(rows, 8)
    assert frequency.tolist() == [0, 1, 2 / 3, 1 / 3, 1 / 3, 1 / 3, 1 / 3, 0]
    assert key_spans([1, 4, 5, 2, 6, 7], frequency, 1 / 3) == [[4, 5], [6, 7]]
    assert key_spans([1, 2], frequency, 1 / 3) == []
    assert key_spans([1, 4], torch.zeros(0), 0.5) == []  # no reference set: no keys


def test_site_token_ids_follow_cached_generation(edit_world: EditWorld, tiny: TinyMLLM) -> None:
    """The ids a memory reads are the prompt and every generated token, with the cache or
    without, and a UniKE edit generates the same text either way."""
    editor = build_editor("unike", tiny, edit_world.root, edit_world.support,
                          scope_steps=10, steps=30, lr=0.2, threshold=0.0)  # fmt: skip
    edit = edit_world.edits[1]
    editor.add(edit)
    prompt = [edit.prompt]
    cached = tiny.generate(prompt, edit_world.root, max_new_tokens=6, use_cache=True)
    ids_cached = editor.site.token_ids
    plain = tiny.generate(prompt, edit_world.root, max_new_tokens=6, use_cache=False)
    assert cached == plain
    assert ids_cached is not None and torch.equal(ids_cached, editor.site.token_ids)
    width = tiny.collate(prompt, edit_world.root).input_ids.shape[1]
    assert ids_cached.shape[1] > width  # the generated tokens were appended


def _other_code(question: str, code: str) -> str:
    digits = "".join(str((int(c) + 5) % 10) for c in code)
    return question.replace(code, digits)


def test_unike_keeps_a_near_miss_out_of_scope(edit_world: EditWorld, tiny: TinyMLLM) -> None:
    """An origin edit ("Where was object 271828 made?"): with the semantic threshold off
    (-1: every position retrieves), the same question about another code is answered exactly
    as before (its key tokens are missing), while the edit's own rephrase is changed."""
    editor = build_editor("unike", tiny, edit_world.root, edit_world.support, scope_steps=10,
                          steps=30, lr=0.2, threshold=-1.0)  # fmt: skip
    # the support set of the tiny world is 8 edits; take frequencies over all its KB questions
    questions = [
        s
        for split in ("train", "val", "test")
        for s in read_samples(edit_world.root / "kb" / f"{split}.jsonl", edit_world.root)
    ]
    rows = editor.prompt_ids([Sample(s.id, [g for g in s.segments if g.role != "target"], "kb")
                              for s in questions])  # fmt: skip
    editor.memory.space.frequency = document_frequency(rows, tiny.tokenizer.vocab_size)
    edit = next(e for e in edit_world.edits if e.image is None)
    code = next(word for word in edit.question.rstrip("?").split() if word.isdigit())
    near = Sample("near", [Segment.text_(_other_code(edit.question, code))], "edit")
    spans = editor.key_spans(edit)
    near_ids = torch.tensor(editor.prompt_ids([near]))
    assert spans and not bool(spans_seen(near_ids, spans)[0, -1])  # the test's premise
    assert all(tiny.tokenizer.decode(span).strip().isdigit() for span in spans), spans
    samples = [edit.target(near), edit.target(edit.probes["text_generality"])]
    unedited = copy.deepcopy(tiny)
    before = tiny.collate(samples, edit_world.root)
    with torch.no_grad():
        logits_before = unedited(before).logits
    editor.add(edit)
    with torch.no_grad():
        logits_after = editor.site.capture(samples, edit_world.root).logits
    assert torch.equal(logits_after[0], logits_before[0])  # the near miss: untouched
    assert not torch.allclose(logits_after[1], logits_before[1])  # the rephrase: edited
    ((argmax, labels),) = answer_argmax(editor, [edit.target()])
    assert torch.equal(argmax, labels)
