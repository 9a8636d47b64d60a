"""The hidden level every editor works at: one feed-forward block of a built-in backbone.

Shapes: B batch, T tokens, D width.

Layer ``layer`` of the decoder has a feed-forward block ``FFN(h)`` whose result is summed into
the residual stream. At this site:

- the **key** of a position is the block's input ``h`` (B, T, D): for the ``minilm`` trunk
  (transformers' ``BertLayer``, post-norm) the attention output that ``intermediate`` reads;
  for ``tiny`` (pre-norm ``Block``) the normalised stream that ``mlp`` reads;
- the **residual sum** is what the block's result is added into, before any normalisation:
  ``minilm`` the input of ``output.LayerNorm`` (``dense(intermediate(h)) + h``), ``tiny`` the
  block's output (``x + mlp(norm2(x))``);
- a **memory** is a function ``h -> delta`` (B, T, D); the site adds the sum of its memories'
  deltas to the residual sum;
- the **token ids** of the sequence so far (B, L) are what the input-embedding module was
  last given: a (B, T) call (a forward pass, or a generation's prompt) starts a sequence, a
  (B,) call (a generation's next token) extends it, so a memory can read the tokens up to
  its positions (:attr:`FeedForwardSite.token_ids`) with or without the KV cache.

An extra feed-forward neuron (T-Patcher) is a memory, and so is a key-value memory whose
values are residual shifts.

Everything happens through PyTorch module hooks on the model instance (removed by
:meth:`FeedForwardSite.close`); no parameter or state-dict name of the backbone changes. The
layer is found by the module structure (``trunk.encoder.layer`` or ``blocks``), never by name.
Every memory at the last layer acts position by position: a delta at position t changes only
the logits of position t (no later layer mixes positions).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sugar.data.collate import IGNORE_INDEX, Batch
from sugar.data.schema import Sample
from sugar.models.base import MLLM

__all__ = ["Capture", "FeedForwardSite", "answer_positions"]

Memory = Callable[[Tensor], Tensor]


@dataclass
class Capture:
    """What one forward pass saw at the site."""

    batch: Batch
    keys: Tensor  # (B, T, D) the feed-forward input h
    residual: Tensor  # (B, T, D) the residual sum (without any memory)
    logits: Tensor  # (B, T, V)


def answer_positions(batch: Batch) -> list[list[int]]:
    """Per sample, the positions whose logits predict a supervised token (the last prompt
    token, then every target token but the last): ``labels[t + 1]`` is supervised."""
    supervised = batch.labels[:, 1:] != IGNORE_INDEX  # (B, T-1)
    return [row.nonzero().flatten().tolist() for row in supervised]


class FeedForwardSite:
    """Hooks on layer ``layer`` (negative counts from the end) of ``backbone`` (module
    docstring). Memories added with :meth:`add` act on every forward pass: training-free
    scoring, ``generate`` with the KV cache (new positions only) and ``score``."""

    def __init__(self, backbone: MLLM, layer: int = -1) -> None:
        trunk = getattr(backbone, "trunk", None)
        blocks: Sequence[nn.Module]
        if trunk is not None and hasattr(trunk, "encoder"):
            blocks = trunk.encoder.layer
            self.layout = "post-norm"
        elif isinstance(getattr(backbone, "blocks", None), nn.ModuleList):
            blocks = backbone.blocks  # type: ignore[assignment]
            self.layout = "pre-norm"
        else:
            raise ValueError(
                f"backbone {backbone.family!r}: no trunk.encoder.layer or blocks to edit (the "
                "editors support the built-in minilm and tiny backbones)"
            )
        if not -len(blocks) <= layer < len(blocks):
            raise ValueError(f"layer={layer}: the backbone has {len(blocks)} layers")
        self.backbone = backbone
        self.layer = layer % len(blocks)
        self.width = int(backbone.hidden_size)
        block: Any = blocks[self.layer]  # BertLayer or tiny's Block (their modules differ)
        self.last = self.layer == len(blocks) - 1
        self._block = block
        self.embedding: nn.Embedding = (
            trunk.embeddings.word_embeddings if trunk is not None else backbone.embed  # type: ignore[assignment]
        )
        if self.layout == "post-norm":
            self._key_module: nn.Module = block.intermediate
            self.ffn: nn.Module = nn.ModuleList([block.intermediate, block.output.dense])
            sum_module: nn.Module = block.output.LayerNorm
        else:
            self._key_module = block.mlp
            self.ffn = block.mlp
            sum_module = block
        self.memories: dict[str, Memory] = {}
        self.enabled = True
        self._key: Tensor | None = None
        self._seen: dict[str, Tensor] = {}
        self._recording = False
        self.token_ids: Tensor | None = None
        """(B, L) the token ids of the sequence so far (module docstring)."""
        self._handles = [
            self._key_module.register_forward_pre_hook(self._read_key),
            self.embedding.register_forward_pre_hook(self._read_ids),
        ]
        if self.layout == "post-norm":
            self._handles.append(sum_module.register_forward_pre_hook(self._inject_pre))
        else:
            self._handles.append(sum_module.register_forward_hook(self._inject_post))

    # ---- hooks -----------------------------------------------------------------------------

    def _read_key(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self._key = args[0]

    def _read_ids(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        ids = args[0].detach()
        if ids.dim() == 1 and self.token_ids is not None and len(self.token_ids) == len(ids):
            self.token_ids = torch.cat([self.token_ids, ids[:, None]], dim=1)
        else:
            self.token_ids = ids if ids.dim() == 2 else None

    def _delta(self, residual: Tensor) -> Tensor:
        key = self._key
        assert key is not None and key.shape == residual.shape, "site hooks out of order"
        if self._recording:
            self._seen = {"keys": key.detach(), "residual": residual.detach()}
        if not self.enabled or not self.memories:
            return residual
        delta = sum(memory(key) for memory in self.memories.values())
        return residual + delta

    def _inject_pre(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (self._delta(args[0]), *args[1:])

    def _inject_post(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        if isinstance(output, tuple):  # tiny's Block returns (x, (keys, values))
            return (self._delta(output[0]), *output[1:])
        return self._delta(output)

    # ---- use -------------------------------------------------------------------------------

    def add(self, name: str, memory: Memory) -> None:
        """Register a memory (replacing one of the same name)."""
        self.memories[name] = memory

    def discard(self, name: str) -> None:
        self.memories.pop(name, None)

    def close(self) -> None:
        """Remove every hook: the backbone computes exactly as before."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.memories = {}

    @contextmanager
    def disabled(self) -> Iterator[None]:
        """Memories off inside the block (the unedited model's computation)."""
        before, self.enabled = self.enabled, False
        try:
            yield
        finally:
            self.enabled = before

    def tail(self, keys: Tensor) -> Tensor | None:
        """The logits from the site's input onwards, memories included: the last layer of the
        post-norm trunk only (None elsewhere). Nothing before the site depends on what an
        editor trains, so an edit's optimisation runs the earlier layers once and this small
        tail per step (the same values as a full forward pass; tested). # (B, T, D) -> (B, T, V)"""
        logits = getattr(self.backbone, "logits", None)
        if not (self.last and self.layout == "post-norm" and callable(logits)):
            return None
        block = self._block
        return logits(block.output(block.intermediate(keys), keys))

    def capture(
        self, samples: Sequence[Sample], root: str | Path, *, grad: bool = False
    ) -> Capture:
        """One forward pass over ``samples`` (with the memories as they are), returning the
        batch, the site's keys and residual sums (before memories) and the logits."""
        batch = self.backbone.collate(samples, root)
        self._recording = True
        try:
            with torch.set_grad_enabled(grad):
                output = self.backbone(batch)
        finally:
            self._recording = False
        seen, self._seen = self._seen, {}
        return Capture(batch, seen["keys"], seen["residual"], output.logits)
