"""Teacher-head training on caption sets that name one image several times (COCO: 5 captions).

Each distinct image is decoded once and encoded in bounded chunks, giving the features (and
cache keys) of the one-call reference; the head trained on the built-in kind of set (every
image distinct) is the one the pre-chunking loop (kept here) trains; captions of one image are
masked as negatives, exact repeats count once; Karpathy's ``restval`` split is training data.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from sugar.data.jsonl import load_image
from sugar.losses import clip_contrastive_loss
from sugar.models.feature_cache import FeatureCache
from sugar.teachers import ImageFeatures, TextFeatures, offline, slice_key, training
from sugar.teachers.heads import CrossModalHead
from sugar.teachers.training import image_feature_rows, read_pairs, train_teacher

Encoders = tuple[ImageFeatures, TextFeatures]


def _write_set(root: Path, rows: Sequence[tuple[str, str, str]]) -> Path:
    """caption.jsonl under ``root`` with one [image, caption(target)] sample per (image path,
    caption, split) row."""
    lines = []
    for i, (image, caption, split) in enumerate(rows):
        sample = {
            "id": f"s{i}",
            "task": "caption",
            "segments": [
                {"kind": "image", "image": image, "role": "context"},
                {"kind": "text", "text": caption, "role": "target"},
            ],
            "meta": {"split": split},
        }
        lines.append(json.dumps(sample))
    path = root / "caption.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _copy_images(source: Path, root: Path, count: int) -> list[str]:
    """The first ``count`` images of the tiny set, copied under ``root``; their paths."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    paths = [f"images/{i:02d}.png" for i in range(count)]
    for rel in paths:
        shutil.copy(source / rel, root / rel)
    return paths


def _counting_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every path :mod:`sugar.teachers.training` decodes, in order."""
    decoded: list[str] = []

    def counted(root: str | Path, rel: str) -> Image.Image:
        decoded.append(rel)
        return load_image(root, rel)

    monkeypatch.setattr(training, "load_image", counted)
    return decoded


def _encoder_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many images each :class:`ImageFeatures` call receives."""
    calls: list[int] = []
    original = ImageFeatures.__call__

    def spy(
        self: ImageFeatures,
        images: Sequence[Image.Image],
        batch_size: int = 64,
        keys: Sequence[str] | None = None,
    ) -> Any:
        calls.append(len(images))
        return original(self, images, batch_size, keys)

    monkeypatch.setattr(ImageFeatures, "__call__", spy)
    return calls


def test_restval_is_training_data_and_other_splits_are_named(tmp_path: Path) -> None:
    rows = [("a.png", "A cat.", "train"), ("b.png", "A dog.", "restval")]
    assert read_pairs(_write_set(tmp_path, rows)) == (["a.png", "b.png"], ["A cat.", "A dog."])
    data = _write_set(tmp_path, [*rows, ("c.png", "A cow.", "val")])
    with pytest.raises(ValueError, match=r"split 'val'.*\['train', 'restval'\]"):
        read_pairs(data)


def test_each_path_is_decoded_once_into_the_one_call_features(
    encoders: Encoders, tiny_captions: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    distinct = _copy_images(tiny_captions.parent, tmp_path, 5)
    shutil.copy(tmp_path / distinct[0], tmp_path / "images/copy.png")  # one picture, two files
    paths = [distinct[i] for i in (0, 1, 0, 2, 1, 3, 4, 4, 0)] + ["images/copy.png"]
    reference = encoders[0]([load_image(tmp_path, p) for p in paths])  # the old loading
    decoded, calls = _counting_decodes(monkeypatch), _encoder_calls(monkeypatch)
    hashed: list[Image.Image] = []  # the encoder's own hashing: the rows' keys are passed in
    monkeypatch.setattr(offline, "slice_key", lambda item: hashed.append(item) or "")
    rows = image_feature_rows(encoders[0], tmp_path, paths)
    monkeypatch.undo()
    assert torch.equal(rows, reference)
    assert sorted(decoded) == sorted(set(paths))  # every file once
    assert calls == [5]  # five pictures: the copy is not encoded again
    assert hashed == []  # each picture hashed once, by image_feature_rows
    decoded, calls = _counting_decodes(monkeypatch), _encoder_calls(monkeypatch)
    decoded.clear()
    calls.clear()
    one_by_one = image_feature_rows(encoders[0], tmp_path, paths, chunk_bytes=1)  # bounded
    assert calls == [1] * 5 and len(decoded) == 6
    torch.testing.assert_close(one_by_one, reference, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="multiple of 64"):
        image_feature_rows(encoders[0], tmp_path, paths, chunk=100)


def test_chunks_are_whole_encoder_batches_so_features_are_bit_identical(
    encoders: Encoders, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generator = torch.Generator().manual_seed(0)
    (tmp_path / "images").mkdir()
    paths = []
    for i in range(70):
        pixels = torch.randint(0, 256, (24, 32, 3), generator=generator, dtype=torch.uint8)
        Image.fromarray(pixels.numpy()).save(tmp_path / f"images/{i}.png")
        paths += [f"images/{i}.png"] * (1 + i % 2)
    reference = encoders[0]([load_image(tmp_path, p) for p in paths])  # batches of 64 + 6
    calls = _encoder_calls(monkeypatch)
    rows = image_feature_rows(encoders[0], tmp_path, paths, chunk=64)
    assert calls == [64, 6]
    assert torch.equal(rows, reference)


def test_cache_keys_are_those_of_the_full_size_images(
    encoders: Encoders, tiny_captions: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _copy_images(tiny_captions.parent, tmp_path, 4)
    cache = FeatureCache(tmp_path / "cache", encoders[0].identity)
    monkeypatch.setattr(encoders[0], "cache", cache)
    rows = image_feature_rows(encoders[0], tmp_path, paths + paths[:2], chunk_bytes=1)
    keys = [slice_key(load_image(tmp_path, p)) for p in paths]
    assert len(cache) == 4 and all(key in cache for key in keys)
    stored = cache.get(keys)
    assert torch.equal(torch.stack([stored[k] for k in keys]), rows[:4])


def _pre_chunking_head(
    encoders: Encoders, data: Path, steps: int, batch_size: int, seed: int
) -> CrossModalHead:
    """The loop as it was before chunked decoding and false-negative masks (the reference)."""
    paths, texts = read_pairs(data)
    image_feats = encoders[0]([load_image(data.parent, p) for p in paths])
    text_feats = encoders[1](texts)
    n = len(paths)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        head = CrossModalHead(encoders[0].dim, encoders[1].dim, 256, 0.7)
        head.set_feature_statistics(image_feats, text_feats)
        optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.1)
        order = torch.Generator().manual_seed(seed)
        permutation, cursor = torch.randperm(n, generator=order), 0
        size = min(batch_size, n)
        head.train()
        for _ in range(steps):
            if cursor + size > n:
                permutation, cursor = torch.randperm(n, generator=order), 0
            batch = permutation[cursor : cursor + size]
            cursor += size
            parts = clip_contrastive_loss(
                head.encode_image(image_feats[batch]),
                head.encode_text(text_feats[batch]),
                head.logit_scale,
            )
            optimizer.zero_grad(set_to_none=True)
            parts["contrastive_loss"].backward()
            optimizer.step()
    return head.eval()


def test_a_set_of_distinct_images_trains_the_pre_chunking_head(
    encoders: Encoders, tiny_captions: Path, tmp_path: Path
) -> None:
    summary = train_teacher(
        data=tiny_captions, out_dir=tmp_path, steps=5, batch_size=8, image_size=64, seed=3,
        image_features=encoders[0], text_features=encoders[1],
    )  # fmt: skip
    reference = _pre_chunking_head(encoders, tiny_captions, steps=5, batch_size=8, seed=3)
    assert summary["weight_hash"] == reference.weight_hash()
    assert summary["pairs"] == 12 and summary["duplicate_pairs"] == 0


def test_captions_of_one_image_are_masked_and_exact_repeats_count_once(
    encoders: Encoders, tiny_captions: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = _copy_images(tiny_captions.parent, tmp_path, 6)
    rows = [(image, f"Caption {k} of picture {i}.", "train") for i, image in enumerate(images)
            for k in range(2)]  # fmt: skip
    rows.append(rows[0])  # an exact repeat of pair 0
    data = _write_set(tmp_path, rows)
    decoded = _counting_decodes(monkeypatch)
    masks: list[torch.Tensor] = []
    masked_loss = training.contrastive_loss_without_false_negatives

    def spy(*args: Any) -> dict[str, torch.Tensor]:
        masks.append(args[3])
        return masked_loss(*args)

    monkeypatch.setattr(training, "contrastive_loss_without_false_negatives", spy)
    summary = train_teacher(
        data=data, out_dir=tmp_path / "head", steps=3, batch_size=12, image_size=64,
        image_features=encoders[0], text_features=encoders[1],
    )  # fmt: skip
    assert summary["pairs"] == 12 and summary["duplicate_pairs"] == 1
    assert sorted(decoded) == images  # six pictures, each decoded once
    assert len(masks) == 3
    for mask in masks:  # every batch holds all 12 pairs: each picture's two captions
        assert int(mask.sum()) == 12 and torch.equal(mask, mask.T)
        assert not mask.diagonal().any()


def test_captions_of_a_single_image_are_refused(tiny_captions: Path, tmp_path: Path) -> None:
    """With one image every in-batch negative is masked: the loss would be 0, nothing learnt."""
    image = _copy_images(tiny_captions.parent, tmp_path, 1)[0]
    data = _write_set(tmp_path, [(image, f"Caption {k}.", "train") for k in range(3)])
    with pytest.raises(ValueError, match="at least 2 distinct images, found 3 distinct pairs of 1"):
        train_teacher(data=data, out_dir=tmp_path / "head", steps=1, image_size=64)


def test_two_files_of_one_picture_are_one_image_to_the_mask(
    encoders: Encoders, tiny_captions: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = _copy_images(tiny_captions.parent, tmp_path, 4)
    shutil.copy(tmp_path / images[0], tmp_path / "images/copy.png")  # picture 0 again
    rows = [(image, f"Picture {i}.", "train") for i, image in enumerate(images)]
    rows.append(("images/copy.png", "Another caption of picture 0.", "train"))
    rows.append(("images/copy.png", "Picture 0.", "train"))  # pair 0 again, through the copy
    data = _write_set(tmp_path, rows)
    masks: list[torch.Tensor] = []
    masked_loss = training.contrastive_loss_without_false_negatives

    def spy(*args: Any) -> dict[str, torch.Tensor]:
        masks.append(args[3])
        return masked_loss(*args)

    monkeypatch.setattr(training, "contrastive_loss_without_false_negatives", spy)
    summary = train_teacher(
        data=data, out_dir=tmp_path / "head", steps=2, batch_size=5, image_size=64,
        image_features=encoders[0], text_features=encoders[1],
    )  # fmt: skip
    assert summary["pairs"] == 5 and summary["duplicate_pairs"] == 1
    for mask in masks:  # all 5 pairs per batch: picture 0's two captions mask each other only
        assert int(mask.sum()) == 2 and torch.equal(mask, mask.T)
