"""In-context editing: the edited fact retrieved and put in the prompt (today's RAG, and IKE's
idea without demonstrations).

Each edit stores a key, the mean of the model's last hidden states over the edit prompt's
tokens (unit-normalised; the built-in generative base has no retrieval projector, so the
model's own states are the embedding), and its ``payload`` text. Every prompt the model is
shown is embedded the same way, and the payload of the most similar edit (top 1, always, as
retrieval-augmented generation does) is placed before it by
:func:`sugar.data.prompt.with_references`, the layout the world's KB-QA training uses. No
weight changes; removing an edit deletes its key.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.nn import functional as F

from sugar.data.prompt import with_references
from sugar.data.schema import Sample
from sugar.edit.base import Editor, register_editor
from sugar.edit.records import EditRequest
from sugar.models.base import MLLM, prompt_of

__all__ = ["InContextEditor"]


@register_editor("context")
class InContextEditor(Editor):
    """Retrieve the nearest edit's fact into the prompt (module docstring)."""

    def __init__(self, backbone: MLLM, root: str | Path, *, layer: int = -1) -> None:
        super().__init__(backbone, root, layer=layer)
        self.keys: dict[str, Tensor] = {}

    @torch.no_grad()
    def embed(self, samples: Sequence[Sample]) -> Tensor:
        """(B, D) unit mean last hidden state over each prompt's tokens."""
        prompts = [prompt_of(s) for s in samples]
        batch = self.backbone.collate(prompts, self.root)
        with self.site.disabled():
            hidden = self.backbone(batch).hidden.float()  # (B, T, D)
        mask = batch.attention_mask.to(hidden.device)[..., None].float()
        return F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).cpu()

    def _add(self, edit: EditRequest) -> None:
        self.keys[edit.id] = self.embed([edit.prompt])[0]

    def _remove(self, edit_id: str) -> None:
        del self.keys[edit_id]

    def rewrite(self, samples: Sequence[Sample]) -> list[Sample]:
        if not self.keys:
            return list(samples)
        ids = list(self.keys)
        scores = self.embed(samples) @ torch.stack([self.keys[i] for i in ids]).T  # (B, E)
        best = scores.argmax(dim=1).tolist()
        return [
            with_references(s, self.edits[ids[b]].payload)
            for s, b in zip(samples, best, strict=True)
        ]

    def state(self) -> dict[str, Tensor]:
        return {f"{i}.key": key for i, key in enumerate(self.keys.values())}

    def load_state(self, edits: Sequence[EditRequest], state: dict[str, Tensor]) -> None:
        for i, edit in enumerate(edits):
            self.keys[edit.id] = state[f"{i}.key"]
            self.edits[edit.id] = edit
