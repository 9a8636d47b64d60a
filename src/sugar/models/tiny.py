"""The built-in small MLLM: vision tokens -> projector -> a decoder-only transformer, KV cache.

Shapes: B batch, T tokens, D width, H heads, E = D / H head width, V vocabulary, N images in
the batch, K vision tokens per image, F vision feature width, L cached length.

Like LLaVA, images become K vectors that a trainable projector maps to the decoder's width and
that replace the K ``<image>`` placeholders of the token sequence (:mod:`sugar.models.splice`).
Two vision paths (``vision``):

- ``frozen_grid`` (default): EfficientNet-Lite0's last feature map pooled to a G x G grid
  (K = G*G, F = 1280), frozen and computed once per image content (:class:`FeatureCache`);
- ``vit``: a small ViT trained with the rest (K = (image_size / patch)^2).

The decoder: learned token and position embeddings, pre-LayerNorm blocks of causal
self-attention (PyTorch's scaled-dot-product attention) and a GELU MLP, a final LayerNorm whose
output is ``ModelOutput.hidden``, and an LM head tied to the token embedding. Positions count
real tokens only (``cumsum(attention_mask) - 1``), so right padding (training) and left padding
(generation) give the same values for the same tokens.

Only this file knows these internals; everything else sees :class:`~sugar.models.base.MLLM`.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file
from torch import Tensor, nn
from torch.nn import functional as F

from sugar.data.collate import Batch
from sugar.data.jsonl import DataError
from sugar.io import atomic_write_bytes, sha256_bytes
from sugar.models.base import ModelOutput, register_backbone
from sugar.models.decoding import BuiltinMLLM, DecoderParts
from sugar.models.feature_cache import FeatureCache
from sugar.models.pretrained import (
    FEATURE_DIM,
    EfficientNetGrid,
    image_file_key,
    images_to_pixels,
    open_image,
)
from sugar.models.splice import splice_image_features
from sugar.models.tokenizer import Tokenizer

__all__ = ["TinyMLLM"]

WEIGHTS = "backbone.safetensors"

KVCache = list[tuple[Tensor, Tensor]]  # per layer: keys, values # (B, H, L, E) each


def _pixels(paths: Iterable[str], size: int) -> Tensor:
    """(N, 3, size, size) pixels of the image files at ``paths``, each decoded and reduced on
    its own (:func:`~sugar.models.pretrained.images_to_pixels`), so a batch of camera photos
    never holds more than one decoded at full size."""
    return torch.cat([images_to_pixels([open_image(path)], size) for path in paths])


class FrozenGridVision(nn.Module):
    """Frozen EfficientNet-Lite0 grid features, computed once per image content. # (N, K, F)"""

    def __init__(self, image_size: int, grid: int, cache_dir: str | None) -> None:
        super().__init__()
        self.image_size = image_size
        self.encoder = EfficientNetGrid(grid)
        self.tokens = grid * grid
        self.width = FEATURE_DIM
        # Small shards: features reach the disk every 256 new images, and at flush() (the
        # training loop calls it at every checkpoint and at the end; atexit covers the rest).
        self.cache = FeatureCache(
            cache_dir, f"{self.encoder.identity}:px{image_size}", shard_size=256
        )
        atexit.register(self.cache.flush)
        self._keys: dict[str, tuple[tuple[int, int], str]] = {}

    def _key(self, path: str) -> str:
        """The cache key of an image file (:func:`~sugar.models.pretrained.image_file_key`: its
        content, and the preprocessing where it changed), re-read only when its size or mtime
        changes (a training step would otherwise read and hash every image again)."""
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            raise DataError(f"image file not found: {path}") from None
        known = self._keys.get(path)
        if known is None or known[0] != (stat.st_mtime_ns, stat.st_size):
            known = ((stat.st_mtime_ns, stat.st_size), image_file_key(Path(path).read_bytes()))
            self._keys[path] = known
        return known[1]

    def forward(self, paths: Sequence[str]) -> Tensor:
        keys = [self._key(path) for path in paths]
        found = self.cache.get(keys)
        missing = [(key, path) for key, path in zip(keys, paths, strict=True) if key not in found]
        if missing:
            unique = dict(missing)  # the same content twice in a batch is encoded once
            pixels = _pixels(unique.values(), self.image_size)
            device = next(self.encoder.parameters()).device
            features = self.encoder(pixels.to(device)).cpu()  # (M, K, F), cached on the CPU
            new = dict(zip(unique, features, strict=True))
            self.cache.put(new)
            found.update(new)
        return torch.stack([found[key] for key in keys])  # (N, K, F), CPU; the caller moves it


class TinyViT(nn.Module):
    """A small trainable ViT: patches -> pre-LN transformer encoder. # (N, K, F)"""

    def __init__(self, image_size: int, patch: int, width: int, layers: int, heads: int) -> None:
        super().__init__()
        if image_size % patch:
            raise ValueError(f"vit_patch={patch} must divide image_size={image_size}")
        self.image_size = image_size
        self.tokens = (image_size // patch) ** 2
        self.width = width
        self.patchify = nn.Conv2d(3, width, kernel_size=patch, stride=patch)
        self.position = nn.Parameter(torch.zeros(1, self.tokens, width))
        nn.init.normal_(self.position, std=0.02)
        block = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True,
            norm_first=True,
        )  # fmt: skip
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)

    def forward(self, paths: Sequence[str]) -> Tensor:
        pixels = _pixels(paths, self.image_size).to(self.position.device)  # (N, 3, S, S)
        patches = self.patchify(pixels).flatten(2).transpose(1, 2)  # (N, K, F)
        return self.norm(self.blocks(patches + self.position))


class Block(nn.Module):
    """Pre-LN causal self-attention + GELU MLP, with an optional KV cache."""

    def __init__(self, width: int, heads: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width)
        )
        self.dropout = dropout

    def forward(
        self, x: Tensor, allowed: Tensor, past: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``x`` (B, T, D); ``allowed`` (B, 1, T, L) bool; ``past`` keys/values before x."""
        batch, length, width = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(width, dim=2)  # (B, T, D) each
        q, k, v = (t.view(batch, length, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)  # (B, H, L, E)
        drop = self.dropout if self.training else 0.0
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=drop)
        x = x + self.out(attended.transpose(1, 2).reshape(batch, length, width))
        x = x + self.mlp(self.norm2(x))
        return x, (k, v)


@register_backbone("tiny")
class TinyMLLM(BuiltinMLLM):
    """The built-in small MLLM (module docstring). Build with keyword arguments (ModelConfig)."""

    caches_image_features = True

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        width: int = 192,
        layers: int = 4,
        heads: int = 4,
        mlp_ratio: int = 4,
        max_positions: int = 512,
        dropout: float = 0.0,
        vision: Literal["frozen_grid", "vit"] = "frozen_grid",
        image_size: int = 64,
        grid: int = 2,
        vit_patch: int = 16,
        vit_width: int = 128,
        vit_layers: int = 2,
        feature_cache: str | None = None,
    ) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width={width} must be divisible by heads={heads}")
        self.tokenizer = tokenizer
        self.spec: dict[str, Any] = {
            "width": width, "layers": layers, "heads": heads, "mlp_ratio": mlp_ratio,
            "max_positions": max_positions, "dropout": dropout, "vision": vision,
            "image_size": image_size, "grid": grid, "vit_patch": vit_patch,
            "vit_width": vit_width, "vit_layers": vit_layers,
        }  # fmt: skip
        self.vision: FrozenGridVision | TinyViT
        if vision == "frozen_grid":
            self.vision = FrozenGridVision(image_size, grid, feature_cache)
        elif vision == "vit":
            self.vision = TinyViT(
                image_size, vit_patch, vit_width, vit_layers, heads=4
            )  # 4 | width
        else:
            raise ValueError(f"vision={vision!r}: must be 'frozen_grid' or 'vit'")
        self.image_tokens = self.vision.tokens
        self.projector = nn.Sequential(
            nn.Linear(self.vision.width, width), nn.GELU(), nn.Linear(width, width)
        )
        self.embed = nn.Embedding(tokenizer.vocab_size, width)
        self.position = nn.Embedding(max_positions, width)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.max_positions = max_positions
        self._init_weights()

    def _init_weights(self) -> None:
        for name, module in self.named_modules():
            if name.startswith(self.frozen_prefix.rstrip(".")):
                continue
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
        for name, parameter in self.blocks.named_parameters():  # GPT-2: residual projections
            if name.endswith("out.weight"):  # scaled by depth
                nn.init.normal_(parameter, std=0.02 / (2 * len(self.blocks)) ** 0.5)

    def decoder_layers(self) -> list[nn.Module]:
        """The decoder blocks (each returns ``(hidden, (keys, values))``)."""
        return list(self.blocks)

    @property
    def hidden_size(self) -> int:
        return int(self.spec["width"])

    def flush_caches(self) -> None:
        """Write the vision-feature cache's pending entries to disk."""
        if isinstance(self.vision, FrozenGridVision):
            self.vision.cache.flush()

    @property
    def identity(self) -> str:
        return sha256_bytes(self._weights_bytes() + self.tokenizer.identity.encode())

    # ----------------------------------------------------------------------------------------
    # Inputs
    # ----------------------------------------------------------------------------------------

    def _image_features(self, paths: Sequence[str]) -> Tensor:
        device = self.embed.weight.device
        if not paths:
            return torch.zeros(0, self.image_tokens, self.hidden_size, device=device)
        return self.projector(self.vision(paths).to(device))  # (N, K, D)

    def image_tokens_of(self, paths: Sequence[str]) -> Tensor:
        """The projected vision tokens of ``paths`` (resolved file paths). # (N, K, D)"""
        return self._image_features(paths)

    def _embed_inputs(self, input_ids: Tensor, images: Sequence[str]) -> Tensor:
        tokens = self.embed(input_ids)  # (B, T, D)
        features = self._image_features(images)  # (N, K, D)
        return splice_image_features(tokens, input_ids, features, image_id=self.tokenizer.image_id)

    # ----------------------------------------------------------------------------------------
    # The decoder
    # ----------------------------------------------------------------------------------------

    def _decode(self, x: Tensor, key_mask: Tensor, past: KVCache | None) -> tuple[Tensor, KVCache]:
        """Run the blocks over new inputs ``x`` (B, T, D) after ``past``.

        ``key_mask`` (B, L) marks the real tokens of the whole sequence so far (cached + new).
        A query attends to real keys at or before it, and always to itself (so a padding
        query never has an empty row; real queries never see padding keys).
        """
        length, total = x.shape[1], key_mask.shape[1]
        positions = (key_mask.long().cumsum(dim=1) - 1).clamp_min(0)[:, total - length :]
        if int(positions.max()) >= self.max_positions:
            raise ValueError(
                f"sequence of {int(positions.max()) + 1} tokens > max_positions="
                f"{self.max_positions}"
            )
        x = x + self.position(positions)
        query_index = torch.arange(total - length, total, device=x.device)  # (T,)
        key_index = torch.arange(total, device=x.device)  # (L,)
        causal = key_index[None, :] <= query_index[:, None]  # (T, L)
        allowed = causal[None] & key_mask[:, None, :]  # (B, T, L)
        allowed = allowed | (key_index[None, :] == query_index[:, None])[None]
        allowed = allowed.unsqueeze(1)  # (B, 1, T, L)
        cache: KVCache = []
        for index, block in enumerate(self.blocks):
            x, kv = block(x, allowed, None if past is None else past[index])
            cache.append(kv)
        return self.norm(x), cache

    def forward(self, batch: Batch) -> ModelOutput:
        device = self.embed.weight.device
        input_ids = batch.input_ids.to(device)
        x = self._embed_inputs(input_ids, batch.images)
        hidden, _ = self._decode(x, batch.attention_mask.to(device), None)  # (B, T, D)
        return ModelOutput(logits=hidden @ self.embed.weight.T, hidden=hidden)

    # ----------------------------------------------------------------------------------------
    # Generation
    # ----------------------------------------------------------------------------------------

    def decoder_parts(self) -> DecoderParts:
        """The pieces :class:`~sugar.models.decoding.BuiltinMLLM` decodes with (tied head)."""
        return DecoderParts(
            self._decode, self.embed, lambda hidden: hidden @ self.embed.weight.T,
            lambda choice: choice, None, self.embed.weight.device,
        )  # fmt: skip

    # ----------------------------------------------------------------------------------------
    # Files
    # ----------------------------------------------------------------------------------------

    def save_pretrained(self, directory: Path) -> dict[str, Any]:
        atomic_write_bytes(directory / WEIGHTS, self._weights_bytes())
        self.tokenizer.save(directory)
        spec = dict(self.spec)
        if isinstance(self.vision, FrozenGridVision):
            spec["vision_identity"] = self.vision.encoder.identity
        return spec

    @classmethod
    def build(
        cls, train_texts: Sequence[str], tiny: dict[str, Any], hf: dict[str, Any]
    ) -> TinyMLLM:
        """A fresh model whose tokenizer is trained on ``train_texts`` (``tiny['vocab_size']``
        ids at most); the other ``tiny`` keys are this class's keyword arguments."""
        options = dict(tiny)
        for other in ("output_vocab", "image_dropout", "trunk_lr_scale", "freeze_trunk"):
            options.pop(other, None)
        if options.pop("autocast", "none") != "none":
            raise ValueError("model.autocast applies to the minilm and Hugging Face families")
        tokenizer = Tokenizer.train(list(train_texts), vocab_size=options.pop("vocab_size"))
        return cls(tokenizer, **options)

    @classmethod
    def from_pretrained(cls, directory: Path, spec: dict[str, Any]) -> TinyMLLM:
        spec = dict(spec)
        expected_vision = spec.pop("vision_identity", None)
        feature_cache = spec.pop("feature_cache", None)
        model = cls(Tokenizer.load(directory), feature_cache=feature_cache, **spec)
        found = None
        if isinstance(model.vision, FrozenGridVision):
            found = model.vision.encoder.identity
        state = load_file(str(directory / WEIGHTS))
        model._restore(directory / WEIGHTS, state, (expected_vision, found))
        return model
