"""The knowledge-editing measurement (issue 23): every editor on one base, sequential edits,
MMEdit's five metrics at 1, 10 and 100 edits, for several edit sets (seeds).

For each seed s the world gets the edit sets ``edit/test.jsonl`` (reported; locality probes
from the val split) and ``edit/train.jsonl`` (training-split facts, locality probes from the
training split: UniKE's scope space is trained on it and T-Patcher's negatives come from it;
never evaluated), built by :func:`sugar.data.world.edits.build_edit_set` with seed s. Each
method starts from a fresh copy of the base.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from sugar.data.world.edits import build_edit_set
from sugar.edit.base import build_editor
from sugar.edit.evaluate import sequential_edit_scores
from sugar.edit.records import read_edits
from sugar.edit.unike import UniKEEditor
from sugar.io import atomic_write_json, atomic_write_text
from sugar.models.bundle import load_bundle

__all__ = ["METHODS", "bench_table", "run_edit_bench", "run_unike_validation"]

METHODS = ("ft", "context", "patcher", "memory", "unike")


def run_edit_bench(
    model: str | Path,
    root: str | Path,
    out: str | Path,
    *,
    methods: Sequence[str] = METHODS,
    seeds: Sequence[int] = (0,),
    count: int = 100,
    support: int = 400,
    checkpoints: Sequence[int] = (1, 10, 100),
    options: dict[str, dict[str, Any]] | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every method on every seed's test edit set; write ``out/edit_bench.json`` and
    ``out/edit_bench.md``; return the results ``{seed: {method: scores}}``."""
    root, out = Path(root), Path(out)
    base = load_bundle(model).model.eval()
    results: dict[str, Any] = {}
    for seed in seeds:
        build_edit_set(root, "train", support, locality_split="train", seed=seed)
        build_edit_set(root, "test", count, locality_split="val", seed=seed)
        train_edits = read_edits(root / "edit" / "train.jsonl", root)
        test_edits = read_edits(root / "edit" / "test.jsonl", root)
        results[str(seed)] = {}
        for method in methods:
            torch.manual_seed(seed)  # T-Patcher's key noise
            start = time.perf_counter()
            editor = build_editor(method, copy.deepcopy(base), root, train_edits,
                                  **(options or {}).get(method, {}))  # fmt: skip
            scores = sequential_edit_scores(editor, test_edits, checkpoints, say=say)
            scores["seconds"] = time.perf_counter() - start
            results[str(seed)][method] = scores
            say(f"seed {seed} {method}: {json.dumps(scores)}")
            atomic_write_json(out / "edit_bench.json", results)
    atomic_write_text(out / "edit_bench.md", bench_table(results))
    return results


def run_unike_validation(
    model: str | Path,
    root: str | Path,
    out: str | Path,
    *,
    thresholds: Sequence[float] = (0.4, 0.5, 0.6),
    max_frequencies: Sequence[float] = (0.05, 0.1, 0.15),
    truth_strengths: Sequence[float] = (0.0,),
    count: int = 50,
    support: int = 400,
    seed: int = 0,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """UniKE's ``threshold`` x ``max_frequency`` x ``truth_strength`` on validation edits:
    ``count`` sequential edits of the val split (locality probes from the train split), one
    scope space (and truthful direction) trained on ``support`` training-split edits and shared
    by every setting. Writes and returns ``{"threshold=T max_frequency=F truth_strength=S":
    scores}`` (``out/edit_validation.json``)."""
    root, out = Path(root), Path(out)
    base = load_bundle(model).model.eval()
    build_edit_set(root, "train", support, locality_split="train", seed=seed)
    build_edit_set(root, "val", count, locality_split="train", seed=seed)
    train_edits = read_edits(root / "edit" / "train.jsonl", root)
    val_edits = read_edits(root / "edit" / "val.jsonl", root)
    trained = build_editor("unike", copy.deepcopy(base), root, train_edits,
                           truth_strength=max(truth_strengths, key=abs))  # fmt: skip
    assert isinstance(trained, UniKEEditor)
    space = trained.memory.space
    results: dict[str, Any] = {}
    grid = [(t, f, s) for t in thresholds for f in max_frequencies for s in truth_strengths]
    for threshold, max_frequency, truth_strength in grid:
        editor = build_editor("unike", copy.deepcopy(base), root, space=space,
                              threshold=threshold, max_frequency=max_frequency,
                              truth_strength=truth_strength)  # fmt: skip
        scores = sequential_edit_scores(editor, val_edits, (count,))
        name = (
            f"threshold={threshold} max_frequency={max_frequency} truth_strength={truth_strength}"
        )
        results[name] = scores
        say(f"{name}: {json.dumps(scores[str(count)])}")
        atomic_write_json(out / "edit_validation.json", results)
    return results


def bench_table(results: dict[str, Any]) -> str:
    """Mean (and spread over seeds) of every metric per method and checkpoint."""
    from sugar.eval.metrics import EDIT_METRICS

    seeds = list(results)
    methods = list(results[seeds[0]])
    columns = [*EDIT_METRICS, "mean"]
    lines = ["| method | edits | " + " | ".join(columns) + " | s/edit | restored |",
             "|---" * (len(columns) + 4) + "|"]  # fmt: skip
    for method in methods:
        counts = [k for k in results[seeds[0]][method] if k.isdigit()]
        for count in counts:
            cells = []
            for column in columns:
                values = [results[s][method][count].get(column) for s in seeds]
                values = [v for v in values if v is not None]
                if not values:
                    cells.append("n/a")
                    continue
                mean = sum(values) / len(values)
                spread = (max(values) - min(values)) / 2 if len(values) > 1 else None
                cells.append(f"{mean:.1f}" + (f" +-{spread:.1f}" if spread is not None else ""))
            speed = sum(results[s][method]["seconds_per_edit"] for s in seeds) / len(seeds)
            restored = min(results[s][method]["restored"] for s in seeds)
            lines.append(f"| {method} | {count} | " + " | ".join(cells)
                         + f" | {speed:.2f} | {restored:.0f} |")  # fmt: skip
    return "\n".join(lines) + "\n"
