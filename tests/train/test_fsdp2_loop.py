"""``train.parallel=fsdp2`` through the training loop: two FSDP2 ranks follow the one-process
trajectory (losses, gradient norms, validation on rank 0's whole copy, the final bundle), and a
checkpoint they wrote resumes on one process along the same trajectory. The run uses L_d,
InfoNCE, gradient accumulation, GradCache and the tiny model's frozen EfficientNet (frozen and
trainable weights in FSDP2's root group), so every pass of the loop's step runs sharded."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from sugar.config import config_from_dict, to_dict
from sugar.models.tiny import WEIGHTS
from sugar.serve.load import free_port
from sugar.train.loop import train
from tests.train.conftest import tiny_config
from tests.train.fake_teacher import FakeTeacher
from tests.train.test_world_size import OVERRIDES

FSDP2 = (*OVERRIDES, "train.eval_every=2", "train.parallel=fsdp2")
LOGGED = ("loss", "lm_loss", "structure_loss", "contrastive_loss", "grad_norm")


def _rank(rank: int, runs: list[tuple[dict[str, Any], int | None]], port: int) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )  # fmt: skip
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    for config, stop_after in runs:
        cfg = config_from_dict(config)
        train(cfg, teacher=FakeTeacher(), progress=False, stop_after=stop_after)


def _records(run: Path) -> list[dict[str, Any]]:
    """The log's training and validation records (not the loss-share summary a run appends
    when it stops, which a stopped and resumed run has twice)."""
    lines = (run / "log.jsonl").read_text(encoding="utf-8").splitlines()
    return [record for record in map(json.loads, lines) if "loss_share" not in record]


def _compare(single: list[dict[str, Any]], other: list[dict[str, Any]], rel: float) -> None:
    """The same records (training steps and validations) with the same numbers (measured: at
    most 7e-7 relative, the grounding gap 8e-6 absolute)."""
    assert [sorted(r) for r in single] == [sorted(r) for r in other]
    for a, b in zip(single, other, strict=True):
        for name, value in a.items():
            if name != "time" and isinstance(value, float):
                # the grounding gap is a difference of two NLLs of about 5, each within ~1e-6
                tolerance = 2e-5 if name == "val_grounding_nll_gap" else 1e-7
                assert b[name] == pytest.approx(value, rel=rel, abs=tolerance), (a["step"], name)


@pytest.mark.slow
def test_fsdp2_follows_one_process_and_its_checkpoint_resumes_on_one(
    loop_world: Path, tmp_path: Path
) -> None:
    one = tiny_config(loop_world, tmp_path / "one", *OVERRIDES, "train.eval_every=2")
    train(one, teacher=FakeTeacher(), progress=False)

    sharded = tiny_config(loop_world, tmp_path / "sharded", *FSDP2)
    stopped = tiny_config(loop_world, tmp_path / "resumed", *FSDP2)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    runs = [(to_dict(sharded), None), (to_dict(stopped), 2)]
    mp.spawn(_rank, args=(runs, free_port()), nprocs=2, join=True)
    manifest = json.loads((tmp_path / "sharded" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["world_size"] == 2  # the sharded runs really ran on two ranks

    # float32 sums in another order (ranks, all-gathers, reduce-scatters) over 4 AdamW steps
    single = _records(tmp_path / "one")
    assert [r["step"] for r in single if "loss" in r] == [1, 2, 3, 4]
    assert sum("val_lm_loss" in r for r in single) == 2
    _compare(single, _records(tmp_path / "sharded"), rel=1e-5)
    bundle, sharded_bundle = (
        load_file(tmp_path / run / "model" / WEIGHTS) for run in ("one", "sharded")
    )
    assert bundle.keys() == sharded_bundle.keys()
    for name, tensor in bundle.items():
        # a key bias has an analytic gradient of zero (softmax ignores it): its rounding noise,
        # normalised by AdamW, moves it by up to ~1e-6 (measured 1.1e-6) in either run; a wrong
        # update would be off by the order of lr = 1e-3 per step
        torch.testing.assert_close(
            sharded_bundle[name], tensor, rtol=1e-4, atol=5e-6, msg=lambda m, n=name: f"{n}: {m}"
        )

    # the checkpoint the stopped FSDP2 run wrote at step 2, resumed on one process
    assert not (tmp_path / "resumed" / "model").exists()
    resumed = tiny_config(loop_world, tmp_path / "resumed", *FSDP2)
    train(resumed, resume=True, teacher=FakeTeacher(), progress=False)
    _compare(single, _records(tmp_path / "resumed"), rel=1e-5)
