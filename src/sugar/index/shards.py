"""Sharded embedding of a corpus: one shard per rank, resumable, merged into one output.

Shapes: N entries, P vector width.

Under ``torchrun --nproc-per-node W ... sugar embed`` (or ``sugar index build``) rank r of W
embeds the contiguous samples ``[r * C // W, (r + 1) * C // W)`` of the C samples of the corpus
(:func:`shard_bounds`: deterministic, order-preserving, so concatenating the shards in rank
order gives the single-process order). Each rank writes its shard into a shard directory::

    shard-00000-of-00002.npz        ids (N,), vectors (N, P) float32, metadata (N,) JSON strings
    shard-00000-of-00002.npz.sha256 its checksum (sugar.io)
    shard-00000-of-00002.json       written last: the fingerprint, bounds and the npz digest

all through :mod:`sugar.io` (atomic). The ``.json`` is the shard's completion mark: a rerun
skips a shard whose mark exists, whose fingerprint (corpus digest, model identity, prefixes,
world size, sample count) is the same, and whose npz matches its checksum, and says so; a
killed job therefore recomputes only its unfinished shards. A mark with another fingerprint is
refused (``ValueError`` naming the file and the field), never silently overwritten. After a
barrier, rank 0 merges the shards (:func:`merge_shards`, which needs no process group and can
run alone) and the caller writes the one output; the shard directory is removed after that.

The ``.npz`` is read with ``allow_pickle=False``: ids and metadata are unicode arrays.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from sugar.io import atomic_write_bytes, atomic_write_json, read_json_object, write_checksum
from sugar.io import verify_checksum as _verify

__all__ = [
    "Entries",
    "Rank",
    "embed_shard",
    "init_ranks",
    "merge_shards",
    "run_sharded",
    "shard_bounds",
    "shard_paths",
]

Entries = tuple[list[str], np.ndarray, list[dict[str, Any]]]
"""Ids (N,), float32 vectors (N, P) and JSON metadata objects (N,)."""

BARRIER_TIMEOUT = datetime.timedelta(hours=12)
"""How long rank 0 waits at the barrier for the slowest rank (a large shard on a slow device)."""


@dataclass(frozen=True)
class Rank:
    """This process's place among the embedding processes: ``rank`` of ``world``."""

    rank: int = 0
    world: int = 1

    def __post_init__(self) -> None:
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise ValueError(f"rank={self.rank}, world={self.world}: need 0 <= rank < world")


def init_ranks() -> Rank:
    """Join the gloo process group that torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR,
    MASTER_PORT); one process (``Rank()``) when WORLD_SIZE is unset or 1. Embedding needs no
    collective on tensors, only barriers, so gloo serves CPU and CUDA ranks alike."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Rank()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
    return Rank(dist.get_rank(), dist.get_world_size())


def shard_bounds(count: int, rank: int, world: int) -> tuple[int, int]:
    """The samples ``[start, stop)`` of ``rank`` among ``world`` ranks over ``count`` samples:
    contiguous, in order, sizes differing by at most one.

    >>> [shard_bounds(5, r, 2) for r in range(2)]
    [(0, 2), (2, 5)]
    >>> [shard_bounds(1, r, 2) for r in range(2)]  # fewer samples than ranks: an empty shard
    [(0, 0), (0, 1)]
    """
    Rank(rank, world)
    return rank * count // world, (rank + 1) * count // world


def shard_paths(directory: Path, rank: int, world: int) -> tuple[Path, Path]:
    """(npz, completion mark) of shard ``rank`` of ``world`` in ``directory``."""
    stem = f"shard-{rank:05d}-of-{world:05d}"
    return directory / f"{stem}.npz", directory / f"{stem}.json"


def _finished(mark: Path, npz: Path, fingerprint: dict[str, Any]) -> bool:
    """Whether the shard behind ``mark`` is complete and belongs to this job (``ValueError``
    when it belongs to another: a different corpus, model, world size or prefixes flag)."""
    if not mark.is_file():
        return False
    written = read_json_object(mark).get("fingerprint", {})
    for key, value in fingerprint.items():
        if written.get(key) != value:
            raise ValueError(
                f"{mark}: this shard was written for {key}={written.get(key)!r}, this job has "
                f"{key}={value!r}; remove {mark.parent} or write elsewhere"
            )
    if not npz.is_file():
        return False
    return _verify(npz) == read_json_object(mark).get("sha256")


def embed_shard(
    samples: Sequence[Any],
    compute: Callable[[Sequence[Any]], Entries],
    directory: str | Path,
    fingerprint: dict[str, Any],
    rank: Rank,
    batch_size: int = 32,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> bool:
    """Embed this rank's share of ``samples`` into its shard of ``directory``; returns False
    when the shard was already finished (nothing computed), True when it was computed.

    ``compute(chunk)`` embeds up to ``batch_size`` samples and returns their
    :data:`Entries`; the progress bar (``tqdm``, ``position=rank``) counts samples.
    ``fingerprint``: JSON values identifying the job; ``world`` and ``count`` are added.
    """
    directory = Path(directory)
    fingerprint = {**fingerprint, "world": rank.world, "count": len(samples)}
    npz, mark = shard_paths(directory, rank.rank, rank.world)
    start, stop = shard_bounds(len(samples), rank.rank, rank.world)
    if _finished(mark, npz, fingerprint):
        log(f"rank {rank.rank}: shard {npz.name} (samples {start}-{stop}) is finished; skipped")
        return False
    ids: list[str] = []
    blocks: list[np.ndarray] = []
    metadata: list[dict[str, Any]] = []
    bar = tqdm(total=stop - start, desc=f"embed rank {rank.rank}", position=rank.rank,
               unit="sample", disable=not progress, leave=True)  # fmt: skip
    with bar:
        for begin in range(start, stop, batch_size):
            chunk = samples[begin : min(begin + batch_size, stop)]
            chunk_ids, vectors, chunk_metadata = compute(chunk)
            ids += chunk_ids
            blocks.append(np.asarray(vectors, dtype=np.float32))
            metadata += chunk_metadata
            bar.update(len(chunk))
    width = blocks[0].shape[1] if blocks else 0
    matrix = np.concatenate(blocks) if blocks else np.zeros((0, width), np.float32)  # (N, P)
    buffer = io.BytesIO()
    np.savez(buffer, ids=np.array(ids, dtype=str), vectors=matrix,
             metadata=np.array([json.dumps(m) for m in metadata], dtype=str))  # fmt: skip
    atomic_write_bytes(npz, buffer.getvalue())
    digest = write_checksum(npz)
    atomic_write_json(mark, {"fingerprint": fingerprint, "start": start, "stop": stop,
                             "entries": len(ids), "sha256": digest})  # fmt: skip
    log(f"rank {rank.rank}: wrote shard {npz.name} ({len(ids)} entries, samples {start}-{stop})")
    return True


def merge_shards(directory: str | Path, world: int, fingerprint: dict[str, Any]) -> Entries:
    """The entries of all ``world`` shards of ``directory`` in rank order (no process group
    needed); ``FileNotFoundError`` naming the first unfinished shard, ``ValueError`` for a
    shard of another job (see :func:`embed_shard`'s ``fingerprint``)."""
    directory = Path(directory)
    ids: list[str] = []
    blocks: list[np.ndarray] = []
    metadata: list[dict[str, Any]] = []
    for rank in range(world):
        npz, mark = shard_paths(directory, rank, world)
        if not _finished(mark, npz, {**fingerprint, "world": world}):
            raise FileNotFoundError(f"{mark}: shard {rank} of {world} is not finished")
        with np.load(npz, allow_pickle=False) as arrays:
            ids += arrays["ids"].tolist()
            blocks.append(arrays["vectors"].astype(np.float32))
            metadata += [json.loads(text) for text in arrays["metadata"].tolist()]
    widths = {block.shape[1] for block in blocks if len(block)}
    if len(widths) > 1:
        raise ValueError(f"{directory}: shards have vectors of different widths {sorted(widths)}")
    width = widths.pop() if widths else 0
    nonempty = [block for block in blocks if len(block)]
    matrix = np.concatenate(nonempty) if nonempty else np.zeros((0, width), np.float32)
    if len(set(ids)) != len(ids):
        raise ValueError(f"{directory}: the shards hold duplicate ids")
    return ids, matrix, metadata


def run_sharded(
    samples: Sequence[Any],
    compute: Callable[[Sequence[Any]], Entries],
    directory: str | Path,
    fingerprint: dict[str, Any],
    rank: Rank,
    write: Callable[[Entries], None],
    batch_size: int = 32,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> None:
    """:func:`embed_shard` on every rank, a barrier, then on rank 0 :func:`merge_shards`,
    ``write(entries)`` (the one output) and the removal of the shard directory."""
    embed_shard(samples, compute, directory, fingerprint, rank, batch_size, progress, log)
    if rank.world > 1:
        import torch.distributed as dist

        dist.barrier()
    if rank.rank == 0:
        write(merge_shards(directory, rank.world, fingerprint))
        shutil.rmtree(directory)
        log(f"merged {rank.world} shard(s); removed {directory}")
