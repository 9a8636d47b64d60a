"""Issue 18 item 2: sugar replaces or deletes only directories it wrote, and even then nothing
it did not write."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sugar.cli import app
from sugar.io import atomic_directory
from sugar.owned import MARKER, ForeignDirectoryError, check_replaceable, remove_owned
from sugar.recipes.demo import run_demo


def _world(out: Path, *extra: str) -> object:
    return CliRunner().invoke(app, ["data", "world", "--out", str(out), "--size", "12", *extra])


def test_data_world_never_deletes_user_files(tmp_path: Path) -> None:
    out = tmp_path / "w"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    result = _world(out, "--force")
    assert result.exit_code == 2 and "not written by sugar" in result.output
    assert (out / "thesis.tex").read_text() == "years of work"

    fresh = tmp_path / "fresh"
    assert _world(fresh).exit_code == 0 and (fresh / MARKER).is_file()
    again = _world(fresh)
    assert again.exit_code == 2 and "pass --force" in again.output
    assert _world(fresh, "--force").exit_code == 0
    (fresh / "caption" / "mine.txt").write_text("inside a sugar subdirectory")  # nested: ours
    (fresh / "notes.txt").write_text("a user's file beside sugar's")
    refused = _world(fresh, "--force")
    assert refused.exit_code == 2 and "notes.txt, which sugar did not write" in refused.output
    assert (fresh / "notes.txt").is_file()


def test_remove_owned_and_atomic_directory_keep_foreign_files(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with atomic_directory(target, kind="bundle") as tmp:
        (tmp / "a.bin").write_bytes(b"1")
    with (
        pytest.raises(FileExistsError, match="pass --force"),
        atomic_directory(target, replace=False),
    ):
        pass
    (target / "keep.txt").write_text("x")
    with pytest.raises(ForeignDirectoryError, match=r"keep\.txt"), atomic_directory(target) as tmp:
        (tmp / "b.bin").write_bytes(b"2")
    with pytest.raises(ForeignDirectoryError, match=r"keep\.txt"):
        remove_owned(target)
    assert (target / "keep.txt").is_file() and (target / "a.bin").is_file()
    (target / "keep.txt").unlink()
    remove_owned(target)
    assert not target.exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ForeignDirectoryError, match="not a directory"):
        check_replaceable(tmp_path / "file", replace=True)
    (tmp_path / "forged").mkdir()
    (tmp_path / "forged" / MARKER).write_text("[1, 2]")  # not a marker sugar writes
    (tmp_path / "forged" / "data.txt").write_text("x")
    with pytest.raises(ForeignDirectoryError, match="not written by sugar"):
        remove_owned(tmp_path / "forged")


def test_demo_refuses_a_directory_with_user_files_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "my_model.bin").write_bytes(b"x")
    with pytest.raises(ForeignDirectoryError, match="not written by sugar"):
        run_demo(tmp_path, smoke=True, say=lambda _: None, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base"]


def test_teachers_embed_claims_its_cache_and_refuses_a_foreign_one(tmp_path: Path) -> None:
    import torch

    from sugar.models.feature_cache import FeatureCache, claim_cache
    from sugar.owned import marker_entries

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("a user's file")
    args = ["teachers", "embed", "--data", str(tmp_path / "none.jsonl")]
    result = CliRunner().invoke(app, [*args, f"teacher.cache_dir={foreign}"])
    assert result.exit_code == 2 and "not written by sugar" in result.output  # before any work
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]

    filled = tmp_path / "filled"  # a cache that training filled before caches were claimed
    cache = FeatureCache(filled, "encoder-a")
    cache.put({"k": torch.ones(2)})
    cache.flush()
    claim_cache(filled)
    assert marker_entries(filled) == ("feature cache", {cache.directory.name})  # type: ignore[union-attr]
    FeatureCache(filled, "encoder-b").put({"k": torch.ones(1)})  # a new folder: accepted later
    claim_cache(filled)
    assert len(marker_entries(filled)[1]) == 2  # type: ignore[index]
    (filled / "notes.txt").write_text("a user's file beside sugar's")
    with pytest.raises(ForeignDirectoryError, match=r"notes\.txt, which sugar did not write"):
        claim_cache(filled)
    fresh = claim_cache(tmp_path / "new")
    assert marker_entries(fresh) == ("feature cache", set())
    missing = CliRunner().invoke(app, [*args, f"teacher.cache_dir={fresh}"])
    assert missing.exit_code == 2 and "head file not found" in missing.output  # claim passed
