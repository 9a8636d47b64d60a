"""The ``instructed`` task: does an instruction steer retrieval? (issue 22)

Shapes: Q queries, C corpus candidates, P projector width.

Queries and their shared corpus as :mod:`sugar.data.instructed` lays them out. Documents are
always embedded by the model without instruction; a query three ways:

- ``base``: the model without the instruction (one vector per query, whatever the intent);
- ``text``: the instruction prefixed as a context text segment (the E5 / GritLM way);
- ``control``: the control branch (:mod:`sugar.control`), "n/a" for a bundle without one.

Per way and intent: ``<way>_r1_<intent>`` and ``<way>_ndcg10_<intent>``; ``<way>_mean_r1`` /
``<way>_mean_ndcg10``: their means over the intents *seen in training* (meta
``heldout_intent`` false), ``<way>_heldout_r1`` / ``_heldout_ndcg10`` over the held-out ones.
Within the task, the paired bootstrap of control minus text (``control_vs_text_mean_r1``,
``_heldout_r1``: difference, 95 % CI, p) on per-item scores weighted so that their mean is the
mean over intents. Excluded candidates (a query's own image) are never ranked.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from sugar.control.branch import ControlBranch
from sugar.control.embed import embed_instructed, instructed
from sugar.data.instructed import InstructedSet
from sugar.data.jsonl import read_samples
from sugar.data.schema import Sample
from sugar.embed import embed_vectors
from sugar.eval.metrics import ndcg_at_k_items, paired_bootstrap
from sugar.models.base import MLLM
from sugar.models.prefix import RetrievalProjector

__all__ = ["WAYS", "instructed_retrieval"]

WAYS = ("base", "text", "control")
NA = "n/a"


def _weighted(values: Tensor, groups: list[str], members: list[str]) -> Tensor:
    """Per-item scores whose mean is the mean over the ``members`` groups of each group's
    mean; items outside ``members`` are left out. # (n,)"""
    keep = [i for i, g in enumerate(groups) if g in members]
    sizes = {g: groups.count(g) for g in members}
    weight = torch.tensor([len(keep) / (len(members) * sizes[groups[i]]) for i in keep])
    return values[keep].float() * weight


def instructed_retrieval(
    model: MLLM,
    projector: RetrievalProjector | None,
    branch: ControlBranch | None,
    samples: Sequence[Sample],
    root: Path,
    *,
    image_pool: Literal["mean", "last"] = "mean",
    batch_size: int = 32,
) -> dict[str, Any]:
    """The task's metrics (module docstring); ``{}`` without a projector (nothing embeds)."""
    if projector is None:
        return {}
    corpora = {str(s.meta.get("corpus")) for s in samples}
    if len(corpora) != 1:
        raise ValueError(f"instructed queries name several corpora: {sorted(corpora)}")
    data = InstructedSet(list(samples), read_samples(root / corpora.pop(), root))
    options: dict[str, Any] = {"batch_size": batch_size, "image_pool": image_pool}
    corpus = embed_vectors(model, projector, data.corpus, root, **options)
    texts = data.instructions
    queries: dict[str, Tensor | None] = {
        "base": embed_vectors(model, projector, data.queries, root, **options),
        "text": embed_vectors(
            model, projector, [instructed(q, t) for q, t in zip(data.queries, texts, strict=True)],
            root, **options,
        ),
        "control": None if branch is None else embed_instructed(
            model, projector, branch, data.queries, texts, root, **options
        ),
    }  # fmt: skip
    intents = [str(q.meta.get("intent", "user")) for q in data.queries]
    heldout = {
        i for q, i in zip(data.queries, intents, strict=True) if q.meta.get("heldout_intent")
    }
    seen = [i for i in dict.fromkeys(intents) if i not in heldout]
    unseen = [i for i in dict.fromkeys(intents) if i in heldout]
    relevance = data.relevance.numpy()
    k = min(10, len(data.corpus))
    out: dict[str, Any] = {}
    per_item: dict[str, dict[str, Tensor]] = {}
    for way, vectors in queries.items():
        if vectors is None:
            for name in dict.fromkeys(intents):
                out[f"{way}_r1_{name}"] = out[f"{way}_ndcg10_{name}"] = NA
            for group in ("mean", "heldout"):
                out[f"{way}_{group}_r1"] = out[f"{way}_{group}_ndcg10"] = NA
            continue
        scores = (vectors @ corpus.T).masked_fill(data.excluded, -1e9).numpy()
        best = np.where(relevance, scores, -np.inf).max(axis=1)
        hit = torch.as_tensor(((~relevance) & (scores >= best[:, None])).sum(axis=1) == 0)
        ndcg = torch.as_tensor(ndcg_at_k_items(scores, relevance, k))
        for name in dict.fromkeys(intents):
            rows = torch.tensor([i == name for i in intents])
            out[f"{way}_r1_{name}"] = float(hit[rows].float().mean())
            out[f"{way}_ndcg10_{name}"] = float(ndcg[rows].mean())
        per_item[way] = {}
        for group, members in (("mean", seen), ("heldout", unseen)):
            for metric, values in (("r1", hit), ("ndcg10", ndcg)):
                key = f"{way}_{group}_{metric}"
                if not members:
                    out[key] = NA
                    continue
                weighted = _weighted(values, intents, members)
                out[key] = float(weighted.mean())
                per_item[way][f"{group}_{metric}"] = weighted
                out.setdefault("per_item", {})[key] = weighted.tolist()
    if "control" in per_item and "text" in per_item:
        for name, values in per_item["control"].items():
            test = paired_bootstrap(values.numpy(), per_item["text"][name].numpy())
            for part in ("difference", "ci_low", "ci_high", "p_value"):
                out[f"control_vs_text_{name}_{part}"] = test[part]
    out["intents"] = float(len(seen) + len(unseen))
    return out
