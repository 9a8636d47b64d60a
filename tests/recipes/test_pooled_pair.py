"""benchmarks/pooled_pair.py: two models' paired difference per report and pooled."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = [sys.executable, str(REPO / "benchmarks" / "pooled_pair.py")]


def _report(path: Path, first: list[float], second: list[float]) -> Path:
    results = {
        name: {"vqa": {"exact_match": sum(v) / len(v), "per_item": {"exact_match": v}}}
        for name, v in (("a", first), ("b", second))
    }
    path.write_text(json.dumps({"results": results}))
    return path


def _rows(out: str) -> dict[str, list[str]]:
    lines = [line.strip("| ").split(" | ") for line in out.splitlines() if line.startswith("| ")]
    return {cells[0]: cells[1:] for cells in lines[1:]}


def test_reports_pair_item_by_item_and_pool(tmp_path: Path) -> None:
    r0 = _report(tmp_path / "r0.json", [1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0])
    r1 = _report(tmp_path / "r1.json", [0.0, 1.0, 1.0, 1.0], [0.0, 1.0, 1.0, 1.0])
    args = ["--first", "a", "--second", "b", "--report", str(r0), "--report", str(r1)]
    out = subprocess.run([*SCRIPT, *args], capture_output=True, text=True, check=True).stdout
    rows = _rows(out)
    # a, b, difference, CI, n, disagree %
    assert rows[str(r0)][:2] == ["75.0", "50.0"] and rows[str(r0)][2] == "+25.0"
    assert rows[str(r0)][4:6] == ["4", "25.0"]
    assert rows[str(r1)][2] == "+0.0" and rows[str(r1)][5] == "0.0"
    pooled = rows["pooled over 2"]
    assert pooled[:3] == ["75.0", "62.5", "+12.5"] and pooled[4:6] == ["8", "12.5"]


def test_a_missing_model_or_unequal_items_is_named(tmp_path: Path) -> None:
    r0 = _report(tmp_path / "r0.json", [1.0, 0.0], [1.0, 0.0, 1.0])
    base = [*SCRIPT, "--report", str(r0)]
    missing = subprocess.run(
        [*base, "--first", "a", "--second", "c"], capture_output=True, text=True
    )
    assert missing.returncode != 0 and "no model 'c'" in missing.stderr
    unequal = subprocess.run(
        [*base, "--first", "a", "--second", "b"], capture_output=True, text=True
    )
    assert unequal.returncode != 0 and "2 items against 3" in unequal.stderr


def test_names_can_differ_from_report_to_report(tmp_path: Path) -> None:
    r0 = _report(tmp_path / "r0.json", [1.0, 1.0], [0.0, 1.0])
    r1 = _report(tmp_path / "r1.json", [1.0, 0.0], [1.0, 0.0])
    data = json.loads(r1.read_text())
    data["results"] = {"a": data["results"]["a"], "b1": data["results"]["b"]}
    r1.write_text(json.dumps(data))
    args = ["--first", "a", "--second", "b", "--second", "b1"]
    reports = ["--report", str(r0), "--report", str(r1)]
    out = subprocess.run([*SCRIPT, *args, *reports], capture_output=True, text=True, check=True)
    assert _rows(out.stdout)["pooled over 2"][:3] == ["75.0", "50.0", "+25.0"]
    assert out.stdout.startswith("a - b/b1,")
    twice = subprocess.run(
        [*SCRIPT, *args, "--second", "c", *reports], capture_output=True, text=True
    )
    assert twice.returncode != 0 and "--second given 3 times for 2 reports" in twice.stderr
