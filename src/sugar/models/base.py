"""The interface every backbone implements, and the registration point for backbone families.

Shapes: B batch, T tokens, D hidden width, V vocabulary, N images in the batch.

A backbone is an ``nn.Module`` that reads interleaved :class:`~sugar.data.schema.Sample`s:

- :meth:`MLLM.collate` turns samples into a :class:`~sugar.data.collate.Batch` (token ids,
  labels from spans, the token span of every slice, image paths resolved under ``root``);
- :meth:`MLLM.forward` gives logits and the last layer's hidden states (the states that feed
  the LM head; METHOD.md section 2) for that batch;
- :meth:`MLLM.generate` continues each sample's prompt (its segments before the first target);
- :meth:`MLLM.score` gives each sample's log-likelihood of its target text;
- :meth:`MLLM.parameter_groups` separates frozen from trainable parameters;
- :meth:`MLLM.save_pretrained` / :meth:`MLLM.from_pretrained` write and read the backbone's
  files inside a bundle directory (:mod:`sugar.models.bundle` owns the directory).

New families register themselves with :func:`register_backbone` under a family name that the
bundle's ``model.json`` records; :func:`backbone_class` looks names up in the registry, so no
code ever dispatches on a model's name::

    @register_backbone("my-family")
    class MyMLLM(MLLM): ...
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from sugar.data.collate import IGNORE_INDEX, Batch
from sugar.data.schema import Sample

__all__ = [
    "MLLM",
    "ModelOutput",
    "backbone_class",
    "prompt_of",
    "register_backbone",
    "registered_backbones",
    "target_log_likelihood",
]


@dataclass
class ModelOutput:
    """What a forward pass returns."""

    logits: Tensor  # (B, T, V): next-token logits at every position
    hidden: Tensor  # (B, T, D): last-layer hidden states, the LM head's input


def prompt_of(sample: Sample) -> Sample:
    """The sample's segments before its first target segment: what generation continues.

    A sample with no target segment is its own prompt. A sample that starts with a target has
    an empty prompt, which is refused (``ValueError`` naming the sample).
    """
    for index, segment in enumerate(sample.segments):
        if segment.role == "target":
            if index == 0:
                raise ValueError(f"sample {sample.id!r}: starts with a target, no prompt")
            return Sample(sample.id, list(sample.segments[:index]), sample.task, sample.meta)
    return sample


def target_log_likelihood(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-sample sum of log p(label_t | tokens < t) over supervised positions.

    ``labels`` are aligned with the input (``labels[b, t]`` is the token at t, IGNORE_INDEX
    where unsupervised), so position t is predicted by ``logits[b, t - 1]``.

    Args:
        logits: # (B, T, V)
        labels: # (B, T)

    Returns:
        # (B,) float, 0.0 for a sample without supervised tokens.
    """
    shifted = labels[:, 1:]  # (B, T-1)
    mask = shifted != IGNORE_INDEX
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, T-1, V)
    picked = log_probs.gather(-1, shifted.clamp_min(0).unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    return (picked * mask).sum(dim=1)


class MLLM(nn.Module, abc.ABC):
    """A multimodal LLM over interleaved samples (see the module docstring)."""

    family: str = ""
    """The registry name, set by :func:`register_backbone`."""
    caches_image_features: bool = False
    """Whether ``from_pretrained`` accepts ``spec["feature_cache"]``, a directory for the frozen
    vision tower's per-image features (:mod:`sugar.models.feature_cache`; the built-in
    families)."""

    @property
    @abc.abstractmethod
    def hidden_size(self) -> int:
        """D, the width of :attr:`ModelOutput.hidden`."""

    @property
    @abc.abstractmethod
    def identity(self) -> str:
        """A hash naming the backbone's current weights and tokenizer (bundles and indexes)."""

    def collate(
        self,
        samples: Sequence[Sample],
        root: str | Path,
        *,
        slice_text_by: str = "sentence",
        add_eos_to_targets: bool = True,
    ) -> Batch:
        """Model inputs for ``samples`` whose image paths are relative to ``root``.

        ``batch.spans[b]`` lists, 1:1 with ``slices(samples[b])``, each slice's token span:
        a text slice's tokens, an image slice's image tokens. Checks ``slice_text_by``, then
        calls the family's :meth:`_collate`.
        """
        if slice_text_by not in ("sentence", "segment"):
            raise ValueError(f"slice_text_by={slice_text_by!r}: 'sentence' or 'segment'")
        return self._collate(samples, root, slice_text_by, add_eos_to_targets)

    @abc.abstractmethod
    def _collate(
        self, samples: Sequence[Sample], root: str | Path, slice_text_by: str, add_eos: bool
    ) -> Batch:
        """:meth:`collate` of the family (``slice_text_by`` already checked; ``add_eos``: end
        each target text with the end-of-sequence token)."""

    @abc.abstractmethod
    def forward(self, batch: Batch) -> ModelOutput:
        """Logits and last-layer hidden states of ``batch`` (causal, padding masked)."""

    @torch.no_grad()
    def generate(
        self,
        samples: Sequence[Sample],
        root: str | Path,
        *,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_k: int | None = None,
        seed: int | None = None,
        **options: Any,
    ) -> list[str]:
        """Continue each sample's prompt (:func:`prompt_of`); the new text, ``<eos>`` excluded.

        ``temperature=0`` is greedy; otherwise sample from softmax(logits / temperature),
        restricted to the ``top_k`` most likely tokens when given, with a generator seeded by
        ``seed`` (reproducible). ``options``: a family's own (the built-in ones: ``use_cache``).
        """
        ids = self.generate_ids(
            samples, root, max_new_tokens=max_new_tokens, temperature=temperature,
            top_k=top_k, seed=seed, **options,
        )  # fmt: skip
        return [self.decode_ids(row) for row in ids]

    @abc.abstractmethod
    def generate_ids(self, samples: Sequence[Sample], root: str | Path, **options: Any) -> Any:
        """The new token ids per sample (:meth:`generate`'s arguments)."""

    @abc.abstractmethod
    def decode_ids(self, ids: Sequence[int]) -> str:
        """The text of generated token ids (special tokens dropped)."""

    def score(self, samples: Sequence[Sample], root: str | Path) -> Tensor:
        """Log-likelihood of each sample's target text (and its ``<eos>``) given the rest, on
        the CPU. # (B,)

        Used to score captions: the higher, the better the text fits the images and context.
        """
        batch = self.collate(samples, root)
        with torch.no_grad():
            output = self(batch)
        return target_log_likelihood(output.logits, batch.labels.to(output.logits.device)).cpu()

    def flush_caches(self) -> None:
        """Make any persistent cache the backbone keeps durable (default: none to flush)."""

    def prepare(self, samples: Sequence[Sample], root: str | Path) -> None:
        """Fit what a *fresh* backbone derives from its training data before step 0 (the
        MiniLM backbone: image-feature statistics); default: nothing. Not called for a model
        that starts from a bundle."""

    def image_tokens_of(self, paths: Sequence[str]) -> Tensor | None:
        """The vectors that stand for each image in the decoder's input (after the projector),
        for the grounding diagnostic (:mod:`sugar.eval.grounding`); None when the backbone does
        not expose them. # (N, K, D)"""
        return None

    def decoder_layers(self) -> list[nn.Module]:
        """The decoder's blocks in order, each called once per forward pass with the hidden
        states as its output (or its output's first element): where a control branch
        (:mod:`sugar.control`) joins. Default: ``ValueError`` (a family that supports control
        lists its blocks)."""
        raise ValueError(f"backbone family {self.family!r} does not list its decoder layers")

    def parameter_lr_scale(self, name: str) -> float:
        """The factor on the run's learning rate for parameter ``name`` (default 1: one rate
        for everything; a pretrained trunk may learn slower than new parts)."""
        return 1.0

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """What a training checkpoint holds: every parameter that trains, by its
        ``state_dict`` name. Frozen weights (a vision tower, a LoRA base model) are rebuilt
        from the bundle or checkpoint the run started from, so a 7B base is never copied into
        each checkpoint; load with ``load_state_dict(state, strict=False)``."""
        return {name: p.detach() for name, p in self.named_parameters() if p.requires_grad}

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``{"trainable": [...], "frozen": [...]}`` by ``requires_grad``."""
        groups: dict[str, list[nn.Parameter]] = {"trainable": [], "frozen": []}
        for parameter in self.parameters():
            groups["trainable" if parameter.requires_grad else "frozen"].append(parameter)
        return groups

    @abc.abstractmethod
    def save_pretrained(self, directory: Path) -> dict[str, Any]:
        """Write the backbone's files into ``directory`` (a bundle's temporary directory).

        Returns the JSON-serialisable arguments :meth:`from_pretrained` needs.
        """

    @classmethod
    @abc.abstractmethod
    def from_pretrained(cls, directory: Path, spec: dict[str, Any]) -> MLLM:
        """Rebuild the backbone saved by :meth:`save_pretrained` (``spec`` is what it returned)."""

    @classmethod
    def build(cls, train_texts: Sequence[str], tiny: dict[str, Any], hf: dict[str, Any]) -> MLLM:
        """A fresh backbone of this family for a training run (``sugar.train.loop``).

        ``train_texts``: the training texts (a family that trains its tokenizer uses them);
        ``tiny`` / ``hf``: the keyword arguments of ``ModelConfig.tiny_kwargs()`` (plus
        ``vocab_size``) and ``ModelConfig.hf_kwargs()``; a family reads the set it documents.
        The default refuses: such a family starts from a bundle.
        """
        raise ValueError(f"model.family={cls.family!r} starts from a bundle: set train.init_from")


_REGISTRY: dict[str, type[MLLM]] = {}
M = TypeVar("M", bound=type[MLLM])


def register_backbone(family: str) -> Callable[[M], M]:
    """Class decorator: make ``cls`` the backbone of ``family`` (a bundle's ``model.json``)."""

    def decorate(cls: M) -> M:
        if family in _REGISTRY and _REGISTRY[family] is not cls:
            raise ValueError(f"backbone family {family!r} is already registered")
        cls.family = family
        _REGISTRY[family] = cls
        return cls

    return decorate


def registered_backbones() -> list[str]:
    """The family names registered so far."""
    return sorted(_REGISTRY)


def backbone_class(family: str) -> type[MLLM]:
    """The class registered for ``family``; ``ValueError`` listing the known ones."""
    # Built-in families register on import; importing here keeps registration in their files.
    # sugar.models.hf imports neither transformers nor peft until a model is built or loaded.
    import sugar.models.hf_families
    import sugar.models.minilm
    import sugar.models.tiny  # noqa: F401

    if family not in _REGISTRY:
        raise ValueError(f"unknown backbone family {family!r}; known: {registered_backbones()}")
    return _REGISTRY[family]
