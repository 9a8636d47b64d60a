"""The retrieval commands through the real CLI: embed, index build/add/delete/info, search, ask,
mine, and their one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from sugar.cli import app
from sugar.data.jsonl import read_samples, write_samples
from sugar.data.slices import slices
from tests.index.conftest import milvus_server, needs_milvus
from tests.rag.conftest import RagWorld


def _run(*args: Any, code: int = 0) -> str:
    """stdout of a successful command; stderr (the one-line error) of a failing one."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result.stdout if code == 0 else result.stderr


def _json(output: str) -> Any:
    return json.loads(output)


def test_index_search_delete_info_ask_round_trip(rag_world: RagWorld, tmp_path: Path) -> None:
    root, bundle, index = rag_world.root, rag_world.bundle, tmp_path / "kb"
    first, rest = tmp_path / "first.jsonl", tmp_path / "rest.jsonl"
    write_samples(first, rag_world.kb_items[:8])
    write_samples(rest, rag_world.kb_items[8:])
    info = json.loads(
        _run(
            "index", "build", index, "--model", bundle, "--data", first, "--root", root
        ).splitlines()[-1]
    )
    assert info["count"] == 8 and info["dim"] == 16
    _run("index", "add", index, "--model", bundle, "--data", rest, "--root", root)
    assert _json(_run("index", "info", index))["count"] == len(rag_world.kb_items)

    item = rag_world.kb_items[1]  # question-only key
    hits = _json(
        _run("search", "--model", bundle, "--index", index, item.segments[0].text, "--k", 3)
    )
    assert hits[0]["id"] == item.id and len(hits) == 3

    owner = rag_world.kb_items[0]  # image + question key
    image = root / owner.images[0]
    text = owner.segments[1].text
    hits = _json(_run("search", "--model", bundle, "--index", index, text, "--image", image))
    assert hits[0]["id"] == owner.id

    answer = _json(
        _run(
            "ask",
            "--model",
            bundle,
            "--index",
            index,
            text,
            "--image",
            image,
            "--k",
            2,
            "--max-new-tokens",
            3,
        )
    )
    assert answer["sources"][0]["id"] == owner.id and len(answer["sources"]) == 2
    assert answer["prompt"]["segments"][0]["text"].startswith(owner.meta["payload"] + "\n")
    plain = _json(
        _run(
            "ask",
            "--model",
            bundle,
            text,
            "--image",
            image,
            "--no-retrieval",
            "--max-new-tokens",
            3,
        )
    )
    assert plain["sources"] == []
    assert [s["kind"] for s in plain["prompt"]["segments"]] == ["image", "text"]

    _run("index", "delete", index, item.id)
    assert _json(_run("index", "info", index))["count"] == len(rag_world.kb_items) - 1
    hits = _json(_run("search", "--model", bundle, "--index", index, item.segments[0].text))
    assert item.id not in [hit["id"] for hit in hits]
    assert "unknown id" in _run("index", "delete", index, item.id, code=2)


def test_embed_and_prefix_index(rag_world: RagWorld, tmp_path: Path) -> None:
    root, bundle = rag_world.root, rag_world.bundle
    stories = root / "story" / "train.jsonl"
    out = tmp_path / "vectors.npz"
    _run("embed", "--model", bundle, "--data", stories, "--out", out, "--root", root)
    saved = np.load(out)
    samples = read_samples(stories, root, check_images=False)
    count = len(samples)
    assert saved["vectors"].shape == (count, 16) and saved["ids"][0] == "story-train-000000"
    lines = _run("embed", "--model", bundle, "--text", "A red square.", "-t", "Hi.").splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["text-0", "text-1"]
    info = json.loads(
        _run(
            "index",
            "build",
            tmp_path / "prefixes",
            "--model",
            bundle,
            "--data",
            stories,
            "--root",
            root,
            "--prefixes",
        ).splitlines()[-1]
    )
    assert info["count"] == sum(len(slices(sample)) for sample in samples)  # one per slice end


def test_mine_writes_hard_negatives_trainers_read(rag_world: RagWorld, tmp_path: Path) -> None:
    out = tmp_path / "mined.jsonl"
    data = rag_world.root / "caption" / "train.jsonl"
    summary = _json(
        _run(
            "mine",
            "--model",
            rag_world.bundle,
            "--data",
            data,
            "--out",
            out,
            "--root",
            rag_world.root,
            "--k",
            2,
            "--margin",
            0.0,
        )
    )
    mined = read_samples(out, rag_world.root)
    assert len(mined) == summary["queries"] == len(rag_world.captions)
    kinds = [n["kind"] for s in mined for n in s.meta["negatives"]]
    assert kinds.count("mined") == summary["mined"] > 0
    assert all({"kind", "caption"} <= set(n) for s in mined for n in s.meta["negatives"])


def test_errors_are_one_line(rag_world: RagWorld, tmp_path: Path) -> None:
    data = rag_world.root / "kb_items" / "train.jsonl"
    out = _run(
        "index", "build", tmp_path / "x", "--model", rag_world.plain_bundle, "--data", data, code=2
    )
    assert "no retrieval projector" in out and "Traceback" not in out
    assert "--index is required" in _run("ask", "--model", rag_world.bundle, "Hi?", code=2)
    assert "not a sugar index" in _run("index", "info", tmp_path, code=2)
    other = tmp_path / "other"
    _run(
        "index",
        "build",
        other,
        "--model",
        rag_world.bundle,
        "--data",
        data,
        "--root",
        rag_world.root,
    )
    manifest = json.loads((other / "manifest.json").read_text())
    assert manifest["model_identity"] != ""
    bad = _run("search", "--model", rag_world.plain_bundle, "--index", other, "Hi?", code=2)
    assert bad.startswith("sugar: error:") and len(bad.strip().splitlines()) == 1


def test_an_unusable_output_path_is_refused_before_any_model_work(
    rag_world: RagWorld, tmp_path: Path
) -> None:
    """embed and mine check --out first: the model path, which does not exist, is never read
    (its error would name it)."""
    data = rag_world.root / "caption" / "train.jsonl"
    (tmp_path / "file").write_text("x")
    no_model = tmp_path / "no-such-bundle"
    for command, out, refusal in (
        (["embed", "--text", "hi"], tmp_path, "is a directory, not a file"),
        (["embed", "--data", data], tmp_path / "file" / "v.npz", "is a file, not a directory"),
        (["mine", "--data", data], tmp_path, "is a directory, not a file"),
    ):
        error = _run(*command, "--model", no_model, "--out", out, code=2)
        assert refusal in error and str(no_model) not in error, error
        assert len(error.strip().splitlines()) == 1
    # the same commands with a usable --out reach the model (and fail on it)
    error = _run("embed", "--text", "hi", "--model", no_model, "--out", tmp_path / "v.npz", code=2)
    assert str(no_model) in error


@pytest.mark.slow
@needs_milvus
def test_milvus_backend_through_the_cli_matches_faiss(rag_world: RagWorld, tmp_path: Path) -> None:
    """--backend milvus is recorded: add, delete, search and ask use it without being told; ids
    and scores equal the FAISS flat index's on the tiny model."""
    root, bundle = rag_world.root, rag_world.bundle
    first, rest = tmp_path / "first.jsonl", tmp_path / "rest.jsonl"
    write_samples(first, rag_world.kb_items[:8])
    write_samples(rest, rag_world.kb_items[8:])
    hits = {}
    for backend in ("flat", "milvus"):
        index = tmp_path / backend
        _run("index", "build", index, "--model", bundle, "--data", first, "--root", root,
             "--backend", backend)  # fmt: skip
        _run("index", "add", index, "--model", bundle, "--data", rest, "--root", root)
        info = _json(_run("index", "delete", index, rag_world.kb_items[0].id))
        assert info["backend"] == backend and info["count"] == len(rag_world.kb_items) - 1
        hits[backend] = _json(_run("search", "--model", bundle, "--index", index, "-k", "5",
                                   "what colour is the ball"))  # fmt: skip
        answer = _json(_run("ask", "--model", bundle, "--index", index, "is it red?", "-k", "2"))
        assert len(answer["sources"]) == 2
    assert [h["id"] for h in hits["milvus"]] == [h["id"] for h in hits["flat"]]
    for got, expected in zip(hits["milvus"], hits["flat"], strict=True):
        assert abs(got["score"] - expected["score"]) <= 1e-6
    import torch

    from sugar.models.bundle import save_bundle
    from sugar.models.prefix import RetrievalProjector

    torch.manual_seed(1)
    other = RetrievalProjector(rag_world.model.hidden_size, 16)
    spec = {**other.spec, "image_pool": "mean"}
    save_bundle(
        tmp_path / "other", rag_world.model, extras={"projector": (spec, other.state_dict())}
    )
    wrong = _run("index", "add", tmp_path / "milvus", "--model", tmp_path / "other",
                 "--data", rest, "--root", root, code=2)  # fmt: skip
    assert "model identity" in wrong and "re-embed and rebuild" in wrong


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@needs_milvus
def test_an_unreachable_milvus_server_is_one_line_naming_the_uri(
    rag_world: RagWorld, tmp_path: Path
) -> None:
    """build, add and search against a Milvus server nobody listens on (a closed port, refused
    at once) or one stopped after the build: exit 2, one line naming the URI, no traceback."""
    root, bundle = rag_world.root, rag_world.bundle
    data = tmp_path / "kb.jsonl"
    write_samples(data, rag_world.kb_items[:4])
    uri = f"http://127.0.0.1:{_closed_port()}"
    error = _run("index", "build", tmp_path / "never", "--model", bundle, "--data", data,
                 "--root", root, "--backend", "milvus", "-o", f"uri={uri}", code=2)  # fmt: skip
    assert error.startswith(f"sugar: error: {uri}: cannot connect to the Milvus server")
    assert len(error.strip().splitlines()) == 1 and not (tmp_path / "never").exists()
    index = tmp_path / "kb"
    with milvus_server(tmp_path / "server.db") as live:
        _run("index", "build", index, "--model", bundle, "--data", data, "--root", root,
             "--backend", "milvus", "-o", f"uri={live}")  # fmt: skip
    # the server is gone: every command that opens the index says so in one line
    for command in (
        ["index", "add", index, "--model", bundle, "--data", data, "--root", root],
        ["search", "--model", bundle, "--index", index, "what colour is the ball"],
    ):
        error = _run(*command, code=2)
        assert error.startswith(f"sugar: error: {live}: cannot connect to the Milvus server")
        assert len(error.strip().splitlines()) == 1
