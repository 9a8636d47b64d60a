"""save -> load, deletion on every backend; corrupt, foreign and half-written files refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import sugar.index.base
from sugar.index import ChecksumError, Index, ModelIdentityError, build_index
from tests.index.conftest import BACKENDS, params_of, unit_rows


def _built(backend: str, corpus: tuple[list[str], torch.Tensor]) -> Index:
    ids, vectors = corpus
    index = build_index(backend, 16, "model-a", **params_of(backend))
    index.add(ids, vectors, [{"n": i, "text": f"caption {i}"} for i in range(len(ids))])
    return index


@pytest.mark.parametrize("backend", BACKENDS)
def test_save_load_round_trip(backend: str, corpus, tmp_path: Path) -> None:
    index = _built(backend, corpus)
    queries = unit_rows(10, 16, seed=20)
    before = index.search(queries, k=5, with_metadata=True)
    index.save(tmp_path / "index")
    loaded = Index.load(tmp_path / "index", expected_model_identity="model-a")
    assert type(loaded) is type(index)
    assert loaded.info() == index.info()
    assert loaded.ids() == index.ids()
    assert loaded.search(queries, k=5, with_metadata=True) == before
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["backend"] == backend and manifest["count"] == 200 and manifest["dim"] == 16
    assert set(manifest["files"]) == {"entries.jsonl", *type(index).data_files}
    loaded.add(["new"], unit_rows(1, 16, seed=21))  # labels continue after the loaded ones
    assert loaded.search(unit_rows(1, 16, seed=21), k=1)[0][0]["id"] == "new"


@pytest.mark.parametrize("backend", BACKENDS)
def test_delete_removes_exactly_that_id(backend: str, corpus, tmp_path: Path) -> None:
    ids, vectors = corpus
    index = _built(backend, corpus)
    victim = ids[17]
    assert index.search(vectors[17:18], k=1)[0][0]["id"] == victim
    index.delete([victim])
    assert victim not in index and len(index) == len(ids) - 1
    every = index.search(vectors, k=len(ids))  # every live entry, for every stored vector
    assert all(sorted(h["id"] for h in hits) == sorted(set(ids) - {victim}) for hits in every)
    index.save(tmp_path / "index")
    loaded = Index.load(tmp_path / "index")
    assert victim not in loaded and sorted(loaded.ids()) == sorted(set(ids) - {victim})
    hits = loaded.search(vectors[17:18], k=len(ids))[0]
    assert victim not in {hit["id"] for hit in hits} and len(hits) == len(ids) - 1
    with pytest.raises(KeyError):
        loaded.get_metadata(victim)
    loaded.add([victim], vectors[17:18])  # the id is free again
    assert loaded.search(vectors[17:18], k=1)[0][0]["id"] == victim


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("damage", ["truncate", "alter"])
def test_truncated_or_altered_files_are_refused(
    backend: str, damage: str, corpus, tmp_path: Path
) -> None:
    directory = _built(backend, corpus).save(tmp_path / "index")
    for name in ("manifest.json", "entries.jsonl", *build_index_class(backend).data_files):
        path = directory / name
        original = path.read_bytes()
        if damage == "truncate":
            path.write_bytes(original[: len(original) // 2])
        else:
            middle = len(original) // 2
            path.write_bytes(
                original[:middle] + bytes([original[middle] ^ 1]) + original[middle + 1 :]
            )
        with pytest.raises(ChecksumError, match=rf"{name}: checksum mismatch"):
            Index.load(directory)
        path.write_bytes(original)
    Index.load(directory)  # restored: loads again


def build_index_class(backend: str) -> type[Index]:
    return type(build_index(backend, 16, "model-a", **params_of(backend)))


def test_another_models_index_is_refused(corpus, tmp_path: Path) -> None:
    directory = _built("exact", corpus).save(tmp_path / "index")
    with pytest.raises(ModelIdentityError, match=r"'model-a', not the expected 'model-b'"):
        Index.load(directory, expected_model_identity="model-b")
    assert Index.load(directory).model_identity == "model-a"  # no expectation: no check


@pytest.mark.parametrize("backend", ["exact", "hnsw"])
def test_the_old_index_survives_a_failed_write(
    backend: str, corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "index"
    old = _built(backend, corpus)
    old.save(directory)
    newer = _built(backend, corpus)
    newer.delete(corpus[0][:50])
    written: list[str] = []

    def failing_write_checksum(path: Path) -> str:  # fails after the entries file is written
        written.append(Path(path).name)
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(sugar.index.base, "write_checksum", failing_write_checksum)
    with pytest.raises(OSError, match="simulated"):
        newer.save(directory)
    monkeypatch.undo()
    assert written == ["entries.jsonl"]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["index"]
    survivor = Index.load(directory, expected_model_identity="model-a")
    assert survivor.ids() == old.ids()


def test_save_refuses_to_replace_a_directory_that_is_not_an_index(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    index = build_index("exact", 4, "model-a")
    with pytest.raises(FileExistsError, match="not written by sugar"):
        index.save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_missing_manifest_and_wrong_class(corpus, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no manifest\.json"):
        Index.load(tmp_path)
    directory = _built("flat", corpus).save(tmp_path / "index")
    from sugar.index import ExactIndex

    with pytest.raises(ValueError, match="a FlatIndex, not a ExactIndex"):
        ExactIndex.load(directory)


def test_a_save_between_two_reads_is_read_again_not_mixed(
    corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader takes no lock: when a concurrent save swaps the directory after the reader
    read the manifest and before it read the entries, the load reads the new version whole
    (before, it failed with "N entries, manifest says M"). A damaged index with an unchanged
    manifest still fails."""
    ids, vectors = corpus
    small = build_index("exact", 16, "model-a")
    small.add(ids[:2], vectors[:2])
    small.save(tmp_path / "index")
    big = _built("exact", corpus)
    original = sugar.index.base._read_entries
    swaps = []

    def read_during_a_swap(path: Path):  # type: ignore[no-untyped-def]
        if not swaps:
            swaps.append(1)
            big.save(tmp_path / "index")  # another writer, between the two reads
        return original(path)

    monkeypatch.setattr(sugar.index.base, "_read_entries", read_during_a_swap)
    loaded = Index.load(tmp_path / "index")
    assert swaps and len(loaded) == len(ids) and loaded.ids() == big.ids()
    monkeypatch.setattr(sugar.index.base, "_read_entries", original)
    entries = tmp_path / "index" / "entries.jsonl"
    sidecar = entries.with_name(entries.name + ".sha256")
    lines = entries.read_text().splitlines()
    entries.write_text("\n".join(lines[:-1]) + "\n")  # a damaged index, manifest unchanged
    sidecar.unlink(missing_ok=True)
    with pytest.raises((ChecksumError, sugar.index.base.IndexFormatError, FileNotFoundError)):
        Index.load(tmp_path / "index")
