"""Hidden states of a batch encoded in chunks, and the vectors the retrieval losses need of it.

Shapes: B samples, T tokens, D hidden width, n prefixes, P projector width.

- :func:`_length_chunks`: samples cut into length-sorted chunks (each pads to its longest);
- :class:`ChunkedStates`: the last-layer states of those chunks, and ``r`` of any prefix;
- :class:`PrefixPlan`: which ``r`` L_d (its sampled prefixes) and InfoNCE (every sample's final
  prefix) need, and which of them this rank computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from sugar.data.collate import Span
from sugar.data.schema import Sample
from sugar.models.prefix import RetrievalProjector, embed_prefixes
from sugar.train.distributed import Shard

__all__ = ["ChunkedStates", "PrefixPlan"]


_CHUNK = 32
"""The most samples in one forward pass."""
_PASS_COST = 64
"""What one more forward pass costs, in characters of padded input (:func:`_length_chunks`)."""


def _size(sample: Sample) -> int:
    """A sample's length in characters, images counted as 16 (for sorting only)."""
    return sum(len(seg.text) if seg.text is not None else 16 for seg in sample.segments)


def _length_chunks(rows: Sequence[int], samples: Sequence[Sample], size: int) -> list[list[int]]:
    """``rows`` sorted by their samples' length and cut into chunks of at most ``size`` that
    minimise the padded input (each chunk pads to its longest sample) plus ``_PASS_COST`` per
    chunk: an exact partition of the sorted rows by dynamic programming.

    Measured (issue 17): the demo's generative batch of 16 mixes needles of about 150 tokens
    with captions of 15; padded as one batch it held 3,200 token slots for about 1,000 tokens.

    >>> from sugar.data.schema import Segment
    >>> texts = ["a" * 10, "b" * 10, "c" * 400, "d" * 12]
    >>> batch = [Sample(str(i), [Segment.text_(t)]) for i, t in enumerate(texts)]
    >>> _length_chunks(range(4), batch, 8)
    [[0, 1, 3], [2]]
    """
    ordered = sorted(rows, key=lambda i: _size(samples[i]))
    sizes = [_size(samples[i]) for i in ordered]
    best = [0.0] + [float("inf")] * len(ordered)  # best[j]: cost of the first j rows
    cut = [0] * (len(ordered) + 1)
    for end in range(1, len(ordered) + 1):
        for start in range(max(0, end - size), end):
            cost = best[start] + (end - start) * sizes[end - 1] + _PASS_COST
            if cost < best[end]:
                best[end], cut[end] = cost, start
    chunks, end = [], len(ordered)
    while end > 0:
        chunks.append(ordered[cut[end] : end])
        end = cut[end]
    return chunks[::-1]


class ChunkedStates:
    """Last-layer hidden states of B samples encoded in one or more forward passes: each chunk
    is (its rows among the B samples, hidden (B_c, T_c, D), spans)."""

    def __init__(
        self, count: int, chunks: Sequence[tuple[list[int], Tensor, Sequence[Sequence[Span]]]]
    ) -> None:
        self.chunks = list(chunks)
        self.where: list[tuple[int, int]] = [(-1, -1)] * count  # row -> (chunk, row in chunk)
        self.spans: list[Sequence[Span]] = [[] for _ in range(count)]
        for c, (rows, _, spans) in enumerate(self.chunks):
            for local, row in enumerate(rows):
                self.where[row] = (c, local)
                self.spans[row] = spans[local]

    @classmethod
    def single(cls, hidden: Tensor, spans: Sequence[Sequence[Span]]) -> ChunkedStates:
        return cls(len(spans), [(list(range(len(spans))), hidden, spans)])

    def embed(
        self,
        sample_index: Tensor,
        slice_index: Tensor,
        projector: RetrievalProjector,
        image_pool: Literal["mean", "last"],
    ) -> Tensor:
        """``r`` of each prefix (sample b, slice e), in the order given. # (n, P)"""
        located = [self.where[b] for b in sample_index.tolist()]  # (chunk, row in chunk) each
        if len(self.chunks) == 1:  # one pass: the prefixes are already in order
            hidden, spans = self.chunks[0][1], self.chunks[0][2]
            local = torch.tensor([row for _, row in located], dtype=torch.long)
            return embed_prefixes(hidden, spans, local, slice_index, projector, image_pool)
        parts, order = [], []
        for c, (_, hidden, spans) in enumerate(self.chunks):
            picked = [i for i, (chunk, _) in enumerate(located) if chunk == c]
            if not picked:
                continue
            local = torch.tensor([located[i][1] for i in picked], dtype=torch.long)
            parts.append(
                embed_prefixes(hidden, spans, local, slice_index[picked], projector, image_pool)
            )
            order += picked
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))
        return torch.cat(parts)[inverse.to(parts[0].device)]


@dataclass
class PrefixPlan:
    """The vectors the retrieval losses of one global batch need: L_d's prefixes (sample b,
    slice e, keep; n of them, sample by sample, :func:`~sugar.losses.structure.sample_prefixes`)
    and InfoNCE's final prefix of every sample; this rank holds samples ``lo:hi``."""

    counts: list[int]
    """Slices per sample of the global batch."""
    sample_index: Tensor
    slice_index: Tensor
    keep: Tensor
    shard: Shard
    lo: int
    hi: int

    def local_prefixes(self, rows: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
        """(local sample, slice) of this rank's L_d prefixes, in plan order; ``rows``: only
        those of these local samples."""
        mine = (self.sample_index >= self.lo) & (self.sample_index < self.hi)
        if rows is not None:
            mine &= torch.isin(self.sample_index - self.lo, torch.tensor(list(rows)))
        return self.sample_index[mine] - self.lo, self.slice_index[mine]
