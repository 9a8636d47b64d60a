"""What keeps a run directory one honest run: its claim and lock, the resume comparison, and
finite numbers.

- :func:`run_directory`: the run directory is sugar's (a ``.sugar-owned`` marker,
  :mod:`sugar.owned`; a non-empty directory sugar did not write is refused) and held by one
  process at a time (its lock, ``.sugar-lock`` inside it, :mod:`sugar.locks`; a second
  ``sugar train`` into it is refused at once); a run that fails before writing anything leaves
  no empty directory behind.
- :func:`compare_configs`: ``--resume`` continues the *same* run. Architecture, data, objective
  and seed changes are refused with a readable diff; the hyper-parameters in :data:`ADJUSTABLE`
  may change only when asked (``allow_changes``), and the change is logged at the step it takes
  effect.
- :func:`check_finite`: the loop stops at the first non-finite loss part or gradient norm,
  naming the step and the part, before the optimiser applies it (so the last checkpoint is the
  last good state and no bundle is written).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from sugar.locks import holding
from sugar.owned import MARKER, claim_directory

__all__ = [
    "ADJUSTABLE",
    "RUN_ENTRIES",
    "NonFiniteError",
    "check_finite",
    "compare_configs",
    "run_directory",
]

LOCK = ".sugar-lock"
RUN_ENTRIES = (
    "config.yaml", "manifest.json", "target_stats.json", "log.jsonl", "checkpoints", "model",
    "best", "tensorboard", LOCK,
)  # fmt: skip
"""What a training run writes in its directory (nothing else may be there)."""

ADJUSTABLE = (
    "train.lr", "train.steps", "train.warmup_ratio", "train.weight_decay", "train.clip_norm",
    "train.log_every", "train.eval_every", "train.checkpoint_every", "train.eval_samples",
    "train.select_metric", "train.embedding_chunk", "train.parallel", "run.device",
    "run.torch_threads", "run.output_dir",
)  # fmt: skip
"""Config fields ``--resume --allow-changes`` may change (hyper-parameters of the schedule and
the bookkeeping); ``run.output_dir``, ``run.device``/``run.torch_threads`` and
``train.embedding_chunk`` (GradCache) and ``train.parallel`` (ddp or fsdp2) change memory, not
the gradients: they always may."""

_ALWAYS = (
    "run.output_dir", "run.device", "run.torch_threads", "train.embedding_chunk",
    "train.parallel",
)  # fmt: skip


class NonFiniteError(ValueError):
    """A loss part or the gradient norm is NaN or infinite."""


@contextlib.contextmanager
def run_directory(
    directory: Path, main: bool, kind: str = "run", entries: Iterable[str] = RUN_ENTRIES
) -> Iterator[None]:
    """Claim and lock the run ``directory`` for the block (rank 0 only: other ranks write
    nothing); on an exception, remove the directory if the run wrote nothing in it. ``kind``
    and ``entries``: another program's runs (``sugar train-control``: :mod:`sugar.control`)."""
    if not main:
        yield
        return
    existed = directory.exists()
    claim_directory(directory, kind, [*entries, LOCK], ignore=(LOCK,))
    try:
        with holding(directory, 0, "run directory", lock_file=directory / LOCK):
            yield
    except BaseException:
        left = {p.name for p in directory.iterdir()} - {MARKER, LOCK}
        if not existed and not left:
            shutil.rmtree(directory, ignore_errors=True)
        raise


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def compare_configs(
    saved: Mapping[str, Any], current: Mapping[str, Any], allow_changes: bool, where: str
) -> dict[str, list[Any]]:
    """The adjustable fields that differ (``{field: [saved, current]}``, to log); ``ValueError``
    with a diff when anything else differs, or when adjustable fields differ and
    ``allow_changes`` is false. ``where``: the checkpoint, for the message."""
    old, new = _flatten(saved), _flatten(current)
    changed = {
        k: [old.get(k, "<absent>"), new.get(k, "<absent>")]
        for k in sorted(old.keys() | new.keys())
        if _differs(old.get(k, "<absent>"), new.get(k, "<absent>"))
    }
    fixed = {k: v for k, v in changed.items() if k not in ADJUSTABLE}
    adjustable = {k: v for k, v in changed.items() if k in ADJUSTABLE and k not in _ALWAYS}

    def diff(fields: Mapping[str, list[Any]]) -> str:
        return "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in fields.items())

    if fixed:
        raise ValueError(
            f"--resume: the config differs from the one {where} was trained with in what "
            f"makes the run ({diff(fixed)}); resume with the same config, or start a new run"
        )
    if adjustable and not allow_changes:
        raise ValueError(
            f"--resume: the config changes hyper-parameters of {where} ({diff(adjustable)}); "
            "pass --allow-changes to apply them from the resumed step, or resume unchanged"
        )
    return adjustable


def _differs(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return False
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return list(a) != list(b)
    return bool(a != b)


def check_finite(step: int, parts: Mapping[str, float]) -> None:
    """:class:`NonFiniteError` naming ``step`` (1-based, as logged) and every non-finite part."""
    bad = {name: value for name, value in parts.items() if not math.isfinite(value)}
    if bad:
        named = ", ".join(f"{name}={value}" for name, value in bad.items())
        raise NonFiniteError(
            f"step {step}: non-finite {named}; training stopped before applying it (the last "
            "checkpoint is the last good state; no bundle was written). Lower train.lr or "
            "check the data"
        )


def environment_main() -> bool:
    """Whether this process is rank 0 (``RANK`` unset or 0), before torch.distributed starts."""
    return os.environ.get("RANK", "0") == "0"
