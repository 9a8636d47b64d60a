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

__all__ = ["KeySpanIndex", "document_frequency", "key_spans", "spans_seen"]


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


class KeySpanIndex:
    """Every edit's key spans at once: :meth:`seen` answers :func:`spans_seen` for all edits in
    one pass over the ids, (B, L) -> (B, L, E), instead of one scan per edit (a memory with
    hundreds of edits asks at every forward, every generated token included).

    Key tokens are rare by construction, so the pass looks only at the positions holding the
    first token of some span: each such position is compared with the spans starting with
    its token, and every distinct span keeps the earliest position where it ends. An edit's
    keys are all seen from the latest of its spans' earliest ends on. The cost grows with the
    number of tokens and of span starts found, not with tokens x spans.

    >>> index = KeySpanIndex([[[7, 8]], [], [[4], [2]]])
    >>> index.seen(torch.tensor([[4, 7, 8, 2]])).int().tolist()
    [[[0, 1, 0], [0, 1, 0], [1, 1, 0], [1, 1, 1]]]
    """

    def __init__(self, spans_per_edit: Sequence[Sequence[Sequence[int]]]) -> None:
        distinct: dict[tuple[int, ...], int] = {}
        pairs: list[tuple[int, int]] = []  # (span column, edit)
        for edit, spans in enumerate(spans_per_edit):
            for span in spans:
                if not span:
                    raise ValueError(f"edit {edit}: an empty key span")
                pairs.append((distinct.setdefault(tuple(int(t) for t in span), len(distinct)),
                              edit))  # fmt: skip
        self.edits = len(spans_per_edit)
        self.spans = len(distinct)
        widest = max((len(spans) for spans in spans_per_edit), default=0)
        self.members = torch.full((self.edits, widest), self.spans, dtype=torch.long)
        """(E, widest): edit e's span columns, padded with ``spans`` (a column seen from the
        start)."""
        counts = [0] * self.edits
        for column, edit in pairs:
            self.members[edit, counts[edit]] = column
            counts[edit] += 1
        ordered = sorted(distinct.items(), key=lambda item: item[0][0])  # by first token
        longest = max((len(span) for span in distinct), default=1)
        self.tokens = torch.full((self.spans, longest), -1, dtype=torch.long)
        """(P, longest): the spans sorted by first token, padded with -1."""
        for row, (span, _) in enumerate(ordered):
            self.tokens[row, : len(span)] = torch.tensor(span)
        self.lengths = torch.tensor([len(span) for span, _ in ordered], dtype=torch.long)
        self.columns = torch.tensor([column for _, column in ordered], dtype=torch.long)
        """(P,): each sorted span's column (its index among the distinct spans)."""
        self.starts = self.tokens[:, 0].contiguous()  # (P,) sorted

    def earliest(self, ids: Tensor) -> Tensor:
        """Per row and edit, the position where the edit's keys are first all seen: ``L`` when
        never, -1 for an edit without spans. # (B, L) -> (B, E)"""
        batch, length = ids.shape
        device = ids.device
        ends = torch.full((batch, self.spans + 1), length, dtype=torch.long, device=device)
        ends[:, self.spans] = -1  # the padding column: seen from the start
        if self.spans:
            starts = self.starts.to(device)
            rows, offsets = torch.nonzero(torch.isin(ids, starts), as_tuple=True)  # (K,)
            first = ids[rows, offsets]
            low = torch.searchsorted(starts, first, right=False)
            high = torch.searchsorted(starts, first, right=True)
            owner = torch.repeat_interleave(torch.arange(len(rows), device=device), high - low)
            rank = torch.arange(len(owner), device=device)  # (Q,) candidate (position, span)
            base = torch.cumsum(high - low, dim=0) - (high - low)  # first candidate of each
            span = low[owner] + rank - base[owner]
            row, offset = rows[owner], offsets[owner]
            size = self.lengths.to(device)[span]
            steps = torch.arange(self.tokens.shape[1], device=device)
            window = ids[row[:, None], (offset[:, None] + steps).clamp(max=length - 1)]
            equal = (window == self.tokens.to(device)[span]) | (steps >= size[:, None])
            hit = equal.all(dim=-1) & (offset + size <= length)
            column = self.columns.to(device)[span[hit]]
            flat = row[hit] * (self.spans + 1) + column
            ends.view(-1).scatter_reduce_(0, flat, (offset + size - 1)[hit], reduce="amin")
        if self.members.shape[1] == 0:  # no edit has spans
            return torch.full((batch, self.edits), -1, dtype=torch.long, device=device)
        return ends[:, self.members.to(device)].amax(dim=-1)  # (B, E, widest) -> (B, E)

    def seen(self, ids: Tensor, last: int | None = None) -> Tensor:
        """Per position and edit: every key span of the edit occurs, contiguous and in order,
        within ``ids[b, :t + 1]``; True for an edit without spans. Only the ``last`` positions
        when given (a forward over the newest tokens of a cached sequence).
        # (B, L) -> (B, last or L, E)"""
        length = ids.shape[1]
        positions = torch.arange(length - (length if last is None else last), length,
                                 device=ids.device)  # fmt: skip
        return positions[None, :, None] >= self.earliest(ids)[:, None, :]
