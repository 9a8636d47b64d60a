"""Training checkpoints: atomic, complete, resumable (the run directory's ``checkpoints/``).

Layout::

    run_dir/checkpoints/step-000200/state.pt     model + objective trainable tensors, optimiser,
                                                 scheduler, step, RNG states, resolved config
    run_dir/checkpoints/step-000200/state.pt.sha256
    run_dir/checkpoints/latest                   the name of the newest complete checkpoint

Each checkpoint directory is written with :func:`sugar.io.atomic_directory` and only then
named in ``latest`` (itself written atomically), so a run killed at any instant leaves the
previous checkpoint intact and ``latest`` pointing at a complete one. ``keep`` bounds how many
are kept (oldest removed after a new one is complete).
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import torch

from sugar.io import atomic_directory, atomic_write_text, verify_checksum, write_checksum

__all__ = ["latest_checkpoint", "load_checkpoint", "rng_state", "save_checkpoint", "set_rng_state"]

STATE = "state.pt"


def rng_state() -> dict[str, Any]:
    """Python and torch (CPU) random states (sugar draws from NumPy only through seeded
    ``default_rng`` generators, never its global state)."""
    return {"python": random.getstate(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])


def save_checkpoint(run_dir: str | Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` as checkpoint ``step`` and point ``latest`` at it; returns its directory."""
    root = Path(run_dir) / "checkpoints"
    name = f"step-{step:06d}"
    with atomic_directory(root / name) as tmp:
        torch.save(state, tmp / STATE)
        write_checksum(tmp / STATE)
    atomic_write_text(root / "latest", name + "\n")
    if keep > 0:
        by_step = sorted(root.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
        for old in by_step[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return root / name


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint directory of a run, or ``None``."""
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    directory = pointer.parent / pointer.read_text(encoding="utf-8").strip()
    if not (directory / STATE).is_file():
        raise FileNotFoundError(f"{pointer} names {directory.name}, which has no {STATE}")
    return directory


def load_checkpoint(directory: str | Path) -> dict[str, Any]:
    """Verify and read a checkpoint's state (``ChecksumError`` when it was altered)."""
    path = Path(directory) / STATE
    verify_checksum(path)
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    return state
