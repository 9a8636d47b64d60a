"""From user inputs (sequences or slice embeddings) to ground-cost tensors over pairs."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from sugar.align._inputs import SequenceSet, as_batch, as_sequence, check_same_dim
from sugar.align.kernels import (
    SliceEmbeddings,
    TypeMedians,
    cdist_cost,
    paired_cost,
    triple_kernel_cost,
)

GroundMetric = Literal["sqeuclidean", "cosine", "triple_kernel"]
Data = Tensor | SliceEmbeddings


def resolve_metric(data: Data, metric: str | None) -> GroundMetric:
    """The metric to use: ``triple_kernel`` for slice embeddings, ``sqeuclidean`` by default."""
    is_slices = isinstance(data, SliceEmbeddings)
    if metric is None:
        return "triple_kernel" if is_slices else "sqeuclidean"
    if metric not in ("sqeuclidean", "cosine", "triple_kernel"):
        raise ValueError(
            f"metric must be 'sqeuclidean', 'cosine' or 'triple_kernel', got {metric!r}"
        )
    if is_slices != (metric == "triple_kernel"):
        raise ValueError(
            f"metric={metric!r} does not fit the input: SliceEmbeddings take "
            "metric='triple_kernel', tensors take 'sqeuclidean' or 'cosine'"
        )
    return metric  # type: ignore[return-value]


def prepare_set(
    name: str, x: SequenceSet | SliceEmbeddings, lengths: Any = None
) -> tuple[Data, Tensor]:
    """A set of sequences -> (padded data, (B,) lengths)."""
    if isinstance(x, SliceEmbeddings):
        if lengths is not None:
            raise ValueError(f"lengths of {name}: SliceEmbeddings carry their own lengths")
        return x, x.lengths
    return as_batch(name, x, lengths)


def prepare_sets(
    x: SequenceSet | SliceEmbeddings,
    y: SequenceSet | SliceEmbeddings | None,
    lengths_x: Any,
    lengths_y: Any,
    metric: str | None,
) -> tuple[Data, Tensor, Data, Tensor, GroundMetric, bool]:
    """Two sets X, Y (Y defaults to X) -> (X, lengths, Y, lengths, metric, Y is X)."""
    xd, lx = prepare_set("X", x, lengths_x)
    same = y is None
    if y is None:
        if lengths_y is not None:
            raise ValueError("lengths_y given without Y")
        yd, ly = xd, lx
    else:
        yd, ly = prepare_set("Y", y, lengths_y)
    return xd, lx, yd, ly, _resolve_both(xd, yd, metric), same


def _resolve_both(xd: Data, yd: Data, metric: str | None) -> GroundMetric:
    """:func:`resolve_metric` for ``xd``, checked against ``yd`` too."""
    metric_ = resolve_metric(xd, metric)
    resolve_metric(yd, metric_)
    return metric_


def flatten_pairs(cost: Tensor, lx: Tensor, ly: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(Bx, By, Sx, Sy) costs -> ((Bx*By, Sx, Sy) view, (Bx*By,) lengths_x, lengths_y)."""
    bx, by, sx, sy = cost.shape
    px = lx[:, None].expand(bx, by).reshape(-1)
    py = ly[None, :].expand(bx, by).reshape(-1)
    return cost.reshape(bx * by, sx, sy), px, py


def prepare_cost(
    name: str, cost: Tensor, lengths_x: Any, lengths_y: Any
) -> tuple[Tensor, Tensor, Tensor, bool]:
    """A precomputed (n, m) or (P, N, M) cost -> ((P, N, M), (P,) lengths_x, lengths_y, single)."""
    single = cost.dim() == 2
    cells = cost[None] if single else cost
    if cells.dim() != 3 or 0 in cells.shape[1:]:
        raise ValueError(
            f"{name} must have shape (n, m) or (P, N, M) with n, m >= 1, got {tuple(cost.shape)}"
        )
    p, n, m = cells.shape
    lx = torch.full((p,), n) if lengths_x is None else torch.as_tensor(lengths_x).reshape(p)
    ly = torch.full((p,), m) if lengths_y is None else torch.as_tensor(lengths_y).reshape(p)
    return cells, lx, ly, single


def prepare_pair(
    x: SequenceSet | SliceEmbeddings,
    y: SequenceSet | SliceEmbeddings,
    lengths_x: Any,
    lengths_y: Any,
    metric: str | None,
) -> tuple[Data, Tensor, Data, Tensor, GroundMetric, bool]:
    """Two sequences, or two equally long batches of sequences paired row by row.

    Returns (x, lengths_x, y, lengths_y, metric, single) with batch dimensions, the metric
    resolved for both inputs (as :func:`prepare_sets`); ``single`` says the inputs were one
    (n, D) and one (m, D) sequence.
    """
    single = not isinstance(x, SliceEmbeddings | list | tuple) and _ndim(x) <= 2
    xd: Data
    yd: Data
    if single:
        if lengths_x is not None or lengths_y is not None:
            raise ValueError("lengths_x / lengths_y are for batches of sequences, not single ones")
        xs, ys = as_sequence("x", x), as_sequence("y", y)
        check_same_dim("x", xs, "y", ys)
        xd, lx, yd, ly = xs[None], _lengths(xs), ys[None], _lengths(ys)
    else:
        xd, lx = prepare_set("x", x, lengths_x)
        yd, ly = prepare_set("y", y, lengths_y)
        if lx.shape != ly.shape:
            raise ValueError(
                f"x and y must hold as many sequences, got {lx.shape[0]} and {ly.shape[0]}"
            )
        if isinstance(xd, Tensor) and isinstance(yd, Tensor):
            check_same_dim("x", xd, "y", yd)
    return xd, lx, yd, ly, _resolve_both(xd, yd, metric), single


def _ndim(x: Any) -> int:
    return int(getattr(x, "ndim", 2))


def _lengths(seq: Tensor) -> Tensor:
    return torch.tensor([seq.shape[0]], device=seq.device)


def ground_cost(
    x: Data,
    y: Data,
    metric: str,
    triple_kernel: bool = True,
    medians: TypeMedians | None = None,
    paired: bool = False,
) -> Tensor:
    """Ground cost of every step pair: (Bx, By, Sx, Sy) for every sequence pair, or with
    ``paired`` (B, Sx, Sy) for the b-th pair (``triple_kernel_cost``'s convention)."""
    if isinstance(x, SliceEmbeddings) and isinstance(y, SliceEmbeddings):
        return triple_kernel_cost(x, y, triple_kernel, medians, paired=paired)
    assert isinstance(x, Tensor) and isinstance(y, Tensor)
    if paired:
        return paired_cost(x, y, metric)  # type: ignore[arg-type]
    check_same_dim("X", x, "Y", y)
    return cdist_cost(x, y, metric)  # type: ignore[arg-type]
