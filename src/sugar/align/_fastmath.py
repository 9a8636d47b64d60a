"""exp and log as vectorisable polynomials for the numba kernels of :mod:`sugar.align._compiled`.

LLVM vectorises these, while calls to libm's ``exp`` / ``log`` would stay scalar (numba has no
vector math library without Intel's SVML). Accurate to a few ulp over the ranges the DP uses
(tested through the kernels' values and gradients against the naive DP, tests/align). ``exp_``
and ``log1p_`` pick the float32 or float64 version at compile time from their argument's type.

Caution: numba's on-disk cache of the kernels that inline these is keyed on the kernels' own
file (``_compiled.py``), not on this one: after editing here, touch that file (or delete the
``__pycache__``) so that the kernels are recompiled.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
from numba.extending import overload

__all__ = ["JIT", "exp_", "gak_log_kernel_", "gak_slope_", "log1p_", "one_"]

JIT: dict[str, Any] = dict(error_model="numpy", fastmath=True, nogil=True, cache=True)
_JIT = JIT
_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453
_LN2_HI = 0.693145751953125
_LN2_LO = 1.4286068203094173e-06
_SQRT2 = 1.4142135623730951


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


def exp_(x):
    """exp in the precision of x: resolved at compile time by the overload below."""
    raise NotImplementedError("only callable from numba-compiled code")


def log1p_(x):
    """log(1 + x) in the precision of x: resolved at compile time by the overload below."""
    raise NotImplementedError("only callable from numba-compiled code")


@overload(exp_)
def _exp_overload(x):
    return (lambda x: _exp32(x)) if x == numba.types.float32 else (lambda x: _exp64(x))


@overload(log1p_)
def _log1p_overload(x):
    if x == numba.types.float32:
        return lambda x: _log32(x + _F_ONE)
    return lambda x: _log64(x + 1.0)


def one_(x):
    """1 in the precision of x (a float literal would promote float32 arithmetic to float64)."""
    raise NotImplementedError("only callable from numba-compiled code")


def gak_log_kernel_(t):
    """GAK's log local kernel ``-t - log(2 - exp(-t))`` for ``t = phi / (2 sigma^2) >= 0``."""
    raise NotImplementedError("only callable from numba-compiled code")


def gak_slope_(t):
    """d log k / d t = -2 / (2 - exp(-t)) (that is, -(1 + k)) for ``t >= 0``."""
    raise NotImplementedError("only callable from numba-compiled code")


@overload(one_)
def _one_overload(x):
    return (lambda x: _F_ONE) if x == numba.types.float32 else (lambda x: 1.0)


@overload(gak_log_kernel_)
def _gak_log_kernel_overload(t):
    if t == numba.types.float32:
        return lambda t: -t - _log32(_F_TWO - _exp32(-t))
    return lambda t: -t - _log64(2.0 - _exp64(-t))


@overload(gak_slope_)
def _gak_slope_overload(t):
    if t == numba.types.float32:
        return lambda t: -_F_TWO / (_F_TWO - _exp32(-t))
    return lambda t: -2.0 / (2.0 - _exp64(-t))
