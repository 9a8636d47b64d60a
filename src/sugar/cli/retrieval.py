"""``sugar export``, ``embed``, ``index ...``, ``search``, ``ask`` and ``mine``: retrieval with a
trained model (issue 9)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from sugar.cli.app import DataRoot, app, index_app, user_errors

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


def _load_embedder(directory: Path) -> Any:
    """A bundle that embeds: one without a retrieval projector is refused before any data is
    read."""
    model = _load_model(directory)
    model.projector  # noqa: B018 (raises ValueError naming the bundle when it has none)
    return model


def _read_data(data: Path, root: Path | None) -> tuple[list[Any], Path]:
    from sugar.data.jsonl import read_samples

    root = data.parent if root is None else root
    # images verified while reading: a missing, corrupt or oversized one is named by file:line
    return read_samples(data, root, check_images=True), root


def _entries(
    model: Any, samples: list[Any], root: Path, prefixes: bool, batch_size: int,
    progress: bool = True,
) -> tuple[list[str], Any, list[dict[str, Any]]]:  # fmt: skip
    """Ids, vectors (N, P) and metadata (each sample's JSON) of samples or of all their
    prefixes."""
    import torch

    from sugar.index import prefix_entry

    vectors = model.embed(samples, root=root, prefixes=prefixes, batch_size=batch_size,
                          progress=progress)  # fmt: skip
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
    from sugar.owned import check_replaceable

    check_replaceable(out, replace=force)  # never a directory sugar did not write
    bundle = load_bundle(model)
    export = getattr(bundle.model, "export_merged", None)
    if export is None:
        raise ValueError(
            f"{model}: family {bundle.model.family!r} has no merged export (its bundle already "
            "holds every weight)"
        )
    with atomic_directory(out, replace=force, kind="export") as tmp:
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
    """Embed the samples of DATA (or --text strings) with the model's retrieval head. Under
    torchrun each rank embeds its shard of DATA (resumable, in OUT.shards) and rank 0 merges
    them into OUT."""
    import numpy as np

    from sugar.data.schema import Sample, Segment
    from sugar.embed import save_vectors
    from sugar.io import check_writable_file

    if (data is None) == (text is None):
        raise ValueError("give exactly one of --data FILE or --text TEXT")
    if out is not None:
        check_writable_file(out)  # before the model is loaded and anything embedded
    bundle = _load_embedder(model)
    if data is not None:
        samples, root = _read_data(data, root)
        if _ranks().world > 1:
            if out is None:
                raise ValueError("several ranks (torchrun) write shards: give --out FILE.npz")

            def write(entries: Any) -> None:
                save_vectors(out, entries[0], entries[1])
                typer.echo(f"wrote {len(entries[0])} vectors to {out}")

            _sharded(bundle, samples, root, data, prefixes, batch_size, out, write)
            return
    else:
        if _ranks().world > 1:
            raise ValueError("several ranks (torchrun) shard a --data file; embed --text alone")
        samples = [Sample(f"text-{i}", [Segment.text_(t)]) for i, t in enumerate(text or [])]
        root = Path(".")
    ids, vectors, _ = _entries(bundle, samples, root, prefixes, batch_size)
    matrix = vectors.numpy().astype(np.float32)
    if out is None:
        for id, row in zip(ids, matrix.tolist(), strict=True):
            typer.echo(json.dumps({"id": id, "vector": [round(x, 6) for x in row]}))
        return
    save_vectors(out, ids, matrix)
    typer.echo(f"wrote {len(ids)} vectors of width {matrix.shape[1]} to {out}")


@index_app.command("build")
@user_errors
def index_build(
    directory: Annotated[Path, typer.Argument(help="Index directory to write (atomically).")],
    model: ModelDir,
    data: Annotated[Path, typer.Option(help="The sugar JSONL to index (e.g. kb_items).")],
    root: DataRoot = None,
    backend: Annotated[
        str,
        typer.Option(help="exact | flat | hnsw | ivf | milvus (recorded: later commands use it)"),
    ] = "exact",
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="Backend parameter KEY=VALUE, e.g. -o nlist=64."),
    ] = None,
    prefixes: Prefixes = False,
    batch_size: BatchSize = 32,
    force: Annotated[
        bool, typer.Option(help="Replace DIRECTORY when it already holds a sugar index.")
    ] = False,
) -> None:
    """Embed DATA and write a new index bound to the model's identity (an existing index is
    replaced only with --force; a directory sugar did not write, never). Under torchrun each
    rank embeds its shard of DATA (resumable, in DIRECTORY.shards) and rank 0 writes the
    index."""
    from sugar.config import parse_override
    from sugar.index import build_index
    from sugar.owned import check_replaceable

    params: dict[str, Any] = {}
    for text in option or []:
        keys, value = parse_override(text)
        params[".".join(keys)] = value
    check_replaceable(directory, replace=force)  # before the embedding work
    bundle = _load_embedder(model)
    build_index(backend, bundle.projector.dim, bundle.identity, **params)  # type: ignore[arg-type]
    samples, root = _read_data(data, root)

    def write(entries: Any) -> None:
        index = build_index(backend, bundle.projector.dim, bundle.identity, **params)  # type: ignore[arg-type]
        index.add(*entries)
        with _index_lock(directory):
            index.save(directory, replace=force)
        typer.echo(json.dumps(index.info()))

    if _ranks().world > 1:
        _sharded(bundle, samples, root, data, prefixes, batch_size, directory, write)
    else:
        write(_entries(bundle, samples, root, prefixes, batch_size))


def _ranks() -> Any:
    """This process's :class:`sugar.index.shards.Rank` (joins torchrun's group, if any)."""
    from sugar.index.shards import init_ranks

    return init_ranks()


def _sharded(
    bundle: Any, samples: list[Any], root: Path, data: Path, prefixes: bool, batch_size: int,
    output: Path, write: Any,
) -> None:  # fmt: skip
    """Embed this rank's shard into ``OUTPUT.shards`` (skipped when a killed job already
    finished it), then on rank 0 merge the shards and ``write`` the merged entries once."""
    import torch.distributed as dist

    from sugar.index.shards import run_sharded
    from sugar.io import sha256_file
    from sugar.models.pretrained import PREPROCESSING

    def compute(chunk: Any) -> Any:
        ids, vectors, metadata = _entries(bundle, list(chunk), root, prefixes, batch_size, False)
        return ids, vectors.numpy(), metadata

    # how images become pixels is part of what a vector means: shards written before a change
    # to it (the centre crop) are refused, not merged with new ones
    fingerprint = {"data_sha256": sha256_file(data), "model_identity": bundle.identity,
                   "prefixes": prefixes, "preprocessing": PREPROCESSING}  # fmt: skip
    shards = output.with_name(output.name + ".shards")
    try:
        run_sharded(samples, compute, shards, fingerprint, _ranks(), write, batch_size,
                    log=lambda line: typer.echo(line, err=True))  # fmt: skip
    finally:
        dist.destroy_process_group()


def _index_lock(directory: Path) -> Any:
    """The index's mutation lock (:mod:`sugar.locks`), shared with ``sugar serve``."""
    from sugar.index.lock import INDEX_LOCK_TIMEOUT
    from sugar.locks import holding

    return holding(directory, INDEX_LOCK_TIMEOUT, "index")


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
    """Embed DATA and add it to the index (ids must be new); save atomically. Concurrent
    writers take turns (the index's lock): the index is re-read under the lock, so nothing
    another writer added is lost."""
    bundle = _load_embedder(model)
    bundle.open_index(directory)  # refuse a wrong index before the embedding work
    samples, root = _read_data(data, root)
    ids, vectors, metadata = _entries(bundle, samples, root, prefixes, batch_size)
    with _index_lock(directory):
        index = bundle.open_index(directory)
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

    with _index_lock(directory):
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
    instruction: Annotated[
        str | None,
        typer.Option(
            help="What to search for, through the bundle's control branch (sugar "
            "train-control); an error when the bundle has none."
        ),
    ] = None,
) -> None:
    """Print the K best entries for a text and/or image query, as JSON."""
    bundle = _load_model(model)
    query, root = _query_sample(text, image)
    hits = bundle.search(query, k, index=index, root=root, instruction=instruction)
    typer.echo(json.dumps(hits, indent=2))


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
    instruction: Annotated[
        str | None,
        typer.Option(
            help="What to retrieve, through the bundle's control branch (sugar train-control); "
            "an error when the bundle has none."
        ),
    ] = None,
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
        instruction=instruction,
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
    from sugar.io import check_writable_file
    from sugar.mine import mine_hard_negatives

    check_writable_file(out)  # before the model is loaded and anything mined
    bundle = _load_embedder(model)
    samples, root = _read_data(data, root)
    pool = _read_data(candidates, root)[0] if candidates is not None else None
    mined, summary = mine_hard_negatives(
        bundle.backbone, bundle.projector, samples, root, candidates=pool, k=k, margin=margin,
        depth=depth, keep_existing=keep_existing, **bundle.embed_options(batch_size, True),
    )  # fmt: skip
    write_samples(out, mined)
    typer.echo(json.dumps({**summary, "out": str(out)}, indent=2))
