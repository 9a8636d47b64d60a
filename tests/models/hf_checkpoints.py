"""Tiny random Hugging Face MLLM checkpoints, written to a directory as a user's would be.

Hidden size 32, 2 layers, 32 px vision towers (STYLE.md point 9); a WordLevel tokenizer with
each family's special tokens and a chat template modelled on the family's real one; the
family's image processor (Pillow backend: no torchvision here). Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

_WORDS = (
    "a an the red blue green yellow purple orange circle circles square triangle star cat dog",
    "dogs is are left right of above below and two three what colour shape where picture shows",
    "this with small large big near A Two The . , ! ? : USER ASSISTANT user assistant system",
    "You helpful",
)
WORDS = [word for line in _WORDS for word in line.split()]

LLAVA_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() + ': ' }}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' ' }}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
"""llava-1.5-hf's template: images first, then texts, in each message."""

QWEN_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""Qwen2-VL-Instruct's template, without video and vision ids."""

PINPOINTS = [[32, 32], [32, 64], [64, 32], [64, 64]]


def _tokenizer(specials: list[str], bos: str | None, eos: str, pad: str) -> object:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate([*specials, *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if bos is not None:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, vocab[bos])]
        )
    others = [t for t in specials if t not in (bos, eos, pad, "<unk>")]
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bos, eos_token=eos, pad_token=pad,
        unk_token="<unk>", additional_special_tokens=others,
    )  # fmt: skip


def _vision(image_size: int = 32) -> dict:
    return dict(
        model_type="clip_vision_model", hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=2, image_size=image_size, patch_size=8,
        projection_dim=32,
    )  # fmt: skip


def _llama(vocab: int) -> dict:
    return dict(
        model_type="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, vocab_size=vocab,
        max_position_embeddings=2048, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip


def llava_checkpoint(directory: Path, *, next_: bool = False, seed: int = 0) -> Path:
    """A tiny LLaVA 1.5 (or, with ``next_``, LLaVA-NeXT with 4 crop grids) in ``directory``."""
    import transformers as tf
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.llava_next.image_processing_pil_llava_next import (
        LlavaNextImageProcessorPil,
    )

    torch.manual_seed(seed)
    tokenizer = _tokenizer(["<pad>", "<s>", "</s>", "<unk>", "<image>"], "<s>", "</s>", "<pad>")
    vocab = len(tokenizer)  # type: ignore[arg-type]
    common = dict(image_token_id=4, vision_feature_layer=-1,
                  vision_feature_select_strategy="default")  # fmt: skip
    crop = {"height": 32, "width": 32}
    if next_:
        config = tf.LlavaNextConfig(vision_config=_vision(), text_config=_llama(vocab),
                                    image_grid_pinpoints=PINPOINTS, **common)  # fmt: skip
        model = tf.LlavaNextForConditionalGeneration(config)
        images = LlavaNextImageProcessorPil(
            size={"shortest_edge": 32}, crop_size=crop, image_grid_pinpoints=PINPOINTS
        )
        processor = tf.LlavaNextProcessor(
            image_processor=images, tokenizer=tokenizer, patch_size=8,
            vision_feature_select_strategy="default", num_additional_image_tokens=1,
            chat_template=LLAVA_TEMPLATE,
        )  # fmt: skip
    else:
        config = tf.LlavaConfig(vision_config=_vision(), text_config=_llama(vocab),
                                image_seq_length=16, **common)  # fmt: skip
        model = tf.LlavaForConditionalGeneration(config)
        images = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size=crop)
        processor = tf.LlavaProcessor(
            image_processor=images, tokenizer=tokenizer, patch_size=8,
            vision_feature_select_strategy="default", num_additional_image_tokens=1,
            chat_template=LLAVA_TEMPLATE,
        )  # fmt: skip
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def qwen2vl_checkpoint(directory: Path, *, seed: int = 0) -> Path:
    """A tiny Qwen2-VL (4 px patches, 2x2 merge, 256-1024 pixels per image) in ``directory``."""
    import transformers as tf
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    torch.manual_seed(seed)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                "<|vision_end|>", "<|image_pad|>", "<|video_pad|>", "<unk>"]  # fmt: skip
    tokenizer = _tokenizer(specials, None, "<|im_end|>", "<|endoftext|>")
    tokenizer.chat_template = QWEN_TEMPLATE  # type: ignore[attr-defined]
    config = tf.Qwen2VLConfig(
        vision_config=dict(depth=2, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2,
                           patch_size=4, spatial_merge_size=2, temporal_patch_size=2),
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2,
                         vocab_size=len(tokenizer),  # type: ignore[arg-type]
                         max_position_embeddings=2048, pad_token_id=0, eos_token_id=2,
                         bos_token_id=None,
                         rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}),
        image_token_id=5, video_token_id=6, vision_start_token_id=3, vision_end_token_id=4,
    )  # fmt: skip
    model = tf.Qwen2VLForConditionalGeneration(config)
    images = Qwen2VLImageProcessorPil(
        min_pixels=16 * 16, max_pixels=32 * 32, patch_size=4, merge_size=2, temporal_patch_size=2
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)  # type: ignore[attr-defined]
    images.save_pretrained(directory)
    return directory


def write_images(root: Path) -> dict[str, tuple[int, int]]:
    """Random RGB PNGs of several sizes under ``root/img``: name -> (height, width)."""
    sizes = {"wide.png": (20, 50), "tall.png": (60, 30), "square.png": (32, 32),
             "big.png": (64, 64)}  # fmt: skip
    (root / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, (height, width) in sizes.items():
        pixels = (rng.random((height, width, 3)) * 255).astype("uint8")
        Image.fromarray(pixels).save(root / "img" / name)
    return sizes
