"""The demo's schedule: Sugar's evaluation in two halves of about equal cost."""

from __future__ import annotations

import pytest

from sugar.eval.tasks import TASKS
from sugar.recipes.demo import EVAL_COST, _InProcess, balanced_halves


def test_the_halves_cover_every_task_once_in_order_and_balance_the_cost() -> None:
    tasks = list(TASKS)
    first, second = balanced_halves(tasks)
    assert sorted(first + second) == sorted(tasks) and not set(first) & set(second)
    assert first == [t for t in tasks if t in first] and second == [t for t in tasks if t in second]
    costs = [sum(EVAL_COST.get(t, 5.0) for t in half) for half in (first, second)]
    assert abs(costs[0] - costs[1]) <= max(EVAL_COST.values())  # greedy: within one task
    assert balanced_halves(["new_task"]) == (["new_task"], [])  # unknown tasks still scheduled


def test_the_in_process_pool_hands_errors_to_result() -> None:
    def fail() -> None:
        raise ValueError("boom")

    assert _InProcess().submit(lambda a, b: a + b, 1, 2).result() == 3
    with pytest.raises(ValueError, match="boom"):
        _InProcess().submit(fail).result()
