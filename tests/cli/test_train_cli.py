"""`sugar validate` and `sugar train` through the real CLI on the smoke configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sugar.cli import app

REPO = Path(__file__).resolve().parents[2]
BASE_SMOKE = REPO / "configs" / "base_smoke.yaml"


@pytest.fixture(scope="module")
def smoke_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sugar.data.world import generate_world

    root = tmp_path_factory.mktemp("cli-train") / "world"
    generate_world(root, seed=2, train_per_task=40, val_per_task=8, test_per_task=2)
    return root


def test_every_shipped_config_resolves() -> None:
    configs = sorted((REPO / "configs").glob("*.yaml"))
    assert len(configs) >= 12
    names = {p.stem for p in configs}
    for path in configs:  # every config has a smoke sibling, and every smoke config a parent
        partner = (
            path.stem[: -len("_smoke")] if path.stem.endswith("_smoke") else path.stem + "_smoke"
        )
        assert partner in names, path.name
        result = CliRunner().invoke(app, ["config", "show", "-c", str(path)])
        assert result.exit_code == 0, (path.name, result.output)


def test_validate_passes_and_unknown_keys_fail(smoke_world: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", "-c", str(BASE_SMOKE), f"data.root={smoke_world}"])
    assert ok.exit_code == 0, ok.output
    assert "config valid" in ok.output
    bad = runner.invoke(app, ["validate", "-c", str(BASE_SMOKE), "train.stpes=3"])
    assert bad.exit_code == 2
    assert "train.stpes" in bad.output and "steps" in bad.output


def test_train_cli_lowers_the_loss_and_resumes(smoke_world: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [
        "train", "-c", str(BASE_SMOKE), f"data.root={smoke_world}", f"run.output_dir={run}",
        "train.steps=30", "train.batch_size=8", "train.lr=0.003", "train.eval_every=15",
        "train.checkpoint_every=15", "model.feature_cache=null",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{") :])
    assert summary["step"] == 30
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    losses = [x["lm_loss"] for x in log if "lm_loss" in x and "val_lm_loss" not in x]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "latest", "step-000015", "step-000030",
    ]  # fmt: skip
    assert (run / "model" / "model.json").is_file() and (run / "best" / "model.json").is_file()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "already holds a run" in again.output
    resumed = CliRunner().invoke(app, [*args, "--resume"])  # a finished run: nothing to do
    assert resumed.exit_code == 0, resumed.output
