"""FT: fine-tune the edited layer's feed-forward weights on each edit (the FT-L baseline of
MMEdit and T-Patcher).

Each edit runs up to ``steps`` Adam steps (``lr``) on the new answer's cross-entropy, updating
only the feed-forward block of the site's layer, and stops once every answer token is the
argmax. The change each edit made (weights after minus before) is kept: :meth:`remove`
subtracts it, which restores the previous weights exactly when edits are removed in reverse
order, and only approximately otherwise (later edits were computed on top of it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from sugar.edit.base import Editor, register_editor
from sugar.edit.records import EditRequest
from sugar.models.base import MLLM

__all__ = ["FineTuneEditor"]


@register_editor("ft")
class FineTuneEditor(Editor):
    """Fine-tuning of one feed-forward block (module docstring)."""

    def __init__(
        self, backbone: MLLM, root: str | Path, *, layer: int = -1, steps: int = 40,
        lr: float = 1e-4,
    ) -> None:  # fmt: skip
        super().__init__(backbone, root, layer=layer)
        if steps < 1 or lr <= 0:
            raise ValueError(f"steps={steps}, lr={lr}: need steps >= 1 and lr > 0")
        self.options.update(steps=steps, lr=lr)
        self.parameters = dict(self.site.ffn.named_parameters())
        self.deltas: dict[str, dict[str, Tensor]] = {}

    def _add(self, edit: EditRequest) -> None:
        before = {name: p.detach().clone() for name, p in self.parameters.items()}
        self.optimise(list(self.parameters.values()), edit, self.options["steps"],
                      self.options["lr"])  # fmt: skip
        self.deltas[edit.id] = {
            name: (p.detach() - before[name]).clone() for name, p in self.parameters.items()
        }

    def _remove(self, edit_id: str) -> None:
        with torch.no_grad():
            for name, delta in self.deltas.pop(edit_id).items():
                self.parameters[name].sub_(delta)

    def state(self) -> dict[str, Tensor]:
        return {f"{i}.{name}": delta for i, (edit_id, deltas) in enumerate(self.deltas.items())
                for name, delta in deltas.items()}  # fmt: skip

    def load_state(self, edits: Sequence[EditRequest], state: dict[str, Tensor]) -> None:
        """The weights already hold the edits (the bundle saved them); only the per-edit
        changes are restored, so each can still be removed."""
        for i, edit in enumerate(edits):
            self.deltas[edit.id] = {name: state[f"{i}.{name}"] for name in self.parameters}
            self.edits[edit.id] = edit
