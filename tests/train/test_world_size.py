"""Resuming on another world size: a checkpoint written by one process continues on two
DistributedDataParallel ranks along the trajectory it continues on one (the batch of a step is
a pure function of (seed, step), the optimiser state is replicated). The run uses L_d, InfoNCE,
gradient accumulation (DDP's no_sync) and GradCache, so every pass of the loop's step is
exercised under DDP."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from sugar.config import config_from_dict, to_dict
from sugar.serve.load import free_port
from sugar.train.loop import train
from tests.train.conftest import tiny_config
from tests.train.fake_teacher import FakeTeacher

OVERRIDES = (
    "train.steps=4",
    "train.batch_size=4",
    "train.grad_accum=2",
    "train.retrieval_batch=2",
    "train.retrieval_interleaved=1",
    "train.embedding_chunk=3",
    "train.checkpoint_every=2",
    "train.eval_every=0",
    "train.select_metric=val_lm_loss",
    "structure.alpha=1.0",
    "contrastive.weight=1.0",
)


def _rank(rank: int, config: dict[str, Any], port: int) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )  # fmt: skip
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    train(config_from_dict(config), resume=True, teacher=FakeTeacher(), progress=False)


def _steps(run: Path) -> list[dict[str, float]]:
    lines = (run / "log.jsonl").read_text(encoding="utf-8").splitlines()
    return [record for record in map(json.loads, lines) if "loss" in record]


@pytest.mark.slow
def test_a_checkpoint_resumes_on_two_ranks_along_the_one_process_trajectory(
    loop_world: Path, tmp_path: Path
) -> None:
    one = tiny_config(loop_world, tmp_path / "one", *OVERRIDES)
    train(one, teacher=FakeTeacher(), progress=False, stop_after=2)
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    (tmp_path / "two" / ".sugar-lock").unlink(missing_ok=True)
    train(one, resume=True, teacher=FakeTeacher(), progress=False)

    two = tiny_config(loop_world, tmp_path / "two", *OVERRIDES)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(_rank, args=(to_dict(two), free_port()), nprocs=2, join=True)

    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["world_size"] == 2  # the resumed run really ran on two ranks
    single, double = _steps(tmp_path / "one"), _steps(tmp_path / "two")
    assert [r["step"] for r in single] == [r["step"] for r in double] == [1, 2, 3, 4]
    for a, b in zip(single, double, strict=True):
        for name in ("loss", "lm_loss", "structure_loss", "contrastive_loss", "grad_norm"):
            assert b[name] == pytest.approx(a[name], rel=1e-6, abs=1e-7), (a["step"], name)
