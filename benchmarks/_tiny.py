"""The benchmarks' tiny embedder: the built-in tiny MLLM at its config defaults (tokenizer trained
on the given texts, no feature cache) with a fresh 256-wide retrieval projector, and its bundle."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sugar.config import ModelConfig
from sugar.models.bundle import save_bundle
from sugar.models.prefix import RetrievalProjector
from sugar.models.tiny import TinyMLLM
from sugar.models.tokenizer import Tokenizer


def tiny_embedder(texts: Sequence[str]) -> tuple[TinyMLLM, RetrievalProjector]:
    """A fresh tiny model and projector, both in eval mode."""
    tokenizer = Tokenizer.train(list(texts), vocab_size=ModelConfig().vocab_size)
    model = TinyMLLM(tokenizer, **ModelConfig(feature_cache=None).tiny_kwargs()).eval()
    return model, RetrievalProjector(model.hidden_size, 256).eval()


def save_tiny_bundle(directory: Path, texts: Sequence[str]) -> TinyMLLM:
    """Write :func:`tiny_embedder`'s model with its projector (mean image pooling) as a bundle
    at ``directory``; returns the model."""
    model, projector = tiny_embedder(texts)
    spec = {**projector.spec, "image_pool": "mean"}
    save_bundle(directory, model, extras={"projector": (spec, projector.state_dict())})
    return model
