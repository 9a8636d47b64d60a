"""``sugar train-teacher`` and ``sugar teachers ...``: the frozen teachers (sugar.teachers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from sugar.cli.app import ConfigPath, DataRoot, Overrides, app, teachers_app, user_errors
from sugar.config import load_config


@app.command("train-teacher")
@user_errors
def train_teacher_command(
    data: Annotated[Path, typer.Option(help="Image-caption JSONL (training split only).")],
    out: Annotated[
        Path | None, typer.Option(help="Output directory (default: teacher.head_dir).")
    ] = None,
    root: DataRoot = None,
    steps: Annotated[int | None, typer.Option(help="Steps (default: teacher.steps).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (default: run.seed).")] = None,
    config: ConfigPath = None,
    overrides: Overrides = None,
) -> None:
    """Train the offline teacher's cross-modal head over the frozen encoders; save it to OUT."""
    from sugar.teachers.training import head_options, train_teacher

    cfg = load_config(config, overrides or [])
    t = cfg.teacher
    summary = train_teacher(
        data=data,
        out_dir=out if out is not None else Path(t.head_dir),
        root=root,
        steps=t.steps if steps is None else steps,
        **head_options(t),
        seed=cfg.run.seed if seed is None else seed,
        feature_cache_dir=t.cache_dir or None,
        progress=True,
    )
    typer.echo(json.dumps(summary, indent=2))


def _teacher(teacher: Path | None, option: list[str] | None, cfg: Any) -> Any:
    """Build the configured teacher family; ``--teacher`` is the offline head directory."""
    from sugar.config import parse_override
    from sugar.teachers import build_teacher

    options: dict[str, Any] = dict(cfg.teacher.options)
    for text in option or []:
        keys, value = parse_override(text)
        options[".".join(keys)] = value
    if cfg.teacher.family == "offline":
        options.setdefault("head_dir", teacher or Path(cfg.teacher.head_dir))
        options.setdefault("feature_cache_dir", cfg.teacher.cache_dir or None)
    return build_teacher(cfg.teacher.family, **options)


def _teacher_corpus(
    data: Path,
    root: Path | None,
    teacher: Path | None,
    option: list[str] | None,
    cfg: Any,
    claim: bool = False,
) -> tuple[Any, Any, Path, list[Any]]:
    """The configured teacher, its cache, the dataset root and DATA's samples (images are
    checked when encoded, not while reading). ``claim``: the cache is the command's output:
    its directory is claimed first (:func:`~sugar.models.feature_cache.claim_cache`)."""
    from sugar.data.jsonl import read_samples
    from sugar.models.feature_cache import claim_cache
    from sugar.teachers import teacher_cache

    if claim and cfg.teacher.cache_dir:
        claim_cache(cfg.teacher.cache_dir)
    model = _teacher(teacher, option, cfg)
    cache = teacher_cache(cfg.teacher.cache_dir or None, model)
    root = data.parent if root is None else root
    return model, cache, root, read_samples(data, root, check_images=False)


TeacherDir = Annotated[
    Path | None,
    typer.Option(help="Teacher directory: the offline head (default: teacher.head_dir)."),
]
TeacherOptions = Annotated[
    list[str] | None,
    typer.Option("--option", "-o", help="Teacher builder option KEY=VALUE (e.g. cross=DIR)."),
]


@teachers_app.command("embed")
@user_errors
def teachers_embed(
    data: Annotated[Path, typer.Option(help="A sugar JSONL whose slices to precompute.")],
    root: DataRoot = None,
    teacher: TeacherDir = None,
    option: TeacherOptions = None,
    chunk: Annotated[int, typer.Option(help="Samples per durable cache flush.", min=1)] = 256,
    config: ConfigPath = None,
    overrides: Overrides = None,
) -> None:
    """Precompute every slice of DATA into the teacher cache (resumable); print the hit rate.
    The cache directory (teacher.cache_dir) must be new, empty or sugar's: anything else in it
    is refused."""
    from tqdm import tqdm

    from sugar.teachers import embed_slices, sample_slice_contents

    cfg = load_config(config, overrides or [])
    model, cache, root, samples = _teacher_corpus(data, root, teacher, option, cfg, claim=True)
    slices = 0
    for start in tqdm(range(0, len(samples), chunk), desc="teachers embed", unit="chunk"):
        items = [
            c
            for s in samples[start : start + chunk]
            for c in sample_slice_contents(s, root, cfg.structure.slice_text_by)
        ]
        embed_slices(model, items, cache=cache)  # flushes: an interruption loses one chunk
        slices += len(items)
    summary = {
        "samples": len(samples),
        "slices": slices,
        "hits": cache.hits,
        "misses": cache.misses,
        "hit_rate": round(cache.hit_rate, 4),
        "identity": model.identity,
    }
    typer.echo(json.dumps(summary, indent=2))


@teachers_app.command("report")
@user_errors
def teachers_report(
    data: Annotated[Path, typer.Option(help="Caption JSONL with meta.negatives (e.g. test).")],
    root: DataRoot = None,
    teacher: TeacherDir = None,
    option: TeacherOptions = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Report JSON (default: TEACHER/sensitivity.json)."),
    ] = None,
    config: ConfigPath = None,
    overrides: Overrides = None,
) -> None:
    """Pairwise accuracy per hard-negative kind and held-out R@1/R@5; print and save as JSON."""
    from sugar.io import atomic_write_json
    from sugar.teachers.sensitivity import (
        retrieval_recall,
        sensitivity_report,
        sensitivity_table,
    )

    cfg = load_config(config, overrides or [])
    model, cache, root, samples = _teacher_corpus(data, root, teacher, option, cfg)
    report = {
        "teacher": model.identity,
        "data": str(data),
        "retrieval": retrieval_recall(model, samples, root, cache=cache),
        "kinds": sensitivity_report(model, samples, root, cache=cache),
    }
    for line in sensitivity_table(report["kinds"], counts=True):
        typer.echo(line)
    typer.echo(json.dumps(report["retrieval"]))
    target = out or (teacher or Path(cfg.teacher.head_dir)) / "sensitivity.json"
    atomic_write_json(target, report)
    typer.echo(f"wrote {target}")
