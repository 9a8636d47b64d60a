"""The ``edit`` task of ``sugar eval``: knowledge editing of the evaluated model, MMEdit's
metrics after 1, 10 and 100 sequential edits, for every editor (:mod:`sugar.edit`).

Reads the split's edit set (``edit/<split>.jsonl``, :mod:`sugar.data.world.edits`) and, for the
methods that learn from other edits (``patcher``, ``unike``), ``edit/train.jsonl`` of the same
root. Each method edits its own copy of the model. Metrics are named ``<method>_<N>_<metric>``
(``unike_100_mean``: the mean of the five metrics after 100 edits, in percent) plus
``<method>_seconds_per_edit`` and ``<method>_restored`` (percent of probes answered as before
once every edit is removed again). A model that is not a built-in backbone gets "n/a".
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sugar.data.schema import Sample
from sugar.edit.base import build_editor
from sugar.edit.evaluate import sequential_edit_scores
from sugar.edit.records import edit_from_sample, read_edits

__all__ = ["EDIT_METHODS", "edit_task"]

EDIT_METHODS = ("ft", "context", "patcher", "memory", "unike")
"""The editors ``sugar eval --tasks edit`` compares, baselines first."""
CHECKPOINTS = (1, 10, 100)


def edit_task(
    model: Any, samples: Sequence[Sample], root: Path, methods: Sequence[str] = EDIT_METHODS
) -> dict[str, Any]:
    """Every method's scores on ``samples`` (the edits, in order); module docstring."""
    backbone = getattr(model, "backbone", None)
    if backbone is None or not hasattr(backbone, "tokenizer"):
        return {}
    edits = [edit_from_sample(s, f"edit sample {s.id}") for s in samples]
    support_file = root / "edit" / "train.jsonl"
    support = read_edits(support_file, root) if support_file.is_file() else []
    out: dict[str, Any] = {}
    for method in methods:
        if method in ("patcher", "unike") and not support:
            raise ValueError(f"{support_file}: the {method} editor learns from it; generate it")
        editor = build_editor(method, copy.deepcopy(backbone), root, support)
        scores = sequential_edit_scores(editor, edits, CHECKPOINTS)
        for count, metrics in scores.items():
            if isinstance(metrics, dict):
                out.update({f"{method}_{count}_{name}": value for name, value in metrics.items()})
        out[f"{method}_seconds_per_edit"] = scores["seconds_per_edit"]
        out[f"{method}_restored"] = scores["restored"]
    return out
