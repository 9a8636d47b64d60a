"""``sugar eval --tasks edit``: every editor's metrics through the task runner."""

from __future__ import annotations

import pytest

from sugar.eval.tasks import EvalModel, run_tasks
from sugar.models.tiny import TinyMLLM
from tests.edit.conftest import EditWorld


@pytest.mark.slow
def test_edit_task_reports_every_method(edit_world: EditWorld, tiny: TinyMLLM) -> None:
    model = EvalModel(tiny, None, name="tiny")
    results = run_tasks(model, edit_world.root, ["edit"], limit=2)["edit"]
    assert results["items"] == 2
    for method in ("ft", "context", "patcher", "memory", "unike"):
        assert 0.0 <= results[f"{method}_1_mean"] <= 100.0
        assert results[f"{method}_seconds_per_edit"] > 0
        assert f"{method}_10_mean" not in results  # only 2 edits: no checkpoint at 10
    assert set(results) >= {"unike_1_reliability", "unike_1_text_locality"}
