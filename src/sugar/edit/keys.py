"""The key tokens of an edit: the part of its question that names *which* fact it changes.

Shapes: B batch, L tokens so far, V vocabulary.

A learned scope space (:mod:`sugar.edit.scope`) sees one hidden state per position; on this
world's questions that state does not reliably tell "Where was object 651796 made?" from the
same question about another six-digit code (README, Knowledge editing: about half of the
unrelated questions of that template landed in some edit's scope after 100 edits). The key
tokens make that part of the decision explicit. Over a reference set of questions (the support
edits the scope space is trained on), a token's **document frequency** is the fraction of
questions that contain it; an edit's **key spans** are the maximal runs of consecutive tokens
of its question whose frequency is at most ``max_frequency`` (a code's word pieces, a name; not
"where", "was", "object"). A position is in the edit's scope only when every key span occurs,
in order and contiguous, among the tokens up to it (:func:`spans_seen`); an edit without key
spans leaves the decision to the scope space alone. A rephrase keeps the identifying words, so
generality does not suffer; a question about another code lacks them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["document_frequency", "key_spans", "spans_seen"]


def document_frequency(rows: Sequence[Sequence[int]], vocabulary: int) -> Tensor:
    """The fraction of ``rows`` (token-id lists) that contain each id, in float64 (so a
    fraction compares exactly with a threshold written in decimal). # (V,)

    >>> document_frequency([[1, 1, 2], [2, 3]], 4).tolist()
    [0.0, 0.5, 1.0, 0.5]
    """
    if not rows:
        raise ValueError("document frequency needs at least one question")
    counts = torch.zeros(vocabulary, dtype=torch.float64)
    for row in rows:
        present = torch.tensor(sorted(set(row)), dtype=torch.long)
        if len(present) and int(present.max()) >= vocabulary:
            raise ValueError(f"token id {int(present.max())} >= vocabulary size {vocabulary}")
        counts[present] += 1
    return counts / len(rows)


def key_spans(ids: Sequence[int], frequency: Tensor, max_frequency: float) -> list[list[int]]:
    """The maximal runs of consecutive ``ids`` whose document frequency is at most
    ``max_frequency``; none when ``frequency`` is empty (no reference set).

    >>> frequency = torch.tensor([0, 0, 0, 0, 0, 0.9, 0, 0.1, 0.02, 0], dtype=torch.float64)
    >>> key_spans([5, 7, 8, 5, 9], frequency, 0.1)
    [[7, 8], [9]]
    """
    if not 0.0 <= max_frequency < 1.0:
        raise ValueError(f"max_frequency={max_frequency}: must be in [0, 1)")
    if len(frequency) == 0:
        return []
    spans: list[list[int]] = []
    run: list[int] = []
    for token in ids:
        rare = token < len(frequency) and float(frequency[token]) <= max_frequency
        if rare:
            run.append(int(token))
        elif run:
            spans.append(run)
            run = []
    if run:
        spans.append(run)
    return spans


def spans_seen(ids: Tensor, spans: Sequence[Sequence[int]]) -> Tensor:
    """Whether every span occurs (contiguous, in order) within ``ids[b, :t + 1]``, at every
    position t: (B, L) bool; all True for no spans. # (B, L) -> (B, L)

    >>> spans_seen(torch.tensor([[4, 7, 8, 2], [7, 4, 8, 2]]), [[7, 8]]).tolist()
    [[False, False, True, True], [False, False, False, False]]
    """
    seen = torch.ones(ids.shape, dtype=torch.bool, device=ids.device)
    length = ids.shape[1]
    for span in spans:
        m = len(span)
        if m > length:
            return torch.zeros_like(seen)
        ends = torch.ones(ids.shape[0], length - m + 1, dtype=torch.bool, device=ids.device)
        for k, token in enumerate(span):
            ends &= ids[:, k : length - m + 1 + k] == token
        found = torch.zeros_like(seen)
        found[:, m - 1 :] = ends  # the span ends at position start + m - 1
        seen &= found.cummax(dim=1).values
    return seen
