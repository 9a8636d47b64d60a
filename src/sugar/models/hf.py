"""Hugging Face MLLM backbones with LoRA: LLaVA 1.5, LLaVA-NeXT and Qwen2-VL behind :class:`MLLM`.

Shapes: B batch, T tokens, D hidden width, V vocabulary, N images in the batch.

Three registered families (:mod:`sugar.models.hf_families`), each a thin subclass of
:class:`HFMLLM` over transformers' public
classes (no copied modelling files, no patches):

=================  =========================================  ================================
family             transformers model class                   image tokens per image
=================  =========================================  ================================
``hf-llava``       ``LlavaForConditionalGeneration``          ``LlavaProcessor`` expansion
                                                              (``image_seq_length``, 576 for
                                                              llava-1.5 at 336 px)
``hf-llava-next``  ``LlavaNextForConditionalGeneration``      ``LlavaNextProcessor`` expansion
                                                              (multi-crop: base grid + unpadded
                                                              crops + one newline per row)
``hf-qwen2-vl``    ``Qwen2VLForConditionalGeneration``        ``prod(image_grid_thw) /
                                                              merge_size**2``
=================  =========================================  ================================

Sequences are laid out in the model's chat template by :mod:`sugar.models.hf_chat` (turns,
spans, labels); this module adds images, the model and its files:

- **collate**: the image processor turns the batch's images into pixel inputs
  (``Batch.model_inputs``: ``pixel_values`` and ``image_sizes`` / ``image_grid_thw``), the
  family counts each image's tokens the way its processor expands them, and the sample's
  sequence gets that many image tokens per image. Qwen2-VL also gets ``mm_token_type_ids``
  (1 at image tokens), which its multimodal RoPE needs. Qwen2-VL's processor class needs
  torchvision for its video half, so that family loads the tokenizer and image processor alone
  and counts with the processor's formula.
- **forward**: the decoder stack's ``last_hidden_state`` (after the final norm: the LM head's
  input) and the LM head's logits, in one pass.
- **generate**: ``model.generate`` on the prompt laid out with the generation prompt, left
  padded; greedy (``temperature=0``) or sampling with ``temperature`` / ``top_k`` under a
  seeded, forked RNG. The checkpoint's own generation config (repetition penalty, ...) is not
  used: the interface's arguments define decoding.
- **LoRA** (peft) on the language model's ``lora_target_modules`` only (never the vision
  tower); the vision tower and the multimodal projector are frozen unless ``freeze_vision`` /
  ``freeze_projector`` is false, in which case peft trains and saves them whole
  (``modules_to_save``).
- **files**: the bundle holds the adapter (``adapter_model.safetensors`` +
  ``adapter_config.json``), the tokenizer / processor files and, in ``model.json``'s spec, the
  base checkpoint's name and its fingerprint (:func:`base_fingerprint`); never the base
  weights. Loading refuses a base whose fingerprint differs. :meth:`HFMLLM.export_merged`
  writes a plain transformers checkpoint with the adapter merged in.

Nothing is downloaded when the base is a local directory or ``HF_HUB_OFFLINE=1``; a base that
would need a download the machine cannot make raises ``FileNotFoundError`` naming it.
Requires the ``hf`` extra (transformers, peft): importing this module does not.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from sugar.data.collate import IGNORE_INDEX, Batch, EncodedSample
from sugar.data.jsonl import resolve_image
from sugar.data.schema import Sample
from sugar.io import sha256_bytes
from sugar.models import precision
from sugar.models.base import MLLM, ModelOutput, prompt_of
from sugar.models.hf_chat import ChatLayout, encode_chat_sample
from sugar.models.hub import load_local
from sugar.models.pretrained import open_image

__all__ = ["HFMLLM", "base_fingerprint"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_VOLATILE_CONFIG_KEYS = frozenset(
    {
        "_name_or_path", "transformers_version", "dtype", "torch_dtype", "_commit_hash",
        "_attn_implementation", "_attn_implementation_autoset", "attn_implementation",
        "use_cache", "output_hidden_states", "output_attentions", "return_dict",
    }
)  # fmt: skip
_FINGERPRINT_VALUES = 1024


def _require_hf() -> None:
    try:
        import peft  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"Hugging Face backbones need transformers and peft: pip install 'sugar-mllm[hf]' "
            f"({exc})"
        ) from None


def _canonical(value: Any) -> Any:
    """A config dict without the keys that change with how it was loaded (dtype, paths)."""
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items() if k not in _VOLATILE_CONFIG_KEYS}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def base_fingerprint(model: Any) -> str:
    """A fingerprint of a base checkpoint's config and weights (before LoRA).

    SHA-256 over the config (``to_dict()`` without load-time keys such as dtype, paths and
    attention implementation, as sorted JSON) and, per tensor of ``state_dict()`` in name
    order, its name, shape and up to 1024 evenly strided values cast to float32. Cheap on a 7B
    model (no full pass over the weights); tells apart two checkpoints, or the same one loaded
    in another dtype, but not one weight edited by hand.
    """
    digest = hashlib.sha256()
    config = _canonical(model.config.to_dict())
    digest.update(json.dumps(config, sort_keys=True, default=str).encode("utf-8"))
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // _FINGERPRINT_VALUES)
        values = flat[::step][:_FINGERPRINT_VALUES].to("cpu", torch.float32).contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}".encode())
        digest.update(values.numpy().tobytes())
    return digest.hexdigest()


class HFMLLM(MLLM):
    """A transformers MLLM with a peft LoRA adapter (module docstring).

    Build one with :meth:`build` (a fresh adapter on ``pretrained``) or load a bundle
    (:meth:`from_pretrained`). Subclasses name the transformers class and the modules, and
    count image tokens.
    """

    model_class: str = ""
    """The transformers class name (``LlavaForConditionalGeneration``, ...)."""
    language_module: str = "language_model"
    """Name of the language model module: LoRA targets only modules under it."""
    vision_module: str = ""
    """Name of the vision tower module (frozen unless ``freeze_vision`` is false)."""
    projector_module: str = ""
    """Name of the multimodal projector module (frozen unless ``freeze_projector`` is false)."""

    def __init__(
        self,
        peft_model: Any,
        processing: dict[str, Any],
        spec: dict[str, Any],
    ) -> None:
        super().__init__()
        self.peft = peft_model
        self.tokenizer = processing["tokenizer"]
        self.image_processor = processing["image_processor"]
        self.processor = processing.get("processor")
        self.spec = spec
        self.layout = ChatLayout(
            self.tokenizer, processing["render"], processing["image_token"], spec["pretrained"]
        )
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.layout.eos_id)
        if spec["gradient_checkpointing"]:  # the old name, gradient_checkpointing_enable,
            # warns and goes in transformers v6; the `hf` extra's 5.24 has this one
            self.base.activation_checkpointing_enable(
                activation_checkpointing_kwargs={"use_reentrant": False}
            )

    # ----------------------------------------------------------------------------------------
    # Building and loading
    # ----------------------------------------------------------------------------------------

    @classmethod
    def build(cls, train_texts: Sequence[str], tiny: dict[str, Any], hf: dict[str, Any]) -> HFMLLM:
        """A fresh LoRA adapter on ``hf['pretrained']`` (the keys of ``ModelConfig.hf_kwargs``:
        ``pretrained``, ``lora_*``, ``freeze_vision``, ``freeze_projector``, ``dtype``,
        ``autocast``, ``gradient_checkpointing``, ``attn_implementation``)."""
        return cls.create(**hf)

    @classmethod
    def create(
        cls,
        pretrained: str | None,
        *,
        lora_target_modules: Sequence[str] = ("q_proj", "v_proj"),
        lora_rank: int = 128,
        lora_alpha: int = 256,
        lora_dropout: float = 0.05,
        freeze_vision: bool = True,
        freeze_projector: bool = True,
        dtype: Literal["float32", "bfloat16", "float16"] = "float32",
        autocast: precision.Autocast = "none",
        gradient_checkpointing: bool = False,
        attn_implementation: str | None = None,
    ) -> HFMLLM:
        """The base checkpoint ``pretrained`` (hub name or local directory) with a fresh LoRA
        adapter; arguments as in ``ModelConfig`` (``lora.*`` flattened)."""
        if not pretrained:
            raise ValueError(f"model.family={cls.family!r} needs model.pretrained (a hub name "
                             "or a local checkpoint directory)")  # fmt: skip
        _require_hf()
        from peft import LoraConfig, get_peft_model

        spec: dict[str, Any] = {
            "pretrained": str(pretrained), "dtype": dtype, "autocast": autocast,
            "gradient_checkpointing": gradient_checkpointing,
            "attn_implementation": attn_implementation, "freeze_vision": freeze_vision,
            "freeze_projector": freeze_projector,
        }  # fmt: skip
        base = cls._load_base(spec)
        spec["base_fingerprint"] = base_fingerprint(base)
        names = "|".join(re.escape(name) for name in lora_target_modules)
        config = LoraConfig(
            r=lora_rank,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            target_modules=rf"^(.*\.)?{re.escape(cls.language_module)}\..*\.({names})$",
            modules_to_save=cls._modules_to_save(freeze_vision, freeze_projector) or None,
        )
        processing = cls._load_processing(str(pretrained))
        return cls(get_peft_model(base, config), processing, spec)

    @classmethod
    def _modules_to_save(cls, freeze_vision: bool, freeze_projector: bool) -> list[str]:
        names = [] if freeze_vision else [cls.vision_module]
        if not freeze_projector and cls.projector_module not in names:
            names.append(cls.projector_module)
        return names

    @classmethod
    def _load_base(cls, spec: dict[str, Any]) -> Any:
        import transformers

        options: dict[str, Any] = {"dtype": _DTYPES[spec["dtype"]]}
        if spec["attn_implementation"]:
            options["attn_implementation"] = spec["attn_implementation"]
        loader = getattr(transformers, cls.model_class)
        return load_local(loader, spec["pretrained"], "model", **options)

    @classmethod
    def _load_processing(cls, source: str) -> dict[str, Any]:
        """``tokenizer``, ``image_processor``, ``processor`` (or None), ``render``,
        ``image_token`` from a checkpoint directory or hub name (subclasses)."""
        raise NotImplementedError

    @staticmethod
    def _renderer(tokenizer: Any, template: str | None) -> Any:
        if not template:
            return None

        def render(messages: list[dict[str, Any]], generation_prompt: bool) -> str:
            return str(
                tokenizer.apply_chat_template(
                    messages,
                    chat_template=template,
                    tokenize=False,
                    add_generation_prompt=generation_prompt,
                )
            )

        return render

    def save_pretrained(self, directory: Path) -> dict[str, Any]:
        """The adapter, the tokenizer / processor files; the spec names the base checkpoint."""
        self.peft.save_pretrained(str(directory))
        self._save_processing(directory)
        return dict(self.spec)

    def _save_processing(self, directory: Path) -> None:
        if self.processor is not None:
            self.processor.save_pretrained(str(directory))
        else:
            self.tokenizer.save_pretrained(str(directory))
            self.image_processor.save_pretrained(str(directory))

    @classmethod
    def from_pretrained(cls, directory: Path, spec: dict[str, Any]) -> HFMLLM:
        """The base named in ``spec`` (its fingerprint checked) with the bundle's adapter."""
        _require_hf()
        from peft import PeftModel

        base = cls._load_base(spec)
        found = base_fingerprint(base)
        if found != spec["base_fingerprint"]:
            raise ValueError(
                f"{directory}: the adapter was trained on base {spec['pretrained']!r} with "
                f"fingerprint {spec['base_fingerprint'][:16]}, but {spec['pretrained']!r} now "
                f"gives {found[:16]} (another checkpoint or dtype); refusing to load it"
            )
        peft_model = PeftModel.from_pretrained(base, str(directory), is_trainable=True)
        return cls(peft_model, cls._load_processing(str(directory)), dict(spec))

    def export_merged(self, directory: str | Path) -> Path:
        """A plain transformers checkpoint (adapter merged into the base weights) and the
        processor files in ``directory``: loads with ``<model_class>.from_pretrained``.

        Merges a copy (peft ``merge_and_unload``), so this model keeps its adapter; that copy
        needs as much memory as the model.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        merged = copy.deepcopy(self.peft).merge_and_unload()
        merged.save_pretrained(str(directory))
        self._save_processing(directory)
        return directory

    # ----------------------------------------------------------------------------------------
    # The interface
    # ----------------------------------------------------------------------------------------

    @property
    def base(self) -> Any:
        """The transformers model (LoRA layers injected in place)."""
        return self.peft.get_base_model()

    @property
    def hidden_size(self) -> int:
        return int(self.base.get_output_embeddings().weight.shape[1])

    def decoder_layers(self) -> list[torch.nn.Module]:
        """The language model's decoder layers (``get_decoder().layers``; LoRA wraps their
        linear layers in place, so the blocks are the adapted ones)."""
        return list(self.base.get_decoder().layers)

    @property
    def identity(self) -> str:
        from peft import get_peft_model_state_dict
        from safetensors.torch import save

        state = {k: v.detach().cpu().contiguous() for k, v in
                 get_peft_model_state_dict(self.peft).items()}  # fmt: skip
        tokenizer = self.tokenizer.backend_tokenizer.to_str().encode("utf-8")
        return sha256_bytes(
            self.spec["base_fingerprint"].encode() + save(state) + sha256_bytes(tokenizer).encode()
        )

    @property
    def device(self) -> torch.device:
        return self.base.get_output_embeddings().weight.device

    def _collate(
        self,
        samples: Sequence[Sample],
        root: str | Path,
        slice_text_by: str,
        add_eos: bool,
        generation_prompt: bool = False,
    ) -> Batch:
        """The interface's batch, right padded; ``model_inputs`` holds the pixel inputs
        (``generation_prompt``: the chat template's prompt for an answer, for generation)."""
        if not samples:
            raise ValueError("collate needs at least one sample")
        paths = [str(resolve_image(root, path)) for sample in samples for path in sample.images]
        image_inputs: dict[str, Tensor] = {}
        counts: list[int] = []
        if paths:
            processed = self.image_processor(
                images=[open_image(path) for path in paths], return_tensors="pt"
            )
            image_inputs = {key: processed[key] for key in self.image_input_names}
            counts = self.image_token_counts(processed)
        encoded: list[EncodedSample] = []
        start = 0
        for sample in samples:
            mine = counts[start : start + len(sample.images)]
            start += len(sample.images)
            item = encode_chat_sample(
                sample, self.layout, mine,
                slice_text_by="sentence" if slice_text_by == "sentence" else "segment",
                add_eos_to_targets=add_eos, generation_prompt=generation_prompt,
            )  # fmt: skip
            found = item.input_ids.count(self.layout.image_token_id)
            if found != sum(mine):
                raise ValueError(
                    f"sample {sample.id!r}: {found} image tokens in its sequence but the "
                    f"processor expands its {len(mine)} images to {sum(mine)}"
                )
            encoded.append(item)
        batch = self._pad(encoded, left=generation_prompt)
        batch.images = paths
        batch.model_inputs.update(image_inputs)
        batch.model_inputs.update(self.token_inputs(batch.input_ids))
        return batch

    def _pad(self, encoded: Sequence[EncodedSample], left: bool) -> Batch:
        """Pad to the longest sample: right (training) or left (generation; spans are then
        shifted by each row's padding)."""
        lengths = torch.tensor([len(item.input_ids) for item in encoded], dtype=torch.long)
        size, longest = len(encoded), int(lengths.max())
        input_ids = torch.full((size, longest), self.pad_id, dtype=torch.long)  # (B, T)
        labels = torch.full((size, longest), IGNORE_INDEX, dtype=torch.long)  # (B, T)
        attention_mask = torch.zeros(size, longest, dtype=torch.bool)  # (B, T)
        spans = []
        for row, item in enumerate(encoded):
            offset = longest - len(item.input_ids) if left else 0
            stop = offset + len(item.input_ids)
            input_ids[row, offset:stop] = torch.tensor(item.input_ids, dtype=torch.long)
            labels[row, offset:stop] = torch.tensor(item.labels, dtype=torch.long)
            attention_mask[row, offset:stop] = True
            spans.append(
                [
                    type(span)(span.start + offset, span.end + offset, span.kind, span.role,
                               span.segment, span.slice)
                    for span in item.spans
                ]
            )  # fmt: skip
        return Batch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            labels=labels,
            images=[],
            image_counts=torch.tensor([len(item.images) for item in encoded], dtype=torch.long),
            spans=spans,
            sample_ids=[item.id for item in encoded],
            lengths=lengths,
        )

    image_input_names: tuple[str, ...] = ("pixel_values",)
    """The image processor outputs the model takes (subclasses add theirs)."""

    def image_token_counts(self, processed: Any) -> list[int]:
        """Image tokens of each image of a batch, as the family's processor expands them."""
        raise NotImplementedError

    def token_inputs(self, input_ids: Tensor) -> dict[str, Tensor]:
        """Per-token model inputs besides ids and mask (Qwen2-VL: ``mm_token_type_ids``)."""
        return {}

    def _autocast(self) -> contextlib.AbstractContextManager[None]:
        return precision.autocast(self.spec["autocast"], self.device)

    def _inputs(self, batch: Batch) -> dict[str, Tensor]:
        device, dtype = self.device, self.base.get_output_embeddings().weight.dtype
        inputs = {
            "input_ids": batch.input_ids.to(device),
            "attention_mask": batch.attention_mask.to(device).long(),
        }
        for name, tensor in batch.model_inputs.items():
            tensor = tensor.to(device)
            inputs[name] = tensor.to(dtype) if tensor.is_floating_point() else tensor
        return inputs

    def forward(self, batch: Batch) -> ModelOutput:
        base = self.base
        with self._autocast():
            output = base.model(**self._inputs(batch), use_cache=False)
            hidden = output.last_hidden_state  # (B, T, D): after the final norm
            logits = base.get_output_embeddings()(hidden)  # (B, T, V)
        return ModelOutput(logits=logits, hidden=hidden)

    def decode_ids(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    @torch.no_grad()
    def generate_ids(
        self, samples: Sequence[Sample], root: str | Path, **options: Any
    ) -> list[list[int]]:
        """New token ids per sample (the end token and anything after it excluded);
        ``options``: :meth:`MLLM.generate`'s ``max_new_tokens``, ``temperature``, ``top_k``,
        ``seed``."""
        from transformers import GenerationConfig

        unknown = set(options) - {"max_new_tokens", "temperature", "top_k", "seed"}
        if unknown:
            raise ValueError(f"generate options {sorted(unknown)}: not known to {self.family}")
        max_new_tokens = int(options.get("max_new_tokens", 32))
        temperature = float(options.get("temperature", 0.0))
        top_k, seed = options.get("top_k"), options.get("seed")

        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens={max_new_tokens}: must be >= 0")
        if temperature < 0:
            raise ValueError(f"temperature={temperature}: must be >= 0")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k={top_k}: must be >= 1")
        if max_new_tokens == 0:
            return [[] for _ in samples]
        batch = self._collate(
            [prompt_of(sample) for sample in samples], root, "segment", True, True
        )
        config = GenerationConfig(
            max_new_tokens=max_new_tokens, do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_k=top_k if temperature > 0 else None, top_p=None,
            pad_token_id=self.pad_id, eos_token_id=self.layout.eos_id,
        )  # fmt: skip
        was_training = self.training
        self.eval()
        try:
            with torch.random.fork_rng(devices=[] if self.device.type == "cpu" else None):
                if seed is not None:
                    torch.manual_seed(seed)
                with self._autocast():
                    out = self.base.generate(**self._inputs(batch), generation_config=config)
        finally:
            self.train(was_training)
        kept: list[list[int]] = []
        for row in out[:, batch.input_ids.shape[1] :].tolist():
            tokens = []
            for token in row:
                if token in (self.layout.eos_id, self.pad_id):
                    break
                tokens.append(int(token))
            kept.append(tokens)
        return kept
