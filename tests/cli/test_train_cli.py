"""`sugar validate` and `sugar train` through the real CLI on the base config at smoke size
(``-c configs/base.yaml -c configs/smoke.yaml``)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from sugar.cli import app

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke.yaml"
BASE_SMOKE = ["-c", str(REPO / "configs" / "base.yaml"), "-c", str(SMOKE)]


def test_every_shipped_config_resolves_alone_and_at_smoke_size() -> None:
    from sugar.config import load_config

    configs = sorted(p for p in (REPO / "configs").glob("*.yaml") if p != SMOKE)
    assert len(configs) >= 6
    for path in configs:
        result = CliRunner().invoke(app, ["config", "show", "-c", str(path)])
        assert result.exit_code == 0, (path.name, result.output)
        full, smoke = load_config(path), load_config([path, SMOKE])
        # the overlay keeps the variant and changes the size and the place of every run path
        assert smoke.loss_weights() == full.loss_weights(), path.name
        assert smoke.structure == full.structure and smoke.data.train == full.data.train
        assert (smoke.model.family, smoke.model.width, smoke.train.steps) == ("tiny", 32, 4)
        assert smoke.run.output_dir == full.run.output_dir.replace("runs/", "runs/smoke/", 1)
        assert smoke.run.output_dir.startswith("runs/smoke/"), path.name
        assert smoke.data.root == "runs/smoke/world"
        assert smoke.teacher.head_dir == "runs/smoke/teacher"
        assert smoke.train.init_from in (None, "runs/smoke/base/model"), path.name
        assert (full.train.init_from is None) == (smoke.train.init_from is None)


def test_sugar_infonce_is_sugar_plus_infonce() -> None:
    """``configs/sugar_infonce.yaml`` stays Sugar's config with InfoNCE added (and its own lr
    and alpha, chosen on validation): any other drift from ``configs/sugar.yaml`` would
    confound the comparison the README reports."""
    from sugar.config import load_config, to_dict
    from sugar.recipes.bench import VARIANTS, WEIGHTS

    sugar, hybrid = (
        to_dict(load_config(REPO / "configs" / f"{n}.yaml")) for n in ("sugar", "sugar_infonce")
    )
    differing = {
        (section, key)
        for section in sugar
        for key in sugar[section]
        if sugar[section][key] != hybrid[section][key]
    }
    assert differing == {
        ("run", "output_dir"), ("contrastive", "weight"), ("train", "lr"), ("structure", "alpha")
    }  # fmt: skip
    weights = load_config(REPO / "configs" / "sugar_infonce.yaml").loss_weights()
    assert (weights.lm, weights.alpha, weights.contrastive) == (1.0, 0.3, 1.0)
    assert VARIANTS["sugar_infonce"] == {
        "structure": {"alpha": 1.0},
        "contrastive": {"weight": 1.0},
    }
    assert WEIGHTS["sugar_infonce"] == WEIGHTS["sugar"]


def test_validate_passes_and_unknown_keys_fail(smoke_world: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", *BASE_SMOKE, f"data.root={smoke_world}"])
    assert ok.exit_code == 0, ok.output
    assert "config valid" in ok.output
    bad = runner.invoke(app, ["validate", *BASE_SMOKE, "train.stpes=3"])
    assert bad.exit_code == 2
    assert "train.stpes" in bad.output and "steps" in bad.output
    distil = REPO / "configs" / "sugar_distil.yaml"
    missing = runner.invoke(
        app, ["validate", "-c", str(distil), "-c", str(SMOKE), f"data.root={smoke_world}",
              f"teacher.options={{path: {smoke_world / 'no-such-run'}}}"],
    )  # fmt: skip
    assert missing.exit_code != 0 and "teacher.options.path" in missing.output


def test_train_cli_lowers_the_loss_and_resumes(smoke_world: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [
        "train", *BASE_SMOKE, f"data.root={smoke_world}", f"run.output_dir={run}",
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
