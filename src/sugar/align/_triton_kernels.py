"""The soft alignment DP of :mod:`sugar.align._dp` as Triton kernels: one program per pair.

Shapes: P pairs, N and M the (padded) lengths of the two sequences of each pair, L = ``BLOCK``
lanes (a power of two >= N).

Why hand-written: no library runs this DP over "P pairs -> P values" with a backward on a GPU
(KERNEL_NOTES.md; pysdtw's CUDA kernel has no lengths, no prefixes and no GAK). Why Triton and
not CUDA C++: Triton ships as a wheel and compiles at run time, so installing needs no compiler
or CUDA toolkit, and ``TRITON_INTERPRET=1`` runs the very same kernels on CPU tensors, which is
how they are tested on machines without a GPU (tests/align/test_triton.py).

Layout. Program ``p`` walks the anti-diagonals ``d = i + j`` of pair p; lane ``l`` of a
diagonal holds cell (l + 1, d - l - 1), rows 1..N (row 0, the border, is never stored: its
values enter as the fill of the shift below). The previous two diagonals live in registers. A
cell's up and diagonal predecessors sit one lane lower: that one-lane shift is the only data
that moves between lanes, through a two-slot scratch row per pair in global memory (a store, a
barrier, a load; two slots so that a diagonal's store never overwrites what a slower thread
still reads of the previous one).

Forward (log space; ``K`` the log local kernel, 0 beyond a pair's lengths)::

    V[i, j] = K[i, j] + log(exp V[i-1, j] + exp V[i, j-1] + exp V[i-1, j-1])

with ``K = scale * src`` (``KIND = 0``, soft-DTW passes ``-1 / gamma``) or GAK's
``K = -t - log(2 - exp(-t))``, ``t = scale * src`` (``KIND = 1``; src is the ground distance).
Borders and cells beyond the grid hold -1e30 (finite, so that no ``inf - inf`` appears).
With a gradient the forward stores the shares of each cell's up and left predecessors in its
sum, by anti-diagonal: ``shares[p, c, d, l]`` (c = 0 up, 1 left; (P, 2, N + M + 1, L), only the
grid's cells written), so that the backward reads them contiguously.

Backward (Cuturi & Blondel 2017, on every cell): ``E[i, j] = G[i, j] + E[i+1, j] su[i+1, j]
+ E[i, j+1] sl[i, j+1] + E[i+1, j+1] (1 - su - sl)[i+1, j+1]``, ``dLoss/dK = E`` inside the
lengths, exactly 0 outside; the successors sit one lane higher, the same shift the other way,
and successors beyond the grid (never written) are masked out of the loads. ``dK/dsrc`` is
``scale`` (KIND 0) or ``-2 scale / (2 - exp(-t))`` (KIND 1).
"""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["backward_kernel", "forward_kernel"]

NEG = tl.constexpr(-1e30)
"""The borders' "minus infinity" (a constexpr: compiled kernels may read no other globals)."""


@triton.jit
def _log_kernel(x, scale, KIND: tl.constexpr):
    """K of the input x: ``scale * x``, or GAK's log local kernel of ``t = scale * x``."""
    if KIND == 0:
        k = scale * x
    else:
        t = scale * x
        k = -t - tl.log(2.0 - tl.exp(-t))
    return k


@triton.jit
def _shift(scratch, slot, lanes, values, step: tl.constexpr, fill, BLOCK: tl.constexpr):
    """``values`` moved by ``step`` lanes (lane i gets lane i + step; ``fill`` beyond the ends),
    through the pair's scratch row ``slot``."""
    row = scratch + slot * BLOCK
    tl.store(row + lanes, values)
    tl.debug_barrier()
    source = lanes + step
    inside = (source >= 0) & (source < BLOCK)
    return tl.load(row + source, mask=inside, other=fill, volatile=True)


@triton.jit
def forward_kernel(
    src,
    stride_p,
    stride_n,
    stride_m,
    lengths_x,
    lengths_y,
    scales,
    values,
    table,
    shares,
    scratch,
    n,
    m,
    KIND: tl.constexpr,
    KEEP_TABLE: tl.constexpr,
    KEEP_SHARES: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Program p: ``values[p] = V[lx, ly]``; ``table[p, i-1, j-1] = V[i, j]`` (P, N, M) when
    ``KEEP_TABLE``; the shares (P, 2, N + M + 1, BLOCK) when ``KEEP_SHARES``."""
    pair = tl.program_id(0).to(tl.int64)
    lanes = tl.arange(0, BLOCK)
    rows = lanes.to(tl.int64) + 1
    lx = tl.load(lengths_x + pair)
    ly = tl.load(lengths_y + pair)
    scale = tl.load(scales + pair)
    dtype = values.dtype.element_ty
    neg = tl.full([BLOCK], NEG, dtype)
    # before diagonal 2: cell (1, 1)'s corner predecessor is V[0, 0] = 0, all else a border
    left = neg  # V of diagonal d - 1, same row: (i, d - 1 - i)
    up = neg  # diagonal d - 1, row i - 1: (i - 1, d - i)
    corner = tl.where(lanes == 0, 0.0, neg)  # diagonal d - 2, row i - 1: (i - 1, d - 1 - i)
    work = scratch + pair * 2 * BLOCK
    diagonals = n + m + 1
    share_base = shares + pair * 2 * diagonals * BLOCK
    for d in range(2, n + m + 1):
        cols = d - rows
        valid = (rows <= n) & (cols >= 1) & (cols <= m)
        inside = valid & (rows <= lx) & (cols <= ly)
        x = tl.load(
            src + pair * stride_p + (rows - 1) * stride_n + (cols - 1) * stride_m,
            mask=inside,
            other=0.0,
        )
        k = tl.where(inside, _log_kernel(x.to(dtype), scale, KIND), 0.0)
        top = tl.maximum(tl.maximum(up, left), corner)
        term_up = tl.exp(up - top)
        term_left = tl.exp(left - top)
        total = term_up + term_left + tl.exp(corner - top)
        here = tl.where(valid, top + tl.log(total) + k, neg)
        if KEEP_SHARES:
            at = share_base + d * BLOCK + lanes
            tl.store(at, term_up / total, mask=valid)
            tl.store(at + diagonals * BLOCK, term_left / total, mask=valid)
        if KEEP_TABLE:
            tl.store(table + (pair * n + rows - 1) * m + cols - 1, here, mask=valid)
        tl.store(values + pair + rows * 0, here, mask=(rows == lx) & (cols == ly))
        corner = up
        up = _shift(work, d % 2, lanes, here, -1, NEG, BLOCK)  # row 0 beyond: the border
        left = here


@triton.jit
def backward_kernel(
    src,
    stride_p,
    stride_n,
    stride_m,
    lengths_x,
    lengths_y,
    scales,
    shares,
    grid,
    grid_p,
    grid_n,
    grid_m,
    seeds,
    out,
    scratch,
    n,
    m,
    KIND: tl.constexpr,
    USE_GRID: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Program p: ``out[p, i-1, j-1] = dLoss/dsrc`` (P, N, M) from the forward's shares and the
    loss's gradient on every cell (``grid``, (P, N, M) with the given strides) or on each pair's
    end cell (``seeds``, (P,))."""
    pair = tl.program_id(0).to(tl.int64)
    lanes = tl.arange(0, BLOCK)
    rows = lanes.to(tl.int64) + 1
    lx = tl.load(lengths_x + pair)
    ly = tl.load(lengths_y + pair)
    scale = tl.load(scales + pair)
    dtype = out.dtype.element_ty
    zero = tl.zeros([BLOCK], dtype)
    right = zero  # E of diagonal d + 1, same row: (i, d + 1 - i)
    below = zero  # diagonal d + 1, row i + 1: (i + 1, d - i)
    after = zero  # diagonal d + 2, row i + 1: (i + 1, d + 1 - i)
    work = scratch + pair * 2 * BLOCK
    diagonals = n + m + 1
    ups = shares + pair * 2 * diagonals * BLOCK
    lefts = ups + diagonals * BLOCK
    seed = tl.load(seeds + pair)  # (P,) zeros when USE_GRID
    for step in range(0, n + m - 1):
        d = n + m - step
        cols = d - rows
        valid = (rows <= n) & (cols >= 1) & (cols <= m)
        inside = valid & (rows <= lx) & (cols <= ly)
        if USE_GRID:
            g = tl.load(
                grid + pair * grid_p + (rows - 1) * grid_n + (cols - 1) * grid_m,
                mask=valid,
                other=0.0,
            ).to(dtype)
        else:
            g = tl.where((rows == lx) & (cols == ly), seed, 0.0).to(dtype)
        # successors beyond the grid were never written: masked to share 0 (and their E is 0)
        has_below = valid & (rows < n)
        has_right = valid & (cols < m)
        next_row = ups + (d + 1) * BLOCK + lanes
        share_below = tl.load(next_row + 1, mask=has_below, other=0.0)
        share_right = tl.load(lefts + (d + 1) * BLOCK + lanes, mask=has_right, other=0.0)
        corner = (d + 2) * BLOCK + lanes + 1
        has_corner = has_below & has_right
        corner_share = (
            1.0
            - tl.load(ups + corner, mask=has_corner, other=0.0)
            - tl.load(lefts + corner, mask=has_corner, other=0.0)
        )
        e = g + below * share_below + right * share_right
        e = tl.where(valid, e + tl.where(has_corner, after * corner_share, 0.0), 0.0)
        x = tl.load(
            src + pair * stride_p + (rows - 1) * stride_n + (cols - 1) * stride_m,
            mask=inside,
            other=0.0,
        ).to(dtype)
        if KIND == 0:  # noqa: SIM108 (a constexpr branch: only one side is compiled)
            slope = scale + zero
        else:
            slope = -2.0 * scale / (2.0 - tl.exp(-(scale * x)))
        tl.store(
            out + (pair * n + rows - 1) * m + cols - 1,
            tl.where(inside, e * slope, 0.0),
            mask=valid,
        )
        after = below
        below = _shift(work, d % 2, lanes, e, 1, 0.0, BLOCK)
        right = e
