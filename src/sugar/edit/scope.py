"""The semantic space UniKE decides an edit's scope in: a projection of the site's hidden states
trained contrastively so that one question in other words or on another rendering of its image
lands near it, and other questions (even with the same answer after them) land far.

Shapes: R rows (slot vectors), D width, K space width.

Training data is an edit set of another split (``edit/train.jsonl``; never the edits being
evaluated): per edit, its prompt, rephrase and image rephrase, each followed by the edit's
answer, give one row per answer position j (the site's input there, from the unedited model);
rows of the same edit and position are positives of each other. Its two locality probes,
followed by the **same** answer, give negatives that share every answer token, so the space
cannot match on the answer. Loss: supervised contrastive (Khosla et al. 2020) over the rows of
a batch of edits, cosine / ``temperature``. Chosen over fitting the threshold in the raw
space: there, measured on validation edits, other questions of the same template are as close as
a rephrase (README, Knowledge editing).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sugar.edit.records import EditRequest

__all__ = [
    "ScopeSpace",
    "near_miss_partners",
    "scope_rows",
    "supervised_contrastive",
    "train_scope",
]


class ScopeSpace(nn.Module):
    """``W (h - centre)``: the semantic projection. # (..., D) -> (..., K)

    It also keeps ``frequency`` (V,), the document frequency of every token over the questions
    it was trained on (:mod:`sugar.edit.keys`; empty: none recorded), from which an edit's key
    tokens are read, and ``truth`` (D,), the truthful direction of the truthfulness space
    (:mod:`sugar.edit.truth`; zeros: none)."""

    def __init__(self, width: int, dim: int = 128, vocabulary: int = 0) -> None:
        super().__init__()
        self.centre: Tensor
        self.frequency: Tensor
        self.register_buffer("centre", torch.zeros(width))
        self.truth: Tensor
        self.register_buffer("frequency", torch.zeros(vocabulary, dtype=torch.float64))
        self.register_buffer("truth", torch.zeros(width))
        self.linear = nn.Linear(width, dim, bias=False)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.linear(hidden.float() - self.centre)


def scope_rows(edits: Sequence[EditRequest], near_misses: int = 0) -> list[tuple[str, list]]:
    """Per edit, the samples whose answer positions give its rows: (role, [samples]).

    Negatives are the edit's locality probes and, with ``near_misses`` k > 0, the prompts of
    the k other edits nearest to it in surface form (:func:`near_miss_partners`), each followed
    by **this** edit's answer: questions that differ from it only in what identifies the fact
    (another code, another object of the same image), so the space must separate them by that."""
    partners = near_miss_partners(edits, near_misses) if near_misses > 0 else [[]] * len(edits)
    out: list[tuple[str, list]] = []
    for edit, others in zip(edits, partners, strict=True):
        positive = [edit.target()] + [
            edit.target(edit.probes[name]) for name in ("text_generality", "image_generality")
            if name in edit.probes
        ]  # fmt: skip
        negative = [
            edit.target(edit.probes[name]) for name in ("text_locality", "image_locality")
            if name in edit.probes
        ]  # fmt: skip
        negative += [edit.target(edits[j].prompt) for j in others]
        out.append(("edit", positive))
        out.append(("other", negative))
    return out


def _words(edit: EditRequest) -> set[str]:
    return set(re.findall(r"\w+", edit.question.lower()))


def near_miss_partners(edits: Sequence[EditRequest], count: int) -> list[list[int]]:
    """Per edit, the indices of the ``count`` other edits whose questions share the most words
    with its own (Jaccard over lower-cased words; an edit on the same image first, then one
    with an image or without one alike; ties by position). # list of (count,) index lists

    >>> from sugar.edit.records import edit_from_sample
    >>> from sugar.data.schema import Sample, Segment
    >>> def edit(i, q):
    ...     answer = Segment.text_("x", role="target")
    ...     return edit_from_sample(Sample(str(i), [Segment.text_(q), answer]))
    >>> near_miss_partners([edit(0, "Where was object 1 made?"), edit(1, "Who is Ada?"),
    ...                     edit(2, "Where was object 2 made?")], 1)
    [[2], [0], [0]]
    """
    words = [_words(e) for e in edits]
    out = []
    for i, edit in enumerate(edits):
        nearness = {
            j: (
                edit.image is not None and other.image == edit.image,
                (edit.image is None) == (other.image is None),
                len(words[i] & words[j]) / max(len(words[i] | words[j]), 1),
            )
            for j, other in enumerate(edits)
            if j != i
        }
        out.append(sorted(nearness, key=nearness.__getitem__, reverse=True)[:count])
    return out


def supervised_contrastive(vectors: Tensor, groups: Tensor, temperature: float) -> Tensor:
    """The supervised contrastive loss (Khosla et al. 2020) of unit rows ``vectors`` (R, K) in
    ``groups`` (R,): the mean, over anchors (rows with another row of their group), of
    ``-log(sum_same exp(s) / sum_other exp(s))``, ``s`` the cosine over ``temperature``. A
    negative group id matches nothing (a row that is only ever a negative). # -> ()"""
    similarity = vectors @ vectors.T / temperature  # (R, R)
    eye = torch.eye(len(groups), dtype=torch.bool)
    similarity = similarity.masked_fill(eye, float("-inf"))
    same = (groups[:, None] == groups[None, :]) & (groups[:, None] >= 0) & ~eye
    anchors = same.any(dim=1)
    log_all = torch.logsumexp(similarity, dim=1)
    log_pos = torch.logsumexp(similarity.masked_fill(~same, float("-inf")), dim=1)
    return (log_all - log_pos)[anchors].mean()


def train_scope(
    keys: Sequence[tuple[list[Tensor], list[Tensor]]],
    width: int,
    *,
    dim: int = 128,
    steps: int = 300,
    lr: float = 2e-3,
    temperature: float = 0.1,
    batch_edits: int = 64,
    seed: int = 0,
) -> ScopeSpace:
    """Fit a :class:`ScopeSpace` on per-edit ``(positive keys, negative keys)``: each a list of
    (m + 1, D) answer-position keys (module docstring). ``ValueError`` without any edit that
    has a positive pair."""
    usable = [(pos, neg) for pos, neg in keys if len(pos) >= 2]
    if not usable:
        raise ValueError("scope training needs edits with a rephrase or an image rephrase")
    generator = torch.Generator().manual_seed(seed)
    space = ScopeSpace(width, dim)
    space.centre.copy_(torch.cat([k for pos, _ in usable for k in pos]).mean(0))
    nn.init.orthogonal_(space.linear.weight, generator=generator)
    optimiser = torch.optim.Adam(space.parameters(), lr=lr)
    with torch.enable_grad():  # the evaluation tasks run under no_grad
        for _ in range(steps):
            _scope_step(space, optimiser, usable, generator, batch_edits, temperature)
    return space.eval()


def _scope_step(
    space: ScopeSpace,
    optimiser: torch.optim.Optimizer,
    usable: Sequence[tuple[list[Tensor], list[Tensor]]],
    generator: torch.Generator,
    batch_edits: int,
    temperature: float,
) -> None:
    """One supervised-contrastive step over a random batch of edits (module docstring)."""
    chosen = torch.randperm(len(usable), generator=generator)[:batch_edits].tolist()
    rows, groups = [], []
    for n, i in enumerate(chosen):
        positive, negative = usable[i]
        for k in positive:
            rows.append(k)
            groups += [n * 1000 + j for j in range(len(k))]
        for k in negative:
            rows.append(k)
            groups += [-1] * len(k)  # a negative matches nothing
    vectors = F.normalize(space(torch.cat(rows)), dim=-1)  # (R, K)
    loss = supervised_contrastive(vectors, torch.tensor(groups), temperature)
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
