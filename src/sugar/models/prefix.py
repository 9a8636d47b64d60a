"""One vector per prefix from one forward pass (METHOD.md section 2): the function training and
``sugar.embed`` share, so both give bit-identical embeddings.

Shapes: B batch, T tokens, D hidden width, n prefixes picked, P projector output width.

A prefix is (sample b, slice e): the sample's slices 0..e. Its state is read at the end of
slice e from the last layer's hidden states: a text slice's last token, or an image slice's
tokens averaged (``image_pool="mean"``) or its last token (``"last"``, the paper's "w/o
AvgPool"). The retrieval projector (2-layer MLP, GELU) maps the state to ``r``, L2-normalised.
No special token is added: causal attention makes the state at slice e a summary of 0..e.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sugar.data.collate import Span

__all__ = [
    "RetrievalProjector",
    "all_prefixes",
    "embed_prefixes",
    "projector_from_extras",
    "slice_states",
]

ImagePool = Literal["mean", "last"]


def slice_states(
    hidden: Tensor,
    spans: Sequence[Sequence[Span]],
    sample_index: Tensor,
    slice_index: Tensor,
    image_pool: ImagePool = "mean",
) -> Tensor:
    """The hidden state at the end of each picked slice. # (n, D)

    Args:
        hidden: last-layer hidden states. # (B, T, D)
        spans: per sample, the slice spans of :class:`~sugar.data.collate.Batch`.
        sample_index: b of each prefix. # (n,) long
        slice_index: e of each prefix (its last slice). # (n,) long
        image_pool: ``mean`` over an image slice's tokens, or its ``last`` token.
    """
    if image_pool not in ("mean", "last"):
        raise ValueError(f"image_pool={image_pool!r}: must be 'mean' or 'last'")
    if sample_index.shape != slice_index.shape or sample_index.dim() != 1:
        raise ValueError("sample_index and slice_index must be (n,) tensors of one shape")
    batch, length, _ = hidden.shape
    rows = []
    # Gather through a (n, T) weight matrix: one batched product instead of n slices.
    weights = hidden.new_zeros(len(sample_index), length)  # (n, T)
    for row, (b, e) in enumerate(zip(sample_index.tolist(), slice_index.tolist(), strict=True)):
        if not 0 <= b < batch or not 0 <= e < len(spans[b]):
            raise ValueError(f"prefix ({b}, {e}) does not exist in this batch")
        span = spans[b][e]
        if span.kind == "image" and image_pool == "mean":
            weights[row, span.start : span.end] = 1.0 / (span.end - span.start)
        else:
            weights[row, span.end - 1] = 1.0
        rows.append(b)
    picked = hidden[torch.as_tensor(rows, dtype=torch.long, device=hidden.device)]  # (n, T, D)
    return torch.einsum("nt,ntd->nd", weights, picked)


class RetrievalProjector(nn.Module):
    """The retrieval projector: Linear(D, D) -> GELU -> Linear(D, P), then L2 normalisation."""

    def __init__(self, hidden_size: int, dim: int = 256) -> None:
        super().__init__()
        self.hidden_size, self.dim = hidden_size, dim
        self.net = nn.Sequential(
            nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, dim)
        )

    def forward(self, states: Tensor, steer: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """(n, D) -> (n, P), unit-norm rows; ``steer`` maps the (n, P) output before the
        normalisation (the control branch's output experts,
        :meth:`sugar.control.branch.ControlBranch.steer_output`)."""
        out = self.net(states)
        return F.normalize(out if steer is None else steer(out), dim=-1)

    @property
    def spec(self) -> dict[str, int]:
        """What rebuilds it: ``RetrievalProjector(**spec)``."""
        return {"hidden_size": self.hidden_size, "dim": self.dim}


def embed_prefixes(
    hidden: Tensor,
    spans: Sequence[Sequence[Span]],
    sample_index: Tensor,
    slice_index: Tensor,
    projector: RetrievalProjector,
    image_pool: ImagePool = "mean",
    steer: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """``r`` of each picked prefix: ``projector(slice_states(...), steer)``. # (n, P) unit-norm"""
    states = slice_states(hidden, spans, sample_index, slice_index, image_pool)
    return projector(states.to(next(projector.parameters()).dtype), steer)


def projector_from_extras(
    extras: dict[str, dict[str, Tensor]], specs: dict[str, dict[str, Any]], source: str
) -> tuple[RetrievalProjector | None, ImagePool]:
    """The retrieval projector a bundle saved as its extra module ``projector`` (None when it
    has none: a generative-only model) and the ``image_pool`` it was trained with."""
    state = extras.get("projector")
    if not state:
        return None, "mean"
    spec = dict(specs["projector"])
    image_pool = spec.pop("image_pool", "mean")
    if image_pool not in ("mean", "last"):
        raise ValueError(f"{source}: projector image_pool={image_pool!r}")
    projector = RetrievalProjector(**spec)
    projector.load_state_dict(state)
    return projector.eval(), image_pool


def all_prefixes(spans: Sequence[Sequence[Span]]) -> tuple[Tensor, Tensor]:
    """(sample_index, slice_index) of every prefix of every sample, in order. # (n,) each"""
    b = [i for i, sample in enumerate(spans) for _ in sample]
    e = [j for sample in spans for j in range(len(sample))]
    return torch.tensor(b, dtype=torch.long), torch.tensor(e, dtype=torch.long)
