"""FeatureCache: persistence, identity separation, corrupt shards set aside and recomputed."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from sugar.models.feature_cache import FeatureCache, content_key


def test_entries_persist_across_instances_and_identities_are_separate(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path, "encoder-a", shard_size=2)
    values = {content_key(bytes([i])): torch.randn(3, 4) for i in range(5)}
    cache.put(values)  # 5 >= 2: written as one shard at once
    cache.put({"late": torch.ones(1)})
    assert cache.flush() is not None
    again = FeatureCache(tmp_path, "encoder-a")
    assert len(again) == 6
    found = again.get([*values, "late", "absent"])
    assert all(torch.equal(found[k], v) for k, v in values.items())
    assert (again.hits, again.misses) == (6, 1)
    assert again.hit_rate == pytest.approx(6 / 7)
    assert len(FeatureCache(tmp_path, "encoder-b")) == 0  # another identity, another directory


def test_a_corrupt_shard_is_set_aside_and_its_entries_recomputed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = FeatureCache(tmp_path, "enc")
    cache.put({"a": torch.ones(2)})
    first = cache.flush()
    cache.put({"b": torch.zeros(2)})
    second = cache.flush()
    assert first is not None and second is not None
    data = bytearray(first.read_bytes())
    data[-1] ^= 0x01
    first.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        reopened = FeatureCache(tmp_path, "enc")
    assert "set aside" in caplog.text
    assert "a" not in reopened and "b" in reopened
    assert first.with_name(first.name + ".corrupt").exists()
    reopened.put({"a": torch.ones(2)})  # recomputed by the caller, stored again
    reopened.flush()
    assert torch.equal(FeatureCache(tmp_path, "enc").get(["a"])["a"], torch.ones(2))


def test_in_memory_cache_never_touches_disk(tmp_path: Path) -> None:
    cache = FeatureCache(None, "enc", shard_size=1)
    cache.put({"a": torch.ones(1)})
    assert "a" in cache and cache.directory is None
    assert list(tmp_path.iterdir()) == []
