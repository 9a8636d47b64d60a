"""Mixed precision of forward passes: ``model.autocast`` (none, bfloat16, float16, auto).

``auto`` computes in bfloat16 where the device does so natively and in float32 elsewhere: a
CUDA device with bfloat16 support, or a CPU with AVX-512 BF16 or AMX-BF16 instructions
(``torch.cpu.get_capabilities``). Measured (issue 17, a 2-core AMD EPYC with AVX-512 BF16, one
thread): the MiniLM trunk's forward + backward over 64 x 40 tokens took 4.4-6.9 s in bfloat16
against 12.8-13.2 s in float32. Without native support bfloat16 is emulated and slower than
float32, hence the check. Weights, optimiser state, losses and saved tensors stay float32;
under autocast only the matrix products run in the lower precision (torch.autocast's lists).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import cache
from typing import Literal

import torch

__all__ = ["AUTOCAST", "Autocast", "autocast", "autocast_dtype", "native_bfloat16"]

Autocast = Literal["none", "bfloat16", "float16", "auto"]
AUTOCAST: tuple[str, ...] = ("none", "bfloat16", "float16", "auto")
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


@cache
def _cpu_bfloat16() -> bool:
    capabilities = torch.cpu.get_capabilities()
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


def native_bfloat16(device: torch.device) -> bool:
    """True when ``device`` multiplies bfloat16 matrices natively."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return _cpu_bfloat16()
    return False


def autocast_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The dtype ``setting`` computes in on ``device`` (None: float32).

    >>> autocast_dtype("none", torch.device("cpu")) is None
    True
    >>> autocast_dtype("bfloat16", torch.device("cpu"))
    torch.bfloat16
    """
    if setting == "none":
        return None
    if setting == "auto":
        return torch.bfloat16 if native_bfloat16(device) else None
    if setting not in _DTYPES:
        raise ValueError(f"autocast={setting!r}: one of {list(AUTOCAST)}")
    return _DTYPES[setting]


@contextlib.contextmanager
def autocast(setting: str, device: torch.device) -> Iterator[None]:
    """``torch.autocast`` per ``setting`` on ``device`` (nothing for float32)."""
    dtype = autocast_dtype(setting, device)
    if dtype is None:
        yield
        return
    with torch.autocast(device.type, dtype=dtype):
        yield
