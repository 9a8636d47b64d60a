"""``sugar validate``, ``sugar train`` and ``sugar targets inspect``: training runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sugar.cli.app import ConfigPath, Overrides, Resume, app, targets_app, user_errors
from sugar.config import load_config


@app.command("validate")
@user_errors
def validate_command(config: ConfigPath = None, overrides: Overrides = None) -> None:
    """Check a run config and the files it names (data, teacher, init bundle) without training."""
    from sugar.data.jsonl import validate_file

    cfg = load_config(config, overrides or [])
    for name in [*cfg.data.train, *cfg.data.val]:
        report = validate_file(Path(cfg.data.root) / name, cfg.data.root)
        typer.echo(f"ok {name}: {json.dumps(report)}")
    if cfg.structure.alpha > 0 and cfg.teacher.family == "offline":
        head = Path(cfg.teacher.head_dir) / "head.json"
        if not head.is_file():
            raise FileNotFoundError(f"teacher.head_dir: {head} missing (run sugar train-teacher)")
        typer.echo(f"ok teacher head {head.parent}")
    if cfg.structure.alpha > 0 and cfg.teacher.family == "bundle":
        from sugar.teachers.bundle import bundle_directory

        bundle = bundle_directory(str(cfg.teacher.options.get("path", "")))
        typer.echo(f"ok teacher bundle {bundle}")
    if cfg.train.init_from:
        from sugar.models.bundle import load_bundle

        typer.echo(f"ok init bundle {load_bundle(cfg.train.init_from).identity[:12]}")
    typer.echo("config valid")


@app.command("train")
@user_errors
def train_command(
    config: ConfigPath = None,
    overrides: Overrides = None,
    resume: Resume = False,
    allow_changes: Annotated[
        bool,
        typer.Option(
            help="With --resume: apply changed hyper-parameters (train.lr, train.steps, ...) "
            "from the resumed step, logged there; architecture or data changes stay refused."
        ),
    ] = False,
) -> None:
    """Train with L = L_g + alpha * L_d (structure.alpha = 0: generative only)."""
    from sugar.train.loop import train

    if allow_changes and not resume:
        raise ValueError("--allow-changes applies to --resume only")
    cfg = load_config(config, overrides or [])
    result = train(cfg, resume=resume, progress=True, allow_changes=allow_changes)
    summary = {
        "run_dir": str(result.run_dir),
        "step": result.step,
        "bundle": str(result.bundle),
        "best": None if result.best is None else str(result.best),
        "best_metric": result.best_metric,
    }
    typer.echo(json.dumps(summary, indent=2))


@targets_app.command("inspect")
@user_errors
def targets_inspect(
    config: ConfigPath = None,
    overrides: Overrides = None,
    batches: Annotated[int, typer.Option(help="Validation batches to inspect.")] = 8,
) -> None:
    """Print target diagnostics on validation data (METHOD.md section 8) for every
    normalisation, with and without the Triple Kernel."""
    from sugar.teachers.lookup import teacher_lookup_from_config
    from sugar.train.diagnostics import inspect_targets, target_table
    from sugar.train.run import read_files, resolve_targets

    cfg = load_config(config, overrides or [])
    lookup = teacher_lookup_from_config(cfg)
    train_samples = read_files(cfg.data.root, cfg.data.train)
    delta, medians, stats = resolve_targets(cfg, lookup, train_samples, cfg.data.root)
    val = read_files(cfg.data.root, cfg.data.val)
    rows = inspect_targets(
        val, cfg.data.root, lookup, delta=delta, medians=medians,
        batch_size=cfg.train.batch_size, prefixes_per_sample=cfg.structure.prefixes_per_sample,
        view_weights=cfg.data.view_weights, slice_text_by=cfg.structure.slice_text_by,
        seed=cfg.run.seed, max_batches=batches, target_slope=cfg.structure.target_slope,
    )  # fmt: skip
    typer.echo(
        f"delta={delta:.4f} (from {stats['slices']} training slices); medians={stats['medians']}"
    )
    for line in target_table(rows):
        typer.echo(line)
    negatives = [s for s in val if s.meta.get("negatives")]
    if negatives:  # METHOD.md section 4: read the TK ablation next to what each teacher sees
        from sugar.teachers.sensitivity import sensitivity_report, sensitivity_table

        table = sensitivity_report(lookup.teacher, negatives, cfg.data.root, cache=lookup.cache)
        typer.echo("teacher sensitivity per hard-negative kind (validation captions):")
        for line in sensitivity_table(table, counts=False):
            typer.echo(line)
