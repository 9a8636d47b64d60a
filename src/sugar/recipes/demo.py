"""``sugar demo``: the whole method on the built-in world, end to end, on a CPU.

world -> teacher head -> shared generative base -> Sugar and generative-only fine-tunes from it
(same data, steps, lr, seed) -> evaluation on the test split, with the frozen teacher alone as
the reference row of the embedding tasks -> report. Each stage prints its
wall time; stages whose output already exists in ``out`` (a world, a teacher, a finished run)
are reused, so a second ``sugar demo`` goes straight to what is missing. ``workers`` one-thread
processes (default 2, one per core of the reference machine) share the work: the base is
data-parallel over all of them; with 2 or 3 workers the two fine-tunes then run side by side,
one process each (no gradient exchange): generative-only trains and is evaluated, then the
teacher alone is evaluated on its worker while Sugar, the longest run, trains to step
``join_at`` (``SIZES``); Sugar's run then resumes from its checkpoint there, data-parallel
over all the workers (the same batches; each rank draws its own dropout masks,
:func:`sugar.train.run.seed_step`; the step is fixed, so the demo stays reproducible), and
its evaluation runs as two halves of the tasks on both workers. With 4 or more workers, each
fine-tune is data-parallel over all workers in turn, and the evaluations follow on two
workers in the same order. Every run and evaluation reads and fills one cache of the frozen
image features (``cache/vision``; the teacher keeps its own), so each encodes only the images
that no earlier one did.

Sizes (``SIZES``): ``demo`` is the main job (its wall time is in the README); ``long``
(``sugar bench quality --size long``) trains the base 3x and the fine-tunes 2x longer on 2.5x
the data; ``smoke`` takes seconds and only shows that every stage runs (its figures mean
nothing). With ``align_steps``, an alignment stage (the trunk frozen) runs before the base,
which starts from it. The full, multi-seed comparison with every variant is
``sugar bench quality`` (issue 10).
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from sugar.config import SugarConfig, load_config, to_dict
from sugar.data.world import generate_world
from sugar.eval.report import headline_table, write_report
from sugar.eval.tasks import TASKS
from sugar.io import atomic_write_json, host_facts, sha256_file
from sugar.owned import claim_directory
from sugar.recipes.jobs import (
    clear_unfinished,
    evaluate_teacher,
    finished,
    in_one_torch_thread,
    train_and_evaluate,
    train_on_workers,
    train_until,
)
from sugar.strict import ConfigError, parse_override
from sugar.teachers.training import head_options, train_teacher
from sugar.train.loop import train

__all__ = ["SIZES", "cpu_seconds", "run_demo"]

BUILT_IN = {"family": "minilm", "image_size": 128, "grid": 1, "autocast": "auto"}
"""The built-in MLLM of the demo: the pretrained MiniLM trunk (sugar.models.minilm), one token
per image from 128 px features (issue 17: the from-scratch ``tiny`` trunk ignored its images
and never learned to embed at this budget), in bfloat16 where the CPU computes it natively
(sugar.models.precision)."""
STRUCTURE = {"structure_reduction": "paper", "slice_text_by": "segment"}
"""L_d as the paper sums it, (1/n) sum_ij (issue 17, validation t2i R@1 after 50 Sugar steps from
the demo's base: 8.0 % with ``paper``, 2.5 % with ``mean``, whose gradient is n = 320 times
smaller at this retrieval batch); each text segment one slice, not each sentence (issue 17,
seventh session: a teacher ranks the world's two-sentence captions far worse from one sentence
than from the whole caption; over 3 seeds on validation, story 5c+4i R@1 +5.8 [+2.8, +9.0] and
KB fact +6.8 [+4.3, +9.3], caption t2i +2.5 [-1.7, +6.7]; README, "A stronger teacher")."""
RETRIEVAL = {"retrieval_batch": 64, "retrieval_interleaved": 8}
"""Every fine-tune's retrieval micro-batch: 64 image-caption pairs and 8 story / knowledge-key
pairs per step (sugar.train.retrieval); generative runs draw the same generative batches."""

RECIPE_FIELDS = frozenset({
    "run.output_dir", "run.torch_threads", "run.seed", "data.root", "data.train", "data.val",
    "model.feature_cache", "model.freeze_trunk", "teacher.head_dir", "teacher.cache_dir",
    "teacher.steps", "structure.structure_reduction", "structure.slice_text_by",
    "train.batch_size", "train.eval_every", "train.checkpoint_every", "train.log_every",
    "train.eval_samples", "train.retrieval_batch", "train.retrieval_interleaved", "train.steps",
    "train.lr", "train.select_metric", "train.init_from",
})  # fmt: skip
"""The fields ``sugar demo`` sets itself in every run (from ``--out``, ``--seed`` and
:data:`SIZES`), and every ``world.`` field: a ``KEY=VALUE`` override of one is refused
(:func:`recipe_overrides`), never silently replaced. The built-in model's fields
(:data:`BUILT_IN`) are not among them: an override of one replaces the recipe's value."""
BENCH_FIELDS = RECIPE_FIELDS | {"structure.alpha", "contrastive.weight", "train.lm_weight"}
"""``sugar bench quality`` also sets each variant's losses and tunes their weights."""


def recipe_overrides(overrides: Sequence[str], fields: frozenset[str] = RECIPE_FIELDS) -> set[str]:
    """The built-in model's fields (:data:`BUILT_IN`) that ``overrides`` (``KEY=VALUE``) set,
    whose values then come from the config instead of the recipe's sizes; raises
    :class:`~sugar.strict.ConfigError` naming every override of a field the recipe sets
    itself (``fields``, and ``world.``).

    >>> sorted(recipe_overrides(["model.grid=2", "structure.alpha=0.5"]))
    ['grid']
    >>> recipe_overrides(["train.steps=10"])
    Traceback (most recent call last):
    ...
    sugar.strict.ConfigError: train.steps: the recipe sets this itself in every run ...
    """
    keys = [".".join(parse_override(text)[0]) for text in overrides]
    fixed = sorted(k for k in keys if k in fields or k.startswith("world."))
    if fixed:
        raise ConfigError(
            f"{', '.join(fixed)}: the recipe sets {'this' if len(fixed) == 1 else 'these'} "
            "itself in every run (from --out, --seed and its size, sugar.recipes.demo.SIZES); "
            "to change it, train from a run's resolved config: sugar train -c "
            "OUT/<run>/config.yaml KEY=VALUE"
        )
    model = [k.removeprefix("model.") for k in keys if k.startswith("model.")]
    return {k for k in model if k in BUILT_IN}


SIZES: dict[str, dict[str, Any]] = {
    "demo": {
        # four VQA questions per training image (no new image): VQA is bound by the number of
        # distinct questions (README, Evaluation, "VQA is a matter of distinct questions")
        "world": {
            "train_per_task": 400,
            "val_per_task": 200,
            "test_per_task": 200,
            "train_vqa_per_image": 4,
        },
        "teacher_steps": 300,
        "align_steps": 0,
        "base_steps": 150,
        "base_batch_size": 32,
        "tune_steps": 225,  # Sugar reaches the teacher by then (validation; README, demo)
        # side by side, Sugar trains alone to this step, about when generative-only's training
        # and evaluation and the teacher's evaluation free the other worker (README, demo)
        "join_at": 90,
        "batch_size": 16,
        "model": BUILT_IN,
        "train": RETRIEVAL,
        "structure": STRUCTURE,
        "eval_limit": 200,
    },
    "long": {
        "world": {"train_per_task": 1000, "val_per_task": 200, "test_per_task": 200},
        "teacher_steps": 600,
        "align_steps": 0,
        "base_steps": 450,
        "base_batch_size": 32,
        "tune_steps": 450,
        "join_at": 150,
        "batch_size": 16,
        "model": BUILT_IN,
        "train": RETRIEVAL,
        "structure": STRUCTURE,
        "eval_limit": 200,
    },
    "smoke": {
        "world": {"train_per_task": 24, "val_per_task": 6, "test_per_task": 8},
        "teacher_steps": 20,
        "align_steps": 2,
        "base_steps": 3,
        "base_batch_size": 4,
        "tune_steps": 3,
        "join_at": 1,
        "batch_size": 4,
        "model": BUILT_IN,
        "train": {"retrieval_batch": 4, "retrieval_interleaved": 2},
        "structure": STRUCTURE,
        "eval_limit": 8,
    },
}


def recipe_size(
    name: str, overrides: Sequence[str] = (), fields: frozenset[str] = RECIPE_FIELDS
) -> dict[str, Any]:
    """Size ``name`` of :data:`SIZES` (``ValueError`` for an unknown one) without the built-in
    model fields that ``overrides`` set, whose values then come from the config; an override
    of one of ``fields`` is refused (:func:`recipe_overrides`)."""
    if name not in SIZES:
        raise ValueError(f"size {name!r}: one of {sorted(SIZES)}")
    own_model = recipe_overrides(overrides, fields)
    size = SIZES[name]
    if not own_model:
        return size
    return {**size, "model": {k: v for k, v in size["model"].items() if k not in own_model}}


TRAIN_FILES = [
    "caption/train.jsonl",
    "story/train.jsonl",
    "vqa/train.jsonl",
    "pope/train.jsonl",
    "needle/train.jsonl",
    "kb/train.jsonl",
]
"""Every training file of the world (knowledge-base samples show their fact in context: they
teach reading a supplied fact, which retrieval-augmented answers need)."""


def cpu_seconds() -> dict[str, float]:
    """User and system CPU seconds used so far by this process and by every child process it
    has waited for (the demo's workers are all joined before its report is written), their
    total, and the children's share of it (``workers``). Beside the wall time they show the
    work done whatever else shared the cores, and how well the workers overlapped."""
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    user, system = own.ru_utime + children.ru_utime, own.ru_stime + children.ru_stime
    workers = children.ru_utime + children.ru_stime
    return {"user": user, "system": system, "total": user + system, "workers": workers}


def stage(name: str, timings: dict[str, float], say: Callable[[str], None]) -> Callable[[], None]:
    start = time.perf_counter()
    say(f"[demo] {name} ...")

    def done() -> None:
        timings[name] = round(time.perf_counter() - start, 1)
        say(f"[demo] {name}: {timings[name]} s")

    return done


EVAL_COST = {
    "hard_negatives": 22.0, "needle": 14.7, "kb_qa": 6.3, "story_retrieval": 5.9,
    "winoground": 4.7, "grounding": 3.1, "instructed": 2.6, "caption_retrieval": 2.3,
    "vqa": 1.0, "pope": 0.8,
}  # fmt: skip
"""CPU seconds of each task for the demo's Sugar model (200 items, warm feature cache, one
thread; measured for issue 17): the two halves of its evaluation are balanced with them (a
task not listed counts 5 s). Only the schedule depends on them, never a result."""


def balanced_halves(tasks: Sequence[str]) -> tuple[list[str], list[str]]:
    """``tasks`` in two groups of about equal :data:`EVAL_COST` (greedy, costliest first);
    each group keeps the tasks' order."""
    loads = [0.0, 0.0]
    groups: list[set[str]] = [set(), set()]
    for task in sorted(tasks, key=lambda t: -EVAL_COST.get(t, 5.0)):
        lighter = 0 if loads[0] <= loads[1] else 1
        loads[lighter] += EVAL_COST.get(task, 5.0)
        groups[lighter].add(task)
    first, second = ([t for t in tasks if t in group] for group in groups)
    return first, second


class _InProcess:
    """``submit`` that runs the call at once in this process (one worker: no pool)."""

    def submit(self, function: Callable[..., Any], *arguments: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(function(*arguments))
        except BaseException as exc:  # handed to the caller by future.result(), as a pool does
            future.set_exception(exc)
        return future


def _fine_tune_and_evaluate(
    pool: Any,
    configs: dict[str, SugarConfig],
    world: Path,
    teacher_dir: Path,
    out: Path,
    size: dict[str, Any],
    join: int = 0,
) -> dict[str, dict[str, Any]]:
    """The two fine-tunes and every evaluation over a pool of (at most) two workers.

    Generative-only trains (unless trained) and evaluates in one job; Sugar trains in the other
    (its run is the longest); the teacher alone is evaluated as soon as a worker is free, so it
    follows generative-only. With ``join`` (workers, side by side), Sugar trains alone only to
    step ``size["join_at"]`` and, once the pool's jobs are done, resumes data-parallel over
    ``join`` processes (:func:`~sugar.recipes.jobs.train_on_workers`). Sugar's evaluation then
    runs as two halves of the tasks (:func:`balanced_halves`) on both workers. Returns per
    model its results and wall times (Sugar's ``eval_s``: from the end of its training to the
    end of both halves)."""
    limit = size["eval_limit"]
    generative = pool.submit(
        train_and_evaluate, to_dict(configs["generative"]), str(world), limit, "test",
        "generative",
    )  # fmt: skip
    sugar = to_dict(configs["sugar"])
    if join:
        trained = pool.submit(train_until, sugar, size["join_at"])
    else:
        trained = pool.submit(train_and_evaluate, sugar, str(world), limit, None, "sugar")
    teacher = pool.submit(
        evaluate_teacher, str(teacher_dir), str(out / "cache" / "teachers"), str(world), limit
    )
    train_s = trained.result()["train_s"]
    if join:  # the other worker is free once generative-only and the teacher are evaluated
        for job in (generative, teacher):
            job.result()
        start = time.perf_counter()
        if not finished(Path(configs["sugar"].run.output_dir)):
            train_on_workers(sugar, join, resume=True)
        train_s = round(train_s + time.perf_counter() - start, 1)
    start = time.perf_counter()
    halves = [
        pool.submit(train_and_evaluate, sugar, str(world), limit, "test", "sugar", tasks)
        for tasks in balanced_halves(list(TASKS))
    ]
    parts = [half.result() for half in halves]
    merged = {**parts[0]["results"], **parts[1]["results"]}
    sugar_outcome = {
        "results": {task: merged[task] for task in TASKS},
        "train_s": train_s,
        "eval_s": round(time.perf_counter() - start, 1),
    }
    return {"generative": generative.result(), "sugar": sugar_outcome, "teacher": teacher.result()}


def run_config(
    base: SugarConfig, out: Path, name: str, size: dict[str, Any], **changes: Any
) -> SugarConfig:
    """The config of one training run of the demo (``changes``: section -> field values)."""
    cfg = replace(
        base,
        run=replace(base.run, output_dir=str(out / name), torch_threads=1),
        data=replace(
            base.data, root=str(out / "world"), train=TRAIN_FILES, val=["caption/val.jsonl"]
        ),
        model=replace(base.model, **size["model"], feature_cache=str(out / "cache" / "vision")),
        teacher=replace(
            base.teacher, head_dir=str(out / "teacher"), cache_dir=str(out / "cache" / "teachers")
        ),
    )
    for section, values in changes.items():
        cfg = replace(cfg, **{section: replace(getattr(cfg, section), **values)})
    return cfg


DEMO_ENTRIES = (
    "demo.json", "world", "teacher", "cache", "align", "base", "generative", "sugar", "report",
    "bench",
)  # fmt: skip
"""What ``sugar demo`` (and ``sugar bench quality``, in ``bench/``) write in their ``--out``."""


@in_one_torch_thread
def run_demo(
    out: str | Path,
    *,
    smoke: bool = False,
    size_name: str | None = None,
    seed: int = 0,
    config: SugarConfig | None = None,
    say: Callable[[str], None] = print,
    progress: bool = True,
    through_base: bool = False,
    workers: int = 2,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Run every stage into ``out``; returns the report path, the timings and the results.

    ``config`` supplies every field the recipe does not set itself (:data:`RECIPE_FIELDS`,
    :data:`BUILT_IN`); ``overrides`` are the ``KEY=VALUE`` overrides it was built with: one of
    a built-in model field replaces the recipe's value, one of a recipe field is refused
    (:func:`recipe_overrides`), and they are stamped in ``demo.json``, so that finished stages
    are reused only by a demo with the same ones.

    ``through_base`` stops after the shared base (``sugar bench quality`` runs its own
    fine-tunes): the result then holds only the timings. ``workers``: local one-thread
    processes (data parallel, :func:`~sugar.recipes.jobs.train_on_workers`; how the fine-tunes
    use them is in the module docstring; 1: everything in this process)."""
    if workers < 1:
        raise ValueError(f"workers={workers}: must be >= 1")
    out = Path(out)
    name = size_name or ("smoke" if smoke else "demo")
    size = recipe_size(name, overrides)
    stamp: dict[str, Any] = {"size": name, "seed": seed}
    if overrides:
        stamp["overrides"] = list(overrides)
    stamp_path = out / "demo.json"
    if stamp_path.is_file():  # finished stages are reused only for the same size and seed
        found = json.loads(stamp_path.read_text(encoding="utf-8"))
        if found != stamp:
            raise ValueError(
                f"{out} holds a demo run with {found}, not {stamp}: pass another --out or delete it"
            )
    else:  # a new or empty directory, or one a demo wrote: never a user's
        claim_directory(out, "demo", DEMO_ENTRIES)
        atomic_write_json(stamp_path, stamp)
    base = config or load_config(None)
    timings: dict[str, float] = {}
    cpu_start, wall_start = cpu_seconds(), time.perf_counter()

    done = stage("world", timings, say)
    world = out / "world"
    if not (world / "manifest.json").is_file():
        generate_world(world, seed=seed, progress=progress, **size["world"])
    done()

    done = stage("teacher", timings, say)
    teacher_dir = out / "teacher"
    if not (teacher_dir / "head.json").is_file():
        train_teacher(
            data=world / "caption" / "train.jsonl", out_dir=teacher_dir, root=world,
            steps=size["teacher_steps"], seed=seed, feature_cache_dir=out / "cache" / "teachers",
            progress=progress, **head_options(base.teacher),
        )  # fmt: skip
    done()

    base_start = {"init_from": str(out / "align" / "model")} if size["align_steps"] else {}
    runs: dict[str, dict[str, dict[str, Any]]] = {
        "align": {  # LLaVA's first stage: the trunk frozen, the image adapter and head learn
            "structure": {"alpha": 0.0},
            "model": {"freeze_trunk": True},
            "train": {
                "steps": size["align_steps"],
                "lr": 2e-3,
                "select_metric": "val_lm_loss",
                "batch_size": size["base_batch_size"],
            },
        },
        "base": {
            "structure": {"alpha": 0.0},
            "train": {
                "steps": size["base_steps"],
                "lr": 1e-3,
                "select_metric": "val_lm_loss",
                "batch_size": size["base_batch_size"],
                **base_start,
            },
        },
        "generative": {
            "structure": {"alpha": 0.0},
            "train": {
                "steps": size["tune_steps"],
                "lr": 1e-3,
                "select_metric": "val_lm_loss",
                "init_from": str(out / "base" / "model"),
            },
        },
        "sugar": {
            "structure": {"alpha": base.structure.alpha or 1.0},
            "train": {
                "steps": size["tune_steps"],
                "lr": 1e-3,
                "select_metric": "val_t2i_r1",
                "init_from": str(out / "base" / "model"),
            },
        },
    }
    if not size["align_steps"]:
        del runs["align"]
    if through_base:
        runs = {k: v for k, v in runs.items() if k in ("align", "base")}
    configs = {}
    for name, changes in runs.items():
        train_changes = {
            "batch_size": size["batch_size"], "eval_every": 0, "checkpoint_every": 0,
            "log_every": 10, "eval_samples": 100, **size["train"], **changes["train"],
        }  # fmt: skip
        configs[name] = run_config(
            base, out, name, size, run={"seed": seed},
            structure={**size["structure"], **changes["structure"]},
            train=train_changes, **({"model": changes["model"]} if "model" in changes else {}),
        )  # fmt: skip
    stages: list[str] = [n for n in ("align", "base") if n in configs]
    tuned = ("generative", "sugar")
    side_by_side = not through_base and 2 <= workers < 4
    if not through_base and not side_by_side:
        stages += list(tuned)
    for name in stages:  # each a data-parallel run over the workers (sugar.recipes.jobs)
        done = stage(f"train {name}", timings, say)
        if not finished(out / name):
            clear_unfinished(out / name)
            if workers == 1:
                train(configs[name], progress=progress)
            else:
                train_on_workers(to_dict(configs[name]), workers)
        done()
    if through_base:
        return {"timings": timings}

    label = "train and evaluate generative and sugar, side by side" if side_by_side else "evaluate"
    done = stage(label, timings, say)
    if workers > 1:
        with ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn")) as pool:
            outcomes = _fine_tune_and_evaluate(
                pool, configs, world, teacher_dir, out, size, workers if side_by_side else 0
            )
    else:
        outcomes = _fine_tune_and_evaluate(_InProcess(), configs, world, teacher_dir, out, size)
    done()
    for name, outcome in outcomes.items():
        if side_by_side and "train_s" in outcome:
            timings[f"train {name}"] = outcome["train_s"]
        timings[f"evaluate {name}" if name != "teacher" else "evaluate the teacher alone"] = (
            outcome["eval_s"]
        )
    results = {name: outcome["results"] for name, outcome in outcomes.items()}
    cpu_end = cpu_seconds()
    cpu = {key: round(cpu_end[key] - cpu_start[key], 1) for key in cpu_end}
    wall = round(time.perf_counter() - wall_start, 1)
    meta = {
        "seed": seed,
        "host": host_facts(),  # on a CPU without native bfloat16 the demo computes in float32
        "sizes": size,
        "timings_s": timings,
        "wall_s": wall,
        "cpu_s": cpu,
        "world_manifest_sha256": sha256_file(world / "manifest.json"),
        "configs": {name: to_dict(cfg) for name, cfg in configs.items()},
    }
    report = write_report(
        out / "report",
        results,
        meta,
        logs={n: out / n / "log.jsonl" for n in runs},
        compare=("sugar", ["generative", "teacher"]),
    )
    say(headline_table(results))
    say(f"[demo] report: {report}")
    say(f"[demo] timings (s): {json.dumps(timings)}")
    say(
        f"[demo] {wall} s of wall time, {cpu['total']} CPU s (user {cpu['user']}, system "
        f"{cpu['system']}; {cpu['workers']} of them in its workers)"
    )
    return {"report": report, "timings": timings, "results": results, "cpu_s": cpu}
