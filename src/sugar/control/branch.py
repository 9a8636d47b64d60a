"""The control branch: instructions that steer a frozen sugar model's query embeddings.

Shapes: B batch, T tokens, D the backbone's hidden width, J joins, K output experts, P the
retrieval projector's width.

After ControlRetriever (Pan et al. 2023, arXiv 2308.10025), itself after ControlNet (Zhang et
al. 2023): the trained model stays frozen, and a separate trainable branch reads the
instruction and steers the frozen model through zero-initialised projections.

- **Reads**: the frozen model's last hidden states (B, T, D) over ``[instruction, query...]``
  (the instruction as a text context segment before the query; the model itself unchanged).
- **Branch**: a small pre-norm Transformer encoder of the backbone's width (``layers`` blocks,
  bidirectional, padding masked), a final LayerNorm and a masked mean over the tokens. # (B, D)
- **Joins**: one zero-initialised ``Linear`` per joined decoder layer, applied to every
  position of the frozen model's hidden states ``h`` after the first J decoder blocks
  (:meth:`sugar.models.base.MLLM.decoder_layers`, forward hooks that exist only inside
  :func:`joined`) while the *query alone* passes through the frozen model. ``join="add"``
  (ControlNet's): ``Linear(D, D)`` gives a vector ``c``, ``h + c``. ``join="film"`` (FiLM,
  Perez et al. 2018): ``Linear(D, 2D)`` gives a gain ``g`` and a shift ``c``,
  ``h * (1 + g) + c``, so an instruction can also re-weight the query's features (keep the
  colours, damp the shapes), which a shift alone cannot. The query embedding is then the
  frozen retrieval projector over that pass, read exactly as :mod:`sugar.embed` reads it.

- **Output experts** (``experts`` K > 0; 0 here by default, 8 in ``sugar train-control``'s
  config): K zero-initialised (P, P) matrices ``E_k`` and a routing ``Linear(D, K)`` from the
  same pooled reading; the query's projector output before its L2 normalisation, ``u`` (P,),
  becomes ``u + sum_k w_k (u @ E_k)`` with ``w = softmax(route)``
  (:meth:`ControlBranch.steer_output`). A join moves the hidden states the
  frozen layers go on to transform; an expert maps the final vector directly, as a per-intent
  linear map of the base's query vector does (``benchmarks/control_ceiling.py``, README).

At initialisation every join and every expert outputs exactly 0, so ``h + 0`` (``h * 1 + 0``,
``u + 0``) leaves each hidden state and hence each embedding bit-identical to the base model's;
without an instruction the branch is never
called (documents are always embedded by the base model alone). The branch is a new module
rather than a copy of the first K layers so that one implementation serves every backbone (the
built-in ones and the Hugging Face families, whose blocks need their own masks and positions).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import Tensor, nn

__all__ = ["JOINS", "ControlBranch", "JoinKind", "joined"]

JoinKind = Literal["add", "film"]
JOINS: tuple[JoinKind, ...] = ("add", "film")


class ControlBranch(nn.Module):
    """Instruction-aware branch with zero-initialised joins (module docstring).

    Args:
        width: D, the backbone's hidden width.
        joins: J, how many of the backbone's first decoder blocks receive a control vector.
        layers: Transformer blocks of the branch.
        heads: attention heads of each block (must divide ``width``).
        join: ``add`` or ``film`` (module docstring).
        experts: K output experts (module docstring); 0 for none.
        dim: P, the retrieval projector's width (needed when ``experts`` > 0).
    """

    def __init__(
        self,
        width: int,
        joins: int = 3,
        layers: int = 2,
        heads: int = 4,
        join: JoinKind = "add",
        experts: int = 0,
        dim: int = 0,
    ) -> None:
        super().__init__()
        if width < 1 or joins < 1 or layers < 1 or heads < 1:
            raise ValueError(f"width={width}, joins={joins}, layers={layers}, heads={heads}: >= 1")
        if width % heads:
            raise ValueError(f"heads={heads} does not divide width={width}")
        if join not in JOINS:
            raise ValueError(f"join={join!r}: must be one of {', '.join(JOINS)}")
        if experts < 0 or (experts > 0 and dim < 1):
            raise ValueError(f"experts={experts}, dim={dim}: experts >= 0, and dim >= 1 with them")
        self.spec: dict[str, int | str] = {"width": width, "joins": joins, "layers": layers,
                                           "heads": heads, "join": join}  # fmt: skip
        if experts:  # only then, so that a bundle without experts keeps its old spec
            self.spec.update(experts=experts, dim=dim)
        self.join: JoinKind = join
        block = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        out = 2 * width if join == "film" else width
        projections = [nn.Linear(width, out) for _ in range(joins)]
        for projection in projections:
            nn.init.zeros_(projection.weight)
            nn.init.zeros_(projection.bias)
        self.zero = nn.ModuleList(projections)
        self.route = nn.Linear(width, experts) if experts else None
        self.experts = nn.Parameter(torch.zeros(experts, dim, dim)) if experts else None

    @property
    def joins(self) -> int:
        return len(self.zero)

    def read(self, states: Tensor, mask: Tensor) -> Tensor:
        """The pooled reading of ``states`` (B, T, D), ``mask`` (B, T) true at real tokens.
        # (B, D)"""
        if states.dim() != 3 or mask.shape != states.shape[:2]:
            raise ValueError(f"states {tuple(states.shape)} and mask {tuple(mask.shape)}")
        mask = mask.bool()
        hidden = self.norm(self.encoder(states, src_key_padding_mask=~mask))  # (B, T, D)
        weights = mask.to(hidden.dtype) / mask.sum(dim=1, keepdim=True).clamp_min(1)  # (B, T)
        return torch.einsum("bt,btd->bd", weights, hidden)

    def controls(self, pooled: Tensor) -> Tensor:
        """Control vectors of each join from :meth:`read`'s (B, D): (J, B, D) for ``add``,
        (J, B, 2D) (gain, shift) for ``film``."""
        return torch.stack([projection(pooled) for projection in self.zero])

    def forward(self, states: Tensor, mask: Tensor) -> Tensor:
        """Control vectors of each join (:meth:`controls` of :meth:`read`)."""
        return self.controls(self.read(states, mask))

    def steer_output(self, pooled: Tensor, raw: Tensor) -> Tensor:
        """``raw + sum_k w_k (raw @ E_k)`` (module docstring) for the projector's outputs
        before normalisation ``raw`` (B, P); ``raw`` itself without experts. # (B, P)"""
        if self.route is None or self.experts is None:
            return raw
        weights = torch.softmax(self.route(pooled), dim=-1).to(raw.dtype)  # (B, K)
        mapped = torch.einsum("bp,kpq->bkq", raw, self.experts.to(raw.dtype))  # (B, K, P)
        return raw + torch.einsum("bk,bkq->bq", weights, mapped)


@contextmanager
def joined(layers: Sequence[nn.Module], control: Tensor, join: JoinKind = "add") -> Iterator[None]:
    """Inside the block, each of the first J ``layers`` steers every position of its output
    hidden states ``h`` (a tuple output: its first element) with ``control[j]``: ``add``,
    (J, B, D): ``h + c``; ``film``, (J, B, 2D): ``h * (1 + g) + c`` with ``g, c`` its halves.
    The hooks are removed on exit, also after an error."""
    if control.dim() != 3:
        raise ValueError(f"control must be (J, B, D), got {tuple(control.shape)}")
    if control.shape[0] > len(layers):
        raise ValueError(f"{control.shape[0]} joins > the backbone's {len(layers)} layers")
    if join not in JOINS:
        raise ValueError(f"join={join!r}: must be one of {', '.join(JOINS)}")

    def steer(hidden: Tensor, index: int) -> Tensor:
        vector = control[index][:, None, :].to(hidden.dtype)  # (B, 1, D or 2D)
        if join == "add":
            return hidden + vector
        gain, shift = vector.chunk(2, dim=-1)
        return hidden * (1 + gain) + shift

    def hook_for(index: int) -> Any:
        def add(module: nn.Module, args: Any, output: Any) -> Any:
            if isinstance(output, tuple):
                return (steer(output[0], index), *output[1:])
            return steer(output, index)

        return add

    handles = [layers[j].register_forward_hook(hook_for(j)) for j in range(control.shape[0])]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
