"""Soft-DTW and its divergence: batched, masked, differentiable.

Shapes: X holds Bx sequences of up to Sx steps (Y: By, Sy); D features.

Definition (Cuturi & Blondel 2017, "Soft-DTW: a differentiable loss function for time-series")::

    R[0, 0] = 0,  R[i, 0] = R[0, j] = inf,
    R[i, j] = C[i, j] + softmin_gamma(R[i-1, j], R[i, j-1], R[i-1, j-1]),
    softmin_gamma(a) = -gamma * log sum exp(-a / gamma),   soft_dtw(x, y) = R[n, m]

with ``C`` the ground cost (squared Euclidean by default, as tslearn). Computed as
``-gamma * V`` where ``V`` is the log-alignment DP of :mod:`sugar.align._dp` on ``-C / gamma``
(log-GAK with gamma = 1 on ``-log k`` is the same DP). soft-DTW can be negative and
``soft_dtw(x, x) != 0``; the divergence (Blondel, Mensch & Vert 2021)
``D(x, y) = sdtw(x, y) - (sdtw(x, x) + sdtw(y, y)) / 2`` is >= 0 and 0 at x = y.

Precision: float32 values are fine, float32 gradients on large unnormalised costs are not (the
error grows like ulp(R) / gamma): normalise the cost or use float64 (KERNEL_NOTES.md).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from sugar.align._dp import log_alignment
from sugar.align._inputs import SequenceSet, check_positive, raise_if_not_finite
from sugar.align._pairs import (
    Data,
    GroundMetric,
    flatten_pairs,
    ground_cost,
    prepare_cost,
    prepare_pair,
    prepare_sets,
)
from sugar.align._symmetric import symmetric_all_pairs

__all__ = ["cdist_soft_dtw", "soft_dtw", "soft_dtw_divergence", "soft_dtw_from_cost"]


def _ends(cost: Tensor, gamma: float, lx: Tensor, ly: Tensor) -> Tensor:
    """(P, N, M) cost -> (P,) soft-DTW values."""
    return -gamma * log_alignment(cost, lx, ly, scale=-1.0 / gamma)


def soft_dtw_from_cost(
    cost: Tensor,
    gamma: float = 1.0,
    lengths_x: Tensor | None = None,
    lengths_y: Tensor | None = None,
) -> Tensor:
    """soft-DTW from a precomputed cost: (n, m) -> scalar, or (P, N, M) (+ (P,) lengths) -> (P,).

    >>> float(soft_dtw_from_cost(torch.tensor([[1.0]]), gamma=0.1))
    1.0
    """
    gamma = check_positive("gamma", gamma)
    cells, lx, ly, single = prepare_cost("cost", cost, lengths_x, lengths_y)
    out = _ends(cells, gamma, lx, ly)
    raise_if_not_finite(out, "cost", cells)
    return out[0] if single else out


def soft_dtw(
    x: SequenceSet,
    y: SequenceSet,
    gamma: float = 1.0,
    *,
    lengths_x: Any = None,
    lengths_y: Any = None,
    metric: GroundMetric | None = None,
) -> Tensor:
    """soft-DTW of one pair (x (n, D), y (m, D) -> scalar) or of paired batches (-> (B,)).

    Same value as ``tslearn.metrics.soft_dtw`` (squared Euclidean cost).

    >>> x = torch.tensor([[0.0], [1.0], [2.0]])
    >>> round(float(soft_dtw(x, x, gamma=1e-4)), 6)  # gamma -> 0: DTW, 0 for x = x
    -0.0
    """
    gamma = check_positive("gamma", gamma)
    xd, lx, yd, ly, metric_, single = prepare_pair(x, y, lengths_x, lengths_y, metric)
    cost = ground_cost(xd, yd, metric_, paired=True)
    out = _ends(cost, gamma, lx, ly)
    return out[0] if single else out


def soft_dtw_divergence(
    x: SequenceSet,
    y: SequenceSet,
    gamma: float = 1.0,
    *,
    lengths_x: Any = None,
    lengths_y: Any = None,
    metric: GroundMetric | None = None,
) -> Tensor:
    """``sdtw(x, y) - (sdtw(x, x) + sdtw(y, y)) / 2``: >= 0, and 0 when x = y.

    >>> x = torch.tensor([[0.0], [1.0]])
    >>> float(soft_dtw_divergence(x, x, gamma=1.0))
    0.0
    """
    gamma = check_positive("gamma", gamma)
    xd, lx, yd, ly, metric_, single = prepare_pair(x, y, lengths_x, lengths_y, metric)
    xy = _ends(ground_cost(xd, yd, metric_, paired=True), gamma, lx, ly)
    xx = _ends(ground_cost(xd, xd, metric_, paired=True), gamma, lx, lx)
    yy = _ends(ground_cost(yd, yd, metric_, paired=True), gamma, ly, ly)
    out = xy - (xx + yy) / 2
    return out[0] if single else out


def cdist_soft_dtw(
    X: SequenceSet,
    Y: SequenceSet | None = None,
    gamma: float = 1.0,
    *,
    lengths_x: Any = None,
    lengths_y: Any = None,
    metric: GroundMetric | None = None,
) -> Tensor:
    """(Bx, By) soft-DTW of every pair of sequences of X and Y (Y defaults to X).

    Same values as ``tslearn.metrics.cdist_soft_dtw``; differentiable.

    >>> cdist_soft_dtw([torch.zeros(2, 1), torch.ones(3, 1)], gamma=0.1).shape
    torch.Size([2, 2])
    """
    gamma = check_positive("gamma", gamma)
    xd, lx, yd, ly, metric_, same = prepare_sets(X, Y, lengths_x, lengths_y, metric)

    def pairs(xd: Data, lx: Tensor, yd: Data, ly: Tensor) -> Tensor:
        cost = ground_cost(xd, yd, metric_)
        cells, px, py = flatten_pairs(cost, lx, ly)
        return _ends(cells, gamma, px, py).reshape(cost.shape[:2])

    return symmetric_all_pairs(pairs, xd, lx) if same else pairs(xd, lx, yd, ly)
