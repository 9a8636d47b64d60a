"""Reused CPU buffers for the compiled DP's large tables (shares, V tables, gradients).

Why: every call of the DP needs tables of N x M x P values (151 MB of shares at B=128, S=32),
and fresh memory from the system arrives as zero-filled 4 KiB pages faulted in one at a time:
measured here, allocating and touching 151 MB cost 87 ms (more than the DP itself), touching
memory already mapped 6 ms. glibc returns such large blocks to the system on free, so nothing
is reused between calls. This pool keeps blocks that their last user dropped and hands them out
again: a buffer goes back to the pool when the numpy array under the returned tensor is freed
(the tensor's storage, and with it every view, is gone), so a table saved for a backward is
never handed out twice. At most ``MAX_KEPT_BYTES`` are kept while unused.
"""

from __future__ import annotations

import math
import threading
import weakref

import numpy as np
import torch
from torch import Tensor

__all__ = ["MAX_KEPT_BYTES", "MIN_POOLED_BYTES", "empty"]

MIN_POOLED_BYTES = 1 << 20
"""Smaller tensors come from torch.empty (the allocator reuses small blocks itself)."""
MAX_KEPT_BYTES = 1 << 30
"""At most this many bytes of unused buffers are kept."""

_lock = threading.Lock()
_free: list[np.ndarray] = []  # unused raw uint8 buffers, oldest first


def _give_back(buffer: np.ndarray) -> None:
    with _lock:
        _free.append(buffer)
        while sum(b.nbytes for b in _free) > MAX_KEPT_BYTES:
            _free.pop(0)


def _take(nbytes: int) -> np.ndarray:
    """The smallest kept buffer of ``nbytes`` to ``2 * nbytes`` bytes, else a new one."""
    with _lock:
        fits = [b for b in _free if nbytes <= b.nbytes <= 2 * nbytes]
        if fits:
            best = min(fits, key=lambda b: b.nbytes)
            # by identity: list.remove would compare ndarrays elementwise
            del _free[next(i for i, b in enumerate(_free) if b is best)]
            return best
    return np.empty(nbytes, dtype=np.uint8)


def empty(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """An uninitialised CPU tensor, from the pool when it is at least ``MIN_POOLED_BYTES``."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    nbytes = math.prod(shape) * itemsize
    if nbytes < MIN_POOLED_BYTES:
        return torch.empty(shape, dtype=dtype)
    buffer = _take(nbytes)
    numpy_dtype = torch.empty((), dtype=dtype).numpy().dtype
    array = buffer[:nbytes].view(numpy_dtype).reshape(shape)
    weakref.finalize(array, _give_back, buffer)
    return torch.from_numpy(array)
