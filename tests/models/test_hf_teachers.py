"""Hugging Face teachers at tiny random-initialised configs (hidden 32, 2 layers), built here."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from sugar.teachers import build_teacher, embed_slices

transformers = pytest.importorskip("transformers")

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "red", "blue", "square", "circle", "."]


def _tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]"
    )
    tok.save_pretrained(out)


def _processor(out: Path) -> None:
    transformers.CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(out)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    text = {**TINY, "intermediate_size": 64, "vocab_size": len(VOCAB)}
    vision = {**TINY, "intermediate_size": 64, "image_size": 32, "patch_size": 8}
    built = {
        "clip": transformers.CLIPModel(
            transformers.CLIPConfig(
                text_config={**text, "max_position_embeddings": 16},
                vision_config=vision,
                projection_dim=24,
            )
        ),
        "siglip": transformers.SiglipModel(
            transformers.SiglipConfig(
                text_config={**text, "max_position_embeddings": 16}, vision_config=vision
            )
        ),
        "dinov2": transformers.Dinov2Model(transformers.Dinov2Config(**vision, mlp_ratio=2)),
        "bert": transformers.BertModel(transformers.BertConfig(**text)),
    }
    paths = {}
    for name, model in built.items():
        path = root / name
        model.save_pretrained(path)
        _tokenizer(path)
        _processor(path)
        paths[name] = path
    return paths


@pytest.mark.parametrize("cross", ["clip", "siglip"])
def test_shapes_norms_eval_and_no_grad(tiny_models: dict[str, Path], cross: str) -> None:
    teacher = build_teacher(
        "hf",
        cross=str(tiny_models[cross]),
        image=str(tiny_models["dinov2"]),
        text=str(tiny_models["bert"]),
        offline=True,
    )
    items = [Image.new("RGB", (40, 40), (200, 0, 0)), "a red square .", "a blue circle ."]
    out = embed_slices(teacher, items)
    assert out.image.shape == (3, 32) and out.text.shape == (3, 32)
    assert out.cross.shape == (3, teacher.cross_dim)
    torch.testing.assert_close(out.cross.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(out.text[1:].norm(dim=-1), torch.ones(2))
    assert not out.cross.requires_grad
    for encoder in (teacher.image, teacher.text, teacher.cross):  # type: ignore[attr-defined]
        assert not encoder.model.training
        assert not any(p.requires_grad for p in encoder.model.parameters())
    again = embed_slices(teacher, items)
    assert torch.equal(out.cross, again.cross)
    assert cross in teacher.identity or teacher.identity.count("hf-") == 3


def test_a_missing_model_is_named_and_never_downloaded(
    monkeypatch: pytest.MonkeyPatch, tiny_models: dict[str, Path]
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="sugar-test/no-such-model"):
        build_teacher(
            "hf",
            cross="sugar-test/no-such-model",
            image=str(tiny_models["dinov2"]),
            text=str(tiny_models["bert"]),
        )
