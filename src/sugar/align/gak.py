"""Global Alignment Kernels: batched, masked, differentiable, in log space.

Shapes: X holds Bx sequences of up to Sx steps (Y: By, Sy); D features. Inputs are a padded
(B, S, D) tensor with ``lengths``, a list of (n_b, D) tensors, or :class:`SliceEmbeddings`
(then the ground distance is the Triple Kernel).

Definitions (Cuturi, Vert, Birkenes & Matsui 2007; Cuturi 2011). With a ground distance phi,
``t = phi / (2 sigma^2)`` and the local kernel ``k = exp(-t) / (2 - exp(-t))``::

    M[0, 0] = 1,  M[i, j] = (M[i-1, j] + M[i, j-1] + M[i-1, j-1]) * k(x_i, y_j),  K(x, y) = M[n, m]

computed as ``log M`` throughout (:mod:`sugar.align._dp`). ``M[i, j]`` is the kernel of the
prefixes (x_1..i, y_1..j): one DP per pair gives every prefix pair (fixed sigma only).

Normalisations of the log kernel L(x, y) = log K(x, y) into a similarity (METHOD.md section 3):

- ``cosine``: ``exp(L(x,y) - (L(x,x) + L(y,y)) / 2)``, tslearn's ``gak``; 1 on the diagonal;
- ``length``: each log kernel divided by its mean length first,
  ``L'(x,y) = L(x,y) / ((n+m)/2)``, then ``exp(L'(x,y) - (L'(x,x) + L'(y,y)) / 2)``;
- ``length_pair_standardised``: the cosine log-target z-scored within each unordered pair of
  lengths {n, m} over the set being normalised, then a logistic ``sigmoid(slope * z)``
  (``slope`` 1 by default); a group of one value or of equal values maps to 0.5;
- ``none``: ``exp(L(x,y))``, the raw kernel (diagnostics only; overflows for long sequences).

Bandwidth: ``sigma_mode = fixed`` uses sigma for every pair; ``pair_length`` uses the paper's
``sigma * sqrt((n + m) / 2)`` for a pair of lengths n, m (and for a self-kernel, n = m).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from sugar.align._dp import log_gak_alignment
from sugar.align._inputs import SequenceSet, check_positive, raise_if_not_finite
from sugar.align._pairs import (
    Data,
    GroundMetric,
    flatten_pairs,
    ground_cost,
    prepare_cost,
    prepare_pair,
    prepare_sets,
)
from sugar.align._symmetric import symmetric_all_pairs
from sugar.align.kernels import SliceEmbeddings, TypeMedians, _nan_beyond

__all__ = [
    "Normalisation",
    "SigmaMode",
    "cdist_gak",
    "cdist_gak_prefixes",
    "cdist_log_gak",
    "cdist_log_gak_prefixes",
    "gak",
    "log_gak",
    "log_gak_from_cost",
    "normalise_log_gak",
]

Normalisation = Literal["cosine", "length", "length_pair_standardised", "none"]
SigmaMode = Literal["fixed", "pair_length"]
_NORMALISATIONS = ("cosine", "length", "length_pair_standardised", "none")
Inputs = SequenceSet | SliceEmbeddings


def _sigma(sigma: float, sigma_mode: str, n: Tensor, m: Tensor) -> float | Tensor:
    """The bandwidth of each pair of lengths (n, m): a float, or a tensor shaped like n."""
    check_positive("sigma", sigma)
    if sigma_mode == "fixed":
        return float(sigma)
    if sigma_mode == "pair_length":
        return sigma * torch.sqrt((n + m).to(torch.float64) / 2.0)
    raise ValueError(f"sigma_mode must be 'fixed' or 'pair_length', got {sigma_mode!r}")


def _log_table(phi: Tensor, sigma: float | Tensor, lx: Tensor, ly: Tensor) -> Tensor:
    """(P, N, M) distances -> (P, N, M) log-GAK of every prefix pair."""
    return log_gak_alignment(phi, sigma, lx, ly, table=True)


def _log_ends(phi: Tensor, sigma: float | Tensor, lx: Tensor, ly: Tensor) -> Tensor:
    """(P, N, M) distances -> (P,) log-GAK of each whole pair."""
    return log_gak_alignment(phi, sigma, lx, ly)


def log_gak_from_cost(
    phi: Tensor,
    sigma: float = 1.0,
    lengths_x: Tensor | None = None,
    lengths_y: Tensor | None = None,
    sigma_mode: SigmaMode = "fixed",
) -> Tensor:
    """Unnormalised log-GAK from precomputed ground distances.

    ``phi``: (n, m) -> scalar, or (P, N, M) with optional (P,) lengths -> (P,). ``phi`` holds
    distances (>= 0), not kernels; padding may hold anything finite.

    >>> float(log_gak_from_cost(torch.zeros(1, 1)))  # k(0) = 1 and one alignment
    0.0
    """
    cells, lx, ly, single = prepare_cost("phi", phi, lengths_x, lengths_y)
    if float(cells.detach().min()) < 0:
        raise ValueError("phi must hold finite distances >= 0, got a negative one")
    out = _log_ends(cells, _sigma(sigma, sigma_mode, lx, ly), lx, ly)
    raise_if_not_finite(out, "phi", cells)
    return out[0] if single else out


def log_gak(
    x: Inputs,
    y: Inputs,
    sigma: float = 1.0,
    *,
    lengths_x: Any = None,
    lengths_y: Any = None,
    metric: GroundMetric | None = None,
    sigma_mode: SigmaMode = "fixed",
    triple_kernel: bool = True,
    medians: TypeMedians | None = None,
) -> Tensor:
    """Unnormalised log-GAK ``L(x, y) = log K(x, y)`` of one pair or of paired batches.

    ``x`` (n, D) and ``y`` (m, D) give a scalar; batches of B sequences each (paired row by
    row) give (B,). ``metric``: ``sqeuclidean`` (default, as tslearn), ``cosine`` (1 - cos) or
    ``triple_kernel`` (the default for :class:`SliceEmbeddings`).

    >>> x = torch.tensor([[0.0], [1.0]])  # k(0) = 1, k(1) = e^-.5 / (2 - e^-.5); M = 1 + 2 k(1)
    >>> round(float(log_gak(x, x, sigma=1.0)), 4)
    0.6262
    """
    xd, lx, yd, ly, metric_, single = prepare_pair(x, y, lengths_x, lengths_y, metric)
    phi = ground_cost(xd, yd, metric_, triple_kernel, medians, paired=True)
    out = _log_ends(phi, _sigma(sigma, sigma_mode, lx, ly), lx, ly)
    return out[0] if single else out


def _self_log_gak(
    data: Data,
    lengths: Tensor,
    sigma: float,
    sigma_mode: str,
    metric: str,
    tk: bool,
    med: TypeMedians | None,
) -> Tensor:
    """(B,) log-GAK of each sequence with itself (the normalisers)."""
    phi = ground_cost(data, data, metric, tk, med, paired=True)
    return _log_ends(phi, _sigma(sigma, sigma_mode, lengths, lengths), lengths, lengths)


def _zscore_by_length_pair(values: Tensor, n: Tensor, m: Tensor, valid: Tensor) -> Tensor:
    """z-score of ``values`` within each unordered length pair {n, m}, over ``valid`` entries."""
    lo, hi = torch.minimum(n, m), torch.maximum(n, m)
    key = (lo * (int(hi.max()) + 1) + hi).expand_as(values)[valid]
    v = values[valid]
    _, group = torch.unique(key, return_inverse=True)
    zeros = torch.zeros(int(group.max()) + 1, dtype=v.dtype, device=v.device)
    count = zeros.scatter_add(0, group, torch.ones_like(v))
    mean = zeros.scatter_add(0, group, v) / count
    var = zeros.scatter_add(0, group, (v - mean[group]) ** 2) / count
    # equal values (or a group of one) have no spread: z = 0; the where() keeps sqrt away from 0
    spread = (64 * torch.finfo(v.dtype).eps * (1 + mean.abs())) ** 2
    has_spread = var > spread
    std = torch.sqrt(torch.where(has_spread, var, torch.ones_like(var)))
    z = torch.where(has_spread[group], (v - mean[group]) / std[group], torch.zeros_like(v))
    return torch.zeros_like(values).masked_scatter(valid, z)


def normalise_log_gak(
    log_xy: Tensor,
    log_xx: Tensor,
    log_yy: Tensor,
    n: Tensor,
    m: Tensor,
    normalisation: Normalisation = "cosine",
    valid: Tensor | None = None,
    slope: float = 1.0,
) -> Tensor:
    """Turn log kernels into a similarity (see the module docstring for the four rules).

    All arguments broadcast to ``log_xy``'s shape: ``log_xx`` / ``log_yy`` are the self-kernels
    of the x / y side, ``n`` / ``m`` their lengths. ``valid`` (bool, broadcasting) marks the
    entries that exist: the others are left out of the standardisation groups, come out NaN, and
    pass no gradient (whatever finite or non-finite values they hold). ``slope`` is the
    logistic's of ``length_pair_standardised`` (any other normalisation refuses a slope but 1).

    >>> one = torch.tensor(1)
    >>> float(normalise_log_gak(torch.tensor(2.0), torch.tensor(2.0), torch.tensor(2.0), one, one))
    1.0
    """
    if normalisation not in _NORMALISATIONS:
        raise ValueError(
            f"normalisation must be one of {list(_NORMALISATIONS)}, got {normalisation!r}"
        )
    check_positive("slope", slope)
    if slope != 1.0 and normalisation != "length_pair_standardised":
        raise ValueError(
            f"slope={slope} is the logistic's of normalisation='length_pair_standardised'; "
            f"normalisation={normalisation!r} has none (leave slope at 1)"
        )
    keep = torch.ones_like(log_xy, dtype=torch.bool) if valid is None else valid.expand_as(log_xy)
    zero = torch.zeros((), dtype=log_xy.dtype, device=log_xy.device)
    log_xy, log_xx, log_yy = (
        torch.where(keep, t.expand_as(log_xy), zero) for t in (log_xy, log_xx, log_yy)
    )
    if normalisation == "none":
        out = torch.exp(log_xy)
    elif normalisation == "length":
        nx, my = n.to(log_xy.dtype), m.to(log_xy.dtype)
        out = torch.exp(log_xy / ((nx + my) / 2) - (log_xx / nx + log_yy / my) / 2)
    elif normalisation == "cosine":
        out = torch.exp(log_xy - (log_xx + log_yy) / 2)
    else:
        cosine = log_xy - (log_xx + log_yy) / 2
        out = torch.sigmoid(slope * _zscore_by_length_pair(cosine, n, m, keep))
    if valid is None:
        return out
    return torch.where(keep, out, torch.full((), float("nan"), dtype=out.dtype))


def gak(
    x: Inputs,
    y: Inputs,
    sigma: float = 1.0,
    *,
    normalisation: Normalisation = "cosine",
    lengths_x: Any = None,
    lengths_y: Any = None,
    metric: GroundMetric | None = None,
    sigma_mode: SigmaMode = "fixed",
    triple_kernel: bool = True,
    medians: TypeMedians | None = None,
    slope: float = 1.0,
) -> Tensor:
    """Normalised GAK of one pair (scalar) or of paired batches ((B,)); tslearn's ``gak``.

    With the default ``cosine`` normalisation, ``gak(x, x) = 1`` and values lie in (0, 1].
    ``length_pair_standardised`` needs a set of pairs: use it on batches or :func:`cdist_gak`.

    >>> round(float(gak(torch.tensor([1.0, 2, 3]), torch.tensor([1.0, 2, 2, 3]), sigma=2.0)), 3)
    0.839
    """
    xd, lx, yd, ly, metric_, single = prepare_pair(x, y, lengths_x, lengths_y, metric)
    if single and normalisation == "length_pair_standardised":
        raise ValueError(
            "normalisation='length_pair_standardised' standardises a set of pairs; got one pair"
        )
    log_xy = _log_ends(
        ground_cost(xd, yd, metric_, triple_kernel, medians, paired=True),
        _sigma(sigma, sigma_mode, lx, ly),
        lx,
        ly,
    )
    log_xx = _self_log_gak(xd, lx, sigma, sigma_mode, metric_, triple_kernel, medians)
    log_yy = _self_log_gak(yd, ly, sigma, sigma_mode, metric_, triple_kernel, medians)
    out = normalise_log_gak(log_xy, log_xx, log_yy, lx, ly, normalisation, slope=slope)
    return out[0] if single else out


def cdist_log_gak(
    X: Inputs,
    Y: Inputs | None = None,
    sigma: float = 1.0,
    *,
    lengths_x: Any = None,
    lengths_y: Any = None,
    metric: GroundMetric | None = None,
    sigma_mode: SigmaMode = "fixed",
    triple_kernel: bool = True,
    medians: TypeMedians | None = None,
) -> Tensor:
    """(Bx, By) unnormalised log-GAK of every pair of sequences of X and Y (Y defaults to X)."""
    xd, lx, yd, ly, metric_, same = prepare_sets(X, Y, lengths_x, lengths_y, metric)

    def pairs(xd: Data, lx: Tensor, yd: Data, ly: Tensor) -> Tensor:
        phi = ground_cost(xd, yd, metric_, triple_kernel, medians)
        cells, px, py = flatten_pairs(phi, lx, ly)
        return _log_ends(cells, _sigma(sigma, sigma_mode, px, py), px, py).reshape(phi.shape[:2])

    return symmetric_all_pairs(pairs, xd, lx) if same else pairs(xd, lx, yd, ly)


def cdist_gak(
    X: Inputs,
    Y: Inputs | None = None,
    sigma: float = 1.0,
    *,
    normalisation: Normalisation = "cosine",
    lengths_x: Any = None,
    lengths_y: Any = None,
    metric: GroundMetric | None = None,
    sigma_mode: SigmaMode = "fixed",
    triple_kernel: bool = True,
    medians: TypeMedians | None = None,
    slope: float = 1.0,
) -> Tensor:
    """(Bx, By) normalised GAK of every pair; with ``cosine``, tslearn's ``cdist_gak``.

    >>> X = [torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [1.0], [1.0]])]
    >>> K = cdist_gak(X, sigma=1.0)
    >>> K.shape, torch.allclose(K.diagonal(), torch.ones(2, dtype=K.dtype))
    (torch.Size([2, 2]), True)
    """
    xd, lx, yd, ly, metric_, same = prepare_sets(X, Y, lengths_x, lengths_y, metric)
    lengths = _lengths_kwargs(xd, lx, yd, ly)
    if same:  # one set: each unordered pair once (sugar.align._symmetric)
        lengths.pop("lengths_y", None)
    log_xy = cdist_log_gak(
        xd,
        None if same else yd,
        sigma,
        metric=metric_,
        sigma_mode=sigma_mode,
        triple_kernel=triple_kernel,
        medians=medians,
        **lengths,
    )
    if same:  # the self-kernels are the diagonal: no second DP
        log_xx = log_yy = log_xy.diagonal()
    else:
        log_xx = _self_log_gak(xd, lx, sigma, sigma_mode, metric_, triple_kernel, medians)
        log_yy = _self_log_gak(yd, ly, sigma, sigma_mode, metric_, triple_kernel, medians)
    return normalise_log_gak(
        log_xy, log_xx[:, None], log_yy[None, :], lx[:, None], ly[None, :], normalisation,
        slope=slope,
    )  # fmt: skip


def _lengths_kwargs(xd: Data, lx: Tensor, yd: Data, ly: Tensor) -> dict[str, Tensor]:
    """Lengths to pass on with padded tensors (SliceEmbeddings carry their own)."""
    out = {}
    if isinstance(xd, Tensor):
        out["lengths_x"] = lx
    if isinstance(yd, Tensor):
        out["lengths_y"] = ly
    return out


def _prefix_tables(
    xd: Data,
    lx: Tensor,
    yd: Data,
    ly: Tensor,
    sigma: float,
    metric: str,
    tk: bool,
    med: TypeMedians | None,
) -> Tensor:
    phi = ground_cost(xd, yd, metric, tk, med)
    cells, px, py = flatten_pairs(phi, lx, ly)
    return _log_table(cells, _sigma(sigma, "fixed", px, py), px, py).reshape(phi.shape)


def _self_prefix_diagonals(
    data: Data, lengths: Tensor, sigma: float, metric: str, tk: bool, med: TypeMedians | None
) -> Tensor:
    """(B, S): log-GAK of each prefix x_1..i with itself (meaningless beyond the length)."""
    phi = ground_cost(data, data, metric, tk, med, paired=True)
    table = _log_table(phi, _sigma(sigma, "fixed", lengths, lengths), lengths, lengths)
    return table.diagonal(dim1=-2, dim2=-1)


def cdist_log_gak_prefixes(
    X: Inputs,
    Y: Inputs | None = None,
    sigma: float = 1.0,
    *,
    lengths_x: Any = None,
    lengths_y: Any = None,
    metric: GroundMetric | None = None,
    triple_kernel: bool = True,
    medians: TypeMedians | None = None,
) -> Tensor:
    """(Bx, By, Sx, Sy) log-GAK of every prefix pair: ``out[a, b, i, j] = L(X_a[:i+1], Y_b[:j+1])``.

    One DP per pair of sequences (fixed sigma: a prefix pair's value is a cell of the pair's
    table). Entries beyond a sequence's length are NaN.
    """
    xd, lx, yd, ly, metric_, _ = prepare_sets(X, Y, lengths_x, lengths_y, metric)
    table = _prefix_tables(xd, lx, yd, ly, sigma, metric_, triple_kernel, medians)
    bx, by = table.shape[:2]
    return _nan_beyond(table, lx[:, None].expand(bx, by), ly[None, :].expand(bx, by))


def cdist_gak_prefixes(
    X: Inputs,
    Y: Inputs | None = None,
    sigma: float = 1.0,
    *,
    normalisation: Normalisation = "cosine",
    lengths_x: Any = None,
    lengths_y: Any = None,
    metric: GroundMetric | None = None,
    triple_kernel: bool = True,
    medians: TypeMedians | None = None,
    slope: float = 1.0,
) -> Tensor:
    """(Bx, By, Sx, Sy) normalised GAK of every prefix pair, NaN beyond the lengths.

    The self-kernels of all prefixes come from the diagonals of one DP per sequence; prefix
    lengths (i + 1, j + 1) drive the ``length`` and ``length_pair_standardised`` rules. This is
    the Sugar target before the same-sample rule (METHOD.md section 3).
    """
    xd, lx, yd, ly, metric_, same = prepare_sets(X, Y, lengths_x, lengths_y, metric)
    log_xy = _prefix_tables(xd, lx, yd, ly, sigma, metric_, triple_kernel, medians)
    if same:  # each prefix's self-kernel is on the diagonal of its own pair's table
        b = torch.arange(log_xy.shape[0], device=log_xy.device)
        dx = dy = log_xy[b, b].diagonal(dim1=-2, dim2=-1)
    else:
        dx = _self_prefix_diagonals(xd, lx, sigma, metric_, triple_kernel, medians)
        dy = _self_prefix_diagonals(yd, ly, sigma, metric_, triple_kernel, medians)
    sx, sy = log_xy.shape[-2:]
    n = torch.arange(1, sx + 1, device=log_xy.device)[:, None]
    m = torch.arange(1, sy + 1, device=log_xy.device)[None, :]
    valid = (n <= lx[:, None, None, None]) & (m <= ly[None, :, None, None])
    return normalise_log_gak(
        log_xy, dx[:, None, :, None], dy[None, :, None, :], n, m, normalisation, valid, slope
    )
