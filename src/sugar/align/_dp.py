"""The one dynamic programme behind soft-DTW, GAK and DTW, batched over pairs.

Shapes: P pairs, N and M the (padded) lengths of the two sequences of each pair.

Soft alignment (log space; the GAK recursion, and soft-DTW with ``logk = -cost / gamma``)::

    V[0, 0] = 0,  V[i, 0] = V[0, j] = -inf,
    V[i, j] = logk[i, j] + log(exp V[i-1, j] + exp V[i, j-1] + exp V[i-1, j-1])

so that ``V[i, j]`` is the log of the sum, over all monotone alignments of the prefixes
(x_1..i, y_1..j), of the product of the local kernels: one DP gives every prefix pair.

Layout (KERNEL_NOTES.md): tables are stored as (N + 1, M + 1, P), pairs innermost and
contiguous. The cells of an anti-diagonal ``i + j = d`` are then rows of P values spaced by a
constant stride, so each DP step is a handful of vectorised operations on a strided view of one
diagonal for all pairs, with no layout conversion. The 3-way log-sum-exp is written by hand
(max + log of summed exps; ``torch.logsumexp`` over stacked values was measured 25x slower).

Backward (Cuturi & Blondel 2017, the E-matrix recursion, generalised to a gradient on every
cell): with ``G = dLoss/dV``, ``E[i, j] = G[i, j] + sum_s E[s] * w(s <- (i, j))`` over the three
successors ``s`` of (i, j), where ``w`` is the share of (i, j) in the log-sum-exp of ``s`` (in
[0, 1]), and ``dLoss/dlogk = E``. The forward stores the shares when a gradient is needed, so
the backward is three fused multiply-adds per diagonal and no ``exp``. Without a gradient the
forward skips them and needs two ``exp`` per cell instead of three (the largest term is 1).
Cells beyond a pair's lengths only ever feed cells beyond them, so padding gets exactly zero
gradient.

Backends. This torch implementation is the reference and runs everywhere. On CPU, float32 and
float64 go by default to the compiled kernels of :mod:`sugar.align._compiled` (numba; same
values and gradients to rounding; the README's alignment section has their figures) when numba
imports; :func:`log_gak_alignment` then computes GAK's local kernel inside them. The
environment variable ``SUGAR_ALIGN_BACKEND`` (``auto``, ``compiled``, ``triton`` or ``torch``)
or the ``backend`` argument of :func:`log_alignment` forces one; ``compiled`` raises where it
cannot run. On
CUDA, float32 and float64 go by default to the Triton kernels of :mod:`sugar.align._triton` (one
program per pair) when triton imports (``pip install sugar[gpu]``); ``triton`` forces them and
raises where they cannot run (on CPU tensors they run only in triton's interpreter,
``TRITON_INTERPRET=1``, which is how they are tested without a GPU).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sugar.align._backends import Backend
from sugar.align._backends import compiled_kernels as _compiled_kernels
from sugar.align._backends import triton_kernels as _triton_kernels
from sugar.align._backends import use_compiled as _use_compiled
from sugar.align._backends import use_triton as _use_triton
from sugar.align.kernels import local_log_kernel

__all__ = [
    "Backend",
    "hard_alignment_table",
    "log_alignment",
    "log_alignment_table",
    "log_gak_alignment",
]


def _diagonal(buf: Tensor, d: int, lo: int, hi: int, shift: int = 0) -> Tensor:
    """(hi - lo + 1, P) view of cells (i, d - i), i = lo..hi, of a contiguous (R, C, P) grid.

    ``shift`` = 1 addresses a grid without the border row/column (cell (i, j) at [i-1, j-1]).
    """
    _, cols, p = buf.shape
    offset = ((lo - shift) * cols + (d - lo - shift)) * p
    return buf.as_strided((hi - lo + 1, p), ((cols - 1) * p, 1), buf.storage_offset() + offset)


def _bounds(d: int, n: int, m: int) -> tuple[int, int]:
    """Rows i of the cells (i, d - i) with 1 <= i <= n and 1 <= d - i <= m."""
    return max(1, d - m), min(n, d - 1)


def _mask(lk: Tensor, lengths_x: Tensor | None, lengths_y: Tensor | None) -> Tensor:
    """Zero the cells of an (N, M, P) log-kernel grid beyond each pair's lengths."""
    if lengths_x is None and lengths_y is None:
        return lk
    n, m, _ = lk.shape
    if (lengths_x is None or bool((lengths_x == n).all())) and (
        lengths_y is None or bool((lengths_y == m).all())
    ):
        return lk
    keep = torch.ones((), dtype=torch.bool, device=lk.device)
    if lengths_x is not None:
        keep = keep & (torch.arange(n, device=lk.device)[:, None, None] < lengths_x.to(lk.device))
    if lengths_y is not None:
        keep = keep & (torch.arange(m, device=lk.device)[None, :, None] < lengths_y.to(lk.device))
    return torch.where(keep, lk, torch.zeros((), dtype=lk.dtype, device=lk.device))


def _soft_forward(
    lk: Tensor, keep_shares: bool, ends: tuple[Tensor, Tensor] | None, scale: float = 1.0
) -> tuple[Tensor, Tensor | None]:
    """Run the soft DP on (N, M, P) contiguous log kernels.

    Returns the (N+1, M+1, P) table, or with ``ends = (lengths_x, lengths_y)`` only the (P,)
    values at each pair's lengths (then three rolling diagonals replace the table: no
    N x M x P buffer is touched), and the (2, N+2, M+2, P) shares of the up and left
    predecessors of every cell (the diagonal's share is 1 minus both) when ``keep_shares``.
    """
    n, m, p = lk.shape
    new = dict(dtype=lk.dtype, device=lk.device)
    neg_inf = -float("inf")
    if ends is None:
        v = torch.empty((n + 1, m + 1, p), **new)  # type: ignore[call-overload]
        v[0].fill_(neg_inf)
        v[:, 0].fill_(neg_inf)
        v[0, 0].fill_(0.0)

        def cells(d: int, lo: int, hi: int) -> Tensor:
            return _diagonal(v, d, lo, hi)

    else:
        # rolling[d % 3, i] holds cell (i, d - i); rows 0 and d are the borders (0, d), (d, 0)
        rolling = torch.empty((3, n + 1, p), **new)  # type: ignore[call-overload]
        rolling[0, 0].fill_(0.0)
        rolling[1].fill_(neg_inf)
        values = torch.empty(p, **new)  # type: ignore[call-overload]
        total_len = ends[0] + ends[1]
        finish = {
            int(d): (total_len == d).nonzero()[:, 0] for d in torch.unique(total_len).tolist()
        }

        def cells(d: int, lo: int, hi: int) -> Tensor:
            return rolling[d % 3, lo : hi + 1]

    shares = None
    if keep_shares:
        # every cell (i, j), 1 <= i <= n, 1 <= j <= m, is written below; the backward also reads
        # row n + 1 and column m + 1 (successors beyond the grid), which must hold share 0
        shares = torch.empty((2, n + 2, m + 2, p), **new)  # type: ignore[call-overload]
        shares[:, n + 1].zero_()
        shares[:, :, m + 1].zero_()
    rows = min(n, m)
    top, low, total = (torch.empty((rows, p), **new) for _ in range(3))  # type: ignore[call-overload]
    for d in range(2, n + m + 1):
        lo, hi = _bounds(d, n, m)
        k = hi - lo + 1
        if ends is not None:  # borders of this diagonal, before its slot is read as d + 1's pred
            slot = rolling[d % 3]
            if d <= m:
                slot[0].fill_(neg_inf)
            if d <= n:
                slot[d].fill_(neg_inf)
        up = cells(d - 1, lo - 1, hi - 1)  # (i-1, j)
        left = cells(d - 1, lo, hi)  # (i, j-1)
        diag = cells(d - 2, lo - 1, hi - 1)  # (i-1, j-1)
        out = cells(d, lo, hi)
        t, s, lw = top[:k], total[:k], low[:k]
        torch.maximum(up, left, out=t)
        torch.maximum(t, diag, out=t)
        if shares is None:
            # The largest term is exp(0) = 1: add the other two (min and middle), then log1p.
            # `out` is free until the last line and serves as scratch.
            torch.minimum(up, left, out=lw)
            torch.minimum(lw, diag, out=lw)
            torch.maximum(up, left, out=out)
            torch.minimum(out, diag, out=out)
            torch.minimum(up, left, out=s)
            torch.maximum(s, out, out=s)  # the middle value
            s.sub_(t).exp_().add_(lw.sub_(t).exp_()).log1p_()
        else:
            up_share = _diagonal(shares[0], d, lo, hi)
            left_share = _diagonal(shares[1], d, lo, hi)
            torch.sub(up, t, out=up_share).exp_()
            torch.sub(left, t, out=left_share).exp_()
            torch.sub(diag, t, out=lw).exp_()
            torch.add(up_share, left_share, out=s).add_(lw)
            torch.reciprocal(s, out=lw)
            up_share.mul_(lw)
            left_share.mul_(lw)
            s.log_()
        torch.add(t, s, out=out).add_(_diagonal(lk, d, lo, hi, shift=1), alpha=scale)
        if ends is not None and d in finish:
            idx = finish[d]
            values[idx] = rolling[d % 3][ends[0][idx], idx]
    return (v if ends is None else values), shares


def _soft_backward(
    shares: Tensor,
    seed_grid: Tensor | None,
    seed_ends: tuple[Tensor, Tensor, Tensor] | None,
    scale: float,
) -> Tensor:
    """The E-matrix recursion; returns dLoss/dlogk (N, M, P), times ``scale``.

    The loss's gradient on the table is either a full (N, M, P) grid ``seed_grid`` or, for end
    values, ``seed_ends = (lengths_x, lengths_y, grad)``. E lives in three rolling diagonals
    (E of diagonal d needs only d + 1 and d + 2), so the only large buffer is the result.
    """
    _, n2, m2, p = shares.shape
    n, m = n2 - 2, m2 - 2
    new = dict(dtype=shares.dtype, device=shares.device)
    up_share, left_share = shares
    out = torch.empty((n, m, p), **new)  # type: ignore[call-overload]
    # rolling[d % 3, i] holds E of cell (i, d - i); rows outside a diagonal's cells stay 0
    rolling = torch.zeros((3, n + 2, p), **new)  # type: ignore[call-overload]
    scratch = torch.empty((min(n, m), p), **new)  # type: ignore[call-overload]
    finish: dict[int, Tensor] = {}
    if seed_ends is not None:
        total_len = seed_ends[0] + seed_ends[1]
        finish = {
            int(d): (total_len == d).nonzero()[:, 0] for d in torch.unique(total_len).tolist()
        }
    for d in range(n + m, 1, -1):
        lo, hi = _bounds(d, n, m)
        slot = rolling[d % 3]
        slot.zero_()  # it held diagonal d + 3
        here = slot[lo : hi + 1]
        if seed_grid is not None:
            here.copy_(_diagonal(seed_grid, d, lo, hi, shift=1))
        if d in finish:
            idx = finish[d]
            slot[seed_ends[0][idx], idx] += seed_ends[2][idx]  # type: ignore[index]
        # successors (i+1, j), (i, j+1), (i+1, j+1) hold the shares of (i, j) in their sums
        after, after2 = rolling[(d + 1) % 3], rolling[(d + 2) % 3]
        here.addcmul_(after[lo + 1 : hi + 2], _diagonal(up_share, d + 1, lo + 1, hi + 1))
        here.addcmul_(after[lo : hi + 1], _diagonal(left_share, d + 1, lo, hi))
        diag_share = torch.add(
            _diagonal(up_share, d + 2, lo + 1, hi + 1),
            _diagonal(left_share, d + 2, lo + 1, hi + 1),
            out=scratch[: hi - lo + 1],
        )
        # beyond the grid both shares are 0 (so this one is 1) but E there is 0 too
        here.addcmul_(after2[lo + 1 : hi + 2], diag_share.neg_().add_(1.0))
        torch.mul(here, scale, out=_diagonal(out, d, lo, hi, shift=1))
    return out


class _LogAlignment(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        logk: Tensor,
        lengths_x: Tensor | None,
        lengths_y: Tensor | None,
        table: bool,
        scale: float,
    ) -> Tensor:
        p, n, m = logk.shape
        lk = _mask(logk.permute(1, 2, 0), lengths_x, lengths_y).contiguous()
        lx = torch.full((p,), n) if lengths_x is None else lengths_x
        ly = torch.full((p,), m) if lengths_y is None else lengths_y
        out, shares = _soft_forward(lk, ctx.needs_input_grad[0], None if table else (lx, ly), scale)
        ctx.table = table
        ctx.scale = scale
        ctx.save_for_backward(shares, lx, ly)
        return out[1:, 1:].permute(2, 0, 1) if table else out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None, None]:
        shares, lx, ly = ctx.saved_tensors
        if ctx.table:
            grid = grad.permute(1, 2, 0).contiguous()
            grad_logk = _soft_backward(shares, grid, None, ctx.scale)
        else:
            grad_logk = _soft_backward(shares, None, (lx, ly, grad), ctx.scale)
        # the forward replaced inputs beyond the lengths by 0: they get no gradient
        grad_logk = _mask(grad_logk, lx, ly)
        return grad_logk.permute(2, 0, 1), None, None, None, None


def log_alignment(
    logk: Tensor,
    lengths_x: Tensor | None = None,
    lengths_y: Tensor | None = None,
    *,
    table: bool = False,
    scale: float = 1.0,
    backend: Backend | None = None,
) -> Tensor:
    """Log-sum over alignments: (P, N, M) log local kernels -> (P,) ends or a (P, N, M) table.

    ``table=False`` returns, for each pair, the value at its own lengths (``lengths_x[p]``,
    ``lengths_y[p]``, default N and M); ``table=True`` returns every prefix pair:
    ``out[p, i, j]`` is the log of the sum, over monotone alignments (moves (1,0), (0,1), (1,1))
    of (x_1..i+1, y_1..j+1), of the product of ``exp(logk)`` along the alignment; cells beyond a
    pair's lengths are computed with ``logk = 0`` and carry no meaning. Inputs beyond the lengths
    get exactly zero gradient. The DP reads ``scale * logk`` (soft-DTW passes ``-1 / gamma``
    and its cost, saving a pass over the cost). Fastest when ``logk``'s memory has the pairs
    innermost (a ``permute(2, 0, 1)`` view of an (N, M, P) tensor): no copy is made then.
    ``backend`` (default: ``SUGAR_ALIGN_BACKEND``, else ``auto``) picks the implementation.
    """
    if logk.dim() != 3:
        raise ValueError(f"logk must have shape (P, N, M), got {tuple(logk.shape)}")
    if _use_triton(logk, backend):
        triton_kernels = _triton_kernels()
        assert triton_kernels is not None
        return triton_kernels.TritonLogAlignment.apply(
            logk, lengths_x, lengths_y, table, float(scale), triton_kernels.LINEAR
        )
    if _use_compiled(logk, backend):
        kernels = _compiled_kernels()
        assert kernels is not None
        return kernels.CompiledLogAlignment.apply(
            logk, lengths_x, lengths_y, table, float(scale), kernels.LINEAR
        )
    return _LogAlignment.apply(logk, lengths_x, lengths_y, table, float(scale))


def log_gak_alignment(
    phi: Tensor,
    sigma: float | Tensor,
    lengths_x: Tensor | None = None,
    lengths_y: Tensor | None = None,
    *,
    table: bool = False,
    backend: Backend | None = None,
) -> Tensor:
    """:func:`log_alignment` of GAK's log local kernel of the ground distances ``phi``.

    The same as ``log_alignment(local_log_kernel(phi, sigma), ...)``: ``sigma`` is a float or
    one value per pair (not differentiated). The compiled and Triton backends compute the local
    kernel while loading each cell (and its gradient while writing the result), so the
    (P, N, M) log kernel and its backward's temporaries are never materialised.
    """
    if phi.dim() != 3:
        raise ValueError(f"phi must have shape (P, N, M), got {tuple(phi.shape)}")
    if _use_triton(phi, backend):
        triton_kernels = _triton_kernels()
        assert triton_kernels is not None
        inv = 0.5 / (sigma.detach() ** 2) if isinstance(sigma, Tensor) else 0.5 / sigma**2
        return triton_kernels.TritonLogAlignment.apply(
            phi, lengths_x, lengths_y, table, inv, triton_kernels.GAK
        )
    if _use_compiled(phi, backend):
        kernels = _compiled_kernels()
        assert kernels is not None
        inv = 0.5 / (sigma.detach() ** 2) if isinstance(sigma, Tensor) else 0.5 / sigma**2
        return kernels.CompiledLogAlignment.apply(
            phi, lengths_x, lengths_y, table, inv, kernels.GAK
        )
    if isinstance(sigma, Tensor):
        sigma = sigma.detach().to(phi.dtype).reshape(-1, 1, 1)
    logk = local_log_kernel(phi, sigma)
    return log_alignment(logk, lengths_x, lengths_y, table=table, backend="torch")


def log_alignment_table(
    logk: Tensor,
    lengths_x: Tensor | None = None,
    lengths_y: Tensor | None = None,
    backend: Backend | None = None,
) -> Tensor:
    """Every prefix pair's log-sum over alignments: ``log_alignment(..., table=True)``."""
    return log_alignment(logk, lengths_x, lengths_y, table=True, backend=backend)


def hard_alignment_table(cost: Tensor) -> Tensor:
    """Accumulated cost of the best alignment of every prefix pair: (P, N, M) -> (P, N, M).

    ``out[p, i, j] = cost[p, i, j] + min(out[i-1, j], out[i, j-1], out[i-1, j-1])`` (DTW).
    Not differentiable: callers differentiate the sum of ``cost`` along the recovered path.
    """
    p, n, m = cost.shape
    c = cost.detach().permute(1, 2, 0).contiguous()
    r = torch.full((n + 1, m + 1, p), float("inf"), dtype=cost.dtype, device=cost.device)
    r[0, 0].fill_(0.0)
    for d in range(2, n + m + 1):
        lo, hi = _bounds(d, n, m)
        out = _diagonal(r, d, lo, hi)
        torch.minimum(_diagonal(r, d - 1, lo - 1, hi - 1), _diagonal(r, d - 1, lo, hi), out=out)
        torch.minimum(out, _diagonal(r, d - 2, lo - 1, hi - 1), out=out)
        out.add_(_diagonal(c, d, lo, hi, shift=1))
    return r[1:, 1:].permute(2, 0, 1)
