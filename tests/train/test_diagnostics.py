"""Target diagnostics: hand-checkable pieces and a run over validation batches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sugar.data.jsonl import read_samples
from sugar.train.diagnostics import inspect_targets, length_r2, unfittable_mse
from tests.train.fake_teacher import FakeTeacher


def test_length_r2_is_zero_when_lengths_explain_nothing() -> None:
    values = torch.tensor([1.0, 3.0, 1.0, 3.0])
    n, m = torch.tensor([1, 1, 2, 2]), torch.tensor([1, 1, 1, 1])
    assert length_r2(values, n, m) == pytest.approx(0.0)
    assert length_r2(values, m, n) == pytest.approx(0.0)  # unordered pairs


def test_unfittable_mse_by_hand() -> None:
    # prefixes 0 and 1 of sample 0 must share a vector; against prefix 2 (sample 1) their
    # targets are 0.2 and 0.6: the best shared prediction 0.4 leaves 0.2^2 = 0.04 per entry
    target = torch.tensor([[1.0, 1.0, 0.2], [1.0, 1.0, 0.6], [0.2, 0.6, 1.0]])
    value, terms = unfittable_mse(target, torch.tensor([0, 0, 1]), torch.ones(3, dtype=torch.bool))
    assert value == pytest.approx(0.04) and terms == 1


def test_inspect_reports_every_setting(loop_world: Path) -> None:
    samples = read_samples(loop_world / "caption" / "val.jsonl", loop_world)
    samples += read_samples(loop_world / "story" / "val.jsonl", loop_world)
    rows = inspect_targets(
        samples, loop_world, FakeTeacher(), delta=1.0, medians=None, batch_size=8,
        prefixes_per_sample=2, view_weights={"as_is": 1.0, "split": 1.0}, max_batches=2,
    )  # fmt: skip
    assert len(rows) == 6
    assert {(r["normalisation"], r["triple_kernel"]) for r in rows} == {
        (n, t) for n in ("cosine", "length", "length_pair_standardised") for t in (True, False)
    }
    for row in rows:
        assert row["entries"] > 0
        assert 0.0 <= row["length_r2"] <= 1.0
        assert 0.0 <= row["below_floor_local"] <= 1.0


def test_inspect_uses_the_runs_target_slope_for_the_logistic_only(loop_world: Path) -> None:
    samples = read_samples(loop_world / "caption" / "val.jsonl", loop_world)
    options = dict(delta=1.0, medians=None, batch_size=8, prefixes_per_sample=2,
                   view_weights={"as_is": 1.0, "split": 1.0}, max_batches=2)  # fmt: skip
    one = inspect_targets(samples, loop_world, FakeTeacher(), target_slope=1.0, **options)  # type: ignore[arg-type]
    flat = inspect_targets(samples, loop_world, FakeTeacher(), target_slope=0.25, **options)  # type: ignore[arg-type]
    for a, b in zip(one, flat, strict=True):
        if a["normalisation"] == "length_pair_standardised":
            assert b["target_std"] < a["target_std"]
        else:
            assert a == b
