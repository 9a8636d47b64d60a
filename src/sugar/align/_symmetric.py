"""All pairs of one set through a symmetric pair function, computing each unordered pair once.

``f(x, y)`` (the (Bx, By) matrix of a symmetric measure: soft-DTW, log-GAK) satisfies
``f(Y, X) = f(X, Y).T``. Splitting the set in halves A, B: ``f(S, S) = [[f(A, A), f(A, B)],
[f(A, B).T, f(B, B)]]``, and the two diagonal blocks recurse. Down to blocks of ``min_block``
sequences this computes 62.5 % of the pairs at B = 4 * min_block (tslearn's ``cdist_*`` compute
the upper triangle too), and the ground-cost matrix product shrinks with it. The mirrored block
is a transposed view: gradients flow through it to both sides.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor

from sugar.align.kernels import SliceEmbeddings

__all__ = ["MIN_BLOCK", "symmetric_all_pairs"]

MIN_BLOCK = 32
"""Sets of fewer than 2 * MIN_BLOCK sequences are computed as one block (measured: smaller
blocks cost more in per-call overhead and smaller matrix products than they save)."""

Data = Tensor | SliceEmbeddings
PairFunction = Callable[[Data, Tensor, Data, Tensor], Tensor]


def _rows(data: Data, lo: int, hi: int) -> Data:
    """Sequences lo..hi-1 of a padded tensor or of slice embeddings."""
    if isinstance(data, Tensor):
        return data[lo:hi]
    fields = {f.name: getattr(data, f.name)[lo:hi] for f in dataclasses.fields(data)}
    return dataclasses.replace(data, **fields)


def symmetric_all_pairs(
    pair_function: PairFunction, data: Data, lengths: Tensor, min_block: int = MIN_BLOCK
) -> Tensor:
    """``pair_function(data, lengths, data, lengths)`` ((B, B)), each unordered pair once."""
    b = int(lengths.shape[0])
    if b < 2 * min_block:
        return pair_function(data, lengths, data, lengths)
    half = b // 2
    first, second = _rows(data, 0, half), _rows(data, half, b)
    lf, ls = lengths[:half], lengths[half:]
    top_left = symmetric_all_pairs(pair_function, first, lf, min_block)
    bottom_right = symmetric_all_pairs(pair_function, second, ls, min_block)
    top_right = pair_function(first, lf, second, ls)
    top = torch.cat([top_left, top_right], 1)
    bottom = torch.cat([top_right.T, bottom_right], 1)
    return torch.cat([top, bottom], 0)
