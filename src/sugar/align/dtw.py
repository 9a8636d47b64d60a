"""Hard dynamic time warping with its optimal path: batched, masked, (sub)differentiable.

Shapes: P pairs, N and M padded lengths; D features.

Definition (Sakoe & Chiba 1978)::

    R[0, 0] = 0,  R[i, 0] = R[0, j] = inf,
    R[i, j] = C[i, j] + min(R[i-1, j], R[i, j-1], R[i-1, j-1]),   dtw(x, y) = R[n, m]

with ``C`` the ground cost (squared Euclidean by default). Note: ``tslearn.metrics.dtw`` returns
the *square root* of this value for the squared Euclidean cost; ``dtw_path`` agrees with ours.
The path is recovered by walking back from (n, m), preferring the diagonal, then up, then left
on ties (tslearn's order), for all pairs at once. The returned value is the sum of ``C`` along
the path, so its gradient is the path indicator (a subgradient of DTW).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sugar.align._dp import hard_alignment_table
from sugar.align._inputs import SequenceSet, all_finite
from sugar.align._pairs import (
    GroundMetric,
    flatten_pairs,
    ground_cost,
    prepare_cost,
    prepare_pair,
    prepare_sets,
)

__all__ = ["cdist_dtw", "dtw", "dtw_from_cost", "dtw_path_mask"]


def dtw_path_mask(cost: Tensor, lengths_x: Tensor, lengths_y: Tensor) -> Tensor:
    """(P, N, M) bool: the cells of each pair's optimal alignment path."""
    table = hard_alignment_table(cost)
    p = table.shape[0]
    big = torch.full((p, 1, 1), float("inf"), dtype=table.dtype, device=table.device)
    # Pad a row and a column of +inf before the table so moves out of the grid are never chosen.
    padded = torch.cat([big.expand(p, 1, table.shape[2]), table], dim=1)
    padded = torch.cat([big.expand(p, padded.shape[1], 1), padded], dim=2)
    mask = torch.zeros(table.shape, dtype=torch.bool, device=table.device)
    rows = torch.arange(p, device=table.device)
    i, j = lengths_x.clone() - 1, lengths_y.clone() - 1
    mask[rows, i, j] = True
    for _ in range(table.shape[1] + table.shape[2]):
        active = (i > 0) | (j > 0)
        if not active.any():
            break
        # candidates in padded coordinates (+1): diagonal, up, left (tslearn's tie order)
        options = torch.stack(
            [padded[rows, i, j], padded[rows, i, j + 1], padded[rows, i + 1, j]], dim=-1
        )
        move = options.argmin(-1)
        di = torch.where(move <= 1, 1, 0)
        dj = torch.where(move != 1, 1, 0)
        i = torch.where(active, i - di, i)
        j = torch.where(active, j - dj, j)
        mask[rows[active], i[active], j[active]] = True
    return mask


def dtw_from_cost(
    cost: Tensor, lengths_x: Tensor | None = None, lengths_y: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """DTW from a precomputed cost: (P, N, M) -> ((P,) values, (P, N, M) path masks).

    >>> value, path = dtw_from_cost(torch.tensor([[[0.0, 1.0], [1.0, 0.0]]]))
    >>> float(value[0]), path[0].int().tolist()
    (0.0, [[1, 0], [0, 1]])
    """
    if cost.dim() != 3:
        raise ValueError(f"cost must have shape (P, N, M), got {tuple(cost.shape)}")
    cost, lx, ly, _ = prepare_cost("cost", cost, lengths_x, lengths_y)
    if not all_finite(cost.detach()):
        raise ValueError("cost contains NaN or inf")
    mask = dtw_path_mask(cost.detach(), lx, ly)
    return (cost * mask).sum(dim=(1, 2)), mask


def dtw(
    x: SequenceSet,
    y: SequenceSet,
    *,
    return_path: bool = False,
    lengths_x: Any = None,
    lengths_y: Any = None,
    metric: GroundMetric | None = None,
) -> Any:
    """DTW of one pair (scalar) or of paired batches ((B,)), optionally with the path.

    With ``return_path=True`` also returns the path: a list of (i, j) steps from (0, 0) to
    (n - 1, m - 1) for one pair, a list of such lists for a batch.

    >>> value, path = dtw(torch.tensor([0.0, 1.0, 1.0]), torch.tensor([0.0, 1.0]), return_path=True)
    >>> float(value), path
    (0.0, [(0, 0), (1, 1), (2, 1)])
    """
    xd, lx, yd, ly, metric_, single = prepare_pair(x, y, lengths_x, lengths_y, metric)
    cost = ground_cost(xd, yd, metric_, paired=True)
    values, mask = dtw_from_cost(cost, lx, ly)
    if not return_path:
        return values[0] if single else values
    paths = [[(int(a), int(b)) for a, b in m.nonzero().tolist()] for m in mask]
    return (values[0], paths[0]) if single else (values, paths)


def cdist_dtw(
    X: SequenceSet,
    Y: SequenceSet | None = None,
    *,
    lengths_x: Any = None,
    lengths_y: Any = None,
    metric: GroundMetric | None = None,
) -> Tensor:
    """(Bx, By) DTW of every pair of sequences of X and Y (Y defaults to X)."""
    xd, lx, yd, ly, metric_, _ = prepare_sets(X, Y, lengths_x, lengths_y, metric)
    cost = ground_cost(xd, yd, metric_)
    values, _ = dtw_from_cost(*flatten_pairs(cost, lx, ly))
    return values.reshape(cost.shape[:2])
