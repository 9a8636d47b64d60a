"""The backbone's config section (``model``) and its LoRA subsection, re-exported by
:mod:`sugar.config` (the typed config tree; kept in their own file for its length)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from sugar.strict import check as _check

__all__ = ["LoraConfig", "ModelConfig"]


@dataclass
class LoraConfig:
    """LoRA on the language model of a Hugging Face backbone (peft); the paper's values."""

    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    """Module names (last name component) inside the language model that get adapters; the
    vision tower never does."""
    rank: int = 128
    """LoRA rank r."""
    alpha: int = 256
    """LoRA alpha (the update is scaled by alpha / r)."""
    dropout: float = 0.05
    """Dropout on the LoRA input while training."""

    def __post_init__(self) -> None:
        _check(bool(self.target_modules), "target_modules", self.target_modules, "needs a name")
        _check(
            all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) for name in self.target_modules),
            "target_modules",
            self.target_modules,
            "must be plain module names (q_proj, v_proj, ...)",
        )
        _check(self.rank >= 1, "rank", self.rank)
        _check(self.alpha > 0, "alpha", self.alpha, "must be > 0")
        _check(0 <= self.dropout < 1, "dropout", self.dropout, "must be in [0, 1)")


_ATTENTION = ("eager", "sdpa", "flash_attention_2")


_NO_CHECKPOINTING = ("tiny", "minilm")
"""The built-in families, which do not recompute activations (``gradient_checkpointing``)."""


@dataclass
class ModelConfig:
    """The backbone (``family``) and its options.

    ``tiny`` (built in): the tokenizer is trained on the run's training texts (``vocab_size``
    ids at most); the architecture fields map 1:1 to :class:`sugar.models.tiny.TinyMLLM`
    keyword arguments. Hugging Face families (``hf-llava``, ``hf-llava-next``,
    ``hf-qwen2-vl``; :mod:`sugar.models.hf`) start from ``pretrained`` with LoRA (``lora``);
    the fields from ``pretrained`` on map 1:1 to their keyword arguments (:meth:`hf_kwargs`).
    """

    family: str = "tiny"
    """A registered backbone family (:func:`sugar.models.base.registered_backbones`)."""
    vocab_size: int = 1024
    """Byte-level BPE vocabulary size, 4 special and 256 byte tokens included (>= 260)."""
    width: int = 192
    """Decoder width D."""
    layers: int = 4
    """Decoder blocks."""
    heads: int = 4
    """Attention heads (must divide ``width``)."""
    mlp_ratio: int = 4
    """MLP hidden width = mlp_ratio * width."""
    max_positions: int = 512
    """Longest sequence in tokens (longer samples are refused, never truncated)."""
    dropout: float = 0.0
    """Attention dropout while training."""
    vision: Literal["frozen_grid", "vit"] = "frozen_grid"
    """``frozen_grid``: frozen EfficientNet-Lite0 grid features; ``vit``: a small trained ViT."""
    image_size: int = 64
    """Pixels per side fed to the vision path."""
    grid: int = 2
    """``frozen_grid``: vision tokens per image = grid * grid."""
    vit_patch: int = 16
    """``vit``: patch side in pixels (must divide ``image_size``)."""
    vit_width: int = 128
    """``vit``: encoder width."""
    vit_layers: int = 2
    """``vit``: encoder blocks."""
    feature_cache: str | None = "cache/vision"
    """``frozen_grid``: directory of the persistent vision-feature cache (null: memory only);
    a run from ``train.init_from`` uses it too (an image's features are computed once)."""
    pretrained: str | None = None
    """Hugging Face families: the base checkpoint, a hub name or a local directory (required)."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """Hugging Face families: LoRA on the language model."""
    freeze_vision: bool = True
    """Hugging Face families: keep the vision tower frozen (false: train it, saved whole)."""
    freeze_projector: bool = True
    """Hugging Face families: keep the multimodal projector frozen (false: train it)."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Hugging Face families: dtype the base weights are loaded in (GPU: bfloat16)."""
    autocast: Literal["none", "bfloat16", "float16", "auto"] = "none"
    """Hugging Face families and ``minilm``: torch.autocast dtype of forward passes (none:
    float32; auto: bfloat16 where the device computes it natively, e.g. a CPU with AVX-512 BF16,
    else float32; sugar.models.precision)."""
    gradient_checkpointing: bool = False
    """Hugging Face families: recompute activations in backward (less memory, slower). The
    built-in families (``tiny``, ``minilm``) do not implement it and refuse ``true``."""
    attn_implementation: str | None = None
    """Hugging Face families: ``eager``, ``sdpa`` or ``flash_attention_2`` (null: transformers'
    default for the model)."""
    output_vocab: Literal["corpus", "full"] = "corpus"
    """``minilm``: score only the WordPiece ids the training texts use (``corpus``, plus
    ``[SEP]`` and ``[UNK]``; the same logits on those ids, several times faster) or all 30,522
    (``full``). Inputs always use the full vocabulary (sugar.models.minilm)."""
    image_dropout: float = 0.5
    """``minilm``: dropout on the standardised image features while training."""
    trunk_lr_scale: float = 0.1
    """``minilm``: the pretrained trunk learns at this fraction of ``train.lr``."""
    freeze_trunk: bool = False
    """``minilm``, a fresh model only: keep the trunk (word embeddings included) frozen and
    train the image adapter and the LM head's new parts: the LLaVA-style alignment stage
    before the full base (a model loaded from a bundle always trains its trunk)."""

    def __post_init__(self) -> None:
        _check(bool(self.family), "family", self.family, "must not be empty")
        _check(
            not (self.gradient_checkpointing and self.family in _NO_CHECKPOINTING),
            "gradient_checkpointing",
            self.gradient_checkpointing,
            f"is not implemented by the built-in family {self.family!r} (Hugging Face families)",
        )
        _check(
            self.pretrained is None or bool(self.pretrained),
            "pretrained",
            self.pretrained,
            "must be a hub name or a directory, or null",
        )
        _check(
            self.attn_implementation is None or self.attn_implementation in _ATTENTION,
            "attn_implementation",
            self.attn_implementation,
            f"must be one of {list(_ATTENTION)} or null",
        )
        _check(self.vocab_size >= 260, "vocab_size", self.vocab_size, "must be >= 260")
        for name in ("width", "layers", "heads", "mlp_ratio", "grid", "vit_patch", "vit_layers"):
            _check(getattr(self, name) >= 1, name, getattr(self, name))
        _check(self.width % self.heads == 0, "heads", self.heads, "must divide width")
        _check(self.max_positions >= 16, "max_positions", self.max_positions, "must be >= 16")
        _check(0 <= self.dropout < 1, "dropout", self.dropout, "must be in [0, 1)")
        _check(0 <= self.image_dropout < 1, "image_dropout", self.image_dropout, "in [0, 1)")
        _check(self.trunk_lr_scale > 0, "trunk_lr_scale", self.trunk_lr_scale, "must be > 0")
        _check(self.image_size >= 16, "image_size", self.image_size, "must be >= 16")
        _check(self.vit_width % 4 == 0, "vit_width", self.vit_width, "must be divisible by 4 heads")
        _check(
            self.image_size % self.vit_patch == 0,
            "vit_patch",
            self.vit_patch,
            f"must divide image_size={self.image_size}",
        )

    def tiny_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :class:`sugar.models.tiny.TinyMLLM` (builders use this)."""
        names = (
            "width", "layers", "heads", "mlp_ratio", "max_positions", "dropout", "vision",
            "image_size", "grid", "vit_patch", "vit_width", "vit_layers", "feature_cache",
        )  # fmt: skip
        return {name: getattr(self, name) for name in names}

    def builtin_kwargs(self) -> dict[str, Any]:
        """What the built-in families' ``build`` reads (``tiny``: :meth:`tiny_kwargs` and
        ``vocab_size``; ``minilm``: the vision, length and dropout fields and its own)."""
        return {
            **self.tiny_kwargs(), "vocab_size": self.vocab_size, "output_vocab": self.output_vocab,
            "image_dropout": self.image_dropout, "trunk_lr_scale": self.trunk_lr_scale,
            "freeze_trunk": self.freeze_trunk, "autocast": self.autocast,
        }  # fmt: skip

    def hf_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the Hugging Face backbones' ``build`` (:mod:`sugar.models.hf`);
        ``pretrained`` is checked there (a clear error when it is missing)."""
        return {
            "pretrained": self.pretrained,
            "lora_target_modules": list(self.lora.target_modules),
            "lora_rank": self.lora.rank,
            "lora_alpha": self.lora.alpha,
            "lora_dropout": self.lora.dropout,
            "freeze_vision": self.freeze_vision,
            "freeze_projector": self.freeze_projector,
            "dtype": self.dtype,
            "autocast": self.autocast,
            "gradient_checkpointing": self.gradient_checkpointing,
            "attn_implementation": self.attn_implementation,
        }
