"""``sugar edit``: apply knowledge edits to a bundle, or remove them, writing a new bundle; and
``sugar data edits``: a world's edit set (:mod:`sugar.data.world.edits`). The measurement of
every editor is ``benchmarks/bench_edit.py`` (:mod:`sugar.recipes.edit`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from sugar.cli.app import app, data_app, user_errors


def _options(pairs: list[str] | None) -> dict[str, float | int]:
    """``KEY=VALUE`` editor options (numbers)."""
    out: dict[str, float | int] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--option {pair!r}: expected KEY=VALUE, e.g. threshold=0.8")
        try:
            out[key] = int(value) if value.lstrip("-").isdigit() else float(value)
        except ValueError:
            raise ValueError(f"--option {pair!r}: {value!r} is not a number") from None
    return out


@app.command("edit")
@user_errors
def edit_command(
    model: Annotated[Path, typer.Option("--model", help="Bundle directory to edit.")],
    out: Annotated[Path, typer.Option(help="Directory of the edited bundle (atomic).")],
    edits: Annotated[
        Path | None, typer.Option(help="Edit set JSONL (sugar.data.world.edits documents it).")
    ] = None,
    method: Annotated[str, typer.Option(help="ft, context, patcher, memory or unike.")] = "unike",
    root: Annotated[
        Path | None, typer.Option(help="Image root of the edits (default: EDITS' folder).")
    ] = None,
    support: Annotated[
        Path | None,
        typer.Option(
            help="Edits of another split that patcher (negatives) and unike (scope space) "
            "learn from; default ROOT/edit/train.jsonl when it exists."
        ),
    ] = None,
    remove: Annotated[
        list[str] | None, typer.Option(help="Edit id to remove (repeatable), before adding.")
    ] = None,
    option: Annotated[
        list[str] | None, typer.Option(help="Editor option KEY=VALUE (repeatable).")
    ] = None,
) -> None:
    """Apply the edits of EDITS one after another with METHOD (or remove edits by id) and
    write the edited bundle to OUT; model.json lists every edit."""
    from sugar.edit.base import build_editor
    from sugar.edit.records import read_edits
    from sugar.edit.store import load_editor, save_edited
    from sugar.models.bundle import load_bundle

    if edits is None and not remove:
        raise ValueError("nothing to do: give --edits FILE and/or --remove ID")
    image_root = root if root is not None else (edits.parent if edits is not None else Path("."))
    bundle = load_bundle(model)
    editor = load_editor(bundle, image_root)
    for edit_id in remove or []:
        if editor is None:
            raise ValueError(f"{model}: has no edits, cannot remove {edit_id!r}")
        editor.remove(edit_id)
        typer.echo(f"removed {edit_id}")
    if edits is not None:
        requests = read_edits(edits, image_root)
        if editor is not None and editor.method != method:
            raise ValueError(
                f"{model}: already edited with {editor.method!r}; add edits with "
                f"--method {editor.method} (methods are not mixed in one bundle)"
            )
        if editor is None:
            support_file = support or image_root / "edit" / "train.jsonl"
            helpers = read_edits(support_file, image_root) if support_file.is_file() else []
            if support is not None and not helpers:
                raise ValueError(f"{support}: no edits")
            if support is None and not helpers and method in ("patcher", "unike"):
                typer.echo(
                    f"note: no support edits at {support_file}: {method} learns from none "
                    "(give --support FILE, or --root the world the edits came from)"
                )
            editor = build_editor(method, bundle.model, image_root, helpers, **_options(option))
        for request in requests:
            start = time.perf_counter()
            editor.add(request)
            typer.echo(f"edit {request.id}: {time.perf_counter() - start:.2f} s")
    assert editor is not None
    identity = save_edited(out, bundle, editor)
    typer.echo(f"{out}: {len(editor.edits)} edits ({editor.method}), identity {identity[:12]}")


@data_app.command("edits")
@user_errors
def data_edits_command(
    world: Annotated[Path, typer.Option(help="A world built by `sugar data world`.")],
    split: Annotated[str, typer.Option(help="Split whose facts are edited.")] = "test",
    count: Annotated[int, typer.Option(help="Number of edits.", min=1)] = 100,
    locality_split: Annotated[
        str, typer.Option(help="Split the unrelated (locality) questions come from.")
    ] = "val",
    seed: Annotated[int, typer.Option(help="Seed of the new answers and renderings.")] = 0,
) -> None:
    """Write WORLD/edit/SPLIT.jsonl: knowledge edits over the world's facts with rephrased
    questions, re-rendered images and unrelated questions (MMEdit's probes)."""
    from sugar.data.world.edits import build_edit_set

    path = build_edit_set(world, split, count, locality_split=locality_split, seed=seed)
    typer.echo(f"wrote {count} edits to {path}")
