"""Sharded embedding (issue 20, part 3): the shard plan against a naive split, the resume that
recomputes only an unfinished shard, and `sugar embed` / `sugar index build` under 2 gloo ranks
(spawned as torchrun would start them) giving the single-process output."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch.multiprocessing as mp
from typer.testing import CliRunner

from sugar.cli import app
from sugar.index import Index
from sugar.index.shards import Rank, embed_shard, merge_shards, shard_bounds, shard_paths
from sugar.io import sha256_file
from sugar.models.bundle import bundle_identity
from sugar.models.pretrained import PREPROCESSING
from tests.rag.conftest import RagWorld


def _run(*args: Any) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("count", [0, 1, 2, 7, 12])
@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_shard_bounds_partition_the_corpus_in_order(count: int, world: int) -> None:
    naive = np.array_split(np.arange(count), world)  # the reference split
    got = [list(range(*shard_bounds(count, rank, world))) for rank in range(world)]
    assert sorted(map(len, got)) == sorted(map(len, naive))
    assert [i for share in got for i in share] == list(range(count))


def _fake_compute(calls: list[str]) -> Any:
    """A deterministic embedder that records which samples it embedded."""

    def compute(chunk: Any) -> Any:
        calls.extend(chunk)
        vectors = np.array([[float(len(s)), float(sum(map(ord, s)))] for s in chunk], np.float32)
        return list(chunk), vectors.reshape(-1, 2), [{"text": s} for s in chunk]

    return compute


def test_resume_recomputes_only_the_unfinished_shard(tmp_path: Path) -> None:
    samples = [f"doc-{i}" for i in range(7)]
    fingerprint = {"data_sha256": "abc", "model_identity": "m", "prefixes": False}
    calls: list[str] = []
    for rank in range(2):
        embed_shard(
            samples,
            _fake_compute(calls),
            tmp_path,
            fingerprint,
            Rank(rank, 2),
            batch_size=2,
            progress=False,
        )
    first = merge_shards(tmp_path, 2, fingerprint)
    assert calls == samples and first[0] == samples
    # rank 1 was killed before it finished: its completion mark never got written
    shard_paths(tmp_path, 1, 2)[1].unlink()
    calls.clear()
    log: list[str] = []
    done = [
        embed_shard(
            samples,
            _fake_compute(calls),
            tmp_path,
            fingerprint,
            Rank(rank, 2),
            batch_size=2,
            progress=False,
            log=log.append,
        )
        for rank in range(2)
    ]
    assert done == [False, True]
    assert calls == samples[3:]  # rank 1's samples only
    assert "skipped" in log[0] and "shard-00000-of-00002.npz" in log[0]
    second = merge_shards(tmp_path, 2, fingerprint)
    assert second[0] == first[0] and second[2] == first[2]
    np.testing.assert_array_equal(second[1], first[1])


def test_a_shard_of_another_job_is_refused(tmp_path: Path) -> None:
    samples = ["a", "b"]
    fingerprint = {"data_sha256": "abc", "model_identity": "m", "prefixes": False}
    embed_shard(samples, _fake_compute([]), tmp_path, fingerprint, Rank(0, 2), progress=False)
    with pytest.raises(ValueError, match="model_identity='m', this job has model_identity='n'"):
        embed_shard(
            samples,
            _fake_compute([]),
            tmp_path,
            {**fingerprint, "model_identity": "n"},
            Rank(0, 2),
            progress=False,
        )
    with pytest.raises(FileNotFoundError, match="shard 1 of 2 is not finished"):
        merge_shards(tmp_path, 2, fingerprint)


def test_a_corrupt_shard_is_refused_at_merge(tmp_path: Path) -> None:
    samples = ["a", "b", "c"]
    fingerprint = {"data_sha256": "abc", "model_identity": "m", "prefixes": False}
    embed_shard(samples, _fake_compute([]), tmp_path, fingerprint, Rank(0, 1), progress=False)
    npz = shard_paths(tmp_path, 0, 1)[0]
    npz.write_bytes(npz.read_bytes()[:-10])  # truncated after its checksum was recorded
    from sugar.io import ChecksumError

    with pytest.raises(ChecksumError):
        merge_shards(tmp_path, 1, fingerprint)


def _free_port() -> int:
    with socket.socket() as handle:
        handle.bind(("127.0.0.1", 0))
        return int(handle.getsockname()[1])


def _rank_worker(rank: int, port: int, args: list[str], logs: str) -> None:
    """One rank as torchrun starts it: RANK / WORLD_SIZE / MASTER_* in the environment."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    import torch

    torch.set_num_threads(1)
    result = CliRunner().invoke(app, args)
    Path(logs, f"rank{rank}.txt").write_text(result.output + repr(result.exception))
    if result.exit_code != 0:
        raise SystemExit(f"rank {rank}: exit {result.exit_code}: {result.output}")


def _two_ranks(args: list[Any], logs: Path) -> list[str]:
    logs.mkdir(exist_ok=True)
    mp.spawn(_rank_worker, args=(_free_port(), [str(a) for a in args], str(logs)), nprocs=2)
    return [(logs / f"rank{rank}.txt").read_text() for rank in range(2)]


@pytest.mark.slow
def test_two_ranks_embed_and_index_like_one(rag_world: RagWorld, tmp_path: Path) -> None:
    data = rag_world.root / "caption" / "train.jsonl"
    common = [
        "--model",
        rag_world.bundle,
        "--data",
        data,
        "--root",
        rag_world.root,
        "--batch-size",
        "4",
    ]
    # every prefix (ids DOC#POSITION), so the shards hold several rows per sample
    _run("embed", *common, "--prefixes", "--out", tmp_path / "one.npz")
    _two_ranks(["embed", *common, "--prefixes", "--out", tmp_path / "two.npz"], tmp_path / "logs")
    with np.load(tmp_path / "one.npz") as one, np.load(tmp_path / "two.npz") as two:
        assert one["ids"].tolist() == two["ids"].tolist() and len(one["ids"]) > 12
        assert one["ids"][0].endswith("#0")
        np.testing.assert_allclose(two["vectors"], one["vectors"], atol=1e-6, rtol=0)
    _run("embed", *common, "--out", tmp_path / "plain.npz")
    with np.load(tmp_path / "plain.npz") as plain:
        single = plain["vectors"]
    assert not (tmp_path / "two.npz.shards").exists()  # removed after the merge

    # index build under 2 ranks, one shard already finished by an earlier (killed) job: rank 0
    # must skip it, so the index holds the marked vectors of that shard, not recomputed ones
    fingerprint = {
        "data_sha256": sha256_file(data),
        "model_identity": bundle_identity(rag_world.bundle),
        "prefixes": False,
        "preprocessing": PREPROCESSING,
    }
    samples = json.loads("[" + ",".join(data.read_text().splitlines()) + "]")
    planted = single.copy()
    planted[:6] = planted[:6][::-1]  # recognisable: rank 0's rows in reverse order

    def planted_rows(chunk: Any) -> Any:
        rows = [int(np.flatnonzero([s["id"] == c["id"] for s in samples])[0]) for c in chunk]
        return [c["id"] for c in chunk], planted[rows], [c for c in chunk]

    shards = tmp_path / "kb.shards"
    embed_shard(samples, planted_rows, shards, fingerprint, Rank(0, 2), progress=False)
    logs = _two_ranks(["index", "build", tmp_path / "kb", *common], tmp_path / "logs-index")
    assert "shard-00000-of-00002.npz (samples 0-6) is finished; skipped" in logs[0]
    assert "wrote shard shard-00001-of-00002.npz" in logs[1]
    index = Index.load(tmp_path / "kb")
    assert index.ids() == [s["id"] for s in samples]
    hits = index.search(planted[:6], k=1)
    assert [h[0]["id"] for h in hits] == [s["id"] for s in samples[:6]]
    rest = index.search(single[6:], k=1)
    assert [h[0]["id"] for h in rest] == [s["id"] for s in samples[6:]]
