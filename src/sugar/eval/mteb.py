"""``sugar eval`` results in MTEB's result layout, so leaderboards and MTEB tooling can read them.

``sugar eval --out OUT`` writes, next to its own report, one folder per evaluated model::

    OUT/mteb/<model name>/<revision>/model_meta.json
    OUT/mteb/<model name>/<revision>/<task>.json      # one per task

``<revision>`` is the first 12 characters of the bundle identity (a hash of weights and
tokenizer; MTEB uses the model's commit). A task file reads::

    {"task_name": "caption_retrieval", "dataset_revision": "<sha256 of the split's JSONL>",
     "mteb_version": null, "evaluation_time": null, "kg_co2_emissions": null,
     "scores": {"test": [{"hf_subset": "default", "languages": ["eng-Latn"],
                          "main_score": 0.42, "t2i_r1": 0.42, ...}]}}

``scores`` holds every numeric metric of the task (``n/a`` metrics are left out; ``main_score``
is the task's headline metric, :data:`sugar.eval.report.HEADLINE`, or null when the model
cannot do it). ``mteb_version`` is null because MTEB itself did not run: these are sugar's own
tasks, in MTEB's file format.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sugar.eval.report import HEADLINE
from sugar.io import atomic_write_json, sha256_bytes

__all__ = ["MAIN_SCORE", "model_meta", "write_mteb_results"]

MAIN_SCORE: dict[str, str] = {}
"""Each task's headline metric (its first in :data:`HEADLINE`)."""
for _task, _metric, _ in HEADLINE:
    MAIN_SCORE.setdefault(_task, _metric)


def model_meta(
    name: str, identity: str, n_parameters: int, embed_dim: int | None
) -> dict[str, Any]:
    """MTEB's ``model_meta.json`` fields for a sugar bundle."""
    return {
        "name": name,
        "revision": identity[:12],
        "release_date": None,
        "languages": ["eng-Latn"],
        "n_parameters": n_parameters,
        "embed_dim": embed_dim,
        "framework": ["PyTorch", "sugar"],
        "similarity_fn_name": "cosine",
        "modalities": ["text", "image"],
        "loader": None,
    }


def _scores(metrics: Mapping[str, Any], task: str) -> dict[str, Any]:
    numbers = {
        key: value
        for key, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    main = MAIN_SCORE.get(task)
    return {
        "hf_subset": "default",
        "languages": ["eng-Latn"],
        "main_score": numbers.get(main) if main else None,
        **numbers,
    }


def write_mteb_results(
    out_dir: str | Path,
    results: Mapping[str, Mapping[str, Mapping[str, Any]]],
    metas: Mapping[str, Mapping[str, Any]],
    split: str,
    dataset_files: Mapping[str, Path],
) -> list[Path]:
    """Write ``results`` (``{model: {task: {metric: value}}}``) in MTEB's layout under
    ``out_dir`` (see the module docstring); ``metas[model]`` is its :func:`model_meta`,
    ``dataset_files[task]`` the JSONL the task read (hashed as its dataset revision). Returns
    the files written."""
    written = []
    for name, tasks in results.items():
        meta = metas[name]
        folder = Path(out_dir) / name.replace("/", "__") / str(meta["revision"])
        written.append(atomic_write_json(folder / "model_meta.json", dict(meta)))
        for task, metrics in tasks.items():
            source = dataset_files.get(task)
            revision = sha256_bytes(source.read_bytes()) if source and source.is_file() else None
            body = {
                "task_name": task,
                "dataset_revision": revision,
                "mteb_version": None,
                "evaluation_time": None,
                "kg_co2_emissions": None,
                "scores": {split: [_scores(metrics, task)]},
            }
            written.append(atomic_write_json(folder / f"{task}.json", body))
    return written
