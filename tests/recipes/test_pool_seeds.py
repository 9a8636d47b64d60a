"""benchmarks/pool_seeds.py: a hand-trained variant's seeds pooled against the bench's runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(t2i: list[float]) -> dict:
    return {"caption_retrieval": {"t2i_r1": sum(t2i) / len(t2i), "per_item": {"t2i_r1": t2i}}}


def test_seeds_pair_with_the_same_seed_and_pool(tmp_path: Path) -> None:
    bench = {
        "runs": {
            "cafe/s1": _run([0.0, 0.0]),  # listed first: order must come from the seed
            "cafe/s0": _run([1.0, 0.0]),
            "teacher/s0": _run([0.0, 0.0]),
        }
    }
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    reports = []
    for seed, t2i in enumerate([[1.0, 1.0], [1.0, 0.0]]):
        path = tmp_path / f"r{seed}.json"
        path.write_text(json.dumps({"results": {"new": _run(t2i)}}))
        reports += ["--report", str(path)]
    script = [sys.executable, str(REPO / "benchmarks" / "pool_seeds.py")]
    args = ["--bench", str(tmp_path / "bench.json"), "--name", "new", "--versus", "cafe"]
    out = subprocess.run([*script, *args, *reports], capture_output=True, text=True, check=True)
    assert "| caption_retrieval.t2i_r1 | 75.0 +- 35.4 | 25.0 +- 35.4 | 0.0 +- 0.0 |" in out.stdout
    assert _difference(out.stdout) == ("+50.0", "4")
    # seed 0 alone pairs with cafe's seed 0 ([1, 1] - [1, 0]), not with the first run listed
    alone = subprocess.run(
        [*script, *args, *reports[:2]], capture_output=True, text=True, check=True
    )
    assert _difference(alone.stdout) == ("+50.0", "2")


def _difference(out: str) -> tuple[str, str]:
    row = next(
        line for line in out.splitlines() if line.startswith("| caption_retrieval.t2i_r1 | +")
    )
    cells = row.strip("| ").split(" | ")
    return cells[1], cells[3]
