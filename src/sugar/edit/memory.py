"""External key-value memory at the hidden level: retrieved fact vectors instead of prompt text.

Shapes: B batch, T tokens, D width, S memory slots, K key width.

Each edit becomes slots, one per answer position j of the edit prompt (the last prompt token,
then each answer token): a **key**, the site's input ``h`` at that position (unit-normalised),
and a **value**, the fact vector: how much the residual sum at that position moves when the
edit's ``payload`` is in the prompt, ``r_j(payload + prompt + answer) - r_j(prompt + answer)``
(the model's own in-context shift, as in-context-vector methods compute it; UniKE treats
in-context knowledge the same way, as key-value pairs at the hidden level). At query time every
position retrieves its most similar slot and, when the cosine is at least ``threshold``, adds
that slot's value to the residual sum. At the last layer this reproduces, on the edit prompt
itself, exactly the hidden states that showing the fact in the prompt would give. No weight
changes; removing an edit deletes its slots.

Scope is decided by cosine in the raw hidden space; on this world's questions that space barely
separates "object 271828" from "object 583552" (README, Knowledge editing): :mod:`sugar.edit.
unike` learns a space for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sugar.data.prompt import with_references
from sugar.edit.base import Editor, register_editor
from sugar.edit.records import EditRequest
from sugar.edit.site import answer_positions
from sugar.models.base import MLLM

__all__ = ["MemoryEditor", "SlotMemory", "fact_vectors"]


class SlotMemory(nn.Module):
    """Nearest-slot retrieval with a threshold (module docstring); ``project`` maps the site's
    keys into the key space first (default: identity). # (B, T, D) -> (B, T, D)"""

    def __init__(self, threshold: float, project: Callable[[Tensor], Tensor] | None = None):
        super().__init__()
        self.threshold = threshold
        self.project = project
        self.slots: dict[str, tuple[Tensor, Tensor]] = {}
        """Edit id -> (keys (s, K) unit rows, values (s, D))."""

    def query(self, hidden: Tensor) -> Tensor:
        """Unit query vectors of site keys. # (..., D) -> (..., K)"""
        projected = hidden if self.project is None else self.project(hidden)
        return F.normalize(projected.float(), dim=-1)

    def retrieve(self, hidden: Tensor) -> tuple[Tensor, Tensor, list[str]]:
        """(best cosine (B, T), best slot index (B, T), the edit id of every slot)."""
        owners = [edit_id for edit_id, (k, _) in self.slots.items() for _ in range(len(k))]
        keys = torch.cat([k for k, _ in self.slots.values()])  # (S, K)
        best = (self.query(hidden) @ keys.T).max(dim=-1)
        return best.values, best.indices, owners

    def values(self) -> Tensor:
        return torch.cat([v for _, v in self.slots.values()])  # (S, D)

    def forward(self, hidden: Tensor) -> Tensor:
        if not self.slots:
            return torch.zeros_like(hidden)
        score, index, _ = self.retrieve(hidden)
        gate = (score >= self.threshold).to(hidden.dtype)[..., None]  # (B, T, 1)
        return self.values().to(hidden.dtype)[index] * gate


@torch.no_grad()
def fact_vectors(editor: Editor, edit: EditRequest) -> tuple[Tensor, Tensor]:
    """The edit's slot keys (site inputs, (s, D)) and fact vectors (in-context residual shifts,
    (s, D)) at its answer positions, with every memory off (module docstring)."""
    plain, shown = edit.target(), with_references(edit.target(), edit.payload)
    with editor.site.disabled():
        capture = editor.site.capture([plain, shown], editor.root)
    positions = answer_positions(capture.batch)
    if len(positions[0]) != len(positions[1]):
        raise ValueError(f"edit {edit.id!r}: the answer tokenises differently after its fact")
    keys = capture.keys[0, positions[0]].float()
    shift = capture.residual[1, positions[1]] - capture.residual[0, positions[0]]
    return keys.cpu(), shift.float().cpu()


@register_editor("memory")
class MemoryEditor(Editor):
    """External key-value memory in the raw hidden space (module docstring)."""

    def __init__(
        self, backbone: MLLM, root: str | Path, *, layer: int = -1, threshold: float = 0.995
    ) -> None:
        super().__init__(backbone, root, layer=layer)
        self.options.update(threshold=threshold)
        self.memory = SlotMemory(threshold)
        self.site.add("memory", self.memory)

    def _add(self, edit: EditRequest) -> None:
        keys, values = fact_vectors(self, edit)
        self.memory.slots[edit.id] = (F.normalize(keys, dim=-1), values)

    def _remove(self, edit_id: str) -> None:
        del self.memory.slots[edit_id]

    def state(self) -> dict[str, Tensor]:
        return {f"{i}.{part}": tensor for i, pair in enumerate(self.memory.slots.values())
                for part, tensor in zip(("keys", "values"), pair, strict=True)}  # fmt: skip

    def load_state(self, edits: Sequence[EditRequest], state: dict[str, Tensor]) -> None:
        for i, edit in enumerate(edits):
            self.memory.slots[edit.id] = (state[f"{i}.keys"], state[f"{i}.values"])
            self.edits[edit.id] = edit
