"""Scoring edits the MMEdit way: reliability, generality and locality after sequential edits.

Shapes: B batch, T tokens, V scored vocabulary.

Every probe is scored by **teacher forcing** (Cheng et al. 2023's token-level protocol, made
strict): the prompt followed by an answer is run once, and the argmax at each position that
predicts an answer token (and the closing ``<eos>``) is compared.

- reliability / T-generality / I-generality: the edit prompt / its rephrase / its other image,
  followed by the new answer: 1 when every argmax is the new answer's token;
- T-locality / I-locality: an unrelated prompt followed by what the **unedited** model
  answered (greedy): 1 when every argmax after the edits equals the unedited model's argmax.

Sequential protocol (MMEdit / T-Patcher): edits 1..N are applied one after another, and after
the N-th every one of them is scored; :func:`sequential_edit_scores` scores at each checkpoint N
(1, 10, 100) of one sequence. Metrics and their mean come from
:func:`sugar.eval.metrics.edit_summary`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from sugar.data.collate import IGNORE_INDEX
from sugar.data.schema import Sample
from sugar.edit.base import Editor
from sugar.edit.records import EditRequest
from sugar.edit.site import answer_positions
from sugar.eval.metrics import edit_summary

__all__ = ["answer_argmax", "locality_references", "sequential_edit_scores"]

GENERALITY = {"reliability", "text_generality", "image_generality"}


@torch.no_grad()
def answer_argmax(
    editor: Editor, samples: Sequence[Sample], batch_size: int = 32
) -> list[tuple[Tensor, Tensor]]:
    """Per sample (prompt + target answer), through the editor's rewrite and memories:
    ``(argmax, labels)`` at the positions that predict the answer and its ``<eos>``."""
    out: list[tuple[Tensor, Tensor]] = []
    for start in range(0, len(samples), batch_size):
        chunk = editor.rewrite(samples[start : start + batch_size])
        capture = editor.site.capture(chunk, editor.root)
        labels = capture.batch.labels
        argmax = capture.logits.argmax(-1).cpu()
        for row, positions in enumerate(answer_positions(capture.batch)):
            index = torch.tensor(positions, dtype=torch.long)
            out.append((argmax[row, index], labels[row, index + 1]))
    assert all(bool((labels != IGNORE_INDEX).all()) for _, labels in out)
    return out


def locality_references(
    editor: Editor, edits: Sequence[EditRequest], max_new_tokens: int = 8
) -> dict[tuple[str, str], tuple[Sample, Tensor]]:
    """Before any edit: for each edit's locality probes, the probe followed by the unedited
    model's greedy answer, and the argmax it gives (what locality compares against). A probe
    the model answers with nothing is left out (and so not scored)."""
    if editor.edits:
        raise ValueError("locality references come from the unedited model: no edit may be applied")
    keys, prompts = [], []
    for edit in edits:
        for name in ("text_locality", "image_locality"):
            if name in edit.probes:
                keys.append((edit.id, name))
                prompts.append(edit.probes[name])
    answers: list[str] = []
    for start in range(0, len(prompts), 32):
        answers += editor.backbone.generate(
            editor.rewrite(prompts[start : start + 32]), editor.root, max_new_tokens=max_new_tokens
        )
    kept = [
        (k, edits_target(p, a)) for k, p, a in zip(keys, prompts, answers, strict=True) if a.strip()
    ]
    argmax = answer_argmax(editor, [sample for _, sample in kept])
    return {key: (sample, am) for (key, sample), (am, _) in zip(kept, argmax, strict=True)}


def edits_target(prompt: Sample, answer: str) -> Sample:
    from sugar.data.schema import Segment

    return Sample(prompt.id, [*prompt.segments, Segment.text_(answer, role="target")], "edit")


def score_edits(
    editor: Editor,
    edits: Sequence[EditRequest],
    references: dict[tuple[str, str], tuple[Sample, Tensor]],
) -> dict[str, list[bool]]:
    """The 0/1 outcome of every probe of ``edits`` with the editor as it is now."""
    names, samples = [], []
    for edit in edits:
        names.append("reliability")
        samples.append(edit.target())
        for name in ("text_generality", "image_generality"):
            if name in edit.probes:
                names.append(name)
                samples.append(edit.target(edit.probes[name]))
    local = [
        (name, references[(edit.id, name)])
        for edit in edits
        for name in ("text_locality", "image_locality")
        if (edit.id, name) in references
    ]
    results = answer_argmax(editor, samples + [sample for _, (sample, _) in local])
    flags: dict[str, list[bool]] = {}
    for name, (argmax, labels) in zip(names, results[: len(names)], strict=True):
        flags.setdefault(name, []).append(bool((argmax == labels).all()))
    for (name, (_, before)), (argmax, _) in zip(local, results[len(names) :], strict=True):
        flags.setdefault(name, []).append(bool((argmax == before).all()))
    return flags


def sequential_edit_scores(
    editor: Editor,
    edits: Sequence[EditRequest],
    checkpoints: Sequence[int] = (1, 10, 100),
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Apply ``edits`` in order; at each checkpoint N score edits 1..N (module docstring).

    Afterwards every edit is removed (last first) and ``restored`` is the percent of probes
    (each edit's prompt and probes followed by its new answer) whose argmax at every answer
    position is again the unedited model's. Returns ``{"N": {metric: percent, ..., "mean":
    ...}, "seconds_per_edit", "max_seconds_per_edit", "seconds_per_removal", "restored"}``;
    checkpoints beyond ``len(edits)`` are skipped."""
    references = locality_references(editor, edits)
    wanted = sorted({n for n in checkpoints if 1 <= n <= len(edits)})
    applied = edits[: max(wanted, default=0)]
    probes = [e.target(p) for e in applied for p in [e.prompt, *e.probes.values()]]
    before = answer_argmax(editor, probes)
    out: dict[str, Any] = {}
    seconds: list[float] = []
    for index, edit in enumerate(edits[: max(wanted, default=0)], start=1):
        start = time.perf_counter()
        editor.add(edit)
        seconds.append(time.perf_counter() - start)
        if index in wanted:
            out[str(index)] = edit_summary(score_edits(editor, edits[:index], references))
            if say is not None:
                say(f"  {editor.method} after {index} edits: {out[str(index)]}")
    out["seconds_per_edit"] = sum(seconds) / max(len(seconds), 1)
    out["max_seconds_per_edit"] = max(seconds, default=0.0)
    start = time.perf_counter()
    for edit in reversed(applied):
        editor.remove(edit.id)
    out["seconds_per_removal"] = (time.perf_counter() - start) / max(len(applied), 1)
    after = answer_argmax(editor, probes)
    same = [bool(torch.equal(a, b)) for (a, _), (b, _) in zip(before, after, strict=True)]
    out["restored"] = 100.0 * sum(same) / max(len(same), 1)
    return out
