"""Worker jobs of the recipes: a data-parallel run over local processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sugar.config import to_dict
from sugar.recipes.jobs import train_on_workers
from tests.train.conftest import tiny_config


@pytest.mark.slow
def test_a_run_over_two_workers_logs_like_one_process(loop_world: Path, tmp_path: Path) -> None:
    overrides = (
        "train.steps=2",
        "train.eval_every=0",
        "train.checkpoint_every=0",
        "structure.alpha=0",
        "train.select_metric=val_lm_loss",
    )
    one = tiny_config(loop_world, tmp_path / "one", *overrides)
    two = tiny_config(loop_world, tmp_path / "two", *overrides)
    train_on_workers(to_dict(one), 1)
    train_on_workers(to_dict(two), 2)

    def losses(run: Path) -> list[float]:
        lines = (run / "log.jsonl").read_text(encoding="utf-8").splitlines()
        return [json.loads(line)["lm_loss"] for line in lines if '"lm_loss"' in line]

    assert (tmp_path / "two" / "model" / "model.json").is_file()
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-4)


def test_a_failing_rank_stops_the_run_with_its_name(tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "no-world", tmp_path / "run")
    with pytest.raises(RuntimeError, match=r"training rank \d of 2 exited"):
        train_on_workers(to_dict(config), 2)
    with pytest.raises(ValueError, match="workers=0"):
        train_on_workers(to_dict(config), 0)
