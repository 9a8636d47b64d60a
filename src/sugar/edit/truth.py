"""UniKE's truthfulness space, adapted to the site: a direction that says "the shown fact
supports the answer", added to every retrieved value.

Shapes: R rows, D width, K space width.

UniKE (Pan et al. 2024, section 3.3) splits knowledge representations into a semantic space
(what a piece of knowledge is about: :mod:`sugar.edit.scope` decides an edit's scope in it) and
a truthfulness space, learned contrastively from positive (truthful) and negative in-context
examples, whose truthful representation steers the edited values. Here the representations are
**fact vectors** (:func:`sugar.edit.memory.fact_vectors`: how the residual sum at each answer
position moves when a fact is shown in the prompt). For every support edit:

- positive rows: the fact vectors of its own payload, followed by its answer (the shown fact
  supports the answer);
- negative rows: the fact vectors of the same payload with the answer replaced by another
  support edit's answer, followed by the edit's answer (the shown fact contradicts it).

A linear map ``W`` (K, D) is trained with the supervised contrastive loss (Khosla et al. 2020)
over the two classes, so truthful shifts gather apart from contradicted ones whatever fact
they carry. The **truthful direction** is ``d = W^T (mu_+ - mu_-)`` (D,), unit-normalised: the
direction in which a shift moves furthest towards the truthful class in the space. UniKE adds
``strength * |v| * d`` to each retrieved value ``v`` (:mod:`sugar.edit.unike`); ``strength`` 0
is the ablation without the truthfulness space.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sugar.edit.records import EditRequest
from sugar.edit.scope import supervised_contrastive

__all__ = ["contradicted", "train_truth", "truthful_direction"]


def contradicted(edits: Sequence[EditRequest]) -> list[tuple[int, EditRequest]]:
    """Per support edit whose payload states its answer, (its index, a copy whose payload
    states the next such edit's different answer instead): the negative examples."""
    usable = [i for i, e in enumerate(edits) if e.answer in e.payload]
    out = []
    for n, i in enumerate(usable):
        edit = edits[i]
        others = [edits[j].answer for j in usable[n + 1 :] + usable[:n]]
        other = next((a for a in others if a != edit.answer), None)
        if other is not None:
            out.append((i, replace(edit, payload=edit.payload.replace(edit.answer, other))))
    return out


def train_truth(
    positive: Tensor,
    negative: Tensor,
    *,
    dim: int = 32,
    steps: int = 300,
    lr: float = 2e-3,
    temperature: float = 0.1,
    batch: int = 256,
    seed: int = 0,
) -> nn.Linear:
    """The truthfulness map ``W`` (module docstring) from positive (P, D) and negative (N, D)
    fact vectors: supervised contrastive over two classes, rows scaled to unit length first
    (the class, not the size of a shift, is what it learns)."""
    if len(positive) < 2 or len(negative) < 2:
        raise ValueError(f"truthfulness space: {len(positive)} positive and {len(negative)} "
                         "negative rows, need at least 2 of each")  # fmt: skip
    generator = torch.Generator().manual_seed(seed)
    rows = F.normalize(torch.cat([positive, negative]).float(), dim=-1)  # (R, D)
    label = torch.cat([torch.ones(len(positive)), torch.zeros(len(negative))]).bool()
    linear = nn.Linear(rows.shape[1], dim, bias=False)
    nn.init.orthogonal_(linear.weight, generator=generator)
    optimiser = torch.optim.Adam(linear.parameters(), lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            chosen = torch.randperm(len(rows), generator=generator)[:batch]
            vectors = F.normalize(linear(rows[chosen]), dim=-1)
            loss = supervised_contrastive(vectors, label[chosen].long(), temperature)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return linear.eval()


@torch.no_grad()
def truthful_direction(linear: nn.Linear, positive: Tensor, negative: Tensor) -> Tensor:
    """``d = W^T (mu_+ - mu_-)``, unit length (module docstring). # -> (D,)"""
    project = lambda rows: F.normalize(linear(F.normalize(rows.float(), dim=-1)), dim=-1)  # noqa: E731
    gap = project(positive).mean(0) - project(negative).mean(0)  # (K,)
    return F.normalize(linear.weight.T @ gap, dim=0)
