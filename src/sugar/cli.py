"""The ``sugar`` console script: one command with subcommands, help generated from signatures.

Subcommands land with the issues that build them (DESIGN.md lists the target set). Every
subcommand that takes a config accepts ``CONFIG [KEY=VALUE ...]`` overrides, merged strictly
(:mod:`sugar.config`). Errors a user can fix print one line naming the file, key or value and
exit with status 2; they never print a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from sugar import __version__
from sugar.config import ConfigError, load_config, save_config, to_yaml
from sugar.serve.command import serve_command

app = typer.Typer(
    name="sugar",
    help="Train one multimodal LLM to generate and embed (the Sugar method), then embed, "
    "index, retrieve, answer and evaluate with it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect and resolve configuration files.", no_args_is_help=True)
app.add_typer(config_app, name="config")
data_app = typer.Typer(help="Validate, convert and generate datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
teachers_app = typer.Typer(
    help="Precompute and inspect the frozen teachers' slice embeddings.", no_args_is_help=True
)
app.add_typer(teachers_app, name="teachers")

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(func: F) -> F:
    """Turn errors a user can fix into one clear line on stderr and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as exc:
            typer.echo(f"sugar: error: {exc}", err=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


ConfigPath = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="YAML config file; omit for the defaults.", show_default=False
    ),
]
Overrides = Annotated[
    list[str] | None,
    typer.Argument(
        help="Dotted overrides, e.g. structure.alpha=0.5 run.seed=1.", metavar="KEY=VALUE"
    ),
]


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"sugar {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Train one multimodal LLM to generate and embed (the Sugar method)."""


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
    root: Annotated[
        Path | None, typer.Option(help="Dataset root for image paths (default: FILE's folder).")
    ] = None,
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
            "llava_conversations | interleaved_documents",
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
            help="Converter option KEY=VALUE, e.g. -o image_dir=images -o caption_column=text.",
        ),
    ] = None,
) -> None:
    """Convert a corpus in another format to sugar JSONL."""
    from sugar.config import parse_override
    from sugar.data.convert import convert_file

    options = {}
    for text in option or []:
        keys, value = parse_override(text)
        options[".".join(keys)] = value
    count = convert_file(fmt, src, out, root, **options)
    typer.echo(f"wrote {count} samples to {out}")


@data_app.command("world")
@user_errors
def data_world(
    out: Annotated[Path, typer.Option("--out", help="Output directory (replaced atomically).")],
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
) -> None:
    """Generate the built-in world: images, one JSONL per task and split, and a manifest."""
    import math

    from sugar.config import to_dict
    from sugar.data.world import generate_world

    cfg = load_config(config, overrides or [])
    options = to_dict(cfg.world)
    if size is not None:
        options.update(
            train_per_task=size,
            val_per_task=math.ceil(size / 10),
            test_per_task=math.ceil(2 * size / 5),
        )
    manifest = generate_world(
        out, seed=cfg.run.seed if seed is None else seed, progress=True, **options
    )
    world = manifest["world"]
    typer.echo(f"wrote {world['samples']} samples and {world['images']} images to {out}")
    typer.echo(json.dumps(world["tasks"]))


DataRoot = Annotated[
    Path | None, typer.Option(help="Dataset root for image paths (default: DATA's folder).")
]


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
    from sugar.train.teacher import train_teacher

    cfg = load_config(config, overrides or [])
    t = cfg.teacher
    summary = train_teacher(
        data=data,
        out_dir=out if out is not None else Path(t.head_dir),
        root=root,
        steps=t.steps if steps is None else steps,
        batch_size=t.batch_size,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        dropout=t.dropout,
        dim=t.head_dim,
        image_size=t.image_size,
        grid=t.grid,
        seed=cfg.run.seed if seed is None else seed,
        feature_cache_dir=t.cache_dir or None,
        progress=True,
    )
    typer.echo(json.dumps(summary, indent=2))


def _teacher(teacher: Path | None, option: list[str] | None, cfg: Any) -> Any:
    """Build the configured teacher family; ``--teacher`` is the offline head directory."""
    from sugar.config import parse_override
    from sugar.models.teachers import build_teacher

    options: dict[str, Any] = {}
    for text in option or []:
        keys, value = parse_override(text)
        options[".".join(keys)] = value
    if cfg.teacher.family == "offline":
        options.setdefault("head_dir", teacher or Path(cfg.teacher.head_dir))
        options.setdefault("feature_cache_dir", cfg.teacher.cache_dir or None)
    return build_teacher(cfg.teacher.family, **options)


def _teacher_corpus(
    data: Path, root: Path | None, teacher: Path | None, option: list[str] | None, cfg: Any
) -> tuple[Any, Any, Path, list[Any]]:
    """The configured teacher, its cache, the dataset root and DATA's samples (images are
    checked when encoded, not while reading)."""
    from sugar.data.jsonl import read_samples
    from sugar.models.teachers import teacher_cache

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
    """Precompute every slice of DATA into the teacher cache (resumable); print the hit rate."""
    from tqdm import tqdm

    from sugar.models.teachers import embed_slices, sample_slice_contents

    cfg = load_config(config, overrides or [])
    model, cache, root, samples = _teacher_corpus(data, root, teacher, option, cfg)
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
    from sugar.eval.teachers import retrieval_recall, sensitivity_report
    from sugar.io import atomic_write_json

    cfg = load_config(config, overrides or [])
    model, cache, root, samples = _teacher_corpus(data, root, teacher, option, cfg)
    report = {
        "teacher": model.identity,
        "data": str(data),
        "retrieval": retrieval_recall(model, samples, root, cache=cache),
        "kinds": sensitivity_report(model, samples, root, cache=cache),
    }
    typer.echo(f"{'kind':<16}{'cross_acc':>10}{'text_uni_cos':>14}{'cross_txt_cos':>15}{'n':>6}")
    for kind, row in report["kinds"].items():
        typer.echo(
            f"{kind:<16}{row['cross_accuracy']:>10.3f}{row['text_uni_cosine']:>14.4f}"
            f"{row['cross_text_cosine']:>15.4f}{int(row['count']):>6}"
        )
    typer.echo(json.dumps(report["retrieval"]))
    target = out or (teacher or Path(cfg.teacher.head_dir)) / "sensitivity.json"
    atomic_write_json(target, report)
    typer.echo(f"wrote {target}")


targets_app = typer.Typer(help="Diagnose the Sugar targets before training.", no_args_is_help=True)
app.add_typer(targets_app, name="targets")


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
    if cfg.train.init_from:
        from sugar.models.bundle import load_bundle

        typer.echo(f"ok init bundle {load_bundle(cfg.train.init_from).identity[:12]}")
    typer.echo("config valid")


@app.command("train")
@user_errors
def train_command(
    config: ConfigPath = None,
    overrides: Overrides = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the run in run.output_dir from its last checkpoint.")
    ] = False,
) -> None:
    """Train with L = L_g + alpha * L_d (structure.alpha = 0: generative only)."""
    from sugar.train.loop import train

    cfg = load_config(config, overrides or [])
    result = train(cfg, resume=resume, progress=True)
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
    from sugar.train.diagnostics import inspect_targets
    from sugar.train.loop import read_files, resolve_targets, teacher_lookup_from_config

    cfg = load_config(config, overrides or [])
    lookup = teacher_lookup_from_config(cfg)
    train_samples = read_files(cfg.data.root, cfg.data.train)
    delta, medians, stats = resolve_targets(cfg, lookup, train_samples, cfg.data.root)
    val = read_files(cfg.data.root, cfg.data.val)
    rows = inspect_targets(
        val, cfg.data.root, lookup, delta=delta, medians=medians,
        batch_size=cfg.train.batch_size, prefixes_per_sample=cfg.structure.prefixes_per_sample,
        view_weights=cfg.data.view_weights, slice_text_by=cfg.structure.slice_text_by,
        seed=cfg.run.seed, max_batches=batches,
    )  # fmt: skip
    typer.echo(
        f"delta={delta:.4f} (from {stats['slices']} training slices); medians={stats['medians']}"
    )
    typer.echo(
        f"{'normalisation':<26}{'TK':>4}{'entries':>9}{'mean':>7}{'std':>7}{'len R2':>8}"
        f"{'<floor':>8}{'unfit mse':>10}{'unfit %':>9}{'1x1 ii':>8}{'1x1 tt':>8}{'1x1 it':>8}"
    )
    for row in rows:
        typer.echo(
            f"{row['normalisation']:<26}{'y' if row['triple_kernel'] else 'n':>4}"
            f"{row['entries']:>9}{row['target_mean']:>7.3f}{row['target_std']:>7.3f}"
            f"{row['length_r2']:>8.3f}{row['below_floor_local']:>8.3f}"
            f"{row['unfittable_mse']:>10.4f}{100 * row['unfittable_share']:>8.1f}%"
            f"{row['single_ii']:>8.3f}{row['single_tt']:>8.3f}{row['single_it']:>8.3f}"
        )
    negatives = [s for s in val if s.meta.get("negatives")]
    if negatives:  # METHOD.md section 4: read the TK ablation next to what each teacher sees
        from sugar.eval.teachers import sensitivity_report

        table = sensitivity_report(lookup.teacher, negatives, cfg.data.root, cache=lookup.cache)
        typer.echo("teacher sensitivity per hard-negative kind (validation captions):")
        typer.echo(f"{'kind':<18}{'cross acc':>10}{'text uni cos':>14}{'cross text cos':>16}")
        for kind, row in table.items():
            typer.echo(
                f"{kind:<18}{row['cross_accuracy']:>10.3f}{row['text_uni_cosine']:>14.4f}"
                f"{row['cross_text_cosine']:>16.4f}"
            )


# ---- embeddings, indexes, retrieval, answers, mining (issue 9) ---------------------------------

index_app = typer.Typer(
    help="Build, update and inspect persistent vector indexes of a model's embeddings.",
    no_args_is_help=True,
)
app.add_typer(index_app, name="index")

ModelDir = Annotated[
    Path, typer.Option("--model", "-m", help="Model bundle directory (with a retrieval projector).")
]
BatchSize = Annotated[int, typer.Option(help="Samples per forward pass.", min=1)]
Prefixes = Annotated[
    bool,
    typer.Option(help="One entry per slice end (id 'DOC#POSITION'), from one forward pass each."),
]
ImagePath = Annotated[
    Path | None, typer.Option(help="An image file to put before the text (the query's image).")
]


def _load_model(directory: Path) -> Any:
    from sugar.api import load

    return load(directory)


def _read_data(data: Path, root: Path | None) -> tuple[list[Any], Path]:
    from sugar.data.jsonl import read_samples

    root = data.parent if root is None else root
    return read_samples(data, root, check_images=False), root


def _entries(
    model: Any, samples: list[Any], root: Path, prefixes: bool, batch_size: int
) -> tuple[list[str], Any, list[dict[str, Any]]]:
    """Ids, vectors (N, P) and metadata (each sample's JSON) of samples or of all their
    prefixes."""
    import torch

    from sugar.index import prefix_entry

    vectors = model.embed(samples, root=root, prefixes=prefixes, batch_size=batch_size,
                          progress=True)  # fmt: skip
    if not prefixes:
        return [s.id for s in samples], vectors, [s.to_dict() for s in samples]
    ids, metadata = [], []
    for sample, rows in zip(samples, vectors, strict=True):
        for position in range(rows.shape[0]):
            id, meta = prefix_entry(sample.id, position, sample.to_dict())
            ids.append(id)
            metadata.append(meta)
    return ids, torch.cat(vectors) if vectors else torch.zeros(0, 1), metadata


def _query_sample(text: str | None, image: Path | None) -> tuple[Any, Path]:
    """A query sample [image?, text?] and the root its image path is relative to."""
    from sugar.data.schema import Sample, Segment

    if text is None and image is None:
        raise ValueError("give a query TEXT, an --image, or both")
    segments, root = [], Path(".")
    if image is not None:
        if not image.is_file():
            raise FileNotFoundError(f"--image: no such file: {image}")
        root = image.resolve().parent
        segments.append(Segment.image_(image.name))
    if text is not None:
        segments.append(Segment.text_(text))
    return Sample("query", segments, "question"), root


@app.command("export")
@user_errors
def export_command(
    model: Annotated[Path, typer.Option("--model", "-m", help="Model bundle directory.")],
    out: Annotated[Path, typer.Option(help="Directory of the merged checkpoint (replaced).")],
    force: Annotated[bool, typer.Option(help="Replace OUT when it exists.")] = False,
) -> None:
    """Merge a LoRA bundle into a plain Hugging Face checkpoint in OUT (loads with the
    family's transformers class); the retrieval projector and its spec are copied beside it
    (sugar_extras.safetensors, sugar_extras.json)."""
    import shutil

    from sugar.io import atomic_directory, atomic_write_json
    from sugar.models.bundle import EXTRAS, load_bundle, read_manifest

    if out.exists() and not force:
        raise FileExistsError(f"{out} exists: pass --force to replace it")
    bundle = load_bundle(model)
    export = getattr(bundle.model, "export_merged", None)
    if export is None:
        raise ValueError(
            f"{model}: family {bundle.model.family!r} has no merged export (its bundle already "
            "holds every weight)"
        )
    with atomic_directory(out) as tmp:
        export(tmp)
        if (model / EXTRAS).is_file():
            shutil.copyfile(model / EXTRAS, tmp / "sugar_extras.safetensors")
        atomic_write_json(tmp / "sugar_extras.json", read_manifest(model)["extras"])
    typer.echo(f"merged {bundle.model.family} checkpoint: {out}")


@app.command("embed")
@user_errors
def embed_command(
    model: ModelDir,
    data: Annotated[Path | None, typer.Option(help="A sugar JSONL to embed.")] = None,
    text: Annotated[
        list[str] | None, typer.Option("--text", "-t", help="A text to embed (repeatable).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Write ids and vectors to this .npz (default: print JSON lines)."),
    ] = None,
    root: DataRoot = None,
    prefixes: Prefixes = False,
    batch_size: BatchSize = 32,
) -> None:
    """Embed the samples of DATA (or --text strings) with the model's retrieval head."""
    import io

    import numpy as np

    from sugar.data.schema import Sample, Segment
    from sugar.io import atomic_write_bytes

    if (data is None) == (text is None):
        raise ValueError("give exactly one of --data FILE or --text TEXT")
    bundle = _load_model(model)
    if data is not None:
        samples, root = _read_data(data, root)
    else:
        samples = [Sample(f"text-{i}", [Segment.text_(t)]) for i, t in enumerate(text or [])]
        root = Path(".")
    ids, vectors, _ = _entries(bundle, samples, root, prefixes, batch_size)
    matrix = vectors.numpy().astype(np.float32)
    if out is None:
        for id, row in zip(ids, matrix.tolist(), strict=True):
            typer.echo(json.dumps({"id": id, "vector": [round(x, 6) for x in row]}))
        return
    buffer = io.BytesIO()
    np.savez(buffer, ids=np.array(ids, dtype=str), vectors=matrix)
    atomic_write_bytes(out, buffer.getvalue())
    typer.echo(f"wrote {len(ids)} vectors of width {matrix.shape[1]} to {out}")


@index_app.command("build")
@user_errors
def index_build(
    directory: Annotated[Path, typer.Argument(help="Index directory to write (atomically).")],
    model: ModelDir,
    data: Annotated[Path, typer.Option(help="The sugar JSONL to index (e.g. kb_items).")],
    root: DataRoot = None,
    backend: Annotated[str, typer.Option(help="exact | flat | hnsw | ivf")] = "exact",
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="Backend parameter KEY=VALUE, e.g. -o nlist=64."),
    ] = None,
    prefixes: Prefixes = False,
    batch_size: BatchSize = 32,
) -> None:
    """Embed DATA and write a new index bound to the model's identity."""
    from sugar.config import parse_override
    from sugar.index import build_index

    params: dict[str, Any] = {}
    for text in option or []:
        keys, value = parse_override(text)
        params[".".join(keys)] = value
    bundle = _load_model(model)
    samples, root = _read_data(data, root)
    ids, vectors, metadata = _entries(bundle, samples, root, prefixes, batch_size)
    index = build_index(backend, bundle.projector.dim, bundle.identity, **params)  # type: ignore[arg-type]
    index.add(ids, vectors, metadata)
    index.save(directory)
    typer.echo(json.dumps(index.info()))


@index_app.command("add")
@user_errors
def index_add(
    directory: Annotated[Path, typer.Argument(help="An index built with --model.")],
    model: ModelDir,
    data: Annotated[Path, typer.Option(help="The sugar JSONL to add.")],
    root: DataRoot = None,
    prefixes: Prefixes = False,
    batch_size: BatchSize = 32,
) -> None:
    """Embed DATA and add it to the index (ids must be new); save atomically."""
    bundle = _load_model(model)
    index = bundle.open_index(directory)
    samples, root = _read_data(data, root)
    ids, vectors, metadata = _entries(bundle, samples, root, prefixes, batch_size)
    index.add(ids, vectors, metadata)
    index.save(directory)
    typer.echo(json.dumps(index.info()))


@index_app.command("delete")
@user_errors
def index_delete(
    directory: Annotated[Path, typer.Argument(help="An index directory.")],
    ids: Annotated[list[str], typer.Argument(help="Entry ids to remove.", metavar="ID")],
) -> None:
    """Remove entries by id (an unknown id is an error and nothing is removed); save atomically."""
    from sugar.index import Index

    index = Index.load(directory)
    index.delete(ids)
    index.save(directory)
    typer.echo(json.dumps(index.info()))


@index_app.command("info")
@user_errors
def index_info(directory: Annotated[Path, typer.Argument(help="An index directory.")]) -> None:
    """Print what the index manifest records (backend, params, dim, count, model identity)."""
    from sugar.index import Index

    typer.echo(json.dumps(Index.load(directory).info(), indent=2))


@app.command("search")
@user_errors
def search_command(
    model: ModelDir,
    index: Annotated[Path, typer.Option(help="An index built with --model.")],
    text: Annotated[str | None, typer.Argument(help="The query text.")] = None,
    image: ImagePath = None,
    k: Annotated[int, typer.Option("--k", "-k", help="Results to return.", min=1)] = 5,
) -> None:
    """Print the K best entries for a text and/or image query, as JSON."""
    bundle = _load_model(model)
    query, root = _query_sample(text, image)
    typer.echo(json.dumps(bundle.search(query, k, index=index, root=root), indent=2))


@app.command("ask")
@user_errors
def ask_command(
    model: ModelDir,
    question: Annotated[str, typer.Argument(help="The question.")],
    index: Annotated[
        Path | None, typer.Option(help="A knowledge index built with --model (from kb_items).")
    ] = None,
    image: ImagePath = None,
    k: Annotated[int, typer.Option("--k", "-k", help="Knowledge items to retrieve.", min=1)] = 3,
    retrieval: Annotated[
        bool, typer.Option("--retrieval/--no-retrieval", help="--no-retrieval: plain prompt.")
    ] = True,
    reference: Annotated[
        str, typer.Option(help="Template of one retrieved item: {payload}, {rank}, {id}.")
    ] = "{payload}",
    max_new_tokens: Annotated[int, typer.Option(help="Longest answer in tokens.", min=1)] = 32,
) -> None:
    """Answer a question (and --image) with retrieved knowledge in the prompt; print JSON with
    the answer, the prompt and the sources."""
    from sugar.rag import PromptTemplate

    if retrieval and index is None:
        raise ValueError("--index is required unless --no-retrieval")
    bundle = _load_model(model)
    root = Path(".")
    rel = None
    if image is not None:
        if not image.is_file():
            raise FileNotFoundError(f"--image: no such file: {image}")
        root, rel = image.resolve().parent, image.name
    result = bundle.ask(
        question, rel, k, retrieval, index=index, root=root,
        template=PromptTemplate(reference=reference), max_new_tokens=max_new_tokens,
    )  # fmt: skip
    typer.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))


@app.command("mine")
@user_errors
def mine_command(
    model: ModelDir,
    data: Annotated[Path, typer.Option(help="(query, positive) samples, e.g. caption JSONL.")],
    out: Annotated[Path, typer.Option(help="The JSONL to write, with meta.negatives extended.")],
    root: DataRoot = None,
    candidates: Annotated[
        Path | None, typer.Option(help="JSONL whose target texts are the pool (default: DATA).")
    ] = None,
    k: Annotated[int, typer.Option("--k", "-k", help="Negatives per query.", min=1)] = 3,
    margin: Annotated[
        float, typer.Option(help="Keep a candidate only if score <= positive score - MARGIN.")
    ] = 0.05,
    depth: Annotated[int, typer.Option(help="Candidates examined per query.", min=1)] = 100,
    keep_existing: Annotated[
        bool, typer.Option(help="Keep the samples' existing meta.negatives.")
    ] = True,
    batch_size: BatchSize = 32,
) -> None:
    """Mine hard negatives (kind "mined") with a trained model; write them as JSONL."""
    from sugar.data.jsonl import write_samples
    from sugar.mine import mine_hard_negatives

    bundle = _load_model(model)
    samples, root = _read_data(data, root)
    pool = _read_data(candidates, root)[0] if candidates is not None else None
    mined, summary = mine_hard_negatives(
        bundle.backbone, bundle.projector, samples, root, candidates=pool, k=k, margin=margin,
        depth=depth, keep_existing=keep_existing, **bundle.embed_options(batch_size, True),
    )  # fmt: skip
    write_samples(out, mined)
    typer.echo(json.dumps({**summary, "out": str(out)}, indent=2))


@app.command("eval")
@user_errors
def eval_command(
    model: Annotated[list[Path], typer.Option("--model", help="Bundle directory (repeatable).")],
    data: Annotated[Path, typer.Option(help="World root (or a root with the same layout).")],
    out: Annotated[Path, typer.Option(help="Report directory.")] = Path("runs/eval"),
    tasks: Annotated[
        str, typer.Option(help="Comma-separated tasks (default: all).")
    ] = "caption_retrieval,hard_negatives,winoground,story_retrieval,needle,vqa,pope,kb_qa",
    split: Annotated[str, typer.Option(help="Split to read (test is read once per model).")] = (
        "test"
    ),
    limit: Annotated[int | None, typer.Option(help="First N items per task.")] = None,
) -> None:
    """Evaluate bundles on the world's tasks; writes report.json, report.md and plots, with
    paired-bootstrap CIs of the first model minus each other one, and OUT/mteb/ (per-task
    results in MTEB's layout, sugar.eval.mteb)."""
    from sugar.eval.mteb import write_mteb_results
    from sugar.eval.report import headline_table, write_report
    from sugar.eval.tasks import TASKS, load_eval_model, run_tasks

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    results, metas = {}, {}
    for directory in model:
        evaluated = load_eval_model(directory)
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
    meta = {"models": [str(m) for m in model], "data": str(data), "split": split, "limit": limit}
    names_in_order = list(results)
    compare = (names_in_order[0], names_in_order[1:]) if len(names_in_order) > 1 else None
    report = write_report(out, results, meta, compare=compare)
    write_mteb_results(out / "mteb", results, metas, split,
                       {t: data / TASKS[t] / f"{split}.jsonl" for t in names})  # fmt: skip
    typer.echo(headline_table(results))
    typer.echo(f"report: {report}")


@app.command("demo")
@user_errors
def demo_command(
    out: Annotated[Path, typer.Option(help="Directory for every stage's output.")] = Path(
        "runs/demo"
    ),
    smoke: Annotated[bool, typer.Option(help="Toy sizes: seconds, figures meaningless.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the world and every run.")] = 0,
    config: ConfigPath = None,
    overrides: Overrides = None,
) -> None:
    """World -> teacher -> shared base -> Sugar and generative-only fine-tunes -> evaluation ->
    report, with per-stage timings."""
    from sugar.demo import run_demo

    cfg = load_config(config, overrides or [])
    run_demo(out, smoke=smoke, seed=seed, config=cfg, say=typer.echo)


bench_app = typer.Typer(help="Measure the method: the variant comparison.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("quality")
@user_errors
def bench_quality(
    out: Annotated[Path, typer.Option(help="Directory (shares the demo's stages).")] = Path(
        "runs/bench"
    ),
    smoke: Annotated[bool, typer.Option(help="Toy sizes: seconds, figures meaningless.")] = False,
    size: Annotated[
        str | None,
        typer.Option(help="demo (default), long (3x steps, defaults untuned) or smoke."),
    ] = None,
    seeds: Annotated[int, typer.Option(help="Seeds of the headline variants.", min=1)] = 3,
    workers: Annotated[int, typer.Option(help="One-thread worker processes.", min=1)] = 2,
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
    from sugar.bench import run_quality_bench

    cfg = load_config(config, overrides or [])
    path = run_quality_bench(out, smoke=smoke, size_name=size, seeds=seeds, workers=workers,
                             variants=variant, config=cfg, say=typer.echo)  # fmt: skip
    typer.echo(path.read_text(encoding="utf-8"))


# ---- serving (issue 19): the command lives in sugar.serve.command ----------------------------

app.command("serve")(user_errors(serve_command))


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    app(args=argv if argv is not None else sys.argv[1:], prog_name="sugar")
