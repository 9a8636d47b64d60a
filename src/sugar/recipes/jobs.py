"""Training and evaluation jobs for worker processes, as the recipes run them.

- :func:`train_and_evaluate`: one run and its evaluation (of every task, or of some) in one
  worker (``sugar bench quality`` runs its variants in a pool of these; ``sugar demo`` its
  fine-tunes and their evaluations);
- :func:`evaluate_teacher`: the frozen offline teacher alone on every task;
- :func:`train_until`: the first steps of a run in one worker, checkpointed for
  :func:`train_on_workers` to resume (``sugar demo``'s Sugar run, once both workers are free);
- :func:`train_on_workers`: one run as data-parallel training over N local processes
  (:mod:`sugar.train.distributed`, gloo), what ``torchrun --nproc_per_node N -m sugar.cli
  train`` does, without needing the launcher.

A job takes and returns plain data (a config as a dict, results as dicts), so it crosses a
``spawn`` process boundary; each process uses one torch thread, so N workers use N cores.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Sequence
from multiprocessing import get_context
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from sugar.config import SugarConfig, config_from_dict
from sugar.eval.tasks import TASKS, load_eval_model, run_tasks
from sugar.io import read_log
from sugar.owned import remove_owned
from sugar.serve.load import free_port

__all__ = [
    "clear_unfinished",
    "evaluate_teacher",
    "finished",
    "in_one_torch_thread",
    "last_validation",
    "paused_at",
    "train_and_evaluate",
    "train_on_workers",
    "train_until",
]

P = ParamSpec("P")
R = TypeVar("R")


def in_one_torch_thread(function: Callable[P, R]) -> Callable[P, R]:
    """``function`` run with one torch thread (the previous number restored after it): a
    recipe's own stages (the world, the teacher head) then use one core, as each of its worker
    processes does. Measured: with torch's default of 2 threads while another process held one
    of the 2 cores, the demo's teacher head took 1 s per step instead of 20 ms."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return function(*args, **kwargs)
        finally:
            torch.set_num_threads(previous)

    return wrapper


def last_validation(run_dir: Path) -> dict[str, float]:
    """The last validation record of a run's ``log.jsonl`` (``{}`` when it has none)."""
    found: dict[str, float] = {}
    log = run_dir / "log.jsonl"
    if log.is_file():
        for record in read_log(log):  # a torn last line (a killed run) is dropped
            if any(key.startswith("val_") for key in record):
                found = {k: v for k, v in record.items() if k.startswith("val_")}
    return found


def train_and_evaluate(
    config: dict[str, Any],
    root: str,
    limit: int,
    split: str | None,
    name: str | None = None,
    tasks: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Train ``config`` (unless its bundle exists), then evaluate ``tasks`` (default: every
    task) on ``split`` (``None``: no task evaluation; ``name`` labels the model in the
    results). The model reads and fills the run's feature cache (``model.feature_cache``).
    Returns the results, the run's last validation figures and the wall times."""
    import torch

    from sugar.train.loop import train

    torch.set_num_threads(1)
    cfg: SugarConfig = config_from_dict(config)
    run_dir = Path(cfg.run.output_dir)
    start = time.perf_counter()
    if not finished(run_dir):
        clear_unfinished(run_dir)
        train(cfg, progress=False)
    trained = time.perf_counter() - start
    results = None
    if split is not None:
        model = load_eval_model(run_dir / "model", name, cfg.model.feature_cache)
        results = run_tasks(model, root, list(tasks or TASKS), split=split, limit=limit)
        model.backbone.flush_caches()  # the next job in this worker may need the same images
    return {"results": results, "validation": last_validation(run_dir),
            "train_s": round(trained, 1),
            "eval_s": round(time.perf_counter() - start - trained, 1)}  # fmt: skip


def evaluate_teacher(head_dir: str, cache_dir: str, root: str, limit: int) -> dict[str, Any]:
    """The frozen offline teacher alone (its head in ``head_dir``, its features cached in
    ``cache_dir``) on every task of the test split: the reference row of the embedding tasks
    (:class:`~sugar.teachers.sensitivity.TeacherEvalModel`; generation tasks are n/a). Returns
    the results and the wall time."""
    import torch

    from sugar.teachers.sensitivity import TeacherEvalModel

    torch.set_num_threads(1)
    start = time.perf_counter()
    model = TeacherEvalModel.offline(head_dir, cache_dir)
    results = run_tasks(model, root, list(TASKS), split="test", limit=limit)
    return {"results": results, "eval_s": round(time.perf_counter() - start, 1)}


def train_until(config: dict[str, Any], pause_at: int) -> dict[str, Any]:
    """Train ``config`` in this process to step ``pause_at`` and checkpoint it there, for
    :func:`train_on_workers` to resume (``sugar.train.loop.train``'s ``pause_at``); nothing
    when the run already has a checkpoint that far or its bundle. An unfinished run with no
    such checkpoint starts again. Returns the wall time (``train_s``)."""
    import torch

    from sugar.train.loop import train

    torch.set_num_threads(1)
    cfg: SugarConfig = config_from_dict(config)
    run_dir = Path(cfg.run.output_dir)
    start = time.perf_counter()
    if not finished(run_dir) and paused_at(run_dir) < pause_at:
        clear_unfinished(run_dir)
        train(cfg, progress=False, pause_at=pause_at)
    return {"train_s": round(time.perf_counter() - start, 1)}


def finished(run_dir: Path) -> bool:
    """Whether a run has written its final bundle."""
    return (run_dir / "model" / "model.json").is_file()


def clear_unfinished(run_dir: Path) -> None:
    """Remove what an unfinished run (a killed recipe) wrote, and only that, so that it starts
    again."""
    if run_dir.exists():
        remove_owned(run_dir)


def paused_at(run_dir: Path) -> int:
    """The step of a run's latest checkpoint (0 when it has none)."""
    from sugar.train.checkpoint import latest_checkpoint

    found = latest_checkpoint(run_dir) if run_dir.is_dir() else None
    return int(found.name.split("-")[1]) if found is not None else 0


def _train_rank(config: dict[str, Any], rank: int, world: int, port: int, resume: bool) -> None:
    import torch

    from sugar.train.loop import train

    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    torch.set_num_threads(1)
    train(config_from_dict(config), resume=resume, progress=False)


def train_on_workers(config: dict[str, Any], workers: int, *, resume: bool = False) -> None:
    """Train ``config`` as one data-parallel run over ``workers`` local processes (1: in this
    process). The loss and the gradients are those of one process over the same global batch
    (:mod:`sugar.train.distributed`); rank 0 writes the run directory. ``resume``: continue
    the run's latest checkpoint, whatever world size wrote it. When a rank fails, the
    others are stopped (none waits in a collective forever) and ``RuntimeError`` names it."""
    if workers < 1:
        raise ValueError(f"workers={workers}: must be >= 1")
    if workers == 1:
        from sugar.train.loop import train

        train(config_from_dict(config), resume=resume, progress=False)
        return
    context = get_context("spawn")
    port = free_port()
    ranks = [
        context.Process(target=_train_rank, args=(config, rank, workers, port, resume))
        for rank in range(workers)
    ]
    for process in ranks:
        process.start()
    try:
        running = list(ranks)
        while running:
            for sentinel in wait([p.sentinel for p in running]):
                process = next(p for p in running if p.sentinel == sentinel)
                process.join()
                running.remove(process)
                if process.exitcode != 0:
                    rank = ranks.index(process)
                    raise RuntimeError(
                        f"training rank {rank} of {workers} exited with status "
                        f"{process.exitcode} (its error is printed above): "
                        f"{config['run']['output_dir']}"
                    )
    finally:
        for process in ranks:
            if process.is_alive():
                process.terminate()
                process.join()
