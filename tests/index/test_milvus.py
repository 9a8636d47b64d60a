"""The Milvus backend (embedded milvus-lite) against FAISS' exact flat index, its database files
checked before opening, reopened by another process, and its parameters and install hint. The
shared contract (save/load, delete, damaged manifest files) runs on it in test_persistence.py."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sugar.index import Index, ModelIdentityError, build_index
from sugar.io import ChecksumError
from tests.index.conftest import milvus_server, needs_milvus, unit_rows

pytestmark = needs_milvus


def test_milvus_flat_equals_faiss_flat_ids_and_scores() -> None:
    ids = [f"doc-{i:03d}" for i in range(300)]
    vectors, queries = unit_rows(300, 16, seed=3), unit_rows(20, 16, seed=4)
    milvus, flat = build_index("milvus", 16, "m"), build_index("flat", 16, "m")
    for index in (milvus, flat):
        index.add(ids, vectors)
        index.delete(ids[::7])
        index.add(["late"], unit_rows(1, 16, seed=5))
    got, expected = milvus.search(queries, k=10), flat.search(queries, k=10)
    for hits, reference in zip(got, expected, strict=True):
        assert [h["id"] for h in hits] == [h["id"] for h in reference]
        assert [h["score"] for h in hits] == pytest.approx(
            [h["score"] for h in reference], abs=1e-6
        )


def test_hnsw_index_type_finds_every_stored_vector() -> None:
    ids = [f"doc-{i:03d}" for i in range(200)]
    vectors = unit_rows(200, 16, seed=6)
    index = build_index("milvus", 16, "m", index_type="HNSW")
    index.add(ids, vectors)
    assert [hits[0]["id"] for hits in index.search(vectors, k=1)] == ids


def _saved(tmp_path: Path) -> Path:
    index = build_index("milvus", 16, "model-a")
    index.add([f"doc-{i}" for i in range(50)], unit_rows(50, 16, seed=7))
    return index.save(tmp_path / "index")


def test_a_damaged_or_missing_database_file_is_refused(tmp_path: Path) -> None:
    directory = _saved(tmp_path)
    files = sorted(p for p in (directory / "milvus.db").rglob("*") if p.is_file())
    victim = max(files, key=lambda p: p.stat().st_size)
    original = victim.read_bytes()
    victim.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(ChecksumError, match=f"{victim.name}: checksum mismatch"):
        Index.load(directory)
    victim.unlink()
    with pytest.raises(ValueError, match=r"differ from milvus-files\.json"):
        Index.load(directory)
    victim.write_bytes(original)
    assert len(Index.load(directory)) == 50


@pytest.mark.slow
def test_reopened_by_another_process_and_identity_checked(tmp_path: Path) -> None:
    directory = tmp_path / "index"
    script = (
        "from sugar.index import build_index\n"
        "import torch\n"
        "index = build_index('milvus', 16, 'model-a')\n"
        "torch.manual_seed(0)\n"
        "v = torch.nn.functional.normalize(torch.randn(30, 16), dim=1)\n"
        "index.add([f'doc-{i}' for i in range(30)], v, [{'n': i} for i in range(30)])\n"
        "index.delete(['doc-3'])\n"
        f"index.save({str(directory)!r})\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    import torch

    torch.manual_seed(0)
    vectors = torch.nn.functional.normalize(torch.randn(30, 16), dim=1)
    loaded = Index.load(directory, expected_model_identity="model-a")
    assert len(loaded) == 29 and "doc-3" not in loaded
    hits = loaded.search(vectors[:5], k=1, with_metadata=True)
    assert [h[0]["id"] for h in hits] == ["doc-0", "doc-1", "doc-2", hits[3][0]["id"], "doc-4"]
    assert hits[3][0]["id"] != "doc-3" and hits[4][0]["metadata"] == {"n": 4}
    with pytest.raises(ModelIdentityError, match="'model-a', not the expected 'model-b'"):
        Index.load(directory, expected_model_identity="model-b")


def test_parameters_and_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="index_type='IVF_PQ': choose one of"):
        build_index("milvus", 4, "m", index_type="IVF_PQ")
    with pytest.raises(ValueError, match=r"unknown milvus index parameter\(s\) \['nlist'\]"):
        build_index("milvus", 4, "m", nlist=4)
    monkeypatch.setitem(sys.modules, "pymilvus", None)
    with pytest.raises(ImportError, match=r"sugar-mllm\[milvus\]"):
        build_index("milvus", 4, "m")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """The URI of a Milvus server (:func:`milvus_server`)."""
    with milvus_server(tmp_path / "server.db") as uri:
        yield uri


@pytest.mark.slow
def test_server_mode_matches_flat_and_reopens_in_another_process(
    server: str, tmp_path: Path
) -> None:
    ids = [f"doc-{i:03d}" for i in range(120)]
    vectors, queries = unit_rows(120, 16, seed=8), unit_rows(10, 16, seed=9)
    index = build_index("milvus", 16, "model-a", uri=server, collection="kb")
    flat = build_index("flat", 16, "model-a")
    for each in (index, flat):
        each.add(ids, vectors, [{"n": i} for i in range(120)])
        each.delete(ids[:10])
    expected = flat.search(queries, k=5)
    got = index.search(queries, k=5)
    assert [[h["id"] for h in q] for q in got] == [[h["id"] for h in q] for q in expected]
    directory = index.save(tmp_path / "index")
    assert not (directory / "milvus.db").exists()  # the vectors live on the server
    script = (
        "import json, sys, torch\n"
        "from sugar.index import Index\n"
        f"index = Index.load({str(directory)!r}, expected_model_identity='model-a')\n"
        "queries = torch.tensor(json.loads(sys.stdin.read()))\n"
        "print(json.dumps([[h['id'] for h in q] for q in index.search(queries, k=5)]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], input=json.dumps(queries.tolist()), text=True,
        capture_output=True, check=True, timeout=120,
    )  # fmt: skip
    assert json.loads(out.stdout.splitlines()[-1]) == [[h["id"] for h in q] for q in expected]
    with pytest.raises(ValueError, match="collection 'kb' already exists"):
        build_index("milvus", 16, "model-b", uri=server, collection="kb").add(["x"], queries[:1])


def test_server_rows_a_killed_writer_never_saved_stay_hidden(server: str, tmp_path: Path) -> None:
    vectors = unit_rows(30, 16, seed=10)
    index = build_index("milvus", 16, "m", uri=server, collection="kb")
    index.add([f"doc-{i}" for i in range(20)], vectors[:20])
    directory = index.save(tmp_path / "index")
    reader = Index.load(directory)
    writer = Index.load(directory)
    writer.add([f"lost-{i}" for i in range(5)], vectors[20:25])  # killed before its save
    del writer
    # neither an open reader nor a fresh load returns the unsaved rows (the label filter)
    for index in (reader, Index.load(directory)):
        hits = index.search(vectors[20:25], k=30)
        assert all(h["id"].startswith("doc-") for q in hits for h in q) and len(hits[0]) == 20
    survivor = Index.load(directory)
    survivor.add([f"new-{i}" for i in range(5)], vectors[25:30])  # the same labels: upserted
    found = survivor.search(vectors[20:30], k=1)
    assert [q[0]["id"] for q in found[5:]] == [f"new-{i}" for i in range(5)]
    assert not any(q[0]["id"].startswith("lost-") for q in found)
    survivor.save(directory)
    assert len(Index.load(directory)) == 25


def test_server_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match=r"uri='grpc://x': '' \(embedded\) or a server"):
        build_index("milvus", 4, "m", uri="grpc://x")
    with pytest.raises(ValueError, match="collection='a-b': letters, digits and underscores"):
        build_index("milvus", 4, "m", collection="a-b")
