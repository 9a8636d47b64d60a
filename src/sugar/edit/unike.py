"""UniKE: intrinsic and external knowledge as one key-value memory at one hidden level, with the
scope decided in a learned semantic space (Pan et al. 2024, arXiv 2409.19872).

Shapes: S slots, D width, K semantic width.

Per edit and answer position j (as :mod:`sugar.edit.memory`):

- **external** memory: the slot's key is the site's input at j mapped into the semantic space
  (:mod:`sugar.edit.scope`, trained contrastively once per model on another split's edits) and
  its fact vector is the in-context residual shift of the edit's payload;
- **intrinsic** memory: a trained correction ``u_j`` (D,) to that value, a feed-forward neuron
  whose key is the semantic slot key and whose activation is the retrieval gate; it is fitted
  (Adam, ``lr``, up to ``steps`` steps, from 0) on the new answer's cross-entropy with the fact
  vector in place, so it supplies what the fact vector alone does not make the model say.

At query time each position retrieves its nearest slot in the semantic space; only when the
cosine reaches ``threshold`` (the external memory deciding *whether* the input is in an edit's
scope) does it add fact vector + correction (*what* to answer). Left out of the paper's method:
the truthfulness space (positive / negative in-context examples steering the intrinsic values)
and its MLLM-scale details (prefix key-values in every attention layer, T-Patcher neurons
trained with a memory loss); see README, Knowledge editing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sugar.edit.base import Editor, register_editor
from sugar.edit.memory import SlotMemory, fact_vectors
from sugar.edit.patcher import answer_keys
from sugar.edit.records import EditRequest
from sugar.edit.scope import ScopeSpace, scope_rows, train_scope
from sugar.models.base import MLLM

__all__ = ["UniKEEditor"]


class UnifiedMemory(SlotMemory):
    """Slots whose value is fact vector + intrinsic correction (module docstring)."""

    def __init__(self, threshold: float, space: ScopeSpace) -> None:
        super().__init__(threshold, project=space)
        self.space = space
        self.corrections: dict[str, Tensor] = {}

    def values(self) -> Tensor:
        return torch.cat([v + self.corrections[i] for i, (_, v) in self.slots.items()])


@register_editor("unike")
class UniKEEditor(Editor):
    """UniKE on the site (module docstring). Give ``space`` (a trained scope space, e.g. from a
    bundle) or ``scope_edits`` (edits of another split to train it on)."""

    def __init__(
        self, backbone: MLLM, root: str | Path, *, layer: int = -1,
        space: ScopeSpace | None = None, scope_edits: Sequence[EditRequest] = (),
        threshold: float = 0.5, steps: int = 20, lr: float = 0.05, scope_dim: int = 128,
        scope_steps: int = 1000, seed: int = 0,
    ) -> None:  # fmt: skip
        super().__init__(backbone, root, layer=layer)
        self.options.update(threshold=threshold, steps=steps, lr=lr, scope_dim=scope_dim)
        if space is None:
            if not scope_edits:
                raise ValueError("unike needs a trained scope space or scope_edits to train one")
            space = self.fit_scope(scope_edits, dim=scope_dim, steps=scope_steps, seed=seed)
        self.memory = UnifiedMemory(threshold, space)
        self.site.add("unike", self.memory)

    def fit_scope(self, edits: Sequence[EditRequest], **options: int) -> ScopeSpace:
        rows = scope_rows(edits)
        flat = [sample for _, samples in rows for sample in samples]
        keys = answer_keys(self, flat)
        pairs, at = [], 0
        for n in range(0, len(rows), 2):
            count_pos, count_neg = len(rows[n][1]), len(rows[n + 1][1])
            pairs.append(
                (keys[at : at + count_pos], keys[at + count_pos : at + count_pos + count_neg])
            )
            at += count_pos + count_neg
        return train_scope(pairs, self.site.width, **options)

    def _add(self, edit: EditRequest) -> None:
        keys, values = fact_vectors(self, edit)
        with torch.no_grad():
            semantic = F.normalize(self.memory.space(keys), dim=-1)
        correction = nn.Parameter(torch.zeros_like(values))
        self.memory.slots[edit.id] = (semantic, values)
        self.memory.corrections[edit.id] = correction
        try:
            self.optimise([correction], edit, self.options["steps"], self.options["lr"])
        finally:
            self.memory.corrections[edit.id] = correction.detach()

    def _remove(self, edit_id: str) -> None:
        del self.memory.slots[edit_id]
        del self.memory.corrections[edit_id]

    def state(self) -> dict[str, Tensor]:
        out = {f"space.{k}": v for k, v in self.memory.space.state_dict().items()}
        for i, (edit_id, (keys, values)) in enumerate(self.memory.slots.items()):
            out.update({f"{i}.keys": keys, f"{i}.values": values,
                        f"{i}.correction": self.memory.corrections[edit_id]})  # fmt: skip
        return out

    def load_state(self, edits: Sequence[EditRequest], state: dict[str, Tensor]) -> None:
        for i, edit in enumerate(edits):
            self.memory.slots[edit.id] = (state[f"{i}.keys"], state[f"{i}.values"])
            self.memory.corrections[edit.id] = state[f"{i}.correction"]
            self.edits[edit.id] = edit
