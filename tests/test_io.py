from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sugar.io import (
    ChecksumError,
    atomic_directory,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    check_writable_file,
    sha256_bytes,
    sha256_file,
    verify_checksum,
    write_checksum,
    write_manifest,
)


def _visible(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


def test_atomic_write_replaces_content(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.json"
    atomic_write_json(target, {"x": 1})
    atomic_write_json(target, {"x": 2})
    assert json.loads(target.read_text()) == {"x": 2}
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.json"]


def test_exception_mid_write_keeps_old_file_and_leaves_nothing(tmp_path: Path) -> None:
    target = atomic_write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError), atomic_write(target, "w") as handle:
        handle.write("new, but half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_killed_process_keeps_old_file_and_next_write_cleans_up(tmp_path: Path) -> None:
    target = atomic_write_text(tmp_path / "a.txt", "old")
    script = textwrap.dedent(
        f"""
        import os, signal
        from sugar.io import atomic_write
        with atomic_write({str(target)!r}, "w") as handle:
            handle.write("partial" * 1000)
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert target.read_text() == "old"
    assert _visible(tmp_path) == ["a.txt"]
    leftovers = [p for p in tmp_path.iterdir() if p.name != "a.txt"]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".a.txt.sugar-tmp-")
    atomic_write_text(target, "new")  # the dead writer's temporary is removed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    assert target.read_text() == "new"


def test_atomic_write_rejects_append_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode='a'"), atomic_write(tmp_path / "x", "a"):
        pass


def test_check_writable_file_refuses_what_atomic_write_would(tmp_path: Path) -> None:
    assert check_writable_file(tmp_path / "new" / "deeper" / "x.npz") == tmp_path / "new" / (
        "deeper/x.npz"
    )  # missing parents: atomic_write creates them
    with pytest.raises(IsADirectoryError, match="is a directory"):
        check_writable_file(tmp_path)
    with pytest.raises(IsADirectoryError):  # the same refusal atomic_write makes, at the end
        atomic_write_bytes(tmp_path, b"x")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file, not a directory") as error:
        check_writable_file(tmp_path / "file" / "sub" / "x.npz")
    assert error.value.filename == str(tmp_path / "file")
    with pytest.raises(NotADirectoryError):
        atomic_write_bytes(tmp_path / "file" / "sub" / "x.npz", b"x")
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        with pytest.raises(PermissionError, match="cannot write"):
            check_writable_file(locked / "x.npz")


def test_atomic_directory_swaps_whole_directories(tmp_path: Path) -> None:
    target = tmp_path / "index"
    with atomic_directory(target) as tmp:
        (tmp / "a.bin").write_bytes(b"1")
    with atomic_directory(target) as tmp:
        (tmp / "b.bin").write_bytes(b"2")
    assert sorted(p.name for p in target.iterdir()) == [".sugar-owned", "b.bin"]
    with pytest.raises(RuntimeError), atomic_directory(target) as tmp:
        (tmp / "c.bin").write_bytes(b"3")
        raise RuntimeError("crash")
    assert sorted(p.name for p in target.iterdir()) == [".sugar-owned", "b.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux's")
def test_a_reader_never_finds_the_directory_missing_during_a_swap(tmp_path: Path) -> None:
    """The swap is one atomic exchange: a reader polling the manifest while the directory is
    replaced 300 times always finds one (with two renames it was missing for a moment, and a
    concurrent ``sugar index add`` failed with "not a sugar index")."""
    import threading

    target = tmp_path / "index"
    with atomic_directory(target) as tmp:
        (tmp / "manifest.json").write_text("0")
    missing, stop = [], threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                (target / "manifest.json").read_text()
            except FileNotFoundError:
                missing.append(1)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(300):
            with atomic_directory(target) as tmp:
                (tmp / "manifest.json").write_text(str(i))
    finally:
        stop.set()
        reader.join()
    assert not missing
    assert (target / "manifest.json").read_text() == "299"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]  # no old copy left


def test_atomic_directory_restores_an_interrupted_swap(tmp_path: Path) -> None:
    target = tmp_path / "index"
    with atomic_directory(target) as tmp:
        (tmp / "a.bin").write_bytes(b"1")
    # a crash between the two renames: the old version sits under its backup name
    os.replace(target, tmp_path / f".index.sugar-old-{os.getpid()}-x")
    with pytest.raises(RuntimeError), atomic_directory(target):
        raise RuntimeError("crash")
    assert (target / "a.bin").read_bytes() == b"1"


def test_checksums_detect_corruption(tmp_path: Path) -> None:
    path = atomic_write_bytes(tmp_path / "w.bin", b"weights")
    digest = write_checksum(path)
    assert digest == sha256_bytes(b"weights") == sha256_file(path)
    assert verify_checksum(path) == digest
    path.write_bytes(b"weightz")
    with pytest.raises(ChecksumError, match=r"w\.bin: checksum mismatch"):
        verify_checksum(path)
    (tmp_path / "w.bin.sha256").unlink()
    with pytest.raises(FileNotFoundError, match="checksum file not found"):
        verify_checksum(path)


def test_manifest_records_versions_seed_and_input_hashes(tmp_path: Path) -> None:
    import torch  # loaded, so the manifest says whether the CPU has native bfloat16

    from sugar.models.precision import native_bfloat16

    data = atomic_write_text(tmp_path / "data.jsonl", '{"id": 1}\n')
    folder = tmp_path / "teachers"
    folder.mkdir()
    (folder / "a").write_text("a")
    manifest = write_manifest(tmp_path / "run", seed=5, inputs={"data": data, "teachers": folder})
    on_disk = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["seed"] == 5
    assert manifest["inputs"]["data"] == sha256_file(data)
    assert len(manifest["inputs"]["teachers"]) == 64
    assert manifest["versions"]["torch"] and manifest["versions"]["sugar-mllm"]
    # the figures of model.autocast: auto depend on whether the CPU has native bfloat16
    assert manifest["host"]["cpu_bfloat16"] is native_bfloat16(torch.device("cpu"))
    assert manifest["host"]["cpu_count"] == os.cpu_count() and "cpu" in manifest["host"]
    with pytest.raises(FileNotFoundError, match="manifest input not found"):
        write_manifest(tmp_path / "run", seed=5, inputs={"x": tmp_path / "missing"})
