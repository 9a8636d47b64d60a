"""The control branch: instructions that steer a frozen sugar model's query embeddings.

Shapes: B batch, T tokens, D the backbone's hidden width, J joins, P projector width.

After ControlRetriever (Pan et al. 2023, arXiv 2308.10025), itself after ControlNet (Zhang et
al. 2023): the trained model stays frozen, and a separate trainable branch reads the
instruction and steers the frozen model through zero-initialised projections.

- **Reads**: the frozen model's last hidden states (B, T, D) over ``[instruction, query...]``
  (the instruction as a text context segment before the query; the model itself unchanged).
- **Branch**: a small pre-norm Transformer encoder of the backbone's width (``layers`` blocks,
  bidirectional, padding masked), a final LayerNorm and a masked mean over the tokens. # (B, D)
- **Joins**: one ``Linear(D, D)`` per joined decoder layer, weights and bias initialised to
  zero; its output is added to every position of the frozen model's hidden states after the
  first J decoder blocks (:meth:`sugar.models.base.MLLM.decoder_layers`, forward hooks that
  exist only inside :func:`joined`) while the *query alone* passes through the frozen model.
  The query embedding is then the frozen retrieval projector over that pass, read exactly as
  :mod:`sugar.embed` reads it.

At initialisation every join outputs exactly 0, so ``h + 0`` leaves each hidden state and hence
each embedding bit-identical to the base model's; without an instruction the branch is never
called (documents are always embedded by the base model alone). The branch is a new module
rather than a copy of the first K layers so that one implementation serves every backbone (the
built-in ones and the Hugging Face families, whose blocks need their own masks and positions).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["ControlBranch", "joined"]


class ControlBranch(nn.Module):
    """Instruction-aware branch with zero-initialised joins (module docstring).

    Args:
        width: D, the backbone's hidden width.
        joins: J, how many of the backbone's first decoder blocks receive a control vector.
        layers: Transformer blocks of the branch.
        heads: attention heads of each block (must divide ``width``).
    """

    def __init__(self, width: int, joins: int = 3, layers: int = 2, heads: int = 4) -> None:
        super().__init__()
        if width < 1 or joins < 1 or layers < 1 or heads < 1:
            raise ValueError(f"width={width}, joins={joins}, layers={layers}, heads={heads}: >= 1")
        if width % heads:
            raise ValueError(f"heads={heads} does not divide width={width}")
        self.spec: dict[str, int] = {"width": width, "joins": joins, "layers": layers,
                                     "heads": heads}  # fmt: skip
        block = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        projections = [nn.Linear(width, width) for _ in range(joins)]
        for projection in projections:
            nn.init.zeros_(projection.weight)
            nn.init.zeros_(projection.bias)
        self.zero = nn.ModuleList(projections)

    @property
    def joins(self) -> int:
        return len(self.zero)

    def forward(self, states: Tensor, mask: Tensor) -> Tensor:
        """Control vectors of each join. ``states`` (B, T, D), ``mask`` (B, T) true at real
        tokens -> (J, B, D)."""
        if states.dim() != 3 or mask.shape != states.shape[:2]:
            raise ValueError(f"states {tuple(states.shape)} and mask {tuple(mask.shape)}")
        mask = mask.bool()
        hidden = self.norm(self.encoder(states, src_key_padding_mask=~mask))  # (B, T, D)
        weights = mask.to(hidden.dtype) / mask.sum(dim=1, keepdim=True).clamp_min(1)  # (B, T)
        pooled = torch.einsum("bt,btd->bd", weights, hidden)  # (B, D)
        return torch.stack([projection(pooled) for projection in self.zero])


@contextmanager
def joined(layers: Sequence[nn.Module], control: Tensor) -> Iterator[None]:
    """Inside the block, each of the first J ``layers`` adds ``control[j]`` (J, B, D) to every
    position of its output hidden states (a tuple output: to its first element). The hooks are
    removed on exit, also after an error."""
    if control.dim() != 3:
        raise ValueError(f"control must be (J, B, D), got {tuple(control.shape)}")
    if control.shape[0] > len(layers):
        raise ValueError(f"{control.shape[0]} joins > the backbone's {len(layers)} layers")

    def hook_for(index: int) -> Any:
        def add(module: nn.Module, args: Any, output: Any) -> Any:
            vector = control[index][:, None, :]  # (B, 1, D)
            if isinstance(output, tuple):
                return (output[0] + vector.to(output[0].dtype), *output[1:])
            return output + vector.to(output.dtype)

        return add

    handles = [layers[j].register_forward_hook(hook_for(j)) for j in range(control.shape[0])]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
