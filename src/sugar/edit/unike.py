"""UniKE: intrinsic and external knowledge as one key-value memory at one hidden level, with the
scope decided in a learned semantic space and by the edit's key tokens (Pan et al. 2024, arXiv
2409.19872).

Shapes: B batch, T tokens, S slots, D width, K semantic width.

Per edit and answer position j (as :mod:`sugar.edit.memory`):

- **external** memory: the slot's key is the site's input at j mapped into the semantic space
  (:mod:`sugar.edit.scope`, trained contrastively once per model on another split's edits) and
  its fact vector is the in-context residual shift of the edit's payload;
- **intrinsic** memory: a trained correction ``u_j`` (D,) to that value, a feed-forward neuron
  whose key is the semantic slot key and whose activation is the retrieval gate; it is fitted
  (Adam, ``lr``, up to ``steps`` steps, from 0) on the new answer's cross-entropy with the fact
  vector in place, so it supplies what the fact vector alone does not make the model say.

At query time each position t retrieves its nearest slot in the semantic space **among the
edits whose key tokens occur in the sequence up to t** (:mod:`sugar.edit.keys`: the runs of
the edit question's tokens with document frequency <= ``max_frequency`` over the questions the
space was trained on, e.g. a code's word pieces); only when the cosine reaches ``threshold``
(the external memory deciding *whether* the input is in an edit's scope) does it add fact
vector + correction (*what* to answer). The key-token condition is what keeps a question that
differs from an edited one only in its code out of scope; the space alone did not (README,
Knowledge editing). With ``truth_strength`` != 0 every retrieved value also moves along the
truthful direction of the truthfulness space (:mod:`sugar.edit.truth`), ``truth_strength``
times the fact vector's length; off by default (no gain on the validation edits). Left out of
the paper's method: its MLLM-scale details (prefix key-values in every attention layer,
T-Patcher neurons trained with a memory loss).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sugar.data.schema import Sample
from sugar.edit.base import Editor, register_editor
from sugar.edit.keys import KeySpanIndex, document_frequency, key_spans
from sugar.edit.memory import SlotMemory, fact_vectors
from sugar.edit.patcher import answer_keys
from sugar.edit.records import EditRequest
from sugar.edit.scope import ScopeSpace, scope_rows, train_scope
from sugar.edit.truth import contradicted, train_truth, truthful_direction
from sugar.models.base import MLLM

__all__ = ["UniKEEditor"]


class SlotTables(NamedTuple):
    """What :class:`UnifiedMemory` concatenates once per change of its edits."""

    key_spans: KeySpanIndex
    """Every edit's key spans."""
    owners: Tensor
    """Each slot's edit (its position among the edits). # (S,)"""
    keys: Tensor
    """The slot keys. # (S, K)"""
    facts: Tensor
    """The fact vectors. # (S, D)"""


class UnifiedMemory(SlotMemory):
    """Slots whose value is fact vector + intrinsic correction, retrieved only among the edits
    whose key tokens ``token_ids()`` (B, L) shows (module docstring). # (B, T, D) -> (B, T, D)"""

    def __init__(
        self, threshold: float, space: ScopeSpace, token_ids: Callable[[], Tensor | None]
    ) -> None:
        super().__init__(threshold, project=space)
        self.space = space
        self.token_ids = token_ids
        self.corrections: dict[str, Tensor] = {}
        self.truth_strength = 0.0
        self.key_tokens: dict[str, list[list[int]]] = {}
        """Edit id -> its key spans (token-id runs)."""
        self._tables: SlotTables | None = None
        """Built from the slots when first needed after a change (:meth:`tables`)."""

    def put(self, edit_id: str, slot: tuple[Tensor, Tensor], correction: Tensor,
            spans: list[list[int]]) -> None:  # fmt: skip
        """Store an edit's slots (keys, values), its correction and its key spans."""
        self.slots[edit_id] = slot
        self.corrections[edit_id] = correction
        self.key_tokens[edit_id] = spans
        self._tables = None

    def drop(self, edit_id: str) -> None:
        """Forget an edit's slots, correction and key spans."""
        del self.slots[edit_id], self.corrections[edit_id], self.key_tokens[edit_id]
        self._tables = None

    def tables(self) -> SlotTables:
        """The slot tables, concatenated once per change of the edits, not at every forward
        (with 1,000 edits the per-forward concatenations cost more than the rest)."""
        if self._tables is None:
            index = KeySpanIndex([self.key_tokens[edit_id] for edit_id in self.slots])
            owners = [e for e, (keys, _) in enumerate(self.slots.values()) for _ in keys]
            self._tables = SlotTables(
                index, torch.tensor(owners, dtype=torch.long),
                torch.cat([k for k, _ in self.slots.values()]),
                torch.cat([v for _, v in self.slots.values()]),
            )  # fmt: skip
        return self._tables

    def values(self, rows: Tensor | None = None) -> Tensor:
        """Fact vector + intrinsic correction + ``truth_strength * |fact vector|`` along the
        truthful direction (:mod:`sugar.edit.truth`), per slot, or for the slots ``rows``
        (any shape). The corrections are read at every call: one is being trained while its
        edit is added. # -> (S, D) or (*rows, D)"""
        facts = self.tables().facts
        corrections = torch.cat([self.corrections[i] for i in self.slots])  # (S, D)
        if rows is not None:
            facts, corrections = facts[rows], corrections[rows]
        values = facts + corrections
        if self.truth_strength != 0.0:
            truth = self.space.truth * self.truth_strength  # (D,)
            values = values + facts.norm(dim=-1, keepdim=True) * truth
        return values

    def keys_present(self, batch: int, length: int) -> Tensor:
        """Per position and slot: does the sequence up to the position hold every key span
        of the slot's edit? All edits are matched in one pass (:class:`KeySpanIndex`).
        # -> (B, T, S) bool"""
        ids = self.token_ids()
        assert ids is not None and ids.shape[0] == batch and ids.shape[1] >= length, (
            "the site saw no token ids for these positions"
        )
        tables = self.tables()
        return tables.key_spans.seen(ids, last=length)[:, :, tables.owners.to(ids.device)]

    def forward(self, hidden: Tensor) -> Tensor:
        if not self.slots:
            return torch.zeros_like(hidden)
        keys = self.tables().keys  # (S, K)
        score = self.query(hidden) @ keys.T  # (B, T, S)
        allowed = self.keys_present(hidden.shape[0], hidden.shape[1])
        best = score.masked_fill(~allowed, float("-inf")).max(dim=-1)
        gate = (best.values >= self.threshold).to(hidden.dtype)[..., None]  # (B, T, 1)
        return self.values(best.indices).to(hidden.dtype) * gate


@register_editor("unike")
class UniKEEditor(Editor):
    """UniKE on the site (module docstring). Give ``space`` (a trained scope space, e.g. from a
    bundle) or ``scope_edits`` (edits of another split to train it on)."""

    def __init__(
        self, backbone: MLLM, root: str | Path, *, layer: int = -1,
        space: ScopeSpace | None = None, scope_edits: Sequence[EditRequest] = (),
        threshold: float = 0.3, steps: int = 20, lr: float = 0.05, scope_dim: int = 128,
        scope_steps: int = 1000, max_frequency: float = 0.15, near_misses: int = 0,
        truth_strength: float = 0.0, seed: int = 0,
    ) -> None:  # fmt: skip
        super().__init__(backbone, root, layer=layer)
        if not 0.0 <= max_frequency < 1.0 or near_misses < 0:
            raise ValueError(f"max_frequency={max_frequency} (in [0, 1)), "
                             f"near_misses={near_misses} (>= 0)")  # fmt: skip
        self.options.update(threshold=threshold, steps=steps, lr=lr, scope_dim=scope_dim,
                            max_frequency=max_frequency, truth_strength=truth_strength)  # fmt: skip
        if space is None:
            if not scope_edits:
                raise ValueError("unike needs a trained scope space or scope_edits to train one")
            space = self.fit_scope(scope_edits, dim=scope_dim, steps=scope_steps, seed=seed,
                                   near_misses=near_misses)  # fmt: skip
            if truth_strength != 0.0:  # the truthfulness space only where it is used
                space.truth = self.fit_truth(scope_edits, seed=seed)
        self.memory = UnifiedMemory(threshold, space, lambda: self.site.token_ids)
        self.memory.truth_strength = truth_strength
        self.site.add("unike", self.memory)

    def prompt_ids(self, prompts: Sequence[Sample], batch_size: int = 64) -> list[list[int]]:
        """The token ids the model reads for each prompt (images as placeholders)."""
        out: list[list[int]] = []
        for start in range(0, len(prompts), batch_size):
            batch = self.backbone.collate(prompts[start : start + batch_size], self.root)
            lengths = batch.lengths.tolist()
            out += [batch.input_ids[row, :n].tolist() for row, n in enumerate(lengths)]
        return out

    def fit_scope(
        self, edits: Sequence[EditRequest], near_misses: int = 0, **options: int
    ) -> ScopeSpace:
        """The scope space trained on ``edits`` (module docstring of :mod:`sugar.edit.scope`),
        with the document frequency of every token over their questions."""
        rows = scope_rows(edits, near_misses)
        flat = [sample for _, samples in rows for sample in samples]
        keys = answer_keys(self, flat)
        pairs, at = [], 0
        for n in range(0, len(rows), 2):
            count_pos, count_neg = len(rows[n][1]), len(rows[n + 1][1])
            pairs.append(
                (keys[at : at + count_pos], keys[at + count_pos : at + count_pos + count_neg])
            )
            at += count_pos + count_neg
        space = train_scope(pairs, self.site.width, **options)
        vocabulary = int(self.site.embedding.num_embeddings)
        frequency = document_frequency(self.prompt_ids([e.prompt for e in edits]), vocabulary)
        space.frequency = frequency
        return space

    def fit_truth(self, edits: Sequence[EditRequest], seed: int = 0) -> Tensor:
        """The truthful direction (:mod:`sugar.edit.truth`) from ``edits``' fact vectors with
        their own payload (positive) and a contradicting one (negative). # (D,)"""
        pairs = contradicted(edits)
        positive = torch.cat([fact_vectors(self, edits[i])[1] for i, _ in pairs])
        negative = torch.cat([fact_vectors(self, wrong)[1] for _, wrong in pairs])
        linear = train_truth(positive, negative, seed=seed)
        return truthful_direction(linear, positive, negative)

    def key_spans(self, edit: EditRequest) -> list[list[int]]:
        """The edit's key tokens: runs of its question's rare tokens (module docstring)."""
        ids = self.prompt_ids([edit.prompt])[0]
        return key_spans(ids, self.memory.space.frequency, self.options["max_frequency"])

    def _add(self, edit: EditRequest) -> None:
        keys, values = fact_vectors(self, edit)
        with torch.no_grad():
            semantic = F.normalize(self.memory.space(keys), dim=-1)
        correction = nn.Parameter(torch.zeros_like(values))
        self.memory.put(edit.id, (semantic, values), correction, self.key_spans(edit))
        try:
            self.optimise([correction], edit, self.options["steps"], self.options["lr"])
        finally:
            self.memory.corrections[edit.id] = correction.detach()

    def _remove(self, edit_id: str) -> None:
        self.memory.drop(edit_id)

    def state(self) -> dict[str, Tensor]:
        out = {f"space.{k}": v for k, v in self.memory.space.state_dict().items()}
        for i, (edit_id, (keys, values)) in enumerate(self.memory.slots.items()):
            out.update({f"{i}.keys": keys, f"{i}.values": values,
                        f"{i}.correction": self.memory.corrections[edit_id]})  # fmt: skip
        return out

    def load_state(self, edits: Sequence[EditRequest], state: dict[str, Tensor]) -> None:
        for i, edit in enumerate(edits):
            self.memory.put(edit.id, (state[f"{i}.keys"], state[f"{i}.values"]),
                            state[f"{i}.correction"], self.key_spans(edit))  # fmt: skip
            self.edits[edit.id] = edit
