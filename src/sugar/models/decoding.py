"""Autoregressive decoding, and the base class of the built-in backbones (``tiny``, ``minilm``).

Shapes: B batch, T prompt tokens, D width, V scored vocabulary.

A backbone supplies three functions, and this module does the rest (left padding, the length
check, sampling, the KV-cache loop, stopping at ``<eos>``):

- ``decode(x, key_mask, cache) -> (hidden, cache)``: the trunk over new input vectors ``x``
  (B, t, D) after ``cache``, ``key_mask`` (B, L) marking the real tokens so far;
- ``embed(ids) -> (B, D)``: the input vectors of new token ids;
- ``logits(hidden) -> (B, V)`` and ``token_ids(choice) -> (B,)``: the scores of the last
  position and the vocabulary ids of the chosen indices (an output vocabulary may be a subset).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save
from torch import Tensor

from sugar.data.collate import Batch, collate
from sugar.data.jsonl import resolve_image
from sugar.data.schema import Sample
from sugar.models.base import MLLM, prompt_of

__all__ = ["BuiltinMLLM", "DecoderParts", "decode_tokens", "left_padded", "pick_token"]


def left_padded(
    batch: Batch, pad_id: int, samples: Sequence[Sample], max_new_tokens: int, max_positions: int
) -> tuple[Tensor, Tensor]:
    """(ids, key_mask) of ``batch`` left-padded, so every prompt ends at the last column and new
    tokens append in step. # (B, T) each; ``ValueError`` naming the longest sample when a prompt
    plus ``max_new_tokens`` would pass ``max_positions``."""
    lengths, width = batch.lengths.tolist(), batch.input_ids.shape[1]
    if width + max_new_tokens - 1 > max_positions:
        longest = samples[int(batch.lengths.argmax())].id
        raise ValueError(
            f"sample {longest!r}: a prompt of {width} tokens plus max_new_tokens="
            f"{max_new_tokens} needs {width + max_new_tokens - 1} positions > "
            f"max_positions={max_positions}; shorten the prompt or ask for fewer tokens"
        )
    ids = torch.full_like(batch.input_ids, pad_id)  # (B, T)
    for row, length in enumerate(lengths):
        ids[row, width - length :] = batch.input_ids[row, :length]
    key_mask = torch.arange(width)[None, :] >= (width - batch.lengths)[:, None]  # (B, T)
    return ids, key_mask


def pick_token(
    logits: Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None
) -> Tensor:
    """Greedy (``temperature == 0``) or sampled indices from softmax(logits / temperature),
    restricted to the ``top_k`` best when given. # (B, V) -> (B,)"""
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    scaled = logits.float() / temperature
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k={top_k}: must be >= 1")
        kth = scaled.topk(min(top_k, scaled.shape[-1]), dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def decode_tokens(
    decode: Callable[[Tensor, Tensor, Any], tuple[Tensor, Any]],
    embed: Callable[[Tensor], Tensor],
    logits: Callable[[Tensor], Tensor],
    token_ids: Callable[[Tensor], Tensor],
    inputs: Tensor,
    key_mask: Tensor,
    *,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    generator: torch.Generator | None,
    use_cache: bool,
    cache: Any,
    eos_id: int,
    pad_id: int,
) -> tuple[list[list[int]], list[Tensor]]:
    """New token ids per row (``<eos>`` and what follows dropped) and each step's logits.

    ``inputs`` (B, T, D) and ``key_mask`` (B, T) come from :func:`left_padded`; ``cache`` is the
    backbone's empty cache (or None). ``use_cache=False`` recomputes the whole sequence per token
    (the reference the KV cache is tested against)."""
    finished = torch.zeros(inputs.shape[0], dtype=torch.bool, device=inputs.device)
    new_ids: list[Tensor] = []
    step_logits: list[Tensor] = []
    hidden, cache = decode(inputs, key_mask, cache if use_cache else None)
    for step in range(max_new_tokens):
        scores = logits(hidden[:, -1])  # (B, V)
        step_logits.append(scores)
        token = token_ids(pick_token(scores, temperature, top_k, generator))  # (B,)
        token = torch.where(finished, pad_id, token)
        new_ids.append(token)
        finished |= token == eos_id
        if bool(finished.all()) or step == max_new_tokens - 1:
            break
        key_mask = torch.cat([key_mask, torch.ones_like(key_mask[:, :1])], dim=1)
        step_input = embed(token)[:, None]  # (B, 1, D)
        if use_cache:
            hidden, cache = decode(step_input, key_mask, cache)
        else:
            inputs = torch.cat([inputs, step_input], dim=1)
            hidden, _ = decode(inputs, key_mask, None)
    out: list[list[int]] = []
    rows = torch.stack(new_ids, dim=1).tolist() if new_ids else [[] for _ in range(len(inputs))]
    for row in rows:
        kept = []
        for token in row:
            if token in (eos_id, pad_id):
                break
            kept.append(int(token))
        out.append(kept)
    return out, step_logits


@dataclass
class DecoderParts:
    """What :class:`BuiltinMLLM` needs of a backbone for one call (module docstring)."""

    decode: Callable[[Tensor, Tensor, Any], tuple[Tensor, Any]]
    embed: Callable[[Tensor], Tensor]
    logits: Callable[[Tensor], Tensor]
    token_ids: Callable[[Tensor], Tensor]
    cache: Any
    device: torch.device


class BuiltinMLLM(MLLM):
    """What the built-in backbones (``tiny``, ``minilm``) share: ``collate``, ``generate_ids``
    over :meth:`decoder_parts`, their weights without the frozen encoder's (its weights ship in
    a package) and the checks on restoring them. A subclass provides ``tokenizer``,
    ``max_positions``, ``image_tokens``, ``_embed_inputs(ids, images)`` (the input vectors,
    images spliced in) and :meth:`decoder_parts`."""

    tokenizer: Any
    max_positions: int
    image_tokens: int
    frozen_prefix = "vision.encoder."
    """State-dict names that come from an installed package and are never saved."""

    def _collate(
        self, samples: Sequence[Sample], root: str | Path, slice_text_by: str, add_eos: bool
    ) -> Batch:
        """See :meth:`MLLM.collate`: image paths resolved under ``root``, samples longer than
        ``max_positions`` refused, labels passed through :meth:`_labels`."""
        batch = collate(
            samples, self.tokenizer, self.image_tokens,
            slice_text_by="sentence" if slice_text_by == "sentence" else "segment",
            add_eos_to_targets=add_eos, max_tokens=self.max_positions,
        )  # fmt: skip
        batch.images = [str(resolve_image(root, path)) for path in batch.images]
        batch.labels = self._labels(batch.labels, batch.sample_ids)
        return batch

    def _labels(self, labels: Tensor, sample_ids: Sequence[str]) -> Tensor:
        """The labels the LM head's outputs index (default: token ids as they are)."""
        return labels

    def _restore(self, path: Path, state: dict[str, Tensor], vision: tuple[Any, Any]) -> None:
        """Load a bundle's ``state`` (read from ``path``) after checking that the installed
        vision encoder is the one it was trained on (``vision``: expected, found; None skips)."""
        expected, found = vision
        if expected is not None and found is not None and found != expected:
            raise ValueError(
                f"{path.parent}: trained on vision features {expected}, but the installed "
                f"encoder gives {found}"
            )
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [name for name in missing if not name.startswith(self.frozen_prefix)]
        if missing or unexpected:
            raise ValueError(
                f"{path}: does not match the model (missing {missing[:5]}, "
                f"unexpected {unexpected[:5]})"
            )

    def _saved_state(self) -> dict[str, Tensor]:
        """Every tensor except the frozen encoder's."""
        return {
            name: tensor.detach().cpu().contiguous()
            for name, tensor in self.state_dict().items()
            if not name.startswith(self.frozen_prefix)
        }

    def _weights_bytes(self) -> bytes:
        return save(self._saved_state())

    @abc.abstractmethod
    def decoder_parts(self) -> DecoderParts:
        """The functions and the empty cache of one decoding call."""

    @abc.abstractmethod
    def _embed_inputs(self, input_ids: Tensor, images: Sequence[str]) -> Tensor:
        """Input vectors of ``input_ids`` with the images' features at their placeholders."""

    def decode_ids(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(ids))

    @torch.no_grad()
    def generate_ids(
        self,
        samples: Sequence[Sample],
        root: str | Path,
        *,
        return_logits: bool = False,
        **options: Any,
    ) -> Any:
        """New token ids per sample (``<eos>`` excluded; ``options`` as :meth:`generate`'s, and
        ``use_cache=False`` recomputes the whole sequence per token: the reference the KV cache
        is tested against); with ``return_logits``, also the logits of every step, (B, steps,
        V)."""
        unknown = set(options) - {"max_new_tokens", "temperature", "top_k", "seed", "use_cache"}
        if unknown:
            raise ValueError(f"generate options {sorted(unknown)}: not known to {self.family}")
        max_new_tokens = int(options.get("max_new_tokens", 32))
        temperature = float(options.get("temperature", 0.0))
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens={max_new_tokens}: must be >= 0")
        if temperature < 0:
            raise ValueError(f"temperature={temperature}: must be >= 0")
        was_training = self.training
        self.eval()
        try:
            parts = self.decoder_parts()
            batch = self.collate([prompt_of(sample) for sample in samples], root)
            ids, key_mask = left_padded(
                batch, self.tokenizer.pad_id, samples, max_new_tokens, self.max_positions
            )
            ids, key_mask = ids.to(parts.device), key_mask.to(parts.device)
            seed = options.get("seed")
            generator = (
                None if seed is None else torch.Generator(device=parts.device).manual_seed(seed)
            )
            out, step_logits = decode_tokens(
                parts.decode, parts.embed, parts.logits, parts.token_ids,
                self._embed_inputs(ids, batch.images), key_mask,
                max_new_tokens=max_new_tokens, temperature=temperature,
                top_k=options.get("top_k"), generator=generator,
                use_cache=bool(options.get("use_cache", True)), cache=parts.cache,
                eos_id=self.tokenizer.eos_id, pad_id=self.tokenizer.pad_id,
            )  # fmt: skip
        finally:
            self.train(was_training)
        if return_logits:
            width = step_logits[0].shape[-1] if step_logits else 0
            empty = torch.zeros(len(samples), 0, width)
            return out, torch.stack(step_logits, dim=1) if step_logits else empty
        return out
