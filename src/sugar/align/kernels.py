"""Ground distances, the local GAK kernel, the Triple Kernel and bandwidth heuristics.

Shapes: B sequences, S slices (time steps), D features; X has Bx sequences of up to Sx steps.

- :func:`cdist_cost` -- the cost of every step pair of every sequence pair, from one matrix
  product: ``sqeuclidean`` ``||a - b||^2`` or ``cosine`` ``1 - cos(a, b)``.
- :func:`local_log_kernel` -- ``log k`` of Cuturi's GAK local kernel,
  ``k = exp(-t) / (2 - exp(-t))`` with ``t = phi / (2 sigma^2)`` (tslearn's convention).
- :class:`SliceEmbeddings` and :func:`triple_kernel_cost` -- Sugar's Triple-Kernel ground
  distance (METHOD.md section 4): uni-modal vectors for same-modality pairs, cross-modal vectors
  otherwise, each kind of vector in its own tensor with its own width.
- :func:`sigma_gak` (tslearn's median heuristic), :func:`triple_kernel_medians` and
  :func:`auto_delta` (METHOD.md section 3: the median of sqrt(phi) over sampled slice pairs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from sugar.align._inputs import SequenceSet, as_batch, as_float_tensor, check_positive

__all__ = [
    "Metric",
    "SliceEmbeddings",
    "TypeMedians",
    "auto_delta",
    "cdist_cost",
    "local_kernel",
    "local_log_kernel",
    "paired_cost",
    "prefix_mean_local_kernel",
    "sigma_gak",
    "triple_kernel_cost",
    "triple_kernel_medians",
]

Metric = Literal["sqeuclidean", "cosine"]
_METRICS = ("sqeuclidean", "cosine")


def _check_metric(metric: str) -> None:
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {list(_METRICS)}, got {metric!r}")


def _sq_distances(a: Tensor, b: Tensor) -> Tensor:
    """Squared Euclidean distances between rows: (..., n, D), (..., m, D) -> (..., n, m)."""
    sq = (
        (a * a).sum(-1)[..., :, None]
        + (b * b).sum(-1)[..., None, :]
        - 2 * (a @ b.transpose(-1, -2))
    )
    return sq.clamp_min(0.0)


def _cos_distances(a: Tensor, b: Tensor) -> Tensor:
    a = torch.nn.functional.normalize(a, dim=-1)
    b = torch.nn.functional.normalize(b, dim=-1)
    return (1.0 - a @ b.transpose(-1, -2)).clamp_min(0.0)


def _distances(a: Tensor, b: Tensor, metric: str) -> Tensor:
    _check_metric(metric)
    return _sq_distances(a, b) if metric == "sqeuclidean" else _cos_distances(a, b)


def cdist_cost(x: Tensor, y: Tensor, metric: Metric = "sqeuclidean") -> Tensor:
    """Cost of every step pair of every sequence pair: (Bx, Sx, D), (By, Sy, D) -> (Bx, By, Sx, Sy).

    One matrix product over all steps, ``(Sx*Bx, D) @ (D, Sy*By)``. The result's memory is laid
    out (Sx, Sy, Bx, By), pairs innermost, which is what the alignment DP reads without a copy;
    ``.reshape(Bx * By, Sx, Sy)`` of it is a view. Padded steps get a cost like any other; the
    alignment functions ignore them.

    >>> cdist_cost(torch.zeros(2, 3, 4), torch.ones(5, 6, 4)).shape
    torch.Size([2, 5, 3, 6])
    """
    _check_metric(metric)
    bx, sx, d = x.shape
    by, sy, _ = y.shape
    same = y is x  # one set against itself (cdist_* of one set): its copies serve both sides
    if metric == "cosine":
        x = torch.nn.functional.normalize(x, dim=-1)
        y = x if same else torch.nn.functional.normalize(y, dim=-1)
    xs = x.transpose(0, 1).reshape(sx * bx, d)
    ys = xs if same else y.transpose(0, 1).reshape(sy * by, d)
    prod = (xs @ ys.T).view(sx, bx, sy, by).permute(0, 2, 1, 3)  # (Sx, Sy, Bx, By) view
    # in-place steps on fresh temporaries (autograd allows them: none is saved for backward)
    if metric == "cosine":
        cost = prod.contiguous().neg_().add_(1.0)
    else:
        norms_x = (x * x).sum(-1).T.contiguous()  # (Sx, Bx)
        norms_y = norms_x if same else (y * y).sum(-1).T.contiguous()
        x2 = norms_x.reshape(sx, 1, bx, 1)
        y2 = norms_y.reshape(1, sy, 1, by)
        cost = (x2 + y2).add_(prod, alpha=-2.0)  # keeps the first operand's layout
    return cost.clamp_min_(0.0).permute(2, 3, 0, 1)


def paired_cost(x: Tensor, y: Tensor, metric: Metric = "sqeuclidean") -> Tensor:
    """Cost of every step pair of the b-th sequence pair: (B, Sx, D), (B, Sy, D) -> (B, Sx, Sy)."""
    return _distances(x, y, metric)


class _LocalLogKernel(torch.autograd.Function):
    """``log k(phi)`` with a backward that needs only the output: d log k / dt = -(1 + k)."""

    @staticmethod
    def forward(ctx: Any, phi: Tensor, inv_two_sigma_sq: float | Tensor) -> Tensor:
        t = phi * inv_two_sigma_sq
        out = t.neg().expm1_().neg_().log1p_().add_(t).neg_()  # -t - log1p(-expm1(-t))
        ctx.save_for_backward(
            out, inv_two_sigma_sq if isinstance(inv_two_sigma_sq, Tensor) else None
        )
        ctx.scalar = inv_two_sigma_sq if not isinstance(inv_two_sigma_sq, Tensor) else None
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        out, tensor_scale = ctx.saved_tensors
        scale = tensor_scale if tensor_scale is not None else ctx.scalar
        # d log k / d phi = -(1 + k) / (2 sigma^2), with k = exp(log k)
        return out.exp().add_(1.0).mul_(grad).mul_(scale).neg_(), None


def local_log_kernel(phi: Tensor, sigma: float | Tensor) -> Tensor:
    """``log k`` of GAK's local kernel for ground distances ``phi`` >= 0 and bandwidth ``sigma``.

    ``k = exp(-t) / (2 - exp(-t))`` with ``t = phi / (2 sigma^2)`` (Cuturi 2011, "Fast Global
    Alignment Kernels"; tslearn's ``gak``), so ``log k = -t - log1p(-expm1(-t))``, exact for
    small and large ``t``. ``sigma`` may be a tensor broadcasting against ``phi`` (not
    differentiated). Differentiable in ``phi``: ``d log k / d phi = -(1 + k) / (2 sigma^2)``.

    >>> float(local_log_kernel(torch.tensor(0.0), 1.0)) == 0.0
    True
    """
    inv = 1.0 / (2.0 * sigma * sigma)
    if isinstance(inv, Tensor):
        inv = inv.detach()
    return _LocalLogKernel.apply(phi, inv)


def local_kernel(phi: Tensor, sigma: float | Tensor) -> Tensor:
    """GAK's local kernel ``k = exp(-t) / (2 - exp(-t))``, ``t = phi / (2 sigma^2)``, itself.

    Unlike :func:`local_log_kernel` (the DP's log domain, ``sigma`` held constant) this one is
    differentiable in both ``phi`` and ``sigma``: L_d's predicted matrix uses it with a learned
    bandwidth (:func:`sugar.losses.structure.predicted_matrix`).

    >>> float(local_kernel(torch.tensor(0.0), 1.0))
    1.0
    """
    t = phi / (2 * sigma**2)
    return torch.exp(-t - torch.log(2 - torch.exp(-t)))


def prefix_mean_local_kernel(
    phi: Tensor, sigma: float, lengths_x: Tensor, lengths_y: Tensor
) -> Tensor:
    """Mean local kernel over all slice pairs of every prefix pair (the "w/o GAK" target).

    ``phi``: (P, N, M) ground distances; returns (P, N, M) with ``out[p, i, j]`` the mean of
    ``k(phi[p, :i+1, :j+1])`` (METHOD.md section 5). Entries beyond the lengths are NaN.
    """
    k = torch.exp(local_log_kernel(phi, sigma))
    total = k.cumsum(-1).cumsum(-2)
    n, m = phi.shape[-2:]
    i = torch.arange(1, n + 1, dtype=phi.dtype, device=phi.device)[:, None]
    j = torch.arange(1, m + 1, dtype=phi.dtype, device=phi.device)[None, :]
    out = total / (i * j)
    return _nan_beyond(out, lengths_x, lengths_y)


def _nan_beyond(table: Tensor, lengths_x: Tensor, lengths_y: Tensor) -> Tensor:
    """Set entries of (..., N, M) beyond (lengths_x, lengths_y) (shaped like ...) to NaN."""
    n, m = table.shape[-2:]
    keep = (torch.arange(n, device=table.device) < lengths_x[..., None])[..., :, None] & (
        torch.arange(m, device=table.device) < lengths_y[..., None]
    )[..., None, :]
    return torch.where(keep, table, torch.full((), float("nan"), dtype=table.dtype))


# --------------------------------------------------------------------------------------------
# The Triple Kernel
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TypeMedians:
    """Training-set medians of each distance type, for ``tk_standardise = median``."""

    image: float = 1.0
    """Median squared distance of uni-modal image vectors over image-image slice pairs."""
    text: float = 1.0
    """Median squared distance of uni-modal text vectors over text-text slice pairs."""
    cross: float = 1.0
    """Median squared distance of cross-modal vectors over image-text slice pairs."""


@dataclass(frozen=True)
class SliceEmbeddings:
    """Teacher embeddings of B sequences of up to S slices, kept per kind (METHOD.md section 4).

    Rows of ``image`` at text slices and of ``text`` at image slices are ignored (any value);
    rows beyond ``lengths`` are padding. All vectors are expected unit-norm (teachers' output).
    """

    image: Tensor
    """(B, S, Di) uni-modal image vectors (e.g. EfficientNet or DINOv2)."""
    text: Tensor
    """(B, S, Dt) uni-modal text vectors (e.g. MiniLM or BGE)."""
    cross: Tensor
    """(B, S, Dc) cross-modal vectors (e.g. a CLIP tower or a trained head)."""
    is_text: Tensor
    """(B, S) bool: True for text slices, False for image slices."""
    lengths: Tensor
    """(B,) int: the number of slices of each sequence, each in [1, S]."""

    def __post_init__(self) -> None:
        b, s = self.is_text.shape
        for name in ("image", "text", "cross"):
            t = getattr(self, name)
            if t.dim() != 3 or t.shape[:2] != (b, s):
                raise ValueError(
                    f"SliceEmbeddings.{name} must have shape ({b}, {s}, D), got {tuple(t.shape)}"
                )
        if self.is_text.dtype != torch.bool:
            raise ValueError(f"SliceEmbeddings.is_text must be bool, got {self.is_text.dtype}")
        if self.lengths.shape != (b,) or ((self.lengths < 1) | (self.lengths > s)).any():
            raise ValueError(
                f"SliceEmbeddings.lengths must be {b} integers in [1, {s}], "
                f"got {self.lengths.tolist()}"
            )

    @property
    def valid(self) -> Tensor:
        """(B, S) bool: True at real (non-padding) slices."""
        s = self.is_text.shape[1]
        return torch.arange(s, device=self.lengths.device)[None, :] < self.lengths[:, None]


def triple_kernel_cost(
    x: SliceEmbeddings,
    y: SliceEmbeddings | None = None,
    triple_kernel: bool = True,
    medians: TypeMedians | None = None,
    paired: bool = False,
) -> Tensor:
    """Triple-Kernel ground distance of every slice pair of every sequence pair.

    Returns (Bx, By, Sx, Sy) with ``phi(a, b) = ||u_a - u_b||^2`` (uni-modal vectors of the
    shared modality) when a and b are both images or both texts, and ``||c_a - c_b||^2``
    (cross-modal vectors) otherwise (the paper's Eq. 4). Three matrix products (image-image,
    text-text, all-pairs cross) and a mask. ``triple_kernel=False`` ("w/o TK") uses the
    cross-modal vectors for every pair. ``medians`` divides each distance type by its training
    median (``tk_standardise = median``). ``paired=True`` pairs the b-th sequences only and
    returns (B, Sx, Sy). Entries at padded slices are finite but unspecified.
    """
    y = x if y is None else y
    for kind in ("image", "text", "cross"):
        if getattr(x, kind).shape[-1] != getattr(y, kind).shape[-1]:
            raise ValueError(
                f"{kind} vectors have different widths: {getattr(x, kind).shape[-1]} and "
                f"{getattr(y, kind).shape[-1]}"
            )
    if paired and x.lengths.shape != y.lengths.shape:
        raise ValueError(
            "paired costs need as many sequences in x as in y, "
            f"got {x.lengths.shape[0]} and {y.lengths.shape[0]}"
        )
    m = medians or TypeMedians()
    if paired:
        cross = paired_cost(x.cross, y.cross) / m.cross
        if not triple_kernel:
            return cross
        tx, ty = x.is_text[:, :, None], y.is_text[:, None, :]
        text = paired_cost(x.text, y.text) / m.text
        image = paired_cost(x.image, y.image) / m.image
        return torch.where(tx & ty, text, torch.where(~tx & ~ty, image, cross))
    if triple_kernel:
        fused = _fused_cost(x, y, m)
        if fused is not None:
            return fused
    cross = cdist_cost(x.cross, y.cross) / m.cross
    if not triple_kernel:
        return cross
    # Uni-modal distances only where both slices have that modality: one product over the real
    # image slices and one over the real text slices (not over every padded slot), written
    # into the cross-modal costs, whose memory order (Sx, Sy, Bx, By) is kept.
    index: list[list[Tensor]] = [[], [], [], []]
    values = []
    for kind, median in (("image", m.image), ("text", m.text)):
        want = x.is_text if kind == "text" else ~x.is_text
        got = y.is_text if kind == "text" else ~y.is_text
        bi, si = (want & x.valid).nonzero(as_tuple=True)
        bj, sj = (got & y.valid).nonzero(as_tuple=True)
        if len(bi) == 0 or len(bj) == 0:
            continue
        block = _sq_distances(getattr(x, kind)[bi, si], getattr(y, kind)[bj, sj]) / median
        ni, nj = len(bi), len(bj)
        for slot, ids in enumerate((si[:, None], sj[None, :], bi[:, None], bj[None, :])):
            index[slot].append(ids.expand(ni, nj).reshape(-1))
        values.append(block.reshape(-1))
    memory = cross.permute(2, 3, 0, 1)  # contiguous
    if values:
        memory = memory.index_put(tuple(torch.cat(ids) for ids in index), torch.cat(values))
    return memory.permute(2, 3, 0, 1)


def _fused_cost(x: SliceEmbeddings, y: SliceEmbeddings, medians: TypeMedians) -> Tensor | None:
    """The compiled assembly of the same cost (sugar.align._fused_cost), where it applies."""
    try:
        from sugar.align._fused_cost import fused_triple_kernel_cost
    except ImportError:  # numba is not installed
        return None
    return fused_triple_kernel_cost(x, y, medians)


def _pair_phi(
    slices: SliceEmbeddings, a: Tensor, b: Tensor, triple_kernel: bool, medians: TypeMedians
) -> Tensor:
    """phi between flat slice indices ``a`` and ``b`` (into the valid slices, row-major)."""
    valid = slices.valid
    flat = {k: getattr(slices, k)[valid] for k in ("image", "text", "cross")}
    is_text = slices.is_text[valid]

    def sq(kind: str) -> Tensor:
        return (flat[kind][a] - flat[kind][b]).pow(2).sum(-1)

    cross = sq("cross") / medians.cross
    if not triple_kernel:
        return cross
    ta, tb = is_text[a], is_text[b]
    return torch.where(
        ta & tb,
        sq("text") / medians.text,
        torch.where(~ta & ~tb, sq("image") / medians.image, cross),
    )


def _sample_pairs(
    pool_a: Tensor, pool_b: Tensor, n_pairs: int, rng: np.random.Generator
) -> tuple[Tensor, Tensor]:
    """``n_pairs`` random pairs (a from pool_a, b from pool_b, a != b)."""
    a = torch.as_tensor(rng.choice(pool_a.numpy(), size=4 * n_pairs))
    b = torch.as_tensor(rng.choice(pool_b.numpy(), size=4 * n_pairs))
    keep = a != b
    return a[keep][:n_pairs], b[keep][:n_pairs]


def triple_kernel_medians(
    slices: SliceEmbeddings, n_pairs: int = 1000, seed: int = 0
) -> TypeMedians:
    """Median squared distance of each distance type over ``n_pairs`` random slice pairs.

    Image-image pairs use the uni-modal image vectors, text-text pairs the uni-modal text
    vectors, image-text pairs the cross-modal vectors. A type with no pair in ``slices`` (for
    instance no image at all) keeps the neutral value 1.0. A zero median is an error.
    """
    rng = np.random.default_rng(seed)
    is_text = slices.is_text[slices.valid].cpu()
    texts, images = is_text.nonzero()[:, 0], (~is_text).nonzero()[:, 0]
    values: dict[str, float] = {}
    plan = {"image": (images, images), "text": (texts, texts), "cross": (images, texts)}
    for kind, (pool_a, pool_b) in plan.items():
        if len(pool_a) == 0 or len(pool_b) == 0 or (kind != "cross" and len(pool_a) < 2):
            continue
        a, b = _sample_pairs(pool_a, pool_b, n_pairs, rng)
        phi = _pair_phi(slices, a, b, True, TypeMedians())
        median = float(phi.median())
        if median <= 0:
            raise ValueError(
                f"the median {kind} distance is 0: the {kind} vectors are all identical"
            )
        values[kind] = median
    return TypeMedians(**values)


def auto_delta(
    slices: SliceEmbeddings,
    n_pairs: int = 1000,
    seed: int = 0,
    triple_kernel: bool = True,
    medians: TypeMedians | None = None,
) -> float:
    """``delta = auto`` (METHOD.md section 3): the median of sqrt(phi) over random slice pairs.

    Pairs are drawn uniformly among the valid slices of ``slices`` (a != b), phi is the
    Triple-Kernel distance with the same ``triple_kernel`` and ``medians`` as the targets.
    Computed once before training, from the training split; ``n_pairs`` >= 1000.
    """
    if n_pairs < 1000:
        raise ValueError(f"n_pairs must be >= 1000 for delta = auto, got {n_pairs}")
    pool = torch.arange(int(slices.lengths.sum()))
    if len(pool) < 2:
        raise ValueError("auto_delta needs at least 2 slices")
    a, b = _sample_pairs(pool, pool, n_pairs, np.random.default_rng(seed))
    phi = _pair_phi(slices, a, b, triple_kernel, medians or TypeMedians())
    delta = float(phi.sqrt().median())
    if delta <= 0:
        raise ValueError("auto_delta: the median distance is 0 (all slices identical)")
    return delta


def sigma_gak(
    x: SequenceSet, lengths: Any = None, n_samples: int = 100, random_state: int | None = 0
) -> float:
    """tslearn's bandwidth heuristic for GAK: median pairwise distance times sqrt(S).

    ``n_samples`` time steps are drawn from all valid steps of ``x`` (with replacement when
    fewer exist) by ``numpy.random.RandomState(random_state).choice``, exactly as
    ``tslearn.metrics.sigma_gak``; the median of their pairwise Euclidean distances is
    multiplied by sqrt of the padded length S (Cuturi 2011). Same seed, same value as tslearn.

    >>> round(sigma_gak([[1.0, 2.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]], n_samples=200), 6)
    2.0
    """
    check_positive("n_samples", n_samples)
    t, lens = as_batch("x", as_float_tensor("x", x) if not isinstance(x, list) else x, lengths)
    s = t.shape[1]
    valid = torch.arange(s)[None, :] < lens[:, None]
    steps = t[valid].detach().cpu().double().numpy()
    rng = np.random.RandomState(random_state)
    idx = rng.choice(len(steps), size=n_samples, replace=len(steps) < n_samples)
    sample = steps[idx]
    diff = sample[:, None, :] - sample[None, :, :]
    dist = np.sqrt((diff**2).sum(-1))[np.triu_indices(n_samples, k=1)]
    return float(np.median(dist) * math.sqrt(s))
