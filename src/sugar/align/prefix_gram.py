"""The normalised GAK of every prefix pair of one set, without padding: a (T, T) Gram matrix.

Shapes: B sequences of lengths n_1..n_B (padded to S), D features, T = n_1 + ... + n_B the
number of prefixes (one per step: prefix (b, i) is x_b[:i+1]).

:func:`~sugar.align.gak.cdist_gak_prefixes` answers the same question as a padded
(B, B, S, S) table: every pair of sequences gets an S x S DP. Sugar's retrieval batches mix
many one-slice sequences (an image, a caption) with a few long ones (a story of nine slices),
so almost all of that table is padding: measured on the demo's recipe (136 sequences, S = 10,
T = 184), the padded table has 1.85 M cells and the prefixes only 34 k. Here the ground cost
is computed once between the T steps (one (T, T) matrix), and the DP runs only on the
(n_a, n_b) block of each pair, pairs grouped by their lengths so that one batched DP serves
each group (and the transposed group takes the transposed tables: GAK is symmetric). The
result is the padded table's valid cells, in the same order as the steps: row
``offsets[b] + i`` is prefix (b, i). Same values to rounding (the ground cost's matrix
products and the standardisation's sums run in another order); tested against the padded
path.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sugar.align._dp import log_gak_alignment
from sugar.align._inputs import check_positive
from sugar.align._pairs import Data, GroundMetric, ground_cost, prepare_set, resolve_metric
from sugar.align.gak import Normalisation, normalise_log_gak
from sugar.align.kernels import SliceEmbeddings, TypeMedians

__all__ = ["gak_prefix_gram", "prefix_offsets"]


def prefix_offsets(lengths: Tensor) -> Tensor:
    """(B,) row of each sequence's first prefix in the (T, T) Gram matrix.

    >>> prefix_offsets(torch.tensor([1, 3, 2])).tolist()
    [0, 1, 4]
    """
    return torch.cumsum(lengths, 0) - lengths


def _steps(data: Data, lengths: Tensor) -> Data:
    """The T real steps of a padded set, as T sequences of one step each."""
    s = (data.is_text if isinstance(data, SliceEmbeddings) else data).shape[1]
    valid = torch.arange(s, device=lengths.device)[None, :] < lengths[:, None]  # (B, S)
    if isinstance(data, SliceEmbeddings):
        return SliceEmbeddings(
            image=data.image[valid][:, None],
            text=data.text[valid][:, None],
            cross=data.cross[valid][:, None],
            is_text=data.is_text[valid][:, None],
            lengths=torch.ones(int(valid.sum()), dtype=lengths.dtype, device=lengths.device),
        )
    return data[valid][:, None]


def gak_prefix_gram(
    X: Any,
    sigma: float = 1.0,
    *,
    normalisation: Normalisation = "cosine",
    lengths: Any = None,
    metric: GroundMetric | None = None,
    triple_kernel: bool = True,
    medians: TypeMedians | None = None,
    slope: float = 1.0,
) -> Tensor:
    """(T, T) normalised GAK of every pair of prefixes of the sequences of ``X``.

    ``out[offsets[a] + i, offsets[b] + j]`` equals ``cdist_gak_prefixes(X, ...)[a, b, i, j]``
    (:func:`prefix_offsets`; fixed sigma). ``X``: a padded (B, S, D) tensor with ``lengths``,
    a list of (n_b, D) tensors, or :class:`SliceEmbeddings` (the Triple-Kernel cost).

    >>> X = [torch.tensor([[0.0]]), torch.tensor([[0.0], [1.0]])]
    >>> gram = gak_prefix_gram(X, sigma=1.0)
    >>> gram.shape, [round(v, 4) for v in gram.diagonal().tolist()]
    (torch.Size([3, 3]), [1.0, 1.0, 1.0])
    """
    check_positive("sigma", sigma)
    data, n = prepare_set("X", X, lengths)
    metric_ = resolve_metric(data, metric)
    steps = _steps(data, n)
    cost = ground_cost(steps, steps, metric_, triple_kernel, medians)[:, :, 0, 0]  # (T, T)
    offsets = prefix_offsets(n)
    log_gram = torch.empty_like(cost)
    values = sorted(set(n.tolist()))
    for u_index, u in enumerate(values):
        rows = offsets[n == u][:, None] + torch.arange(u, device=n.device)  # (Bu, u)
        for v in values[u_index:]:
            cols = offsets[n == v][:, None] + torch.arange(v, device=n.device)  # (Bv, v)
            blocks = cost[rows[:, None, :, None], cols[None, :, None, :]]  # (Bu, Bv, u, v)
            bu, bv = blocks.shape[:2]
            table = log_gak_alignment(
                blocks.reshape(bu * bv, u, v), float(sigma), table=True
            ).reshape(bu, bv, u, v)
            log_gram[rows[:, None, :, None], cols[None, :, None, :]] = table
            if v != u:  # the symmetric group: K(y, x) is K(x, y)'s table transposed
                log_gram[cols[:, None, :, None], rows[None, :, None, :]] = table.permute(1, 0, 3, 2)
    length = torch.cat([torch.arange(1, k + 1, device=n.device) for k in n.tolist()])  # (T,)
    diagonal = log_gram.diagonal()
    return normalise_log_gak(
        log_gram, diagonal[:, None], diagonal[None, :], length[:, None], length[None, :],
        normalisation, slope=slope,
    )  # fmt: skip
