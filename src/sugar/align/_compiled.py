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
L independent chains at once. ``exp`` and
``log`` are written here as polynomials (:func:`_exp64`, :func:`_log64`, :func:`_exp32`,
:func:`_log32`, accurate to a few ulp) because LLVM vectorises them, while calls to libm's
would stay scalar (numba has no vector math library without Intel's SVML). The DP computes in
the input's dtype, as the torch path does (float32 gets twice the lanes per instruction).
``error_model="numpy"`` keeps float divisions free of Python's zero-division check, which would
stop vectorisation.

Forward: ``V[i, j] = K[i, j] + log(exp V[i-1, j] + exp V[i, j-1] + exp V[i-1, j-1])`` with
``K = scale * logk`` (0 beyond a pair's lengths). Backward (Cuturi & Blondel 2017): with
``G = dLoss/dV`` and successors s of (i, j), ``E[i, j] = G[i, j] + sum_s E[s] exp(V[i, j] +
K[s] - V[s])`` (the share of (i, j) in the log-sum-exp of s), and ``dLoss/dlogk = scale * E``
inside the lengths, exactly 0 outside. The forward keeps V in a (blocks, N + 2, M + 2, L)
table whose extra row and column hold a huge V, so that their shares vanish without branches.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numba
import numpy as np
import torch
from numba.extending import overload
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["LANES", "CompiledLogAlignment", "backward", "compile_kernels", "forward"]

LANES = 64
_BIG = 1e30  # "minus infinity" of the borders (finite: fastmath assumes no inf)
_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453
_LN2_HI = 0.693145751953125
_LN2_LO = 1.4286068203094173e-06
_SQRT2 = 1.4142135623730951

_JIT: dict[str, Any] = dict(error_model="numpy", fastmath=True, nogil=True, cache=True)

if "NUMBA_THREADING_LAYER" not in os.environ:
    # numba's default OpenMP layer slowed later torch ops 2-3x in the same process
    # (KERNEL_NOTES.md); the workqueue layer does not. Only read when a parallel kernel first
    # runs, and only set when the user has not chosen a layer.
    numba.config.THREADING_LAYER = "workqueue"  # type: ignore[attr-defined]


@numba.njit(inline="always", **_JIT)
def _exp64(x):
    """exp(x) for float64 x <= ~0 (below -700 gives exp(-700)): a vectorisable polynomial."""
    x = x if not (x < -700.0) else -700.0  # written so that NaN stays NaN
    k = np.floor(x * _LOG2E + 0.5)
    r = x - k * _LN2_HI - k * _LN2_LO  # |r| <= ln(2) / 2
    p = 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    return p * np.int64((np.int64(k) + 1023) << 52).view(np.float64)  # times 2^k


@numba.njit(inline="always", **_JIT)
def _log64(s):
    """log(s) for finite float64 s > 0: exponent bits, then 2 atanh((m - 1) / (m + 1))."""
    bits = np.float64(s).view(np.int64)
    e = np.float64((bits >> 52) - 1023)
    m = np.int64((bits & 0xFFFFFFFFFFFFF) | 0x3FF0000000000000).view(np.float64)  # [1, 2)
    big = 1.0 if m > _SQRT2 else 0.0
    m = m * (1.0 - 0.5 * big)  # [0.707, 1.414)
    e = e + big
    z = (m - 1.0) / (m + 1.0)
    z2 = z * z
    q = 1.0 / 21.0
    q = q * z2 + 1.0 / 19.0
    q = q * z2 + 1.0 / 17.0
    q = q * z2 + 1.0 / 15.0
    q = q * z2 + 1.0 / 13.0
    q = q * z2 + 1.0 / 11.0
    q = q * z2 + 1.0 / 9.0
    q = q * z2 + 1.0 / 7.0
    q = q * z2 + 1.0 / 5.0
    q = q * z2 + 1.0 / 3.0
    q = q * z2 + 1.0
    return e * _LN2 + 2.0 * z * q


# float32 versions: every constant is a float32 global (a float literal would promote to float64)
_F = np.float32
_F_MIN_X, _F_HALF, _F_ONE, _F_TWO = _F(-87.0), _F(0.5), _F(1.0), _F(2.0)
_F_LOG2E, _F_LN2, _F_SQRT2 = _F(_LOG2E), _F(_LN2), _F(_SQRT2)
_F_LN2_HI, _F_LN2_LO = _F(0.693359375), _F(-2.12194440e-4)
_F_E2, _F_E3, _F_E4, _F_E5, _F_E6, _F_E7 = (_F(1 / math.factorial(k)) for k in range(2, 8))
_F_L3, _F_L5, _F_L7, _F_L9 = _F(1 / 3), _F(1 / 5), _F(1 / 7), _F(1 / 9)


@numba.njit(inline="always", **_JIT)
def _exp32(x):
    """exp(x) for float32 x <= ~0 (below -87 gives exp(-87)), to about 1e-7 relative."""
    x = x if not (x < _F_MIN_X) else _F_MIN_X
    k = np.floor(x * _F_LOG2E + _F_HALF)
    r = x - k * _F_LN2_HI - k * _F_LN2_LO
    p = _F_E7
    p = p * r + _F_E6
    p = p * r + _F_E5
    p = p * r + _F_E4
    p = p * r + _F_E3
    p = p * r + _F_E2
    p = p * r + _F_ONE
    p = p * r + _F_ONE
    return p * np.int32((np.int32(k) + 127) << 23).view(np.float32)


@numba.njit(inline="always", **_JIT)
def _log32(s):
    """log(s) for finite float32 s > 0, to about 1e-7 relative."""
    bits = np.float32(s).view(np.int32)
    e = np.float32((bits >> 23) - 127)
    m = np.int32((bits & 0x7FFFFF) | 0x3F800000).view(np.float32)
    big = _F_ONE if m > _F_SQRT2 else _F(0.0)
    m = m * (_F_ONE - _F_HALF * big)
    e = e + big
    z = (m - _F_ONE) / (m + _F_ONE)
    z2 = z * z
    q = _F_L9
    q = q * z2 + _F_L7
    q = q * z2 + _F_L5
    q = q * z2 + _F_L3
    q = q * z2 + _F_ONE
    return e * _F_LN2 + _F_TWO * z * q


def _exp(x):
    """exp in the precision of x: resolved at compile time by the overload below."""
    raise NotImplementedError("only callable from numba-compiled code")


def _log1p(x):
    """log(1 + x) in the precision of x: resolved at compile time by the overload below."""
    raise NotImplementedError("only callable from numba-compiled code")


@overload(_exp)
def _exp_overload(x):
    return (lambda x: _exp32(x)) if x == numba.types.float32 else (lambda x: _exp64(x))


@overload(_log1p)
def _log1p_overload(x):
    if x == numba.types.float32:
        return lambda x: _log32(x + _F_ONE)
    return lambda x: _log64(x + 1.0)


@numba.njit(inline="always", **_JIT)
def _block_lengths(lx, ly, p0, w):
    """The block's lengths as local (L,) arrays (0 for lanes beyond P)."""
    bx = np.zeros(LANES, np.int64)
    by = np.zeros(LANES, np.int64)
    for ln in range(w):
        bx[ln] = lx[p0 + ln]
        by[ln] = ly[p0 + ln]
    return bx, by


@numba.njit(inline="always", **_JIT)
def _load(lk, bx, by, scale, p0, w, kk):
    """kk[i, j, l] = scale * lk[i, j, p0 + l] inside pair p0 + l's lengths, else 0.

    Written as selects over contiguous local arrays so that it vectorises: the first version,
    reading the lengths by pair index with a short-circuit ``and``, took 3/4 of the forward.
    """
    n, m, _ = lk.shape
    for i in range(n):
        for j in range(m):
            row = kk[i, j]
            src = lk[i, j, p0 : p0 + w]
            for ln in range(w):
                inside = (i < bx[ln]) & (j < by[ln])
                row[ln] = scale * src[ln] if inside else 0.0
            for ln in range(w, LANES):
                row[ln] = 0.0


@numba.njit(**_JIT)
def _forward_block(lk, lx, ly, scale, b, values, table, rolling):
    """One block of pairs: end values into ``values``, and V into ``table[b]`` unless rolling."""
    n, m, p = lk.shape
    p0 = b * LANES
    w = min(LANES, p - p0)
    bx, by = _block_lengths(lx, ly, p0, w)
    kk = np.empty((n, m, LANES), table.dtype)
    _load(lk, bx, by, scale, p0, w, kk)
    # The recursion runs in local rows, and the value of the cell to the left is carried in its
    # own array: with `table` (an argument) or the row being written as an operand, LLVM's
    # run-time alias checks failed and the loop ran unvectorised, 4-5x slower.
    prev = np.empty((m + 2, LANES), table.dtype)
    cur = np.empty((m + 2, LANES), table.dtype)
    carry = np.empty(LANES, table.dtype)
    for ln in range(LANES):
        prev[0, ln] = 0.0
    for j in range(1, m + 2):
        for ln in range(LANES):
            prev[j, ln] = -_BIG
    if not rolling:
        table[b, 0] = prev
    for i in range(1, n + 1):
        for ln in range(LANES):
            cur[0, ln] = -_BIG
            carry[ln] = -_BIG
        for j in range(1, m + 1):
            c = cur[j]
            up = prev[j]
            dg = prev[j - 1]
            k = kk[i - 1, j - 1]
            for ln in range(LANES):
                a = up[ln]
                b2 = carry[ln]
                d = dg[ln]
                hi = a if a > b2 else b2
                lo = b2 if a > b2 else a
                t = hi if hi > d else d  # the largest term is exp(t - t) = 1
                mid = hi if hi < d else d
                mid = mid if mid > lo else lo  # the median
                lo = lo if lo < d else d
                x = t + _log1p(_exp(mid - t) + _exp(lo - t)) + k[ln]
                carry[ln] = x
                c[ln] = x
        for ln in range(LANES):
            cur[m + 1, ln] = _BIG  # the column beyond the grid (read by the backward)
        if not rolling:
            table[b, i] = cur
        for ln in range(w):
            if lx[p0 + ln] == i:
                values[p0 + ln] = cur[ly[p0 + ln], ln]
        prev, cur = cur, prev
    if not rolling:
        table[b, n + 1] = _BIG  # the row beyond the grid


@numba.njit(**_JIT)
def _backward_block(lk, lx, ly, scale, b, table, grid, seeds, out):
    """One block of the E recursion: seeds on every cell (``grid``) or at the ends (``seeds``)."""
    n, m, p = lk.shape
    p0 = b * LANES
    w = min(LANES, p - p0)
    bx, by = _block_lengths(lx, ly, p0, w)
    kk = np.zeros((n + 1, m + 1, LANES), table.dtype)
    _load(lk, bx, by, scale, p0, w, kk[:n, :m])  # row n and column m stay 0
    # As in the forward, the inner loop reads a few local arrays and writes two others (E of
    # the row, and E of the cell to the right carried in its own array), so that LLVM's
    # run-time alias checks pass. rows[0/1]: V of row i / i + 1 by parity; rows[2]: G of row i.
    rows = np.zeros((3, m + 2, LANES), table.dtype)
    rows[(n + 1) & 1] = table[b, n + 1]
    here = np.zeros((m + 2, LANES), table.dtype)  # column m + 1 stays 0: E beyond the grid
    after = np.zeros((m + 2, LANES), table.dtype)  # row i + 1 (starts as the row beyond)
    carry = np.empty(LANES, table.dtype)
    use_grid = grid.shape[0] > 0
    g = rows[2]
    for i in range(n, 0, -1):
        if use_grid:
            # every cell, padding included: cells beyond the lengths depend on cells inside
            for j in range(m):
                src = grid[i - 1, j, p0 : p0 + w]
                dst = g[j + 1]
                for ln in range(w):
                    dst[ln] = src[ln]
        else:
            g[:] = 0.0
            for ln in range(w):
                if bx[ln] == i:
                    g[by[ln], ln] = seeds[p0 + ln]
        rows[i & 1] = table[b, i]
        vi = rows[i & 1]
        vn = rows[(i + 1) & 1]
        knext = kk[i]  # K of row i + 1 (zeros beyond the grid)
        kcur = kk[i - 1]
        for ln in range(LANES):
            carry[ln] = 0.0
        for jj in range(m):  # j = m..1 (a reversed range() kept LLVM from vectorising)
            j = m - jj
            x = vi[j]
            gj = g[j]
            vd = vn[j]
            vdd = vn[j + 1]
            vr = vi[j + 1]
            kd = knext[j - 1]
            kr = kcur[j]  # column m is 0
            kdd = knext[j]
            a = after[j]
            ad = after[j + 1]
            h = here[j]
            for ln in range(LANES):
                xv = x[ln]
                e = (
                    gj[ln]
                    + a[ln] * _exp(xv + kd[ln] - vd[ln])
                    + carry[ln] * _exp(xv + kr[ln] - vr[ln])
                    + ad[ln] * _exp(xv + kdd[ln] - vdd[ln])
                )
                carry[ln] = e
                h[ln] = e
        for j in range(m):
            src = here[j + 1]
            dst = out[i - 1, j, p0 : p0 + w]
            for ln in range(w):
                inside = (i <= bx[ln]) & (j < by[ln])
                dst[ln] = scale * src[ln] if inside else 0.0
        here, after = after, here


@numba.njit(**_JIT)
def _forward_serial(lk, lx, ly, scale, values, table, rolling):
    for b in range((lk.shape[2] + LANES - 1) // LANES):
        _forward_block(lk, lx, ly, scale, b, values, table, rolling)


@numba.njit(parallel=True, **_JIT)
def _forward_parallel(lk, lx, ly, scale, values, table, rolling):
    for b in numba.prange((lk.shape[2] + LANES - 1) // LANES):
        _forward_block(lk, lx, ly, scale, b, values, table, rolling)


@numba.njit(**_JIT)
def _backward_serial(lk, lx, ly, scale, table, grid, seeds, out):
    for b in range((lk.shape[2] + LANES - 1) // LANES):
        _backward_block(lk, lx, ly, scale, b, table, grid, seeds, out)


@numba.njit(parallel=True, **_JIT)
def _backward_parallel(lk, lx, ly, scale, table, grid, seeds, out):
    for b in numba.prange((lk.shape[2] + LANES - 1) // LANES):
        _backward_block(lk, lx, ly, scale, b, table, grid, seeds, out)


def forward(
    lk: np.ndarray,
    lx: np.ndarray,
    ly: np.ndarray,
    scale: float,
    values: np.ndarray,
    table: np.ndarray,
    threads: int,
) -> None:
    """Fill ``values`` (P,) and ``table`` from (N, M, P) C-contiguous log kernels ``lk``.

    ``table`` is (ceil(P / L), N + 2, M + 2, L) (V of every cell, for the backward or the
    prefix values; ``table[b, i, j, l]`` is V[i, j] of pair ``b * L + l``), or
    empty (0, 0, 0, 0) for a forward that only needs the end values.
    """
    rolling = table.shape[0] == 0
    if threads > 1:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
        _forward_parallel(lk, lx, ly, scale, values, table, rolling)
    else:
        _forward_serial(lk, lx, ly, scale, values, table, rolling)


def backward(
    lk: np.ndarray,
    lx: np.ndarray,
    ly: np.ndarray,
    scale: float,
    table: np.ndarray,
    grid: np.ndarray,
    seeds: np.ndarray,
    out: np.ndarray,
    threads: int,
) -> None:
    """dLoss/dlogk into ``out`` (N, M, P): ``grid`` (N, M, P) seeds every cell (or is empty,
    (0, 0, 0)), else ``seeds`` (P,) seed each pair's end cell (lengths ``lx``, ``ly``)."""
    if threads > 1:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
        _backward_parallel(lk, lx, ly, scale, table, grid, seeds, out)
    else:
        _backward_serial(lk, lx, ly, scale, table, grid, seeds, out)


class CompiledLogAlignment(torch.autograd.Function):
    """:func:`sugar.align._dp.log_alignment` on CPU float32/float64 through the kernels above."""

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
        lk = logk.detach().permute(1, 2, 0).contiguous()  # no copy when pairs are innermost
        lx = _lengths(lengths_x, p, n)
        ly = _lengths(lengths_y, p, m)
        keep_table = table or ctx.needs_input_grad[0]
        blocks = (p + LANES - 1) // LANES
        shape = (blocks, n + 2, m + 2, LANES) if keep_table else (0, 0, 0, 0)
        v = torch.empty(shape, dtype=lk.dtype)
        values = torch.empty(p, dtype=lk.dtype)
        threads = torch.get_num_threads()
        forward(lk.numpy(), lx.numpy(), ly.numpy(), scale, values.numpy(), v.numpy(), threads)
        ctx.scale = scale
        ctx.table = table
        ctx.save_for_backward(lk, lx, ly, v)
        if not table:
            return values
        return v[:, 1 : n + 1, 1 : m + 1].permute(0, 3, 1, 2).reshape(-1, n, m)[:p]

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None, None]:
        lk, lx, ly, v = ctx.saved_tensors
        n, m, p = lk.shape
        grad = grad.to(lk.dtype)
        if ctx.table:
            grid = grad.permute(1, 2, 0).contiguous()
            seeds = torch.zeros(0, dtype=lk.dtype)
        else:
            grid = torch.zeros((0, 0, 0), dtype=lk.dtype)
            seeds = grad.contiguous()
        out = torch.empty((n, m, p), dtype=lk.dtype)
        backward(
            lk.numpy(),
            lx.numpy(),
            ly.numpy(),
            ctx.scale,
            v.numpy(),
            grid.numpy(),
            seeds.numpy(),
            out.numpy(),
            torch.get_num_threads(),
        )
        return out.permute(2, 0, 1), None, None, None, None


def _lengths(lengths: Tensor | None, p: int, full: int) -> Tensor:
    """(P,) int64 lengths on the CPU (``full`` when not given)."""
    if lengths is None:
        return torch.full((p,), full, dtype=torch.int64)
    return lengths.to(device="cpu", dtype=torch.int64).contiguous()


def compile_kernels() -> None:
    """Compile (or load from numba's on-disk cache) the single-threaded kernels for float32 and
    float64, so that the first alignment call does not pay the compilation (scripts/setup.sh)."""
    for dtype in (torch.float32, torch.float64):
        for table in (False, True):
            logk = torch.zeros(2, 2, 3, dtype=dtype, requires_grad=True)
            out = CompiledLogAlignment.apply(logk, None, torch.tensor([2, 1]), table, -1.0)
            out.sum().backward()
        with torch.no_grad():
            CompiledLogAlignment.apply(torch.zeros(1, 2, 2, dtype=dtype), None, None, False, 1.0)
