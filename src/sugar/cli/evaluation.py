"""``sugar eval``, ``sugar demo`` and ``sugar bench ...``: evaluation and the recipes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sugar.cli.app import ConfigPath, Overrides, Workers, app, bench_app, user_errors
from sugar.config import load_config

Smoke = Annotated[bool, typer.Option(help="Toy sizes: seconds, figures meaningless.")]

DEFAULT_TASKS = (
    "caption_retrieval", "hard_negatives", "winoground", "story_retrieval", "needle", "vqa",
    "pope", "kb_qa", "grounding",
)  # fmt: skip
"""``sugar eval``'s tasks when ``--tasks`` is not given: those whose files the data root lacks
are skipped, each with a note, and so is hard_negatives on captions without ``meta.negatives`` (a
caption-only set runs caption_retrieval and grounding, and hard_negatives once ``sugar mine`` has
added negatives)."""


@app.command("eval")
@user_errors
def eval_command(
    model: Annotated[list[Path], typer.Option("--model", help="Bundle directory (repeatable).")],
    data: Annotated[Path, typer.Option(help="World root (or a root with the same layout).")],
    out: Annotated[Path, typer.Option(help="Report directory.")] = Path("runs/eval"),
    tasks: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated tasks; one whose file is absent is an error (default: "
            + ",".join(DEFAULT_TASKS)
            + ", those whose file is absent or holds nothing to score skipped with a note)."
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="Split to read (test is read once per model).")] = (
        "test"
    ),
    limit: Annotated[int | None, typer.Option(help="First N items per task.")] = None,
    feature_cache: Annotated[
        Path | None,
        typer.Option(
            help="Directory of the built-in models' frozen image features (a run's "
            "model.feature_cache): read, and filled with new images (default: memory only)."
        ),
    ] = None,
) -> None:
    """Evaluate bundles on the world's tasks; writes report.json, report.md and plots, with
    paired-bootstrap CIs of the first model minus each other one, and OUT/mteb/ (per-task
    results in MTEB's layout, sugar.eval.mteb). Without --tasks, a task whose file DATA lacks
    is skipped (one line each, listed in the report as not run), and so is hard_negatives when
    no caption has meta.negatives; a named one is an error."""
    from sugar.eval.mteb import write_mteb_results
    from sugar.eval.report import headline_table, write_report
    from sugar.eval.tasks import (
        TASK_FOLDERS,
        absent_task_files,
        load_eval_model,
        run_tasks,
        unscorable_tasks,
    )

    skipped: dict[str, str] = {}
    if tasks is None:  # the default list: run what the data root holds
        absent = absent_task_files(data, DEFAULT_TASKS, split)
        if len(absent) == len(DEFAULT_TASKS):
            looked = ", ".join(str(f) for files in absent.values() for f in files)
            raise FileNotFoundError(f"{data}: no task's data is there; looked for {looked}")
        for task, files in absent.items():
            skipped[task] = " and ".join(str(f) for f in files) + " absent"
        present = [t for t in DEFAULT_TASKS if t not in absent]
        skipped.update(unscorable_tasks(data, present, split))
        skipped = {t: skipped[t] for t in DEFAULT_TASKS if t in skipped}  # in the list's order
        for task, why in skipped.items():
            typer.echo(f"[eval] skipped {task}: {why} (task not run)")
        names = [t for t in DEFAULT_TASKS if t not in skipped]
    else:
        names = [t.strip() for t in tasks.split(",") if t.strip()]
    results, metas = {}, {}
    for directory in model:
        evaluated = load_eval_model(directory, None, str(feature_cache) if feature_cache else None)
        if evaluated.name in results:
            raise ValueError(
                f"two models are named {evaluated.name!r} ({directory}): give bundles whose run "
                "directories differ"
            )
        typer.echo(f"[eval] {evaluated.name}")
        metas[evaluated.name] = evaluated.mteb_meta()
        results[evaluated.name] = run_tasks(
            evaluated, data, names, split=split, limit=limit,
            progress=lambda task: typer.echo(f"  {task}"),
        )  # fmt: skip
        evaluated.backbone.flush_caches()
    meta = {"models": [str(m) for m in model], "data": str(data), "split": split, "limit": limit}
    names_in_order = list(results)
    compare = (names_in_order[0], names_in_order[1:]) if len(names_in_order) > 1 else None
    report = write_report(out, results, meta, compare=compare, skipped=skipped)
    write_mteb_results(
        out / "mteb", results, metas, split,
        {t: data / TASK_FOLDERS[t] / f"{split}.jsonl" for t in names},
    )  # fmt: skip
    typer.echo(headline_table(results))
    if skipped:
        typer.echo(f"not run (no data for them): {', '.join(skipped)}")
    typer.echo(f"report: {report}")


@app.command("demo")
@user_errors
def demo_command(
    out: Annotated[Path, typer.Option(help="Directory for every stage's output.")] = Path(
        "runs/demo"
    ),
    smoke: Smoke = False,
    seed: Annotated[int, typer.Option(help="Seed of the world and every run.")] = 0,
    workers: Workers = 2,
    config: ConfigPath = None,
    overrides: Overrides = None,
) -> None:
    """World -> teacher -> shared base -> Sugar and generative-only fine-tunes -> evaluation ->
    report, with per-stage timings. KEY=VALUE may change the built-in model (model.grid=1) and
    anything the recipe does not set itself; an override of what it sets (steps, lr, paths,
    seed: use --seed, world.*) is an error."""
    from sugar.recipes.demo import run_demo

    cfg = load_config(config, overrides or [])
    run_demo(out, smoke=smoke, seed=seed, config=cfg, say=typer.echo, workers=workers,
             overrides=overrides or [])  # fmt: skip


@bench_app.command("quality")
@user_errors
def bench_quality(
    out: Annotated[Path, typer.Option(help="Directory (shares the demo's stages).")] = Path(
        "runs/bench"
    ),
    smoke: Smoke = False,
    size: Annotated[
        str | None,
        typer.Option(
            help="demo (default), long (3x the base's steps, 2x the fine-tunes', defaults "
            "untuned) or smoke."
        ),
    ] = None,
    seeds: Annotated[int, typer.Option(help="Seeds of the headline variants.", min=1)] = 3,
    workers: Workers = 2,
    variant: Annotated[
        list[str] | None,
        typer.Option(help="Run only these variants (repeatable; generative is always run)."),
    ] = None,
    config: ConfigPath = None,
    overrides: Overrides = None,
) -> None:
    """Every variant from one shared base, tuned on validation (same lr grid, own loss weight),
    several seeds, the teacher alone, paired CIs and the pre-registered bars; writes bench.md
    and bench.json."""
    from sugar.recipes.bench import run_quality_bench

    cfg = load_config(config, overrides or [])
    path = run_quality_bench(out, smoke=smoke, size_name=size, seeds=seeds, workers=workers,
                             variants=variant, config=cfg, say=typer.echo,
                             overrides=overrides or [])  # fmt: skip
    typer.echo(path.read_text(encoding="utf-8"))
