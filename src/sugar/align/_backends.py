"""Which implementation of the alignment DP runs a call: torch, the compiled CPU kernels or the
Triton GPU kernels (the rules are in :mod:`sugar.align._dp`'s docstring)."""

from __future__ import annotations

import functools
import os
from types import ModuleType
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "Backend",
    "compiled_kernels",
    "requested",
    "triton_kernels",
    "use_compiled",
    "use_triton",
]

Backend = Literal["auto", "compiled", "torch", "triton"]
BACKENDS = ("auto", "compiled", "torch", "triton")


@functools.cache
def compiled_kernels() -> ModuleType | None:
    """The compiled kernels' module, or None when numba is not installed (imported once)."""
    try:
        from sugar.align import _compiled
    except ImportError:
        return None
    return _compiled


@functools.cache
def triton_kernels() -> ModuleType | None:
    """The Triton kernels' module, or None when triton is not installed (imported once)."""
    try:
        from sugar.align import _triton
    except ImportError:
        return None
    return _triton


def requested(backend: str | None) -> str:
    """The requested backend: the argument, else ``SUGAR_ALIGN_BACKEND``, else ``auto``."""
    choice = backend if backend is not None else os.environ.get("SUGAR_ALIGN_BACKEND", "auto")
    if choice not in BACKENDS:
        raise ValueError(
            f"SUGAR_ALIGN_BACKEND / backend must be one of {list(BACKENDS)}, got {choice!r}"
        )
    return choice


def use_triton(logk: Tensor, backend: str | None) -> bool:
    """Whether this call goes to the Triton kernels (see the module docstring)."""
    choice = requested(backend)
    if choice == "triton":
        kernels = triton_kernels()
        if kernels is None:
            raise ValueError("backend 'triton' needs triton: pip install sugar[gpu]")
        reason = kernels.unsupported(logk)
        if reason is not None:
            raise ValueError(f"backend 'triton': {reason}")
        return True
    if choice != "auto" or logk.device.type != "cuda":
        return False  # importing triton is not free: only CUDA tensors try it
    kernels = triton_kernels()
    return kernels is not None and kernels.unsupported(logk) is None


def use_compiled(logk: Tensor, backend: str | None) -> bool:
    """Whether this call goes to the compiled kernels (see the module docstring)."""
    choice = requested(backend)
    if choice in ("torch", "triton"):
        return False
    runs = logk.device.type == "cpu" and logk.dtype in (torch.float32, torch.float64)
    if choice == "compiled":
        if not runs:
            raise ValueError(
                f"backend 'compiled' runs on CPU float32/float64, got {logk.dtype} on {logk.device}"
            )
        if compiled_kernels() is None:
            raise ValueError("backend 'compiled' needs numba: pip install numba")
        return True
    return runs and compiled_kernels() is not None
