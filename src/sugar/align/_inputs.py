"""Checking and padding the inputs of :mod:`sugar.align` (one place for every error message)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

SequenceSet = Tensor | np.ndarray | Sequence[Any]
"""B sequences: a padded (B, S, D) tensor (with ``lengths``) or a list of (n_b, D) tensors."""


def check_positive(name: str, value: float) -> float:
    """``value`` as a float, or ``ValueError`` naming ``name`` unless it is finite and > 0."""
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def as_float_tensor(name: str, x: Any) -> Tensor:
    """A floating-point tensor (float64 for numpy/list input), or ``ValueError`` naming ``name``."""
    t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float64))
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if not all_finite(t.detach()):
        raise ValueError(f"{name} contains NaN or inf")
    return t


def all_finite(t: Tensor) -> bool:
    """Whether every value of ``t`` is finite, checked through its sum first.

    The sum is finite unless a value is NaN or inf or the sum overflows; only then are the
    values checked one by one. Why: ``isfinite(t).all()`` took 0.73 ms on a (32, 8, 1024)
    float32 batch, its sum 0.03 ms (1 thread), a quarter of a whole all-pairs log-GAK there.

    >>> all_finite(torch.tensor([3e38, 3e38])), all_finite(torch.tensor([1.0, float("nan")]))
    (True, False)
    """
    if t.numel() == 0 or bool(torch.isfinite(t.sum())):
        return True
    return bool(torch.isfinite(t).all())


def as_sequence(name: str, x: Any) -> Tensor:
    """One sequence: (n, D) (or (n,) for univariate data, as tslearn) with n >= 1."""
    t = as_float_tensor(name, x)
    if t.dim() == 1:
        t = t[:, None]
    if t.dim() != 2:
        raise ValueError(f"{name} must have shape (n, D), got {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name} is an empty sequence (length 0)")
    return t


def as_batch(name: str, x: SequenceSet, lengths: Any = None) -> tuple[Tensor, Tensor]:
    """B sequences -> ((B, S, D) padded tensor, (B,) int64 lengths), checked.

    A list of (n_b, D) sequences is zero-padded to the longest; a padded (B, S, D) tensor takes
    ``lengths`` (default: all S). Every length must be in [1, S].
    """
    if isinstance(x, Tensor | np.ndarray):
        t = as_float_tensor(name, x)
        if t.dim() == 2:
            t = t[:, :, None]
        if t.dim() != 3:
            raise ValueError(f"{name} must have shape (B, S, D) or be a list, got {tuple(t.shape)}")
        if t.shape[0] == 0:
            raise ValueError(f"{name} holds no sequences")
        if lengths is None:
            if t.shape[1] == 0:
                raise ValueError(f"sequence 0 of {name} is empty (length 0)")
            # every length is S >= 1: nothing to check (a few torch calls fewer per call)
            return t, torch.full((t.shape[0],), t.shape[1], dtype=torch.long, device=t.device)
        else:
            lens = torch.as_tensor(lengths, dtype=torch.long).reshape(-1)
            if lens.shape[0] != t.shape[0]:
                raise ValueError(
                    f"lengths of {name} has {lens.shape[0]} entries for {t.shape[0]} sequences"
                )
    else:
        if lengths is not None:
            raise ValueError(f"lengths of {name}: only for a padded tensor, not a list")
        seqs = [as_sequence(f"{name}[{b}]", s) for b, s in enumerate(x)]
        if not seqs:
            raise ValueError(f"{name} holds no sequences")
        dims = {s.shape[1] for s in seqs}
        if len(dims) > 1:
            raise ValueError(f"{name}: sequences have different dimensions {sorted(dims)}")
        t = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)
        lens = torch.tensor([s.shape[0] for s in seqs], dtype=torch.long)
    bad = (lens < 1) | (lens > t.shape[1])
    if bad.any():
        b = int(bad.nonzero()[0, 0])
        kind = "is empty (length 0)" if lens[b] < 1 else f"has length {int(lens[b])} > {t.shape[1]}"
        raise ValueError(f"sequence {b} of {name} {kind}")
    return t, lens.to(t.device)


def raise_if_not_finite(out: Tensor, name: str, source: Tensor) -> None:
    """After a computation: a clear error when ``out`` is not finite because ``source`` was not.

    Checking the (small) result instead of every input cell keeps a full pass over large cost
    tensors out of the hot path.
    """
    if not all_finite(out.detach()):
        if not all_finite(source.detach()):
            raise ValueError(f"{name} contains NaN or inf")
        raise FloatingPointError(f"non-finite result from finite {name}: please report this")


def check_same_dim(name_x: str, x: Tensor, name_y: str, y: Tensor) -> None:
    """``ValueError`` naming both arguments unless their last dimensions agree."""
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"{name_x} and {name_y} have different dimensions: {x.shape[-1]} and {y.shape[-1]}"
        )
