"""Issue 18 items 2-5 in the loop: one writer per run directory, a fresh run never appends to a
killed run's log, resume compares configs, finite numbers or a clear stop."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sugar.config import ConfigError, load_config
from sugar.locks import BusyError
from sugar.train.checkpoint import latest_checkpoint, load_checkpoint
from sugar.train.guard import NonFiniteError
from sugar.train.loop import train
from tests.train.conftest import tiny_config
from tests.train.fake_teacher import FakeTeacher

HOLD = """
import sys, time
from pathlib import Path
from sugar.locks import holding
directory = Path(sys.argv[1])
with holding(directory, 0, "run directory", lock_file=directory / ".sugar-lock"):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_second_writer_of_a_run_directory_is_refused(loop_world: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cfg = tiny_config(loop_world, run_dir, "train.steps=1")
    train(cfg, teacher=FakeTeacher(), progress=False)  # the directory is sugar's
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        log = (run_dir / "log.jsonl").read_text()
        with pytest.raises(BusyError, match="another sugar process is writing this run"):
            train(cfg, resume=True, teacher=FakeTeacher(), progress=False)
        assert (run_dir / "log.jsonl").read_text() == log  # nothing touched
    finally:
        holder.kill()
        holder.wait()


def test_a_fresh_run_never_appends_to_a_killed_runs_log(loop_world: Path, tmp_path: Path) -> None:
    cfg = tiny_config(loop_world, tmp_path / "r", "train.steps=4", "train.checkpoint_every=0",
                      "train.eval_every=0")  # fmt: skip
    first = train(cfg, teacher=FakeTeacher(), progress=False, stop_after=2)  # killed: no checkpoint
    assert first.step == 2 and latest_checkpoint(tmp_path / "r") is None
    train(cfg, teacher=FakeTeacher(), progress=False)
    log = [json.loads(x) for x in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in log if "loss" in x] == [1, 2, 3, 4]


def test_a_failed_run_leaves_no_empty_directory(loop_world: Path, tmp_path: Path) -> None:
    cfg = tiny_config(loop_world, tmp_path / "gone", "data.train=[nope.jsonl]")
    with pytest.raises(FileNotFoundError):
        train(cfg, teacher=FakeTeacher(), progress=False)
    assert not (tmp_path / "gone").exists()
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "results.csv").write_text("x")
    with pytest.raises(FileExistsError, match="not written by sugar"):
        train(tiny_config(loop_world, tmp_path / "theirs"), teacher=FakeTeacher(), progress=False)
    assert [p.name for p in (tmp_path / "theirs").iterdir()] == ["results.csv"]


def test_resume_compares_configs(loop_world: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "c"
    cfg = tiny_config(loop_world, run_dir, "train.eval_every=0")
    train(cfg, teacher=FakeTeacher(), progress=False, stop_after=3)
    record = (run_dir / "config.yaml").read_text()
    wider = tiny_config(loop_world, run_dir, "train.eval_every=0", "model.width=48")
    with pytest.raises(ValueError, match=r"model.width: 32 -> 48"):
        train(wider, resume=True, teacher=FakeTeacher(), progress=False)
    assert (run_dir / "config.yaml").read_text() == record  # a failed resume rewrites nothing
    slower = tiny_config(loop_world, run_dir, "train.eval_every=0", "train.lr=0.0001")
    with pytest.raises(ValueError, match="--allow-changes"):
        train(slower, resume=True, teacher=FakeTeacher(), progress=False)
    result = train(slower, resume=True, teacher=FakeTeacher(), progress=False, allow_changes=True)
    assert result.step == 6
    log = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    changes = [x for x in log if "config_changes" in x]
    assert changes == [{"step": 3, "config_changes": {"train.lr": [0.001, 0.0001]}}]
    assert "lr: 0.0001" in (run_dir / "config.yaml").read_text()


def test_a_diverging_run_stops_at_the_first_non_finite_step(
    loop_world: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "nan"
    changes = ["train.lr=1e8", "train.clip_norm=0", "train.checkpoint_every=1"]
    cfg = tiny_config(loop_world, run_dir, *changes, "train.eval_every=0", "train.warmup_ratio=0")
    with pytest.raises(NonFiniteError, match=r"step \d+: non-finite") as caught:
        train(cfg, teacher=FakeTeacher(), progress=False)
    assert not (run_dir / "model").exists() and not (run_dir / "best").exists()
    bad_step = int(str(caught.value).split()[1].rstrip(":"))
    last = latest_checkpoint(run_dir)
    if last is not None:  # the last checkpoint is the last good state
        assert int(last.name.split("-")[1]) == bad_step - 1
        state = load_checkpoint(last)
        assert all(bool(torch.isfinite(t).all()) for t in state["model"].values())


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "1e400"])
def test_the_config_refuses_non_finite_numbers(value: str) -> None:
    with pytest.raises(ConfigError, match=r"train\.lr=.*must be a finite number"):
        load_config(None, [f"train.lr={value}"])
