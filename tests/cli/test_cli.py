"""The command-line surface: a snapshot of commands and flags, and the installed script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from sugar.cli import app

SNAPSHOT = Path(__file__).with_name("cli_snapshot.json")


def _describe(command: Any, path: str = "sugar") -> dict[str, Any]:
    """Commands and their parameters (duck-typed: typer vendors its own click)."""
    out: dict[str, Any] = {}
    params = []
    for p in command.params:
        params.append(
            {
                "name": p.name,
                "kind": p.param_type_name,
                "flags": sorted(p.opts),
                "required": p.required,
                "multiple": bool(getattr(p, "multiple", False) or p.nargs == -1),
            }
        )
    out[path] = params
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        out.update(_describe(sub, f"{path} {name}"))
    return out


def test_command_and_flag_set_matches_snapshot() -> None:
    """A new command or flag is a deliberate diff: refresh with SUGAR_UPDATE_SNAPSHOT=1."""
    current = _describe(typer.main.get_command(app))
    if os.environ.get("SUGAR_UPDATE_SNAPSHOT") == "1":
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    expected = json.loads(SNAPSHOT.read_text())
    assert current == expected, (
        "the CLI changed; if on purpose, rerun with SUGAR_UPDATE_SNAPSHOT=1 and commit "
        f"{SNAPSHOT.name}"
    )


def test_config_show_resolves_and_reports_errors_cleanly() -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["config", "show", "structure.alpha=0.5"])
    assert ok.exit_code == 0, ok.output
    assert "alpha: 0.5" in ok.output
    bad = runner.invoke(app, ["config", "show", "structure.alpah=0.5"])
    assert bad.exit_code == 2
    assert "did you mean 'alpha'" in bad.output
    assert "Traceback" not in bad.output


def test_config_save_writes_a_loadable_file(tmp_path: Path) -> None:
    out = tmp_path / "resolved.yaml"
    result = CliRunner().invoke(app, ["config", "save", str(out), "run.seed=4"])
    assert result.exit_code == 0, result.output
    again = CliRunner().invoke(app, ["config", "show", "--config", str(out)])
    assert "seed: 4" in again.output


def test_installed_console_script_prints_help() -> None:
    exe = shutil.which("sugar")
    if exe is None:
        pytest.fail("the 'sugar' console script is not on PATH: run scripts/setup.sh")
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "config" in proc.stdout
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert version.stdout.startswith("sugar ")


def test_data_convert_then_validate(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (8, 8), "red").save(tmp_path / "a.png")
    (tmp_path / "c.csv").write_text("image,caption\na.png,A red square.\n")
    out = tmp_path / "out.jsonl"
    runner = CliRunner()
    result = runner.invoke(
        app, ["data", "convert", "image_caption_csv", str(tmp_path / "c.csv"), str(out)]
    )
    assert result.exit_code == 0, result.output
    checked = runner.invoke(app, ["data", "validate", str(out)])
    assert checked.exit_code == 0, checked.output
    assert json.loads(checked.output)["images_checked"] == 1
    (tmp_path / "bad.jsonl").write_text('{"id": "x", "segments": []}\n')
    bad = runner.invoke(app, ["data", "validate", str(tmp_path / "bad.jsonl")])
    assert bad.exit_code == 2
    assert "bad.jsonl:1" in bad.output


def test_data_convert_options_are_strings(tmp_path: Path) -> None:
    """A tab delimiter and a numeric folder name reach the converter as written (they were
    once read as YAML: an empty string and the integer 2017, and a traceback)."""
    from PIL import Image

    (tmp_path / "2017").mkdir()
    Image.new("RGB", (8, 8), "red").save(tmp_path / "2017" / "a.png")
    (tmp_path / "c.tsv").write_text("image\tcaption\na.png\tA red square.\n")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["data", "convert", "image_caption_csv",
                                      str(tmp_path / "c.tsv"), str(out), "-o", "delimiter=\t",
                                      "-o", "image_dir=2017"])  # fmt: skip
    assert result.exit_code == 0, result.output
    sample = json.loads(out.read_text())
    assert sample["segments"][0]["image"] == "2017/a.png"
    assert sample["segments"][1]["text"] == "A red square."
    convert = ["data", "convert", "image_caption_csv", str(tmp_path / "c.tsv"), str(out)]
    bad = CliRunner().invoke(app, [*convert, "-o", "delimiter"])
    assert bad.exit_code == 2 and "expected KEY=VALUE" in bad.output


def test_data_world_writes_a_small_world(tmp_path: Path) -> None:
    out = tmp_path / "world"
    result = CliRunner().invoke(
        app, ["data", "world", "--out", str(out), "--size", "20", "--seed", "3"]
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 3
    assert manifest["world"]["tasks"]["caption"] == {"train": 20, "val": 2, "test": 8}
    bad = CliRunner().invoke(app, ["data", "world", "--out", str(out), "world.shapes=[circle]"])
    assert bad.exit_code == 2
    assert "world.shapes" in bad.output
    assert (out / "manifest.json").exists()  # a failed run leaves the old world in place
