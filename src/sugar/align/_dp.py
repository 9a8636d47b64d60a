"""The one dynamic programme behind soft-DTW, GAK and DTW, batched over pairs.

Shapes: P pairs, N and M the (padded) lengths of the two sequences of each pair.

Soft alignment (log space; the GAK recursion, and soft-DTW with ``logk = -cost / gamma``)::

    V[0, 0] = 0,  V[i, 0] = V[0, j] = -inf,
    V[i, j] = logk[i, j] + log(exp V[i-1, j] + exp V[i, j-1] + exp V[i-1, j-1])

so that ``V[i, j]`` is the log of the sum, over all monotone alignments of the prefixes
(x_1..i, y_1..j), of the product of the local kernels: one DP gives every prefix pair.

Layout (KERNEL_NOTES.md): the table is stored by anti-diagonal ``d = i + j`` with the pairs as
the innermost, contiguous dimension, so each step of the DP is one vectorised update of a whole
diagonal for all pairs. The 3-way log-sum-exp is written by hand (max + log of summed exps).

Backward (Cuturi & Blondel 2017, the E-matrix recursion, generalised to a gradient on every
cell): with ``G = dLoss/dV``, ``E[i, j] = G[i, j] + sum_s E[s] * w(s <- (i, j))`` over the three
successors ``s`` of (i, j), where ``w = exp(V[i, j] + logk[s] - V[s])`` is the share of (i, j) in
the log-sum-exp of ``s`` (in [0, 1]), and ``dLoss/dlogk = E``. Cells beyond a pair's lengths
only ever feed cells beyond them, so padding gets exactly zero gradient.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["hard_alignment_table", "log_alignment_table"]


def _diagonal_index(n: int, m: int, device: torch.device) -> Tensor:
    """Flat index into an (n + 2) x (m + 2) grid for each (diagonal d, row i) slot.

    Slots whose column ``j = d - i`` falls outside [0, m + 1] point at cell (n + 1, m + 1),
    which every caller keeps as a neutral value.
    """
    d = torch.arange(n + m + 3, device=device)[:, None]
    i = torch.arange(n + 2, device=device)[None, :]
    j = d - i
    flat = i * (m + 2) + j
    outside = (j < 0) | (j > m + 1)
    return torch.where(outside, torch.full_like(flat, (n + 1) * (m + 2) + (m + 1)), flat)


def _to_diagonals(grid: Tensor, index: Tensor) -> Tensor:
    """(P, n + 2, m + 2) grid -> (n + m + 3, n + 2, P) anti-diagonal layout."""
    flat = grid.reshape(grid.shape[0], -1)
    return flat[:, index].permute(1, 2, 0).contiguous()


def _from_diagonals(diag: Tensor, n: int, m: int) -> Tensor:
    """(n + m + 3, n + 2, P) anti-diagonal layout -> (P, n, m) cells 1..n x 1..m."""
    i = torch.arange(1, n + 1, device=diag.device)[:, None]
    j = torch.arange(1, m + 1, device=diag.device)[None, :]
    return diag[i + j, i].permute(2, 0, 1)


def _pad_grid(cells: Tensor, fill: float) -> Tensor:
    """(P, n, m) -> (P, n + 2, m + 2): a border row/column before and after, set to ``fill``."""
    return torch.nn.functional.pad(cells, (1, 1, 1, 1), value=fill)


def _forward_diagonals(logk: Tensor) -> tuple[Tensor, Tensor]:
    """Run the soft DP; returns (V, L) in diagonal layout, V with +inf beyond the grid."""
    p, n, m = logk.shape
    index = _diagonal_index(n, m, logk.device)
    lk = _to_diagonals(_pad_grid(logk, 0.0), index)
    # V: borders (row 0 / column 0) are -inf except V[0, 0] = 0; cells beyond the grid (row n+1,
    # column m+1, and the neutral slots) are +inf so their share in the backward is exactly 0.
    grid = torch.full((p, n + 2, m + 2), float("inf"), dtype=logk.dtype, device=logk.device)
    grid[:, 0, :] = -float("inf")
    grid[:, :, 0] = -float("inf")
    grid[:, 0, 0] = 0.0
    v = _to_diagonals(grid, index)
    for d in range(2, n + m + 1):
        lo, hi = max(1, d - m), min(n, d - 1)
        a = v[d - 1, lo - 1 : hi]  # (i-1, j)
        b = v[d - 1, lo : hi + 1]  # (i, j-1)
        c = v[d - 2, lo - 1 : hi]  # (i-1, j-1)
        top = torch.maximum(torch.maximum(a, b), c)
        total = torch.exp(a - top) + torch.exp(b - top) + torch.exp(c - top)
        v[d, lo : hi + 1] = lk[d, lo : hi + 1] + top + torch.log(total)
    return v, lk


def _backward_diagonals(v: Tensor, lk: Tensor, grad: Tensor, n: int, m: int) -> Tensor:
    """E-matrix recursion; ``grad`` is dLoss/dV in cell layout (P, n, m)."""
    index = _diagonal_index(n, m, grad.device)
    g = _to_diagonals(_pad_grid(grad, 0.0), index)
    e = torch.zeros_like(v)
    for d in range(n + m, 1, -1):
        lo, hi = max(1, d - m), min(n, d - 1)
        here = v[d, lo : hi + 1]
        down_v, down_e = v[d + 1, lo + 1 : hi + 2], e[d + 1, lo + 1 : hi + 2]  # (i+1, j)
        right_v, right_e = v[d + 1, lo : hi + 1], e[d + 1, lo : hi + 1]  # (i, j+1)
        diag_v, diag_e = v[d + 2, lo + 1 : hi + 2], e[d + 2, lo + 1 : hi + 2]  # (i+1, j+1)
        e[d, lo : hi + 1] = (
            g[d, lo : hi + 1]
            + down_e * torch.exp(here + lk[d + 1, lo + 1 : hi + 2] - down_v)
            + right_e * torch.exp(here + lk[d + 1, lo : hi + 1] - right_v)
            + diag_e * torch.exp(here + lk[d + 2, lo + 1 : hi + 2] - diag_v)
        )
    return _from_diagonals(e, n, m)


class _LogAlignment(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, logk: Tensor) -> Tensor:
        _, n, m = logk.shape
        v, lk = _forward_diagonals(logk.detach())
        ctx.save_for_backward(v, lk)
        ctx.sizes = (n, m)
        return _from_diagonals(v, n, m)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        v, lk = ctx.saved_tensors
        n, m = ctx.sizes
        return _backward_diagonals(v, lk, grad.contiguous(), n, m)


def _mask_padding(cells: Tensor, lengths_x: Tensor | None, lengths_y: Tensor | None) -> Tensor:
    """Zero the cells of (P, N, M) beyond each pair's lengths (so they carry no gradient)."""
    if lengths_x is None and lengths_y is None:
        return cells
    _, n, m = cells.shape
    keep = torch.ones(cells.shape, dtype=torch.bool, device=cells.device)
    if lengths_x is not None:
        keep = keep & (
            torch.arange(n, device=cells.device)[None, :, None] < lengths_x[:, None, None]
        )
    if lengths_y is not None:
        keep = keep & (
            torch.arange(m, device=cells.device)[None, None, :] < lengths_y[:, None, None]
        )
    return torch.where(keep, cells, torch.zeros((), dtype=cells.dtype, device=cells.device))


def log_alignment_table(
    logk: Tensor, lengths_x: Tensor | None = None, lengths_y: Tensor | None = None
) -> Tensor:
    """Log-sum over alignments of every prefix pair: (P, N, M) log local kernels -> (P, N, M).

    ``out[p, i, j]`` is the log of the sum, over monotone alignments (moves (1,0), (0,1), (1,1))
    of (x_1..i+1, y_1..j+1), of the product of ``exp(logk)`` along the alignment. Cells beyond
    a pair's lengths (``lengths_x[p]``, ``lengths_y[p]``) are computed with ``logk = 0`` and carry
    no meaning; their inputs get exactly zero gradient. Differentiable (custom backward).
    """
    if logk.dim() != 3:
        raise ValueError(f"logk must have shape (P, N, M), got {tuple(logk.shape)}")
    return _LogAlignment.apply(_mask_padding(logk, lengths_x, lengths_y))


def hard_alignment_table(cost: Tensor) -> Tensor:
    """Accumulated cost of the best alignment of every prefix pair: (P, N, M) -> (P, N, M).

    ``out[p, i, j] = cost[p, i, j] + min(out[i-1, j], out[i, j-1], out[i-1, j-1])`` (DTW).
    Not differentiable: callers differentiate the sum of ``cost`` along the recovered path.
    """
    p, n, m = cost.shape
    index = _diagonal_index(n, m, cost.device)
    c = _to_diagonals(_pad_grid(cost.detach(), 0.0), index)
    grid = torch.full((p, n + 2, m + 2), float("inf"), dtype=cost.dtype, device=cost.device)
    grid[:, 0, 0] = 0.0
    r = _to_diagonals(grid, index)
    for d in range(2, n + m + 1):
        lo, hi = max(1, d - m), min(n, d - 1)
        best = torch.minimum(
            torch.minimum(r[d - 1, lo - 1 : hi], r[d - 1, lo : hi + 1]), r[d - 2, lo - 1 : hi]
        )
        r[d, lo : hi + 1] = c[d, lo : hi + 1] + best
    return _from_diagonals(r, n, m)
