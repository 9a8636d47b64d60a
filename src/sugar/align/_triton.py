"""The GPU path of :func:`sugar.align._dp.log_alignment`: the Triton kernels of
:mod:`sugar.align._triton_kernels` behind an autograd function.

Shapes: P pairs, N and M the (padded) lengths of the two sequences of each pair.

Selected automatically for CUDA float32/float64 tensors when triton imports (``pip install
sugar[gpu]``); the torch implementation stays the reference and the fallback. With
``TRITON_INTERPRET=1`` set before this module is imported, triton's interpreter runs the same
kernels on CPU tensors (slowly, one program after another): that is how the kernels are tested
without a GPU, and then only CPU tensors run here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from triton.runtime.interpreter import InterpretedFunction

from sugar.align._triton_kernels import backward_kernel, forward_kernel

__all__ = ["GAK", "INTERPRETED", "LINEAR", "MAX_ROWS", "TritonLogAlignment", "unsupported"]

LINEAR = 0
"""``kind``: the input is a log kernel, K = scale * input."""
GAK = 1
"""``kind``: the input is GAK's ground distance phi, K = log k(scale * phi)."""
INTERPRETED = isinstance(forward_kernel, InterpretedFunction)
"""Whether the kernels run in triton's interpreter (TRITON_INTERPRET=1 at import): on CPU."""
MAX_ROWS = 8192
"""Longest first sequence (N) one program holds: one lane per row of its anti-diagonal."""


def unsupported(src: Tensor) -> str | None:
    """Why ``src`` (P, N, M) cannot run here, or None when it can."""
    device = "cpu" if INTERPRETED else "cuda"
    if src.device.type != device:
        mode = "triton's interpreter (TRITON_INTERPRET=1)" if INTERPRETED else "compiled triton"
        return f"{mode} runs on {device} tensors, got one on {src.device}"
    if src.dtype not in (torch.float32, torch.float64):
        return f"the triton kernels run in float32 or float64, got {src.dtype}"
    if src.shape[1] > MAX_ROWS:
        return f"the triton kernels hold at most {MAX_ROWS} rows per pair, got N = {src.shape[1]}"
    return None


def _lanes(n: int) -> int:
    """BLOCK: the smallest power of two >= N (lane l holds row l + 1), at least 16."""
    return max(16, 1 << (n - 1).bit_length())


def _warps(block: int) -> int:
    """Warps per program: enough threads for the diagonal's lanes, few enough that the barrier
    of every diagonal stays cheap."""
    return 1 if block <= 128 else 2 if block <= 512 else 4 if block <= 2048 else 8


def _lengths(lengths: Tensor | None, p: int, full: int, device: torch.device) -> Tensor:
    """(P,) int64 lengths on ``device`` (``full`` when not given)."""
    if lengths is None:
        return torch.full((p,), full, dtype=torch.int64, device=device)
    return lengths.to(device=device, dtype=torch.int64).reshape(-1).contiguous()


def _scales(scale: float | Tensor, p: int, like: Tensor) -> Tensor:
    """(P,) per-pair scales from a float or a tensor of 1 or P values (any shape)."""
    if not isinstance(scale, Tensor):
        return torch.full((p,), float(scale), dtype=like.dtype, device=like.device)
    flat = scale.detach().to(device=like.device, dtype=like.dtype).reshape(-1)
    if flat.numel() == 1:
        return flat.expand(p).contiguous()
    if flat.numel() != p:
        raise ValueError(f"scale must hold 1 or {p} values (one per pair), got {flat.numel()}")
    return flat.contiguous()


class TritonLogAlignment(torch.autograd.Function):
    """:func:`sugar.align._dp.log_alignment` through the Triton kernels; with ``kind = GAK`` the
    input is GAK's ground distance and ``scale`` is 1 / (2 sigma^2) (one value or one per pair)."""

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
        reason = unsupported(src)
        if reason is not None:
            raise ValueError(reason)
        p, n, m = src.shape
        data = src.detach()
        device, dtype = data.device, data.dtype
        lx = _lengths(lengths_x, p, n, device)
        ly = _lengths(lengths_y, p, m, device)
        scales = _scales(scale, p, data)
        block = _lanes(n)
        grad = bool(ctx.needs_input_grad[0])
        values = torch.empty(p, dtype=dtype, device=device)
        out = torch.empty((p, n, m) if table else (1,), dtype=dtype, device=device)
        shares = torch.empty((p, 2, n + m + 1, block) if grad else (1,), dtype=dtype,
                             device=device)  # fmt: skip
        scratch = torch.empty((p, 2, block), dtype=dtype, device=device)
        if p > 0:
            forward_kernel[(p,)](
                data, *data.stride(), lx, ly, scales, values, out, shares, scratch, n, m,
                KIND=kind, KEEP_TABLE=table, KEEP_SHARES=grad, BLOCK=block,
                num_warps=_warps(block),
            )  # fmt: skip
        ctx.kind = kind
        ctx.table = table
        ctx.save_for_backward(data, lx, ly, scales, shares)
        return out if table else values

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None, None, None]:
        data, lx, ly, scales, shares = ctx.saved_tensors
        p, n, m = data.shape
        block = _lanes(n)
        grad = grad.to(data.dtype)
        if ctx.table:
            grid, seeds = grad, torch.zeros(p, dtype=data.dtype, device=data.device)
        else:
            grid, seeds = torch.zeros((1, 1, 1), dtype=data.dtype, device=data.device), grad
        seeds = seeds.contiguous()
        out = torch.empty((p, n, m), dtype=data.dtype, device=data.device)
        scratch = torch.empty((p, 2, block), dtype=data.dtype, device=data.device)
        if p > 0:
            backward_kernel[(p,)](
                data, *data.stride(), lx, ly, scales, shares, grid, *grid.stride(), seeds, out,
                scratch, n, m, KIND=ctx.kind, USE_GRID=ctx.table, BLOCK=block,
                num_warps=_warps(block),
            )  # fmt: skip
        return out, None, None, None, None, None
