"""Bundles: save -> load restores every tensor and gives identical logits; corruption refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import sugar
from sugar.models.bundle import _identity, bundle_identity, load_bundle, save_bundle
from sugar.models.tiny import TinyMLLM
from tests.models.conftest import TINY, TinyWorld


@pytest.mark.parametrize("vision", ["frozen_grid", "vit"])
def test_save_load_restores_every_tensor_and_the_logits(
    tmp_path: Path, tiny_world: TinyWorld, vision: str
) -> None:
    model = TinyMLLM(tiny_world.tokenizer, vision=vision, **TINY).eval()
    with torch.no_grad():  # move off the initialisation so a reload from scratch would differ
        for parameter in model.parameter_groups()["trainable"]:
            parameter.add_(0.01 * torch.randn_like(parameter))
    head = {"weight": torch.randn(4, 3), "bias": torch.zeros(4)}
    identity = save_bundle(
        tmp_path / "m", model, extras={"projector": ({"dim": 4}, head)}, config_yaml="a: 1\n"
    )
    loaded = load_bundle(tmp_path / "m")
    assert loaded.identity == identity == bundle_identity(tmp_path / "m")
    before, after = model.state_dict(), loaded.model.state_dict()
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        assert torch.equal(tensor, after[name]), name
    assert loaded.extra_specs == {"projector": {"dim": 4}}
    assert all(torch.equal(head[k], loaded.extras["projector"][k]) for k in head)
    assert loaded.config == "a: 1\n"
    batch = model.collate(tiny_world.stories[:2], tiny_world.root)
    assert torch.equal(model(batch).logits, loaded.model.eval()(batch).logits)
    assert loaded.model.tokenizer.identity == tiny_world.tokenizer.identity


def test_sugar_load_generates_and_scores(tmp_path: Path, tiny_world: TinyWorld) -> None:
    model = TinyMLLM(tiny_world.tokenizer, **TINY).eval()
    save_bundle(tmp_path / "m", model)
    api = sugar.load(tmp_path / "m")
    samples = tiny_world.captions[:2]
    assert api.generate(samples, tiny_world.root, max_new_tokens=5) == model.generate(
        samples, tiny_world.root, max_new_tokens=5
    )
    torch.testing.assert_close(
        api.score(samples, tiny_world.root), model.score(samples, tiny_world.root)
    )
    assert api.identity in repr(api) or api.identity[:12] in repr(api)


def test_a_changed_file_is_refused_by_name(tmp_path: Path, tiny_world: TinyWorld) -> None:
    save_bundle(tmp_path / "m", TinyMLLM(tiny_world.tokenizer, **TINY))
    weights = tmp_path / "m" / "backbone.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"backbone\.safetensors: content differs"):
        load_bundle(tmp_path / "m")


def test_not_a_bundle_and_unknown_family(tmp_path: Path, tiny_world: TinyWorld) -> None:
    with pytest.raises(FileNotFoundError, match="not a sugar model bundle"):
        load_bundle(tmp_path)
    save_bundle(tmp_path / "m", TinyMLLM(tiny_world.tokenizer, **TINY))
    manifest_path = tmp_path / "m" / "model.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["family"] = "nope"  # e.g. a family registered by a plugin not installed here
    manifest["identity"] = _identity(
        manifest["files"], "nope", manifest["spec"], manifest["extras"]
    )
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="unknown backbone family 'nope'"):
        load_bundle(tmp_path / "m")


def test_a_failed_save_keeps_the_old_bundle(tmp_path: Path, tiny_world: TinyWorld) -> None:
    model = TinyMLLM(tiny_world.tokenizer, **TINY)
    first = save_bundle(tmp_path / "m", model)

    class Boom(RuntimeError):
        pass

    def explode(directory: Path) -> dict:
        (directory / "partial.bin").write_bytes(b"x")
        raise Boom

    model.save_pretrained = explode  # type: ignore[method-assign]
    with pytest.raises(Boom):
        save_bundle(tmp_path / "m", model)
    assert load_bundle(tmp_path / "m").identity == first
    assert not (tmp_path / "m" / "partial.bin").exists()


def test_an_edited_spec_or_an_unlisted_file_is_refused(
    tmp_path: Path, tiny_world: TinyWorld
) -> None:
    save_bundle(tmp_path / "m", TinyMLLM(tiny_world.tokenizer, **TINY))
    manifest_path = tmp_path / "m" / "model.json"
    original = manifest_path.read_text()
    manifest = json.loads(original)
    manifest["spec"]["image_size"] = 96
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"model\.json was edited"):
        load_bundle(tmp_path / "m")
    manifest_path.write_text(original)
    (tmp_path / "m" / "config.yaml").write_text("run: {seed: 1}\n")
    with pytest.raises(ValueError, match="not listed"):
        load_bundle(tmp_path / "m")


def test_the_vision_feature_cache_reaches_the_disk(tmp_path: Path, tiny_world: TinyWorld) -> None:
    from sugar.models.feature_cache import FeatureCache

    model = TinyMLLM(tiny_world.tokenizer, feature_cache=str(tmp_path / "cache"), **TINY)
    model(model.collate(tiny_world.captions[:3], tiny_world.root))
    model.flush_caches()
    reopened = FeatureCache(tmp_path / "cache", model.vision.cache.identity)
    assert len(reopened) == 3


def test_a_loaded_bundle_reads_and_fills_the_feature_cache_it_is_given(
    tmp_path: Path, tiny_world: TinyWorld
) -> None:
    """A run from ``train.init_from`` (and the demo's evaluation) loads its bundle with the run's
    feature cache: features an earlier run computed are read, new ones are written; without
    one, the loaded model keeps its features in memory only."""
    from sugar.models.feature_cache import FeatureCache

    first = TinyMLLM(tiny_world.tokenizer, feature_cache=str(tmp_path / "cache"), **TINY).eval()
    batch = first.collate(tiny_world.captions[:3], tiny_world.root)
    first(batch)
    first.flush_caches()
    save_bundle(tmp_path / "m", first)
    loaded = load_bundle(tmp_path / "m", feature_cache=str(tmp_path / "cache")).model
    assert isinstance(loaded, TinyMLLM)
    with torch.no_grad():
        loaded(batch)  # the three images: read from the disk, not encoded
        loaded(loaded.collate(tiny_world.captions[3:5], tiny_world.root))  # two new ones
    cache = loaded.vision.cache
    assert (cache.hits, cache.misses) == (3, 2)
    loaded.flush_caches()
    assert len(FeatureCache(tmp_path / "cache", cache.identity)) == 5
    assert load_bundle(tmp_path / "m").model.vision.cache.directory is None


def test_generation_past_max_positions_is_refused_up_front(tiny_world: TinyWorld) -> None:
    model = TinyMLLM(tiny_world.tokenizer, **{**TINY, "max_positions": 128}).eval()
    story = tiny_world.stories[0]
    prompt_tokens = int(model.collate([story], tiny_world.root).lengths[0])
    assert prompt_tokens < 128
    fits = 128 - prompt_tokens + 1
    assert len(model.generate_ids([story], tiny_world.root, max_new_tokens=fits)) == 1
    with pytest.raises(ValueError, match="max_positions=128"):
        model.generate([story], tiny_world.root, max_new_tokens=fits + 1)


def test_a_run_from_a_bundle_applies_training_settings_and_refuses_other_architectures(
    tmp_path: Path, tiny_world: TinyWorld
) -> None:
    """``train.init_from``: a training-time ``model`` field of the run's config (dropout)
    replaces the bundle's; an architecture field that differs is refused, naming the field
    (before, both were silently taken from the bundle)."""
    from sugar.config import ConfigError, load_config
    from sugar.train.run import build_model

    save_bundle(tmp_path / "m", TinyMLLM(tiny_world.tokenizer, **TINY, dropout=0.0))
    fields = {f"model.{k}={v}" for k, v in TINY.items()} | {
        "model.family=tiny", f"train.init_from={tmp_path / 'm'}",
    }  # fmt: skip
    same = build_model(load_config(None, sorted(fields)), [])
    assert isinstance(same, TinyMLLM) and same.spec["dropout"] == 0.0
    changed = build_model(load_config(None, sorted(fields | {"model.dropout=0.25"})), [])
    assert isinstance(changed, TinyMLLM) and changed.spec["dropout"] == 0.25
    assert {getattr(block, "dropout", None) for block in changed.blocks} == {0.25}
    other = load_config(None, sorted(fields | {"model.image_size=96"}))
    with pytest.raises(ConfigError, match=r"model\.image_size=96: train\.init_from=.* image_size="):
        build_model(other, [])
