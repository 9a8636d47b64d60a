"""Issue 18 item 3: concurrent ``sugar index add`` processes on one index lose nothing; index
build replaces only with --force and never a foreign directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sugar.cli import app
from sugar.data.jsonl import write_samples
from sugar.data.schema import Sample
from sugar.index import Index
from tests.index.conftest import needs_milvus
from tests.rag.conftest import RagWorld


def _renamed(samples: list[Sample], prefix: str) -> list[Sample]:
    return [Sample(f"{prefix}-{s.id}", s.segments, s.task, s.meta) for s in samples]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["exact", pytest.param("milvus", marks=needs_milvus)])
def test_concurrent_index_adds_lose_no_entry(
    backend: str, rag_world: RagWorld, tmp_path: Path
) -> None:
    index = tmp_path / "kb"
    seed = tmp_path / "seed.jsonl"
    write_samples(seed, _renamed(rag_world.kb_items[:2], "seed"))
    base = ["index", "build", str(index), "--model", str(rag_world.bundle), "--data", str(seed),
            "--root", str(rag_world.root), "--backend", backend]  # fmt: skip
    assert CliRunner().invoke(app, base).exit_code == 0
    writers, expected = [], 2
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SUGAR_TORCH_THREADS": "1"}
    for k in range(3):  # three processes, each adding its own 12 entries
        part = tmp_path / f"part{k}.jsonl"
        items = _renamed(rag_world.kb_items, f"p{k}")
        write_samples(part, items)
        expected += len(items)
        command = [sys.executable, "-m", "sugar.cli", "index", "add", str(index)]
        command += ["--model", str(rag_world.bundle), "--data", str(part)]
        command += ["--root", str(rag_world.root)]
        pipe = subprocess.PIPE
        writers.append(subprocess.Popen(command, env=env, stdout=pipe, stderr=pipe))
    for writer in writers:
        _, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err.decode()[-2000:]
    loaded = Index.load(index)
    assert loaded.backend == backend and len(loaded) == expected
    assert {i.split("-")[0] for i in loaded.ids()} == {"seed", "p0", "p1", "p2"}


def test_index_build_replaces_only_with_force_and_never_user_files(
    rag_world: RagWorld, tmp_path: Path
) -> None:
    index, data = tmp_path / "kb", tmp_path / "items.jsonl"
    write_samples(data, rag_world.kb_items[:3])
    build = ["index", "build", str(index), "--model", str(rag_world.bundle), "--data", str(data),
             "--root", str(rag_world.root)]  # fmt: skip
    runner = CliRunner()
    assert runner.invoke(app, build).exit_code == 0
    again = runner.invoke(app, build)
    assert again.exit_code == 2 and "pass --force" in again.output
    assert runner.invoke(app, [*build, "--force"]).exit_code == 0
    (index / "notes.txt").write_text("mine")
    forced = runner.invoke(app, [*build, "--force"])
    assert forced.exit_code == 2 and "notes.txt, which sugar did not write" in forced.output
    assert (index / "notes.txt").read_text() == "mine"
    assert json.loads(runner.invoke(app, ["index", "info", str(index)]).output)["count"] == 3
