"""T-Patcher-style intrinsic editing: a few feed-forward neurons per edit that fire only on the
edit's key (Huang et al., ICLR 2023, "Transformer-Patcher").

Each edit adds ``neurons`` neurons to the site's feed-forward block: key rows ``W`` (n, D),
biases ``b`` (n,) and value rows ``V`` (n, D); the block's result gains
``relu(h W^T + b) V`` at every position (h the block's input). Only the new neurons train (Adam,
``lr``, up to ``steps`` steps), on

    CE(new answer | edit prompt)
    + activation_weight * [ mean relu(margin - a(pos)) + mean relu(a(neg) + margin) ]

where ``a`` is a new neuron's pre-activation, ``pos`` the edit prompt's answer positions and
``neg`` the keys of unrelated prompts (``negatives``, T-Patcher's memory set) and of every
earlier edit (so a later neuron does not fire on an earlier edit's input). Keys start at the
edit's mean answer-position key, centred on the negatives' mean and scaled so ``a(pos)`` starts
at 1 (plus a little noise, so the neurons differ); values start at 0. Removing an edit deletes
its neurons. Default 4 neurons, not T-Patcher's 1: one neuron adds a multiple of one vector at
every position, which cannot spell an answer of several tokens (measured on the tiny model:
no edit took with 1 neuron, the test's edit took with 4).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from sugar.data.schema import Sample
from sugar.edit.base import Editor, register_editor
from sugar.edit.records import EditRequest
from sugar.edit.site import Capture, answer_positions
from sugar.models.base import MLLM

__all__ = ["PatcherEditor", "answer_keys"]


@torch.no_grad()
def answer_keys(editor: Editor, samples: Sequence[Sample], batch_size: int = 32) -> list[Tensor]:
    """Per sample (prompt + answer), the site's keys at its answer positions, memories off.
    # list of (m_i + 1, D)"""
    out: list[Tensor] = []
    with editor.site.disabled():
        for start in range(0, len(samples), batch_size):
            capture = editor.site.capture(samples[start : start + batch_size], editor.root)
            for row, positions in enumerate(answer_positions(capture.batch)):
                out.append(capture.keys[row, positions].float().cpu())
    return out


class Neurons(nn.Module):
    """The added neurons of all edits: ``relu(h W^T + b) V``. # (B, T, D) -> (B, T, D)"""

    def __init__(self) -> None:
        super().__init__()
        self.blocks: dict[str, tuple[Tensor, Tensor, Tensor]] = {}

    def forward(self, keys: Tensor) -> Tensor:
        if not self.blocks:
            return torch.zeros_like(keys)
        w = torch.cat([w for w, _, _ in self.blocks.values()])  # (N, D)
        b = torch.cat([b for _, b, _ in self.blocks.values()])  # (N,)
        v = torch.cat([v for _, _, v in self.blocks.values()])  # (N, D)
        return torch.relu(keys @ w.T + b) @ v


@register_editor("patcher")
class PatcherEditor(Editor):
    """T-Patcher neurons (module docstring)."""

    def __init__(
        self, backbone: MLLM, root: str | Path, *, layer: int = -1,
        negatives: Sequence[Sample] = (), neurons: int = 4, steps: int = 80, lr: float = 0.02,
        margin: float = 0.5, activation_weight: float = 3.0,
    ) -> None:  # fmt: skip
        super().__init__(backbone, root, layer=layer)
        if neurons < 1 or steps < 1 or lr <= 0 or margin < 0:
            raise ValueError(f"neurons={neurons}, steps={steps}, lr={lr}, margin={margin}")
        self.options.update(neurons=neurons, steps=steps, lr=lr, margin=margin,
                            activation_weight=activation_weight)  # fmt: skip
        self.neurons = Neurons()
        self.site.add("patcher", self.neurons)
        keys = answer_keys(self, list(negatives))
        self.negatives = torch.cat(keys) if keys else torch.zeros(0, self.site.width)
        self.edit_keys: dict[str, Tensor] = {}

    def _add(self, edit: EditRequest) -> None:
        positive = answer_keys(self, [edit.target()])[0]  # (m+1, D)
        previous = [k for k in self.edit_keys.values()]
        negatives = torch.cat([self.negatives, *previous])  # (M, D)
        centre = negatives.mean(0) if len(negatives) else torch.zeros(self.site.width)
        direction = positive.mean(0) - centre
        n, margin = self.options["neurons"], self.options["margin"]
        w0 = direction / direction.pow(2).sum().clamp_min(1e-6)
        w = nn.Parameter(w0.repeat(n, 1) + 1e-3 * torch.randn(n, self.site.width))
        b = nn.Parameter(-(w.detach() @ centre))
        v = nn.Parameter(torch.zeros(n, self.site.width))
        self.neurons.blocks[edit.id] = (w, b, v)

        def activation_loss(capture: Capture) -> Tensor:
            pos = positive @ w.T + b  # (m+1, n)
            loss = torch.relu(margin - pos).mean()
            if len(negatives):
                loss = loss + torch.relu(negatives @ w.T + b + margin).mean()
            return self.options["activation_weight"] * loss

        self.optimise([w, b, v], edit, self.options["steps"], self.options["lr"], activation_loss)
        self.neurons.blocks[edit.id] = (w.detach(), b.detach(), v.detach())
        self.edit_keys[edit.id] = positive

    def _remove(self, edit_id: str) -> None:
        del self.neurons.blocks[edit_id]
        del self.edit_keys[edit_id]

    def state(self) -> dict[str, Tensor]:
        out = {"negatives": self.negatives}
        for i, edit_id in enumerate(self.neurons.blocks):
            w, b, v = self.neurons.blocks[edit_id]
            out.update(
                {f"{i}.w": w, f"{i}.b": b, f"{i}.v": v, f"{i}.keys": self.edit_keys[edit_id]}
            )
        return out

    def load_state(self, edits: Sequence[EditRequest], state: dict[str, Tensor]) -> None:
        self.negatives = state["negatives"]
        for i, edit in enumerate(edits):
            self.neurons.blocks[edit.id] = (state[f"{i}.w"], state[f"{i}.b"], state[f"{i}.v"])
            self.edit_keys[edit.id] = state[f"{i}.keys"]
            self.edits[edit.id] = edit
