"""The registered Hugging Face families: thin subclasses of :class:`~sugar.models.hf.HFMLLM`.

``hf-llava`` (LLaVA 1.5), ``hf-llava-next`` (LLaVA-NeXT) and ``hf-qwen2-vl`` (Qwen2-VL); what
differs between them (model class, module names, image-token counts, processing) is stated here,
everything they share is :mod:`sugar.models.hf` (its module docstring has the table).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from sugar.models.base import register_backbone
from sugar.models.hf import HFMLLM
from sugar.models.hub import load_local

__all__ = ["HFLlava", "HFLlavaNext", "HFQwen2VL"]


def _llava_processing(cls: type[HFMLLM], source: str) -> dict[str, Any]:
    from transformers import AutoProcessor

    processor = load_local(AutoProcessor, source, "processor")
    template = processor.chat_template or processor.tokenizer.chat_template
    return {
        "tokenizer": processor.tokenizer,
        "image_processor": processor.image_processor,
        "processor": processor,
        "render": HFMLLM._renderer(processor.tokenizer, template),
        "image_token": processor.image_token,
    }


@register_backbone("hf-llava")
class HFLlava(HFMLLM):
    """LLaVA 1.5 (``llava-hf/llava-1.5-7b-hf``): a fixed number of tokens per image."""

    model_class = "LlavaForConditionalGeneration"
    vision_module = "vision_tower"
    projector_module = "multi_modal_projector"

    @classmethod
    def _load_processing(cls, source: str) -> dict[str, Any]:
        return _llava_processing(cls, source)

    def image_token_counts(self, processed: Any) -> list[int]:
        """The processor's own expansion of each image (``replace_image_token``)."""
        token, processor = self.layout.image_token, self.processor
        assert processor is not None  # the LLaVA families always load their processor
        count = len(processed["pixel_values"])
        return [processor.replace_image_token(processed, i).count(token) for i in range(count)]


@register_backbone("hf-llava-next")
class HFLlavaNext(HFLlava):
    """LLaVA-NeXT (``llava-hf/llava-v1.6-*``): multi-crop images, tokens vary with the size."""

    model_class = "LlavaNextForConditionalGeneration"
    image_input_names = ("pixel_values", "image_sizes")


@register_backbone("hf-qwen2-vl")
class HFQwen2VL(HFMLLM):
    """Qwen2-VL (``Qwen/Qwen2-VL-2B-Instruct``, ...): native resolution, tokens vary with the size.

    The image span is the ``<|image_pad|>`` run only; ``<|vision_start|>`` and ``<|vision_end|>``
    around it are template tokens (no image features sit there).
    """

    model_class = "Qwen2VLForConditionalGeneration"
    vision_module = "visual"
    projector_module = "merger"
    image_input_names = ("pixel_values", "image_grid_thw")

    @classmethod
    def _modules_to_save(cls, freeze_vision: bool, freeze_projector: bool) -> list[str]:
        # the merger (Qwen2-VL's projector) lives inside the vision module
        if not freeze_vision:
            return [cls.vision_module]
        return [] if freeze_projector else [cls.projector_module]

    @classmethod
    def _load_processing(cls, source: str) -> dict[str, Any]:
        from transformers import AutoImageProcessor, AutoTokenizer

        tokenizer = load_local(AutoTokenizer, source, "tokenizer")
        image_processor = load_local(AutoImageProcessor, source, "image processor")
        return {
            "tokenizer": tokenizer,
            "image_processor": image_processor,
            "processor": None,
            "render": HFMLLM._renderer(tokenizer, tokenizer.chat_template),
            "image_token": "<|image_pad|>",
        }

    def image_token_counts(self, processed: Any) -> list[int]:
        """``prod(image_grid_thw) / merge_size**2`` per image (``Qwen2VLProcessor``'s rule)."""
        merge = int(self.image_processor.merge_size) ** 2
        return [int(grid.prod()) // merge for grid in processed["image_grid_thw"]]

    def token_inputs(self, input_ids: Tensor) -> dict[str, Tensor]:
        """``mm_token_type_ids``: 1 at image tokens, else 0 (multimodal RoPE positions)."""
        return {"mm_token_type_ids": (input_ids == self.layout.image_token_id).long()}
