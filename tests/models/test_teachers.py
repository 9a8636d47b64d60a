"""The offline teacher: layout, unit norms, the cache, identities, registry, offline loading."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
from PIL import Image

from sugar.align import SliceEmbeddings, triple_kernel_cost
from sugar.teachers import (
    TEACHER_FAMILIES,
    ImageFeatures,
    OfflineTeacher,
    Teacher,
    TextFeatures,
    build_teacher,
    embed_slices,
    register_teacher,
    teacher_cache,
)
from sugar.teachers.heads import CrossModalHead, load_head, save_head

Encoders = tuple[ImageFeatures, TextFeatures]


def _teacher(encoders: Encoders, seed: int = 0, dim: int = 16) -> OfflineTeacher:
    torch.manual_seed(seed)
    return OfflineTeacher(CrossModalHead(1280, 384, dim), *encoders)


def _items() -> list[Image.Image | str]:
    red = Image.new("RGB", (64, 64), (220, 20, 20))
    blue = Image.new("RGB", (48, 48), (20, 20, 220))
    return [red, "A red square.", blue, "A blue square.", "It is large."]


def test_layout_norms_and_triple_kernel(encoders: Encoders) -> None:
    teacher = _teacher(encoders)
    assert isinstance(teacher, Teacher)
    flat = embed_slices(teacher, _items())
    assert flat.image.shape == (5, 1280) and flat.text.shape == (5, 384)
    assert flat.cross.shape == (5, 16)
    assert flat.is_text.tolist() == [False, True, False, True, True]
    ones = torch.ones(5)
    torch.testing.assert_close(flat.cross.norm(dim=-1), ones)
    torch.testing.assert_close(flat.image[~flat.is_text].norm(dim=-1), ones[:2])
    torch.testing.assert_close(flat.text[flat.is_text].norm(dim=-1), ones[:3])
    assert flat.image[flat.is_text].abs().sum() == 0 and flat.text[~flat.is_text].abs().sum() == 0
    packed = flat.pack([2, 3])
    assert isinstance(packed, SliceEmbeddings)
    assert packed.image.shape == (2, 3, 1280) and packed.lengths.tolist() == [2, 3]
    cost = triple_kernel_cost(packed)  # (B, B, S, S)
    assert cost.shape == (2, 2, 3, 3)
    # image-image: uni-modal image vectors; text-text: uni text; image-text: cross
    torch.testing.assert_close(cost[0, 1, 0, 0], (flat.image[0] - flat.image[2]).pow(2).sum())
    torch.testing.assert_close(cost[0, 1, 1, 0], (flat.cross[1] - flat.cross[2]).pow(2).sum())
    torch.testing.assert_close(cost[1, 1, 1, 2], (flat.text[3] - flat.text[4]).pow(2).sum())


def test_encoding_is_deterministic_and_grad_free(encoders: Encoders) -> None:
    teacher = _teacher(encoders)
    a, b = embed_slices(teacher, _items()), embed_slices(teacher, _items())
    assert torch.equal(a.cross, b.cross) and torch.equal(a.text, b.text)
    assert not a.cross.requires_grad
    teacher.train()
    assert not teacher.head.training  # a teacher never enters training mode (dropout)


def test_cache_hits_are_identical_and_survive_reopening(encoders: Encoders, tmp_path: Path) -> None:
    teacher = _teacher(encoders)
    first = embed_slices(teacher, _items(), cache=teacher_cache(tmp_path, teacher))
    reopened = teacher_cache(tmp_path, teacher)
    again = embed_slices(teacher, _items(), cache=reopened)
    assert (reopened.hits, reopened.misses) == (5, 0)
    for name in ("image", "text", "cross", "is_text"):
        assert torch.equal(getattr(first, name), getattr(again, name))


def test_a_changed_head_invalidates_the_cache(encoders: Encoders, tmp_path: Path) -> None:
    old, new = _teacher(encoders, seed=0), _teacher(encoders, seed=1)
    assert old.identity != new.identity
    embed_slices(old, _items(), cache=teacher_cache(tmp_path, old))
    fresh = teacher_cache(tmp_path, new)
    out = embed_slices(new, _items(), cache=fresh)
    assert (fresh.hits, fresh.misses) == (0, 5)
    assert not torch.equal(out.cross, embed_slices(old, _items()).cross)
    with pytest.raises(ValueError, match="not this teacher"):
        embed_slices(new, _items(), cache=teacher_cache(tmp_path, old))


def test_a_corrupt_shard_is_set_aside_and_recomputed(encoders: Encoders, tmp_path: Path) -> None:
    teacher = _teacher(encoders)
    first = embed_slices(teacher, _items(), cache=teacher_cache(tmp_path, teacher))
    (shard,) = tmp_path.glob("*/shard-*.safetensors")
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    shard.write_bytes(bytes(data))
    reopened = teacher_cache(tmp_path, teacher)
    assert list(tmp_path.glob("*/shard-*.corrupt"))
    again = embed_slices(teacher, _items(), cache=reopened)
    assert (reopened.hits, reopened.misses) == (0, 5)
    torch.testing.assert_close(again.cross, first.cross)


def test_offline_encoders_load_with_the_network_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a network connection was attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    images, texts = ImageFeatures(image_size=64), TextFeatures()
    head = CrossModalHead(1280, 384, 8)
    save_head(
        head,
        tmp_path,
        image_size=64,
        grid=1,
        image_features=images.identity,
        text_features=texts.identity,
    )
    teacher = OfflineTeacher.from_dir(tmp_path, image_features=images, text_features=texts)
    a, b = embed_slices(teacher, _items()), embed_slices(teacher, _items())
    assert torch.equal(a.cross, b.cross) and torch.equal(a.image, b.image)


def test_head_save_load_restores_every_tensor_and_checks_the_hash(tmp_path: Path) -> None:
    head = CrossModalHead(12, 6, 4)
    head.set_feature_statistics(torch.randn(10, 12), torch.randn(10, 6))
    save_head(head, tmp_path, note="x")
    loaded, record = load_head(tmp_path)
    assert record["note"] == "x" and record["weight_hash"] == head.weight_hash()
    for name, tensor in head.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    (tmp_path / "head.json").write_text(
        (tmp_path / "head.json").read_text().replace(head.weight_hash(), "0" * 64)
    )
    with pytest.raises(ValueError, match="weight_hash"):
        load_head(tmp_path)


def test_a_head_over_other_features_is_refused(encoders: Encoders, tmp_path: Path) -> None:
    save_head(
        CrossModalHead(1280, 384, 8),
        tmp_path,
        image_size=128,
        grid=1,
        image_features="efficientnet-lite0:other:grid1:px128",
        text_features="x",
    )
    with pytest.raises(ValueError, match="trained over"):
        OfflineTeacher.from_dir(tmp_path, image_features=encoders[0], text_features=encoders[1])


def test_registry_builds_by_family_name_only() -> None:
    with pytest.raises(ValueError, match="unknown teacher family 'nope'"):
        build_teacher("nope")
    assert {"offline", "hf"} <= set(TEACHER_FAMILIES)

    @register_teacher("test-family")
    def build(value: int) -> Teacher:
        raise RuntimeError(value)

    try:
        with pytest.raises(ValueError, match="already registered"):
            register_teacher("test-family")(lambda: None)  # type: ignore[arg-type,return-value]
        with pytest.raises(RuntimeError, match="7"):
            build_teacher("test-family", value=7)
    finally:
        del TEACHER_FAMILIES["test-family"]
