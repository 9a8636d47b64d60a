"""Target diagnostics (METHOD.md section 8): what ``sugar targets inspect`` measures.

Shapes: B samples per batch, n prefixes, S slices.

On validation samples, in batches as training forms them (same views, same prefix sampling),
for each target setting (normalisation x same-sample rule x Triple Kernel):

- ``length_r2``: share of the target variance explained by the unordered (n, m) length pair of
  the two prefixes (1 - within-group variance / total variance, entries between prefixes of
  *different* samples; views of one source count as one sample). The risk METHOD.md names
  (0.85 there; 0.78 on the built-in world with the offline teacher, with ``cosine``).
- ``below_floor``: fraction of those entries below the predicted kernel's floor
  (``local``: exp(-2/d^2) / (2 - exp(-2/d^2)); ``cosine``: -1, never), unreachable targets.
- ``unfittable_mse``: with ``same_sample_target = one`` two prefixes of one sample must map to
  one vector, so against every prefix k of another sample they must share one prediction; the
  best shared prediction (the mean) leaves ``(Ml[i,k] - Ml[j,k])^2 / 4`` on each of the two
  entries. Its mean over such entries is an error no model can remove; ``unfittable_share``
  divides it by the variance of the targets. (With ``kernel`` it is 0 by construction.)
- ``target_mean`` / ``target_std`` of different-sample entries;
- ``single_ii`` / ``single_tt`` / ``single_it``: mean target between two single-slice prefixes
  of different samples by modality (image-image, text-text, image-text). A gap between the
  same-modality means and the image-text mean is a modality gap the targets themselves ask for
  (different distance types on different scales: ``tk_standardise = median`` evens them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import product
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sugar.align import SliceEmbeddings, TypeMedians
from sugar.data.schema import Sample
from sugar.data.slices import slices
from sugar.data.views import apply_views
from sugar.losses.structure import (
    Normalisation,
    StructureOptions,
    predicted_floor,
    sample_prefixes,
    structure_targets,
)
from sugar.train.objective import group_indices

__all__ = ["inspect_targets", "length_r2", "target_table", "unfittable_mse"]

SliceLookup = Callable[[Sequence[Sample], str | Path], SliceEmbeddings]
NORMALISATIONS: tuple[Normalisation, ...] = ("cosine", "length", "length_pair_standardised")


def length_r2(values: Tensor, n: Tensor, m: Tensor) -> float:
    """Share of the variance of ``values`` explained by the unordered pair {n, m}.

    >>> v = torch.tensor([1.0, 1.0, 3.0, 3.0])
    >>> length_r2(v, torch.tensor([1, 1, 2, 2]), torch.tensor([1, 1, 1, 1]))
    1.0
    """
    lo, hi = torch.minimum(n, m), torch.maximum(n, m)
    key = lo * (int(hi.max()) + 1) + hi
    total = float(((values - values.mean()) ** 2).sum())
    if total == 0:
        return 0.0
    within = 0.0
    for group in key.unique():
        part = values[key == group]
        within += float(((part - part.mean()) ** 2).sum())
    return 1.0 - within / total


def unfittable_mse(target: Tensor, sample_index: Tensor, keep: Tensor) -> tuple[float, int]:
    """Mean irreducible squared error per entry, ``(Ml[i,k] - Ml[j,k])^2 / 4``, over kept
    same-sample pairs i != j and kept k of other samples, and the number of (i, j, k) terms."""
    total, count = 0.0, 0
    kept = keep.nonzero().squeeze(1).tolist()
    for i in kept:
        for j in kept:
            if j <= i or sample_index[i] != sample_index[j]:
                continue
            others = keep & (sample_index != sample_index[i])
            diff = (target[i, others] - target[j, others]) ** 2 / 4
            total += float(diff.sum())
            count += int(others.sum())
    return (total / count if count else 0.0), count


def inspect_targets(
    samples: Sequence[Sample],
    root: str | Path,
    lookup: SliceLookup,
    *,
    delta: float,
    medians: TypeMedians | None,
    batch_size: int,
    prefixes_per_sample: int,
    view_weights: dict[str, float],
    slice_text_by: str = "sentence",
    seed: int = 0,
    max_batches: int = 8,
    target_slope: float = StructureOptions.target_slope,
) -> list[dict[str, Any]]:
    """One row per setting (module docstring), over up to ``max_batches`` validation batches;
    ``length_pair_standardised`` with the run's logistic ``target_slope``."""
    floor_local = predicted_floor(delta)
    rows: dict[tuple[Normalisation, bool], dict[str, list[Tensor]]] = {}
    unfit: dict[tuple[Normalisation, bool], list[float]] = {}
    for index, start in enumerate(range(0, len(samples), batch_size)):
        if index >= max_batches:
            break
        batch = apply_views(list(samples[start : start + batch_size]), view_weights, seed, index)
        counts = [len(slices(s, by=slice_text_by)) for s in batch]  # type: ignore[arg-type]
        g = torch.Generator().manual_seed(seed * 7919 + index)
        b, e, keep = sample_prefixes(counts, prefixes_per_sample, g)
        teacher = lookup(batch, root)
        group = group_indices(batch)[b]  # the same-sample rule works on views of one source
        other = (group[:, None] != group[None, :]) & keep[:, None] & keep[None, :]
        for normalisation, tk in product(NORMALISATIONS, (True, False)):
            options = StructureOptions(
                gak_normalisation=normalisation, triple_kernel=tk, same_sample_target="kernel",
                target_slope=target_slope if normalisation == "length_pair_standardised" else 1.0,
            )  # fmt: skip
            target = structure_targets(teacher, b, e, sigma=delta, options=options, medians=medians)
            store = rows.setdefault(
                (normalisation, tk), {"v": [], "n": [], "m": [], "ii": [], "tt": [], "it": []}
            )
            store["v"].append(target[other].float())
            single = other & (e[:, None] == 0) & (e[None, :] == 0)
            text = teacher.is_text[b, 0]
            both_text, both_image = text[:, None] & text[None, :], ~text[:, None] & ~text[None, :]
            store["tt"].append(target[single & both_text].float())
            store["ii"].append(target[single & both_image].float())
            store["it"].append(target[single & ~both_text & ~both_image].float())
            store["n"].append((e[:, None] + 1).expand_as(target)[other])
            store["m"].append((e[None, :] + 1).expand_as(target)[other])
            value, terms = unfittable_mse(target, group, keep)
            if terms:
                unfit.setdefault((normalisation, tk), []).append(value)
    out = []
    for (normalisation, tk), store in rows.items():
        values, n, m = (torch.cat(store[k]) for k in ("v", "n", "m"))
        variance = float(values.var()) if len(values) > 1 else 0.0
        mse = sum(unfit.get((normalisation, tk), [0.0])) / max(
            1, len(unfit.get((normalisation, tk), []))
        )
        out.append(
            {
                "normalisation": normalisation,
                "triple_kernel": tk,
                "entries": len(values),
                "target_mean": float(values.mean()),
                "target_std": variance**0.5,
                "length_r2": length_r2(values, n, m),
                "below_floor_local": float((values < floor_local).float().mean()),
                "unfittable_mse": mse,
                "unfittable_share": mse / variance if variance else 0.0,
                **{
                    f"single_{kind}": float(torch.cat(store[kind]).mean())
                    if sum(len(x) for x in store[kind])
                    else float("nan")
                    for kind in ("ii", "tt", "it")
                },
            }
        )
    return out


def target_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The lines ``sugar targets inspect`` prints for :func:`inspect_targets`'s rows."""
    lines = [
        f"{'normalisation':<26}{'TK':>4}{'entries':>9}{'mean':>7}{'std':>7}{'len R2':>8}"
        f"{'<floor':>8}{'unfit mse':>10}{'unfit %':>9}{'1x1 ii':>8}{'1x1 tt':>8}{'1x1 it':>8}"
    ]
    for row in rows:
        lines.append(
            f"{row['normalisation']:<26}{'y' if row['triple_kernel'] else 'n':>4}"
            f"{row['entries']:>9}{row['target_mean']:>7.3f}{row['target_std']:>7.3f}"
            f"{row['length_r2']:>8.3f}{row['below_floor_local']:>8.3f}"
            f"{row['unfittable_mse']:>10.4f}{100 * row['unfittable_share']:>8.1f}%"
            f"{row['single_ii']:>8.3f}{row['single_tt']:>8.3f}{row['single_it']:>8.3f}"
        )
    return lines
