"""A persistent cache of frozen-encoder outputs, keyed by content hash and encoder identity.

Frozen encoders (the built-in MLLM's EfficientNet grid, the teachers) give the same tensor for
the same input forever, so each input is encoded once per machine. Layout::

    root/<identity digest>/identity.txt           the full identity string, checked on open
    root/<identity digest>/shard-<n>.safetensors  key -> tensor, one file per flush
    root/<identity digest>/shard-<n>.safetensors.sha256

The identity names everything that changes the output (encoder weights hash, grid, a trained
head's weight hash): another identity is another directory, never a stale hit. Shards are
written atomically with a checksum; on open, a shard that fails its checksum or cannot be read
is set aside as ``*.corrupt`` with a warning and its entries are simply recomputed. Every flush
is durable, so an interrupted precompute resumes where it stopped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from safetensors.torch import load_file, save
from torch import Tensor

from sugar.io import (
    ChecksumError,
    atomic_write_bytes,
    atomic_write_text,
    sha256_bytes,
    verify_checksum,
)
from sugar.owned import claim_directory, marker_entries, write_marker

__all__ = ["FeatureCache", "claim_cache", "content_key"]

log = logging.getLogger(__name__)
KIND = "feature cache"
"""The :mod:`sugar.owned` kind of a claimed cache root."""


def content_key(data: bytes) -> str:
    """The cache key of an input: hex SHA-256 of its bytes (a file's content, a UTF-8 text)."""
    return sha256_bytes(data)


def _subdirectory(identity: str) -> str:
    """The folder of ``identity``'s features under a cache root."""
    return sha256_bytes(identity.encode("utf-8"))[:16]


def _is_cache_folder(path: Path) -> bool:
    """A folder :class:`FeatureCache` wrote: a 16-hex-digit name holding ``identity.txt``."""
    name = path.name
    return (
        len(name) == 16
        and all(c in "0123456789abcdef" for c in name)
        and (path / "identity.txt").is_file()
    )


def claim_cache(root: str | Path) -> Path:
    """Claim ``root`` as sugar's feature cache (:mod:`sugar.owned`) before anything is written
    there, as a command whose output is the cache does (``sugar teachers embed``).

    Accepted: a new or empty ``root``, one sugar marked, or one that holds only folders this
    class wrote (a cache filled by training before it was claimed: adopted); anything else in
    it is refused (:class:`~sugar.owned.ForeignDirectoryError`), and nothing is written. Every
    folder this class writes there later is accepted by the next claim."""
    root = Path(root)
    names = list(root.iterdir()) if root.is_dir() else []
    written = [p.name for p in names if p.is_dir() and _is_cache_folder(p)]
    if written and len(written) == len(names) and marker_entries(root) is None:
        write_marker(root, KIND, written)  # recognisably sugar's: adopted
    return claim_directory(root, KIND, written)


class FeatureCache:
    """Tensors by key for one encoder identity; ``None`` root means in memory only.

    >>> import torch
    >>> cache = FeatureCache(None, "demo-encoder")
    >>> cache.put({"k": torch.ones(2)})
    >>> cache.get(["k", "missing"]).keys(), (cache.hits, cache.misses)
    (dict_keys(['k']), (1, 1))
    """

    def __init__(self, root: str | Path | None, identity: str, shard_size: int = 4096) -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size={shard_size}: must be >= 1")
        self.identity = identity
        self.shard_size = shard_size
        self.hits = 0
        self.misses = 0
        self._entries: dict[str, Tensor] = {}
        self._pending: dict[str, Tensor] = {}
        self.directory: Path | None = None
        if root is not None:
            self.directory = Path(root) / _subdirectory(identity)
            self.directory.mkdir(parents=True, exist_ok=True)
            self._check_identity()
            self._load_shards()

    def _check_identity(self) -> None:
        assert self.directory is not None
        marker = self.directory / "identity.txt"
        if marker.is_file():
            found = marker.read_text(encoding="utf-8")
            if found != self.identity:  # a digest collision or a hand-edited directory
                raise ValueError(
                    f"{self.directory}: holds features of {found!r}, not {self.identity!r}"
                )
        else:
            atomic_write_text(marker, self.identity)

    def _load_shards(self) -> None:
        assert self.directory is not None
        for path in sorted(self.directory.glob("shard-*.safetensors")):
            try:
                verify_checksum(path)
                self._entries.update(load_file(str(path)))
            except (ChecksumError, FileNotFoundError, OSError, ValueError) as exc:
                aside = path.with_name(path.name + ".corrupt")
                try:
                    os.replace(path, aside)
                except FileNotFoundError:  # another process set it aside first
                    continue
                log.warning("feature cache: %s set aside (%s); entries recomputed", path, exc)

    def __len__(self) -> int:
        return len(self._entries) + len(self._pending)

    def __contains__(self, key: str) -> bool:
        return key in self._entries or key in self._pending

    def get(self, keys: Iterable[str]) -> dict[str, Tensor]:
        """The cached tensors among ``keys`` (hits); counts hits and misses."""
        found: dict[str, Tensor] = {}
        for key in keys:
            value = self._entries.get(key)
            if value is None:
                value = self._pending.get(key)
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
                found[key] = value
        return found

    def put(self, entries: dict[str, Tensor]) -> None:
        """Add entries (stored detached, contiguous, on CPU); flushes every ``shard_size``."""
        for key, value in entries.items():
            self._pending[key] = value.detach().to("cpu").contiguous()
        if len(self._pending) >= self.shard_size:
            self.flush()

    def flush(self) -> Path | None:
        """Write pending entries as one new shard (atomic, checksummed); returns its path."""
        if not self._pending:
            return None
        if self.directory is None:
            self._entries.update(self._pending)
            self._pending = {}
            return None
        numbers = [int(p.name.split("-")[1]) for p in self.directory.glob("shard-*")]
        path = (
            self.directory / f"shard-{max(numbers, default=-1) + 1:06d}-{os.getpid()}.safetensors"
        )
        data = save(self._pending)
        # The checksum first, then the shard: a reader never sees a shard without its sidecar
        # (it would set a valid shard aside as corrupt).
        atomic_write_text(
            path.with_name(path.name + ".sha256"), f"{sha256_bytes(data)}  {path.name}\n"
        )
        atomic_write_bytes(path, data)
        self._entries.update(self._pending)
        self._pending = {}
        return path

    @property
    def hit_rate(self) -> float:
        """Hits / lookups so far (0.0 before any lookup)."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
