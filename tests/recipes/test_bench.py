"""`sugar bench quality`: the aggregation by hand, and a smoke run through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sugar.cli import app
from sugar.recipes.bench import _choose, summarise


def _run(vqa: list[float], group: float, spread: float) -> dict:
    return {
        "vqa": {"exact_match": sum(vqa) / len(vqa), "per_item": {"exact_match": vqa}},
        "winoground": {"emb_group": group},
        "needle": {"position_spread": spread},
    }


def test_summary_pairs_seeds_and_judges_the_bars() -> None:
    runs = {
        "sugar/s0": _run([1.0, 1.0, 0.0, 0.0], 0.30, 0.02),
        "sugar/s1": _run([1.0, 0.0, 0.0, 0.0], 0.40, 0.04),
        "cafe/s0": _run([1.0, 1.0, 0.0, 0.0], 0.20, 0.10),
        "cafe/s1": _run([1.0, 0.0, 0.0, 0.0], 0.20, 0.10),
        "contrastive/s0": _run([0.0, 0.0, 0.0, 0.0], 0.10, 0.10),
    }
    summary = summarise(runs)
    wino = summary["means"]["sugar"]["winoground.emb_group"]
    assert wino["mean"] == pytest.approx(0.35) and wino["seeds"] == 2
    by_name = {r["metric"]: r for r in summary["comparisons"]["sugar - contrastive"]}
    assert by_name["exact_match"]["n"] == 4  # the one-seed variant pairs with seed 0 only
    assert by_name["exact_match"]["difference"] == pytest.approx(0.5)
    cafe = {r["metric"]: r for r in summary["comparisons"]["sugar - cafe"]}
    assert cafe["exact_match"]["n"] == 8 and cafe["exact_match"]["difference"] == 0.0
    bars = {b["bar"].split(":")[0]: b["met"] for b in summary["bars"]}
    assert bars["Winoground group (emb) >= CAFe-style + 5 points"] is True  # 0.35 vs 0.20
    assert bars["needle"] is True  # mean spread 0.03
    assert bars["KB-QA"] is None  # not measured in these runs


@pytest.mark.slow
def test_bench_quality_smoke_through_the_cli(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["bench", "quality", "--smoke", "--seeds", "2", "--workers", "1", "--out", str(tmp_path),
         "--variant", "sugar", "--variant", "cafe"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    bench = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert set(bench["runs"]) == {
        "generative/s0", "generative/s1", "cafe/s0", "cafe/s1", "sugar/s0", "sugar/s1",
        "teacher/s0",
    }  # fmt: skip
    assert len(bench["bars"]) == 5
    # the teacher alone embeds but neither scores nor generates
    assert isinstance(bench["runs"]["teacher/s0"]["caption_retrieval"]["t2i_r1"], float)
    assert bench["runs"]["teacher/s0"]["winoground"]["ll_group"] == "n/a"
    assert bench["runs"]["teacher/s0"]["vqa"] == {}
    # the tuning budget: the lr grid for all, then the weight factors at the chosen lr
    tried = bench["meta"]["tuning"]
    assert {(t["variant"], t["lr"]) for t in tried if t["variant"] == "generative"} == {
        ("generative", 1e-3),
        ("generative", 2e-3),
    }
    sugar = [t for t in tried if t["variant"] == "sugar"]
    assert len(sugar) == 3 and sum(t["chosen"] for t in sugar) == 1
    assert {t["weight"] for t in sugar} == {1.0, 3.0}
    chosen = next(t for t in sugar if t["chosen"])
    sugar_s1 = bench["meta"]["configs"]["sugar/s1"]
    assert sugar_s1["train"]["lr"] == chosen["lr"]
    assert sugar_s1["structure"]["alpha"] == chosen["weight"]
    difficulty = json.loads((tmp_path / "bench" / "difficulty.json").read_text())
    assert {row["row"] for row in difficulty["figures"]} == {"teacher", "generative"}
    text = (tmp_path / "bench" / "bench.md").read_text()
    assert "## Pre-registered bars" in text and "## Every setting tried" in text


def test_choose_prefers_the_best_then_the_default() -> None:
    trials = [
        {"value": 0.2, "default_lr": False, "dir": "a"},
        {"value": 0.3, "default_lr": False, "dir": "b"},
        {"value": 0.3, "default_lr": True, "dir": "c"},
        {"value": None, "default_lr": False, "dir": "d"},
    ]
    assert _choose(trials, "val_t2i_r1", "default_lr")["dir"] == "c"
    assert _choose(trials, "val_lm_loss", "default_lr")["dir"] == "a"  # lower is better
    trials[2]["default_lr"] = False
    assert _choose(trials, "val_t2i_r1", "default_lr")["dir"] == "b"  # then the earlier one
    with pytest.raises(ValueError, match="no trial reported"):
        _choose([{"value": None, "default_lr": True, "dir": "x"}], "val_t2i_r1", "default_lr")


def test_every_size_has_a_tuning_grid_and_an_unknown_size_is_refused(tmp_path: Path) -> None:
    from sugar.recipes.bench import GRIDS
    from sugar.recipes.demo import SIZES, run_demo

    assert set(GRIDS) == set(SIZES)
    with pytest.raises(ValueError, match="size 'huge'"):
        run_demo(tmp_path, size_name="huge", say=lambda _: None)
