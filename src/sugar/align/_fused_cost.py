"""The Triple-Kernel ground cost of all pairs, assembled in one compiled pass (numba).

:func:`sugar.align.kernels.triple_kernel_cost` (the reference) computes the cross-modal
distances of every slice pair, then the uni-modal image-image and text-text distances over the
real slices of each modality, and writes those into the first with index tensors. Here the three
matrix products stay in torch (BLAS; on only the rows each modality needs, as there), and one
kernel reads the products, the squared norms and the modality of each slice and writes each
distance once, divided by its type's median, into the (Sx, Sy, Bx, By) layout the DP reads.
Nothing but the products and the result is materialised.

Measured (``benchmarks/bench_align.py``, Sugar's targets: 48 samples of <= 10 slices, widths
1280 / 384 / 256, 1 thread, CPU time on a loaded machine): see the README's alignment section.
A cost computed inside the DP itself (dot products per cell) was not written: the three
products are most of this cost and run at BLAS speed, which per-cell dot products in numba would
not reach.

Forward only: used when no input needs a gradient (the targets are computed from teacher
vectors without one), on CPU float32/float64, unless ``SUGAR_ALIGN_BACKEND=torch``.
"""

from __future__ import annotations

import os

import numba
import torch
from torch import Tensor

from sugar.align._fastmath import JIT
from sugar.align.kernels import SliceEmbeddings, TypeMedians

__all__ = ["fused_triple_kernel_cost"]


@numba.njit(**JIT)
def _assemble(gram_i, gram_t, gram_c, norms, rows, is_text, inv, out):
    """out[i, j, a, b] = the Triple-Kernel distance of slice i of x_a and slice j of y_b.

    ``rows[k]`` (k = 0 image / 1 text for x, 2 / 3 for y): (B, S) the row of each slice in
    that modality's product, -1 where the slice is not of it or is padding; cross rows are
    ``a * S + i``. ``norms[k]`` (k = 0..5: image, text, cross of x, then of y): squared norms by
    row, padded to one length. ``is_text``: (2, B, S) of x and y (y padded to x's shape).
    ``inv``: the reciprocals of the image, text and cross medians.
    """
    sx, sy, bx, by = out.shape
    for i in range(sx):
        for j in range(sy):
            for a in range(bx):
                ri = rows[0, a, i]
                rt = rows[1, a, i]
                rc = a * sx + i
                text_a = is_text[0, a, i]
                dst = out[i, j, a]
                for b in range(by):
                    qi = rows[2, b, j]
                    qt = rows[3, b, j]
                    qc = b * sy + j
                    text_b = is_text[1, b, j]
                    if text_a and text_b and rt >= 0 and qt >= 0:
                        d = (norms[1, rt] + norms[4, qt] - 2 * gram_t[rt, qt]) * inv[1]
                    elif not text_a and not text_b and ri >= 0 and qi >= 0:
                        d = (norms[0, ri] + norms[3, qi] - 2 * gram_i[ri, qi]) * inv[0]
                    else:
                        d = (norms[2, rc] + norms[5, qc] - 2 * gram_c[rc, qc]) * inv[2]
                    dst[b] = max(d, 0.0)


def _modality_rows(valid: Tensor, mine: Tensor) -> Tensor:
    """(B, S) int64: the row of each slice among the real slices of one modality, else -1."""
    keep = valid & mine
    rows = torch.full(keep.shape, -1, dtype=torch.int64)
    rows[keep] = torch.arange(int(keep.sum()))
    return rows


def fused_triple_kernel_cost(
    x: SliceEmbeddings, y: SliceEmbeddings, medians: TypeMedians
) -> Tensor | None:
    """(Bx, By, Sx, Sy) Triple-Kernel cost in memory order (Sx, Sy, Bx, By), as
    ``triple_kernel_cost(x, y, medians=medians)``; None where this path does not apply."""
    tensors = [getattr(d, k) for d in (x, y) for k in ("image", "text", "cross")]
    dtype = x.cross.dtype
    if (
        os.environ.get("SUGAR_ALIGN_BACKEND") == "torch"
        or any(t.requires_grad or t.device.type != "cpu" or t.dtype != dtype for t in tensors)
        or dtype not in (torch.float32, torch.float64)
    ):
        return None
    bx, sx = x.is_text.shape
    by, sy = y.is_text.shape
    vx, vy = x.valid.cpu(), y.valid.cpu()
    tx, ty = x.is_text.cpu(), y.is_text.cpu()
    rows_x = [_modality_rows(vx, ~tx), _modality_rows(vx, tx)]
    rows_y = [_modality_rows(vy, ~ty), _modality_rows(vy, ty)]
    flat: list[Tensor] = []  # image, text, cross of x, then of y: the rows of each product
    for data, valid, is_text in ((x, vx, tx), (y, vy, ty)):
        flat.append(data.image[valid & ~is_text])
        flat.append(data.text[valid & is_text])
        flat.append(data.cross.reshape(-1, data.cross.shape[-1]))
    grams = [flat[k] @ flat[k + 3].T for k in range(3)]
    width = max(max(len(f) for f in flat), 1)
    norms = torch.zeros(6, width, dtype=dtype)
    for k, f in enumerate(flat):
        norms[k, : len(f)] = (f * f).sum(-1)
    rows = torch.zeros(4, max(bx, by), max(sx, sy), dtype=torch.int64)
    for k, r in enumerate(rows_x + rows_y):
        rows[k, : r.shape[0], : r.shape[1]] = r
    is_text = torch.zeros(2, max(bx, by), max(sx, sy), dtype=torch.bool)
    is_text[0, :bx, :sx] = tx
    is_text[1, :by, :sy] = ty
    inv = torch.tensor([1 / medians.image, 1 / medians.text, 1 / medians.cross], dtype=dtype)
    out = torch.empty((sx, sy, bx, by), dtype=dtype)
    arrays = [g.contiguous().numpy() for g in grams]
    _assemble(*arrays, norms.numpy(), rows.numpy(), is_text.numpy(), inv.numpy(), out.numpy())
    return out.permute(2, 3, 0, 1)
