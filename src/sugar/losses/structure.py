"""L_d, Sugar's structure-induced loss (METHOD.md sections 2-5): tensors in, named parts out.

Shapes: B samples, S slices per sample (padded), n prefixes, P projector width.

Each training sample contributes ``prefixes_per_sample`` prefixes (:func:`sample_prefixes`).
For the n picked prefixes the loss compares two (n, n) matrices:

- the target ``Ml`` (:func:`structure_targets`, constants under no-grad): the normalised Global
  Alignment Kernel of the two prefixes' teacher slice sequences under the Triple-Kernel ground
  distance; with a fixed sigma all prefix pairs of two samples come from one DP
  (``gak_prefix_gram``, unpadded: the padded ``cdist_gak_prefixes`` is its reference);
  ``same_sample_target="one"`` sets 1 between prefixes of one sample;
  ``use_gak=False`` ("w/o GAK") uses the mean local kernel over the prefixes' slice pairs;
- the prediction ``Mr`` (:func:`predicted_matrix`) from the unit vectors ``r``: the local kernel
  ``k = exp(-t) / (2 - exp(-t))``, ``t = ||r_i - r_j||^2 / (2 sigma^2)`` with the target's sigma
  (``local``), a learnable sigma (``learned``), or ``r_i . r_j`` (``cosine``).

:func:`structure_loss` reduces ``(Mr - Ml)^2`` over the kept rows and columns: ``paper`` =
(1/n) sum, ``mean`` = (1/n^2) sum; ``structure_mse`` is always the plain mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from sugar.align import (
    SliceEmbeddings,
    TypeMedians,
    cdist_gak,
    gak_prefix_gram,
    prefix_mean_local_kernel,
    prefix_offsets,
    triple_kernel_cost,
)
from sugar.align.gak import Normalisation
from sugar.align.kernels import local_kernel

__all__ = [
    "ImagePool",
    "Normalisation",
    "PredictedKernel",
    "Reduction",
    "SameSampleTarget",
    "SigmaMode",
    "SliceTextBy",
    "StructureOptions",
    "TkStandardise",
    "local_kernel",
    "predicted_floor",
    "predicted_matrix",
    "sample_prefixes",
    "structure_loss",
    "structure_targets",
]

SliceTextBy = Literal["sentence", "segment"]
ImagePool = Literal["mean", "last"]
SigmaMode = Literal["fixed", "pair_length"]
TkStandardise = Literal["none", "median"]
PredictedKernel = Literal["local", "cosine", "learned"]
SameSampleTarget = Literal["one", "kernel"]
Reduction = Literal["paper", "mean"]


@dataclass(frozen=True)
class StructureOptions:
    """Every switch of L_d (METHOD.md sections 1-5), with the project's one set of defaults.

    The config's ``structure`` section takes its defaults from here and maps onto it once
    (:meth:`sugar.config.StructureConfig.options`); each field is documented there. The
    bandwidth ``delta`` and the per-type medians are resolved from data before training and
    travel separately.

    >>> StructureOptions().gak_normalisation
    'length_pair_standardised'
    """

    slice_text_by: SliceTextBy = "sentence"
    prefixes_per_sample: int = 2
    image_pool: ImagePool = "mean"
    projector_dim: int = 256
    sigma_mode: SigmaMode = "fixed"
    gak_normalisation: Normalisation = "length_pair_standardised"
    target_slope: float = 0.25
    tk_standardise: TkStandardise = "none"
    triple_kernel: bool = False
    use_gak: bool = True
    predicted_kernel: PredictedKernel = "local"
    same_sample_target: SameSampleTarget = "one"
    structure_reduction: Reduction = "mean"


def sample_prefixes(
    slice_counts: Sequence[int], per_sample: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Pick ``per_sample`` prefixes of each sample: its final slice plus random earlier ends.

    Earlier ends are drawn uniformly with replacement among the sample's other slices, so n =
    B * per_sample is constant; a prefix already picked for its sample is kept in place but
    masked (``keep`` False), as are the extra picks of a one-slice sample.

    Returns ``(sample_index, slice_index, keep)``, each (n,), ordered sample by sample with the
    final slice first.

    >>> b, e, keep = sample_prefixes([1, 3], 2, torch.Generator().manual_seed(0))
    >>> b.tolist(), e.tolist()[::2], keep.tolist()[:2]
    ([0, 0, 1, 1], [0, 2], [True, False])
    """
    if per_sample < 1:
        raise ValueError(f"prefixes_per_sample={per_sample}: must be >= 1")
    samples, ends, keep = [], [], []
    for b, count in enumerate(slice_counts):
        if count < 1:
            raise ValueError(f"sample {b} has no slice")
        chosen = [count - 1]
        if count > 1 and per_sample > 1:
            draws = torch.randint(0, count - 1, (per_sample - 1,), generator=generator)
            chosen += draws.tolist()
        else:
            chosen += [count - 1] * (per_sample - 1)
        seen: set[int] = set()
        for e in chosen:
            samples.append(b)
            ends.append(e)
            keep.append(e not in seen)
            seen.add(e)
    return (
        torch.tensor(samples, dtype=torch.long),
        torch.tensor(ends, dtype=torch.long),
        torch.tensor(keep, dtype=torch.bool),
    )


def _truncate(
    slices: SliceEmbeddings, sample_index: Tensor, slice_index: Tensor
) -> SliceEmbeddings:
    """The n prefixes as their own sequences (for per-pair bandwidths)."""
    take = sample_index.to(slices.lengths.device)
    return SliceEmbeddings(
        image=slices.image[take],
        text=slices.text[take],
        cross=slices.cross[take],
        is_text=slices.is_text[take],
        lengths=slice_index.to(slices.lengths.device) + 1,
    )


@torch.no_grad()
def structure_targets(
    slices: SliceEmbeddings,
    sample_index: Tensor,
    slice_index: Tensor,
    *,
    sigma: float,
    options: StructureOptions = StructureOptions(),
    medians: TypeMedians | None = None,
    groups: Tensor | None = None,
) -> Tensor:
    """``Ml`` for the picked prefixes of the B samples in ``slices``. # (n, n), no gradient

    ``slices``: the teacher embeddings of the batch's samples (B, S, .); prefix i is sample
    ``sample_index[i]``'s slices ``0..slice_index[i]``. ``options`` (METHOD.md sections 3-5):
    ``sigma_mode``, ``gak_normalisation`` (and its ``target_slope``), ``triple_kernel``,
    ``use_gak``, ``same_sample_target``; the others do not change the target. With
    ``sigma_mode="fixed"`` one DP per pair of samples gives every prefix pair; ``pair_length``
    (sigma = delta * sqrt((n + m) / 2) per pair) runs one DP per prefix pair. ``groups`` (B,)
    makes the same-sample rule apply to samples of one group (views of one source,
    :mod:`sugar.data.views`); default: each sample its own group.
    """
    b, e = sample_index, slice_index
    sigma_mode, normalisation = options.sigma_mode, options.gak_normalisation
    slope = options.target_slope if normalisation == "length_pair_standardised" else 1.0
    triple_kernel, same_sample_target = options.triple_kernel, options.same_sample_target
    if not options.use_gak:
        phi = triple_kernel_cost(slices, triple_kernel=triple_kernel, medians=medians)
        count, _, s, _ = phi.shape
        lengths = slices.lengths
        table = prefix_mean_local_kernel(
            phi.reshape(count * count, s, s),
            sigma,
            lengths.repeat_interleave(count),
            lengths.repeat(count),
        ).reshape(count, count, s, s)
        target = table[b[:, None], b[None, :], e[:, None], e[None, :]]
    elif sigma_mode == "fixed":
        gram = gak_prefix_gram(  # every prefix pair, unpadded (sugar.align.prefix_gram)
            slices, sigma=sigma, normalisation=normalisation, triple_kernel=triple_kernel,
            medians=medians, slope=slope,
        )  # fmt: skip
        rows = prefix_offsets(slices.lengths)[b.to(slices.lengths.device)] + e.to(
            slices.lengths.device
        )
        target = gram[rows[:, None], rows[None, :]]  # (n, n)
    elif sigma_mode == "pair_length":
        target = cdist_gak(
            _truncate(slices, b, e), sigma=sigma, normalisation=normalisation,
            sigma_mode="pair_length", triple_kernel=triple_kernel, medians=medians, slope=slope,
        )  # fmt: skip
    else:
        raise ValueError(f"sigma_mode={sigma_mode!r}: must be 'fixed' or 'pair_length'")
    if same_sample_target == "one":
        g = b if groups is None else groups.to(b.device)[b]
        target = torch.where(g[:, None] == g[None, :], torch.ones_like(target), target)
    elif same_sample_target != "kernel":
        raise ValueError(f"same_sample_target={same_sample_target!r}: 'one' or 'kernel'")
    return target


def predicted_floor(sigma: float) -> float:
    """The smallest local-kernel value unit vectors can reach (phi <= 4): the target floor.

    >>> round(predicted_floor(1.0), 4)
    0.0726
    """
    return float(local_kernel(torch.tensor(4.0, dtype=torch.float64), sigma))


def predicted_matrix(
    r: Tensor,
    kind: PredictedKernel = "local",
    sigma: float | Tensor = 1.0,
) -> Tensor:
    """``Mr`` from unit vectors ``r`` (n, P). # (n, n)

    ``local`` / ``learned``: the local kernel of ``||r_i - r_j||^2 = 2 - 2 r_i . r_j`` with
    bandwidth ``sigma`` (a tensor with a gradient for ``learned``); ``cosine``: ``r_i . r_j``.
    """
    gram = r @ r.T  # (n, n)
    if kind == "cosine":
        return gram
    if kind not in ("local", "learned"):
        raise ValueError(f"predicted_kernel={kind!r}: must be 'local', 'cosine' or 'learned'")
    return local_kernel((2 - 2 * gram).clamp_min(0), sigma)


def structure_loss(
    predicted: Tensor,
    target: Tensor,
    keep: Tensor | None = None,
    reduction: Reduction = "mean",
) -> dict[str, Tensor]:
    """Squared error between ``Mr`` and ``Ml`` over kept prefixes (rows and columns).

    Returns ``structure_loss`` (``paper``: sum / n; ``mean``: sum / n^2; n = kept prefixes)
    and ``structure_mse`` (the plain mean over kept entries, = ``mean`` here, logged always).

    >>> out = structure_loss(torch.zeros(2, 2), torch.ones(2, 2), reduction="paper")
    >>> float(out["structure_loss"]), float(out["structure_mse"])
    (2.0, 1.0)
    """
    if predicted.shape != target.shape or predicted.dim() != 2:
        raise ValueError(f"predicted {tuple(predicted.shape)} and target differ or not (n, n)")
    n = predicted.shape[0]
    keep = torch.ones(n, dtype=torch.bool, device=predicted.device) if keep is None else keep
    mask = (keep[:, None] & keep[None, :]).to(predicted.dtype)
    count = keep.sum().clamp_min(1).to(predicted.dtype)
    squared = (predicted - target.to(predicted.dtype)) ** 2 * mask
    total = squared.sum()
    if reduction == "paper":
        loss = total / count
    elif reduction == "mean":
        loss = total / count**2
    else:
        raise ValueError(f"structure_reduction={reduction!r}: must be 'paper' or 'mean'")
    return {"structure_loss": loss, "structure_mse": (total / count**2).detach()}
