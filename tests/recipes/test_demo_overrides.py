"""``sugar demo KEY=VALUE``: an override of the built-in model replaces the recipe's value, one of
a field the recipe sets itself is refused before anything is written (it was once replaced
silently: ``model.grid=4`` ran at grid 1), and the overrides are stamped so that a directory's
finished stages are reused only by a demo with the same ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sugar.cli import app
from sugar.config import load_config
from sugar.recipes.demo import BENCH_FIELDS, BUILT_IN, recipe_overrides, run_demo
from sugar.strict import ConfigError


def test_recipe_fields_are_refused_and_model_fields_are_the_users() -> None:
    assert recipe_overrides([]) == set()
    assert recipe_overrides(["model.grid=2", "model.image_size=64", "structure.alpha=3"]) == {
        "grid", "image_size",
    }  # fmt: skip
    assert set(BUILT_IN) >= {"grid", "image_size", "family", "autocast"}
    with pytest.raises(ConfigError, match=r"^run.seed, train.steps, world.test_per_task: "):
        recipe_overrides(["train.steps=3", "model.grid=2", "run.seed=1", "world.test_per_task=9"])
    recipe_overrides(["structure.alpha=3"])  # the demo's Sugar takes alpha from the config
    with pytest.raises(ConfigError, match=r"structure\.alpha"):  # the bench tunes it
        recipe_overrides(["structure.alpha=3"], BENCH_FIELDS)


def test_the_cli_refuses_a_recipe_field_before_writing_anything(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--smoke", "--out", str(out), "train.lr=0.1"])
    assert result.exit_code == 2
    assert "train.lr: the recipe sets this itself in every run" in result.output
    assert not out.exists()
    bench = CliRunner().invoke(
        app, ["bench", "quality", "--smoke", "--out", str(out), "contrastive.weight=2"]
    )
    assert bench.exit_code == 2 and "contrastive.weight: the recipe sets" in bench.output
    assert not out.exists()


@pytest.mark.slow
def test_a_model_override_reaches_every_run_and_is_stamped(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    overrides = ["model.grid=1", "model.image_size=64"]  # the smoke size's built-in: grid 1 at 128
    run_demo(out, smoke=True, config=load_config(None, overrides), overrides=overrides,
             progress=False, through_base=True, workers=1, say=lambda _: None)  # fmt: skip
    for run in ("align", "base"):
        model = load_config(out / run / "config.yaml").model
        assert (model.grid, model.image_size) == (1, 64), run
    assert json.loads((out / "demo.json").read_text()) == {
        "size": "smoke", "seed": 0, "overrides": overrides,
    }  # fmt: skip
    with pytest.raises(ValueError, match="holds a demo run with"):  # not reused at another size
        run_demo(out, smoke=True, progress=False, through_base=True, workers=1,
                 say=lambda _: None)  # fmt: skip
