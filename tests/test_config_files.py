"""Config files merged in order (overlays) and the ``rebase`` entry (sugar.config_files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sugar.config import ConfigError, load_config
from sugar.control.config import load_control_config

REBASE = "rebase:\n  prefix: runs/\n  to: runs/smoke/\n  fields: [{}]\n"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_a_later_file_changes_only_the_keys_it_names(tmp_path: Path) -> None:
    first = _write(
        tmp_path / "a.yaml",
        "run:\n  seed: 3\ntrain:\n  steps: 50\n  lr: 0.01\ndata:\n  train: [a.jsonl, b.jsonl]\n",
    )
    second = _write(tmp_path / "b.yaml", "train:\n  steps: 4\ndata:\n  train: [c.jsonl]\n")
    cfg = load_config([first, second])
    assert (cfg.run.seed, cfg.train.steps, cfg.train.lr) == (3, 4, 0.01)
    assert cfg.data.train == ["c.jsonl"]  # a list replaces the list before it
    assert load_config([second, first]).train.steps == 50  # order matters
    assert load_config([first, second], ["train.steps=7"]).train.steps == 7  # overrides last
    assert load_config(first) == load_config([first])


def test_an_unknown_key_names_the_file_that_holds_it(tmp_path: Path) -> None:
    first = _write(tmp_path / "a.yaml", "train:\n  steps: 5\n")
    second = _write(tmp_path / "b.yaml", "train:\n  stpes: 4\n")
    with pytest.raises(ConfigError, match=r"b\.yaml: unknown config key 'train\.stpes'.*'steps'"):
        load_config([first, second])
    bad_value = _write(tmp_path / "c.yaml", "train:\n  steps: 0\n")
    with pytest.raises(ConfigError, match=r"a\.yaml \+ .*c\.yaml: train\.steps=0"):
        load_config([first, bad_value])
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml"):
        load_config([first, tmp_path / "nope.yaml"])


def test_rebase_moves_the_listed_fields_defaults_included(tmp_path: Path) -> None:
    config = _write(
        tmp_path / "a.yaml",
        "run:\n  output_dir: runs/sugar\ntrain:\n  init_from: runs/base/model\n"
        "data:\n  root: /data/world\n",
    )
    fields = "run.output_dir, data.root, train.init_from, teacher.head_dir, model.feature_cache"
    overlay = _write(tmp_path / "smoke.yaml", REBASE.format(fields))
    cfg = load_config([config, overlay])
    assert cfg.run.output_dir == "runs/smoke/sugar"
    assert cfg.train.init_from == "runs/smoke/base/model"
    assert cfg.teacher.head_dir == "runs/smoke/teacher"  # the default, runs/teacher, moved
    assert cfg.data.root == "/data/world"  # not under the prefix: kept
    assert cfg.model.feature_cache == "cache/vision"  # listed, not under the prefix: kept
    assert cfg.structure == load_config(config).structure  # nothing else changes
    assert load_config(overlay).train.init_from is None  # null stays null
    moved = load_config([config, overlay], ["run.output_dir=runs/mine"])
    assert moved.run.output_dir == "runs/mine"  # an override is never moved


@pytest.mark.parametrize(
    ("entry", "pattern"),
    [
        (REBASE.format("train.steps"), r"rebase\.fields: 'train\.steps': not a text field"),
        (REBASE.format("train.nope"), r"rebase\.fields: 'train\.nope': no such config field"),
        (REBASE.format("run.output_dir.x"), r"'output_dir' is not a section|not a text field"),
        (REBASE.format("run.output_dir").replace("to: runs/smoke/", "to: runs/smoke"),
         r"rebase\.to='runs/smoke': must be a folder ending in '/'"),
        (REBASE.format("run.output_dir") + "  extra: 1\n", r"unknown config key 'rebase\.extra'"),
        ("rebase: [runs/]\n", r"rebase: expected a mapping"),
    ],
)  # fmt: skip
def test_a_bad_rebase_names_the_file_and_the_field(
    tmp_path: Path, entry: str, pattern: str
) -> None:
    overlay = _write(tmp_path / "over.yaml", entry)
    with pytest.raises(ConfigError, match=pattern) as error:
        load_config(overlay)
    assert "over.yaml" in str(error.value)


def test_train_control_configs_take_overlays_too(tmp_path: Path) -> None:
    config = _write(tmp_path / "c.yaml", "base: runs/sugar/model\noutput_dir: runs/control\n")
    overlay = _write(tmp_path / "o.yaml", REBASE.format("base, output_dir") + "rounds: 1\n")
    cfg = load_control_config([config, overlay], [])
    assert (cfg.base, cfg.output_dir) == ("runs/smoke/sugar/model", "runs/smoke/control")
    assert cfg.rounds == 1
    with pytest.raises(ConfigError, match="name the sugar bundle"):
        load_control_config([overlay], [])
