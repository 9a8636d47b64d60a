"""The demo's schedule: Sugar's evaluation in two halves of about equal cost; its CPU
accounting."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sugar.eval.tasks import TASKS
from sugar.recipes.demo import EVAL_COST, _InProcess, balanced_halves, cpu_seconds


def test_the_halves_cover_every_task_once_in_order_and_balance_the_cost() -> None:
    tasks = list(TASKS)
    first, second = balanced_halves(tasks)
    assert sorted(first + second) == sorted(tasks) and not set(first) & set(second)
    assert first == [t for t in tasks if t in first] and second == [t for t in tasks if t in second]
    costs = [sum(EVAL_COST.get(t, 5.0) for t in half) for half in (first, second)]
    assert abs(costs[0] - costs[1]) <= max(EVAL_COST.values())  # greedy: within one task
    assert balanced_halves(["new_task"]) == (["new_task"], [])  # unknown tasks still scheduled


def test_cpu_seconds_count_a_child_once_it_is_waited_for() -> None:
    busy = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass"
    before = cpu_seconds()
    subprocess.run([sys.executable, "-c", busy], check=True)  # waits for the child
    after = cpu_seconds()
    assert after["workers"] - before["workers"] >= 0.5  # the child's half second, at least
    assert after["total"] - before["total"] >= 0.5
    assert after["total"] == pytest.approx(after["user"] + after["system"])


def test_the_in_process_pool_hands_errors_to_result() -> None:
    def fail() -> None:
        raise ValueError("boom")

    assert _InProcess().submit(lambda a, b: a + b, 1, 2).result() == 3
    with pytest.raises(ValueError, match="boom"):
        _InProcess().submit(fail).result()


def test_recipes_run_their_own_stages_in_one_torch_thread_and_restore_it() -> None:
    import torch

    from sugar.recipes.bench import run_quality_bench
    from sugar.recipes.demo import run_demo
    from sugar.recipes.jobs import in_one_torch_thread

    seen: list[int] = []

    @in_one_torch_thread
    def stage(fail: bool) -> None:
        seen.append(torch.get_num_threads())
        if fail:
            raise ValueError("stage failed")

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        stage(False)
        assert seen == [1] and torch.get_num_threads() == 2
        with pytest.raises(ValueError, match="stage failed"):
            stage(True)
        assert seen == [1, 1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
    for recipe in (run_demo, run_quality_bench):  # both recipes carry the wrapper
        assert getattr(recipe, "__wrapped__", None) is not None, recipe.__name__
