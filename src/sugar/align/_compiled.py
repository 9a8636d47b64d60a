"""The soft alignment DP of :mod:`sugar.align._dp` as compiled CPU kernels (numba).

Shapes: P pairs, N and M the (padded) lengths of the two sequences of each pair, L = ``LANES``.

Why hand-written: no library runs this DP over "P pairs -> P values" with a backward (see
KERNEL_NOTES.md). Why numba and not a C++ torch extension: numba is already installed with the
project (tslearn needs it), compiles without a system compiler, caches its machine code on disk
(``cache=True``: a second process loads it in well under a second), and was within noise of
gcc -O3 here once the loops vectorise; a torch C++ extension needs a compiler at install time
and about a minute to build against torch's headers.

Layout and vectorisation. The pairs are processed in blocks of L lanes; within a block every
cell (i, j) is one L-wide vector operation over the block's pairs, so the recursion along j runs
L independent chains at once (enough to hide the latency of ``exp`` and ``log``). ``exp`` and
``log`` are written here as polynomials (:func:`_exp`, :func:`_log`, accurate to a few ulp in
float64) because LLVM vectorises them, while calls to libm's would stay scalar (numba has no
vector math library without Intel's SVML). The DP always computes in float64; tables are
stored in the input's dtype. ``error_model="numpy"`` keeps float divisions free of Python's
zero-division check, which would stop vectorisation.

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
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["LANES", "CompiledLogAlignment", "backward", "forward"]

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
def _exp(x):
    """exp(x) for x <= ~0 (values below -700 give exp(-700)); a vectorisable polynomial."""
    x = x if not (x < -700.0) else -700.0  # written so that NaN stays NaN
    k = math.floor(x * _LOG2E + 0.5)
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
def _log(s):
    """log(s) for finite s > 0: exponent bits, then 2 atanh((m - 1) / (m + 1))."""
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


@numba.njit(inline="always", **_JIT)
def _load(lk, lx, ly, scale, p0, w, kk):
    """kk[i, j, l] = scale * lk[i, j, p0 + l] inside pair p0 + l's lengths, else 0."""
    n, m, _ = lk.shape
    for i in range(n):
        for j in range(m):
            row = kk[i, j]
            for ln in range(w):
                p = p0 + ln
                row[ln] = scale * lk[i, j, p] if (i < lx[p] and j < ly[p]) else 0.0
            for ln in range(w, LANES):
                row[ln] = 0.0


@numba.njit(**_JIT)
def _forward_block(lk, lx, ly, scale, b, values, table, rolling):
    """One block of pairs: end values into ``values``, and V into ``table[b]`` unless rolling."""
    n, m, p = lk.shape
    p0 = b * LANES
    w = min(LANES, p - p0)
    kk = np.empty((n, m, LANES))
    _load(lk, lx, ly, scale, p0, w, kk)
    # the recursion runs in two local rows: writing it into `table` directly (an argument that
    # LLVM cannot prove distinct from the others) ran 5x slower, unvectorised
    v = np.empty((2, m + 2, LANES))
    for ln in range(LANES):
        v[0, 0, ln] = 0.0
    for j in range(1, m + 2):
        for ln in range(LANES):
            v[0, j, ln] = -_BIG
    if not rolling:
        table[b, 0] = v[0]
    for i in range(1, n + 1):
        prev = v[(i - 1) & 1]
        cur = v[i & 1]
        for ln in range(LANES):
            cur[0, ln] = -_BIG
        for j in range(1, m + 1):
            c = cur[j]
            left = cur[j - 1]
            up = prev[j]
            dg = prev[j - 1]
            k = kk[i - 1, j - 1]
            for ln in range(LANES):
                a = up[ln]
                b2 = left[ln]
                d = dg[ln]
                t = a if a > b2 else b2
                t = t if t > d else d
                s = _exp(a - t) + _exp(b2 - t) + _exp(d - t)
                c[ln] = t + _log(s) + k[ln]
        for ln in range(LANES):
            cur[m + 1, ln] = _BIG  # the column beyond the grid (read by the backward)
        if not rolling:
            table[b, i] = cur
        for ln in range(w):
            if lx[p0 + ln] == i:
                values[p0 + ln] = cur[ly[p0 + ln], ln]
    if not rolling:
        table[b, n + 1] = _BIG  # the row beyond the grid


@numba.njit(**_JIT)
def _backward_block(lk, lx, ly, scale, b, table, grid, seeds, out):
    """One block of the E recursion: seeds on every cell (``grid``) or at the ends (``seeds``)."""
    n, m, p = lk.shape
    p0 = b * LANES
    w = min(LANES, p - p0)
    kk = np.zeros((n + 1, m + 1, LANES))
    _load(lk, lx, ly, scale, p0, w, kk[:n, :m])  # row n and column m stay 0
    # local copies of V's rows: reading `table` inside the loop stopped its vectorisation
    v = np.empty((2, m + 2, LANES))
    v[(n + 1) & 1] = table[b, n + 1]
    e = np.zeros((2, m + 2, LANES))
    g = np.zeros((m + 1, LANES))
    use_grid = grid.shape[0] > 0
    for i in range(n, 0, -1):
        after = e[(i + 1) & 1]
        here = e[i & 1]
        if use_grid:
            # every cell, padding included: cells beyond the lengths depend on cells inside
            for j in range(m):
                for ln in range(w):
                    g[j + 1, ln] = grid[i - 1, j, p0 + ln]
        else:
            for ln in range(w):
                if lx[p0 + ln] == i:
                    g[ly[p0 + ln], ln] = seeds[p0 + ln]
        v[i & 1] = table[b, i]
        vi = v[i & 1]
        vn = v[(i + 1) & 1]
        knext = kk[i]  # K of row i + 1 (zeros beyond the grid)
        kcur = kk[i - 1]
        for j in range(m, 0, -1):
            x = vi[j]
            gj = g[j]
            h = here[j]
            hr = here[j + 1]
            a = after[j]
            ad = after[j + 1]
            vd = vn[j]
            vdd = vn[j + 1]
            vr = vi[j + 1]
            kd = knext[j - 1]
            kr = kcur[j]  # column m is 0
            kdd = knext[j]
            for ln in range(LANES):
                xv = x[ln]
                h[ln] = (
                    gj[ln]
                    + a[ln] * _exp(xv + kd[ln] - vd[ln])
                    + hr[ln] * _exp(xv + kr[ln] - vr[ln])
                    + ad[ln] * _exp(xv + kdd[ln] - vdd[ln])
                )
        for j in range(m):
            for ln in range(w):
                pp = p0 + ln
                inside = i <= lx[pp] and j < ly[pp]
                out[i - 1, j, pp] = scale * here[j + 1, ln] if inside else 0.0
        if not use_grid:
            for ln in range(w):
                if lx[p0 + ln] == i:
                    g[ly[p0 + ln], ln] = 0.0


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
