"""The soft alignment DP of :mod:`sugar.align._dp` as compiled CPU kernels (numba).

Shapes: P pairs, N and M the (padded) lengths of the two sequences of each pair, L = ``LANES``.

Why hand-written: no library runs this DP over "P pairs -> P values" with a backward (see
KERNEL_NOTES.md). Why numba and not a C++ torch extension: numba is already installed with the
project (tslearn needs it) and ships as a wheel, so nothing is built at install time and no
compiler is needed; its machine code is cached on disk (``cache=True``): measured here, the
first call of a fresh cache compiles for 7-25 s per dtype (2 loaded cores), later processes
load it in about a second. A torch C++ extension would need a compiler at install time and a
build against torch's headers; it was not built or timed for this choice.

Layout and vectorisation. The pairs are processed in blocks of L lanes; within a block every
cell (i, j) is one L-wide vector operation over the block's pairs, so the recursion along j runs
L independent chains at once. ``exp`` and ``log`` are the vectorisable polynomials of
:mod:`sugar.align._fastmath`. The DP computes in the input's dtype, as the torch path does
(float32 gets twice the lanes per instruction).

Input. ``kind = LINEAR``: the input is a log kernel, ``K = scale * input`` (soft-DTW passes its
cost and ``-1 / gamma``). ``kind = GAK``: the input is GAK's ground distance phi and the kernel
computes ``K = log k = -t - log(2 - exp(-t))``, ``t = scale * phi`` (``scale = 1 / (2 sigma^2)``)
while loading it, so the local kernel is never materialised (and its gradient,
``dK/dphi = -2 scale / (2 - exp(-t))``, is applied while writing the result). ``scale`` is per
pair. K is 0 beyond a pair's lengths.

Forward: ``V[i, j] = K[i, j] + log(exp V[i-1, j] + exp V[i, j-1] + exp V[i-1, j-1])``. Without a
gradient the largest term is exp(0) = 1 and two ``exp`` per cell remain. With a gradient the
forward also stores the shares of the up and left predecessors in each cell's sum (the same two
``exp`` and one division per cell), and the backward (Cuturi & Blondel 2017) is then ``exp``-free:
with ``G = dLoss/dV`` and successors s of (i, j), ``E[i, j] = G[i, j] + sum_s E[s] share(s <-
(i, j))``, ``dLoss/dK = E`` inside the lengths, exactly 0 outside. (The first version kept V
and recomputed the shares in the backward, three ``exp`` per cell: the backward took 4-5x the
forward.) Tables carry an extra row and column beyond the grid (V huge, shares 0) so that the
border cells need no branches.
"""

from __future__ import annotations

import os
from typing import Any

import numba
import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from sugar.align._buffers import empty as _empty
from sugar.align._fastmath import JIT, exp_, gak_log_kernel_, gak_slope_, log1p_, one_

__all__ = [
    "GAK",
    "LANES",
    "LINEAR",
    "CompiledLogAlignment",
    "backward",
    "compile_kernels",
    "forward",
]

LANES = 64
LINEAR = 0
"""``kind``: the input is a log kernel, K = scale * input."""
GAK = 1
"""``kind``: the input is GAK's ground distance phi, K = log k(scale * phi)."""
_BIG = 1e30  # "minus infinity" of the borders (finite: fastmath assumes no inf)

if "NUMBA_THREADING_LAYER" not in os.environ:
    # numba's default OpenMP layer slowed later torch ops 2-3x in the same process
    # (KERNEL_NOTES.md); the workqueue layer does not. Only read when a parallel kernel first
    # runs, and only set when the user has not chosen a layer.
    numba.config.THREADING_LAYER = "workqueue"  # type: ignore[attr-defined]


@numba.njit(inline="always", **JIT)
def _block(lx, ly, scales, p0, w):
    """The block's lengths and scales as local (L,) arrays (0 for lanes beyond P)."""
    bx = np.zeros(LANES, np.int64)
    by = np.zeros(LANES, np.int64)
    bs = np.zeros(LANES, scales.dtype)
    for ln in range(w):
        bx[ln] = lx[p0 + ln]
        by[ln] = ly[p0 + ln]
        bs[ln] = scales[p0 + ln]
    return bx, by, bs


@numba.njit(inline="always", **JIT)
def _load(src, bx, by, bs, kind, p0, w, kk):
    """kk[i, j, l] = K of pair p0 + l at (i, j) inside its lengths, else 0.

    Written as selects over contiguous local arrays so that it vectorises: the first version,
    reading the lengths by pair index with a short-circuit ``and``, took 3/4 of the forward.
    """
    n, m, _ = src.shape
    for i in range(n):
        for j in range(m):
            row = kk[i, j]
            x = src[i, j, p0 : p0 + w]
            if kind == LINEAR:
                for ln in range(w):
                    inside = (i < bx[ln]) & (j < by[ln])
                    row[ln] = bs[ln] * x[ln] if inside else 0.0
            else:
                for ln in range(w):
                    inside = (i < bx[ln]) & (j < by[ln])
                    row[ln] = gak_log_kernel_(bs[ln] * x[ln]) if inside else 0.0
            for ln in range(w, LANES):
                row[ln] = 0.0


@numba.njit(inline="always", **JIT)
def _row(prev, cur, carry, k_row, m):
    """V of one row from the row above, without shares: two exp and one log per cell."""
    for j in range(1, m + 1):
        c = cur[j]
        up = prev[j]
        dg = prev[j - 1]
        k = k_row[j - 1]
        for ln in range(LANES):
            a = up[ln]
            b = carry[ln]
            d = dg[ln]
            hi = a if a > b else b
            lo = b if a > b else a
            t = hi if hi > d else d  # the largest term is exp(t - t) = 1
            mid = hi if hi < d else d
            mid = mid if mid > lo else lo  # the median
            lo = lo if lo < d else d
            x = t + log1p_(exp_(mid - t) + exp_(lo - t)) + k[ln]
            carry[ln] = x
            c[ln] = x


@numba.njit(inline="always", **JIT)
def _row_with_shares(prev, cur, carry, k_row, up_share, left_share, m):
    """V of one row and the shares of each cell's up and left predecessors in its sum (two
    exp, one log and one division per cell; computing the three terms took 3 exp)."""
    for j in range(1, m + 1):
        c = cur[j]
        up = prev[j]
        dg = prev[j - 1]
        k = k_row[j - 1]
        su = up_share[j]
        sl = left_share[j]
        for ln in range(LANES):
            a = up[ln]
            b = carry[ln]
            d = dg[ln]
            hi = a if a > b else b
            lo = b if a > b else a
            t = hi if hi > d else d
            mid = hi if hi < d else d
            mid = mid if mid > lo else lo
            lo = lo if lo < d else d
            e_mid = exp_(mid - t)  # two exp, as without shares: the largest term is 1
            e_lo = exp_(lo - t)
            x = t + log1p_(e_mid + e_lo) + k[ln]
            inv = one_(x) / (one_(x) + e_mid + e_lo)
            # each predecessor's term, found by its value (equal values have equal terms)
            ea = one_(x) if a >= t else (e_mid if a >= mid else e_lo)
            eb = one_(x) if b >= t else (e_mid if b >= mid else e_lo)
            su[ln] = ea * inv
            sl[ln] = eb * inv
            carry[ln] = x
            c[ln] = x


@numba.njit(**JIT)
def _forward_block(src, lx, ly, scales, kind, b, values, table, shares):
    """One block of pairs: end values into ``values``; V into ``table[b]`` and the shares into
    ``shares[b]`` unless those are empty."""
    n, m, p = src.shape
    p0 = b * LANES
    w = min(LANES, p - p0)
    bx, by, bs = _block(lx, ly, scales, p0, w)
    dtype = values.dtype
    kk = np.empty((n, m, LANES), dtype)
    _load(src, bx, by, bs, kind, p0, w, kk)
    keep_table = table.shape[0] > 0
    keep_shares = shares.shape[0] > 0
    # The recursion runs in local rows, and the value of the cell to the left is carried in its
    # own array: with `table` (an argument) or the row being written as an operand, LLVM's
    # run-time alias checks failed and the loop ran unvectorised, 4-5x slower.
    prev = np.empty((m + 2, LANES), dtype)
    cur = np.empty((m + 2, LANES), dtype)
    up_share = np.zeros((m + 2, LANES), dtype)  # columns 0 and m + 1 stay 0
    left_share = np.zeros((m + 2, LANES), dtype)
    carry = np.empty(LANES, dtype)
    for ln in range(LANES):
        prev[0, ln] = 0.0
    for j in range(1, m + 2):
        for ln in range(LANES):
            prev[j, ln] = -_BIG
    if keep_table:
        table[b, 0] = prev
    if keep_shares:
        shares[b, :, 0] = 0.0
        shares[b, :, n + 1] = 0.0  # the row beyond the grid
    for i in range(1, n + 1):
        for ln in range(LANES):
            cur[0, ln] = -_BIG
            carry[ln] = -_BIG
        if keep_shares:
            _row_with_shares(prev, cur, carry, kk[i - 1], up_share, left_share, m)
            shares[b, 0, i] = up_share
            shares[b, 1, i] = left_share
        else:
            _row(prev, cur, carry, kk[i - 1], m)
        for ln in range(LANES):
            cur[m + 1, ln] = _BIG  # the column beyond the grid
        if keep_table:
            table[b, i] = cur
        for ln in range(w):
            if lx[p0 + ln] == i:
                values[p0 + ln] = cur[ly[p0 + ln], ln]
        prev, cur = cur, prev
    if keep_table:
        table[b, n + 1] = _BIG  # the row beyond the grid


@numba.njit(**JIT)
def _backward_block(src, lx, ly, scales, kind, b, shares, grid, seeds, out):
    """One block of the E recursion: seeds on every cell (``grid``) or at the ends (``seeds``)."""
    n, m, p = src.shape
    p0 = b * LANES
    w = min(LANES, p - p0)
    bx, by, bs = _block(lx, ly, scales, p0, w)
    dtype = out.dtype
    # As in the forward, the inner loop reads local arrays and writes two others (E of the row,
    # and E of the cell to the right carried in its own array), so that LLVM's alias checks pass.
    up_next = np.zeros((m + 2, LANES), dtype)  # shares of row i + 1
    left_next = np.zeros((m + 2, LANES), dtype)
    left_here = np.zeros((m + 2, LANES), dtype)  # left shares of row i
    g = np.zeros((m + 2, LANES), dtype)  # G of row i
    here = np.zeros((m + 2, LANES), dtype)  # column m + 1 stays 0: E beyond the grid
    after = np.zeros((m + 2, LANES), dtype)  # row i + 1 (starts as the row beyond)
    carry = np.empty(LANES, dtype)
    use_grid = grid.shape[0] > 0
    for i in range(n, 0, -1):
        if use_grid:
            # every cell, padding included: cells beyond the lengths depend on cells inside
            for j in range(m):
                src_g = grid[i - 1, j, p0 : p0 + w]
                dst = g[j + 1]
                for ln in range(w):
                    dst[ln] = src_g[ln]
        else:
            g[:] = 0.0
            for ln in range(w):
                if bx[ln] == i:
                    g[by[ln], ln] = seeds[p0 + ln]
        up_next[:] = shares[b, 0, i + 1]
        left_next[:] = shares[b, 1, i + 1]
        left_here[:] = shares[b, 1, i]
        for ln in range(LANES):
            carry[ln] = 0.0
        for jj in range(m):  # j = m..1 (a reversed range() kept LLVM from vectorising)
            j = m - jj
            gj = g[j]
            a = after[j]
            ad = after[j + 1]
            su = up_next[j]
            sud = up_next[j + 1]
            sld = left_next[j + 1]
            sl = left_here[j + 1]
            h = here[j]
            for ln in range(LANES):
                e = (
                    gj[ln]
                    + a[ln] * su[ln]
                    + carry[ln] * sl[ln]
                    + ad[ln] * (one_(sud[ln]) - sud[ln] - sld[ln])
                )
                carry[ln] = e
                h[ln] = e
        for j in range(m):
            e_row = here[j + 1]
            dst = out[i - 1, j, p0 : p0 + w]
            if kind == LINEAR:
                for ln in range(w):
                    inside = (i <= bx[ln]) & (j < by[ln])
                    dst[ln] = bs[ln] * e_row[ln] if inside else 0.0
            else:
                x = src[i - 1, j, p0 : p0 + w]
                for ln in range(w):
                    inside = (i <= bx[ln]) & (j < by[ln])
                    slope = bs[ln] * gak_slope_(bs[ln] * x[ln])
                    dst[ln] = slope * e_row[ln] if inside else 0.0
        here, after = after, here


@numba.njit(**JIT)
def _forward_serial(src, lx, ly, scales, kind, values, table, shares):
    for b in range((src.shape[2] + LANES - 1) // LANES):
        _forward_block(src, lx, ly, scales, kind, b, values, table, shares)


@numba.njit(parallel=True, **JIT)
def _forward_parallel(src, lx, ly, scales, kind, values, table, shares):
    for b in numba.prange((src.shape[2] + LANES - 1) // LANES):
        _forward_block(src, lx, ly, scales, kind, b, values, table, shares)


@numba.njit(**JIT)
def _backward_serial(src, lx, ly, scales, kind, shares, grid, seeds, out):
    for b in range((src.shape[2] + LANES - 1) // LANES):
        _backward_block(src, lx, ly, scales, kind, b, shares, grid, seeds, out)


@numba.njit(parallel=True, **JIT)
def _backward_parallel(src, lx, ly, scales, kind, shares, grid, seeds, out):
    for b in numba.prange((src.shape[2] + LANES - 1) // LANES):
        _backward_block(src, lx, ly, scales, kind, b, shares, grid, seeds, out)


def _set_threads(threads: int) -> bool:
    """Whether to run the parallel kernels (and with how many of numba's threads)."""
    if threads <= 1:
        return False
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    return True


def forward(
    src: np.ndarray,
    lx: np.ndarray,
    ly: np.ndarray,
    scales: np.ndarray,
    kind: int,
    values: np.ndarray,
    table: np.ndarray,
    shares: np.ndarray,
    threads: int,
) -> None:
    """Fill ``values`` (P,) from the (N, M, P) C-contiguous input ``src`` (see ``kind``).

    ``table`` is (ceil(P / L), N + 2, M + 2, L) (V of every cell: ``table[b, i, j, l]`` is
    V[i, j] of pair ``b * L + l``) and ``shares`` (ceil(P / L), 2, N + 2, M + 2, L) (for the
    backward), each empty (zero-sized first dimension) when not wanted.
    """
    run = _forward_parallel if _set_threads(threads) else _forward_serial
    run(src, lx, ly, scales, kind, values, table, shares)


def backward(
    src: np.ndarray,
    lx: np.ndarray,
    ly: np.ndarray,
    scales: np.ndarray,
    kind: int,
    shares: np.ndarray,
    grid: np.ndarray,
    seeds: np.ndarray,
    out: np.ndarray,
    threads: int,
) -> None:
    """dLoss/dsrc into ``out`` (N, M, P): ``grid`` (N, M, P) seeds every cell (or is empty,
    (0, 0, 0)), else ``seeds`` (P,) seed each pair's end cell (lengths ``lx``, ``ly``)."""
    run = _backward_parallel if _set_threads(threads) else _backward_serial
    run(src, lx, ly, scales, kind, shares, grid, seeds, out)


class CompiledLogAlignment(torch.autograd.Function):
    """:func:`sugar.align._dp.log_alignment` on CPU float32/float64 through the kernels above;
    with ``kind = GAK`` the input is GAK's ground distance and ``scale`` is 1 / (2 sigma^2)."""

    @staticmethod
    def forward(
        ctx: Any,
        src: Tensor,
        lengths_x: Tensor | None,
        lengths_y: Tensor | None,
        table: bool,
        scale: float | Tensor,
        kind: int = LINEAR,
    ) -> Tensor:
        p, n, m = src.shape
        data = src.detach().permute(1, 2, 0).contiguous()  # no copy when pairs are innermost
        lx = _lengths(lengths_x, p, n)
        ly = _lengths(lengths_y, p, m)
        scales = _scales(scale, p, data.dtype)
        blocks = (p + LANES - 1) // LANES
        dtype = data.dtype
        v = _empty((blocks, n + 2, m + 2, LANES) if table else (0, 0, 0, 0), dtype)
        grad = ctx.needs_input_grad[0]
        shares = _empty((blocks, 2, n + 2, m + 2, LANES) if grad else (0, 0, 0, 0, 0), dtype)
        values = torch.empty(p, dtype=dtype)
        arrays = (data.numpy(), lx.numpy(), ly.numpy(), scales.numpy(), kind, values.numpy())
        forward(*arrays, v.numpy(), shares.numpy(), torch.get_num_threads())
        ctx.kind = kind
        ctx.table = table
        ctx.save_for_backward(data, lx, ly, scales, shares)
        if not table:
            return values
        return v[:, 1 : n + 1, 1 : m + 1].permute(0, 3, 1, 2).reshape(-1, n, m)[:p]

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None, None, None]:
        data, lx, ly, scales, shares = ctx.saved_tensors
        n, m, p = data.shape
        grad = grad.to(data.dtype)
        if ctx.table:
            grid = grad.permute(1, 2, 0).contiguous()
            seeds = torch.zeros(0, dtype=data.dtype)
        else:
            grid = torch.zeros((0, 0, 0), dtype=data.dtype)
            seeds = grad.contiguous()
        out = _empty((n, m, p), data.dtype)
        arrays = (data.numpy(), lx.numpy(), ly.numpy(), scales.numpy(), ctx.kind)
        backward(*arrays, shares.numpy(), grid.numpy(), seeds.numpy(), out.numpy(),
                 torch.get_num_threads())  # fmt: skip
        return out.permute(2, 0, 1), None, None, None, None, None


def _lengths(lengths: Tensor | None, p: int, full: int) -> Tensor:
    """(P,) int64 lengths on the CPU (``full`` when not given)."""
    if lengths is None:
        return torch.full((p,), full, dtype=torch.int64)
    return lengths.to(device="cpu", dtype=torch.int64).contiguous()


def _scales(scale: float | Tensor, p: int, dtype: torch.dtype) -> Tensor:
    """(P,) per-pair scales from a float or a tensor of P values (any shape)."""
    if isinstance(scale, Tensor):
        flat = scale.detach().to(device="cpu", dtype=dtype).reshape(-1)
        if flat.numel() == 1:
            return flat.expand(p).contiguous()
        if flat.numel() != p:
            raise ValueError(f"scale must hold 1 or {p} values (one per pair), got {flat.numel()}")
        return flat.contiguous()
    return torch.full((p,), float(scale), dtype=dtype)


def compile_kernels() -> None:
    """Compile (or load from numba's on-disk cache) the single-threaded kernels (the DP and the
    Triple-Kernel cost's assembly) for float32 and float64, so that the first alignment call
    does not pay the compilation (scripts/setup.sh)."""
    from sugar.align._fused_cost import fused_triple_kernel_cost
    from sugar.align.kernels import SliceEmbeddings, TypeMedians

    for dtype in (torch.float32, torch.float64):
        for kind in (LINEAR, GAK):
            for table in (False, True):
                src = torch.ones(2, 2, 3, dtype=dtype, requires_grad=True)
                out = CompiledLogAlignment.apply(src, None, torch.tensor([2, 1]), table, 0.5, kind)
                out.sum().backward()
        vectors = torch.ones(2, 2, 1, dtype=dtype)
        slices = SliceEmbeddings(vectors, vectors, vectors, torch.eye(2, dtype=torch.bool),
                                 torch.tensor([2, 1]))  # fmt: skip
        fused_triple_kernel_cost(slices, slices, TypeMedians())
