"""``sugar config ...`` and ``sugar data ...``: configuration files and datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sugar.cli.app import ConfigPath, DataRoot, Overrides, config_app, data_app, user_errors
from sugar.config import load_config, save_config, to_yaml


@config_app.command("show")
@user_errors
def config_show(config: ConfigPath = None, overrides: Overrides = None) -> None:
    """Print the resolved config (defaults <- --config file <- overrides) as YAML, validated."""
    cfg = load_config(config, overrides or [])
    typer.echo(to_yaml(cfg), nl=False)


@config_app.command("save")
@user_errors
def config_save(
    out: Annotated[Path, typer.Argument(help="Where to write the resolved YAML.")],
    config: ConfigPath = None,
    overrides: Overrides = None,
) -> None:
    """Resolve a config and write it to OUT atomically (a starting point for a new run)."""
    cfg = load_config(config, overrides or [])
    save_config(cfg, out)
    typer.echo(f"wrote {out}")


@data_app.command("validate")
@user_errors
def data_validate(
    file: Annotated[Path, typer.Argument(help="A sugar JSONL file.")],
    root: DataRoot = None,
) -> None:
    """Check every sample and image of FILE; print counts, or the first problem (file:line)."""
    from sugar.data.jsonl import validate_file

    counts = validate_file(file, root)
    typer.echo(json.dumps(counts, indent=2))


@data_app.command("convert")
@user_errors
def data_convert(
    fmt: Annotated[
        str,
        typer.Argument(
            metavar="FORMAT",
            help="image_caption_csv | image_caption_jsonl | coco_captions | "
            "llava_conversations | interleaved_documents | instructed_retrieval "
            "(-o split=NAME; its corpus goes to ROOT/instructed_corpus/NAME.jsonl)",
        ),
    ],
    src: Annotated[Path, typer.Argument(help="The file to convert.")],
    out: Annotated[Path, typer.Argument(help="The sugar JSONL to write (atomically).")],
    root: Annotated[
        Path | None,
        typer.Option(help="Dataset root the output is read with (default: OUT's folder)."),
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option",
            "-o",
            help="Converter option KEY=VALUE, taken as a string, e.g. -o image_dir=images "
            "-o caption_column=text (a tab delimiter: -o delimiter=$'\\t').",
        ),
    ] = None,
) -> None:
    """Convert a corpus in another format to sugar JSONL."""
    from sugar.data.convert import convert_file

    options = {}
    for text in option or []:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise ValueError(f"-o {text!r}: expected KEY=VALUE, e.g. -o image_dir=images")
        options[key] = value  # every converter option is a string: no YAML reading of VALUE
    count = convert_file(fmt, src, out, root, **options)
    typer.echo(f"wrote {count} samples to {out}")


@data_app.command("world")
@user_errors
def data_world(
    out: Annotated[
        Path,
        typer.Option("--out", help="Output directory (written atomically; see --force)."),
    ],
    size: Annotated[
        int | None,
        typer.Option(
            help="Samples per task in train; val and test get size/10 and 2*size/5 "
            "(the defaults are size 5000: 5000 / 500 / 2000).",
            min=1,
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="World seed (default: run.seed).")] = None,
    config: ConfigPath = None,
    overrides: Overrides = None,
    force: Annotated[
        bool, typer.Option(help="Replace OUT when it holds a world sugar wrote.")
    ] = False,
    synthesiser: Annotated[
        str | None,
        typer.Option(
            help="Who words the instructed task's instructions: template | hf "
            "(world.instruction_synthesiser; hf needs --instruction-model)."
        ),
    ] = None,
    instruction_model: Annotated[
        str | None,
        typer.Option(
            help="Local Hugging Face model directory for --synthesiser hf "
            "(world.instruction_model; never downloaded)."
        ),
    ] = None,
) -> None:
    """Generate the built-in world: images, one JSONL per task and split, and a manifest. A
    non-empty OUT that sugar did not write is refused, even with --force."""
    import math

    from sugar.config import to_dict
    from sugar.data.world import generate_world

    flags = [f"world.instruction_synthesiser={synthesiser}"] if synthesiser else []
    flags += [f"world.instruction_model={instruction_model}"] if instruction_model else []
    cfg = load_config(config, [*(overrides or []), *flags])
    options = to_dict(cfg.world)
    if size is not None:
        options.update(
            train_per_task=size,
            val_per_task=math.ceil(size / 10),
            test_per_task=math.ceil(2 * size / 5),
        )
    manifest = generate_world(
        out, seed=cfg.run.seed if seed is None else seed, progress=True, replace=force, **options
    )
    world = manifest["world"]
    typer.echo(f"wrote {world['samples']} samples and {world['images']} images to {out}")
    typer.echo(json.dumps(world["tasks"]))
