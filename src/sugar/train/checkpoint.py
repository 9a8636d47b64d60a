"""Training checkpoints: atomic, complete, resumable, never unpickled (the run's ``checkpoints/``).

Layout::

    run_dir/checkpoints/step-000200/state.safetensors   every tensor of the state (model and
                                                        objective trainables, optimiser moments,
                                                        torch RNG)
    run_dir/checkpoints/step-000200/state.json          everything else (step, scheduler, Python
                                                        RNG, config, ...) with references to them
    run_dir/checkpoints/step-000200/*.sha256            checksums of both
    run_dir/checkpoints/latest                          the name of the newest complete checkpoint

Loading can never execute code: safetensors is a JSON header plus raw bytes and the JSON tree is
rebuilt by :mod:`sugar.train.state_codec` from plain data and an allow-list. (A checksum sidecar
detects corruption, not tampering: whoever can write the file can write its sidecar, which is why
the format itself must be inert.) A checkpoint of the older pickle format (``state.pt``) is
refused with a message saying so, never loaded.

Each checkpoint directory is written with :func:`sugar.io.atomic_directory` and only then
named in ``latest`` (itself written atomically), so a run killed at any instant leaves the
previous checkpoint intact and ``latest`` pointing at a complete one. ``latest`` may only name a
``step-NNNNNN`` directory of the same ``checkpoints/``. ``keep`` bounds how many are kept (oldest
removed after a new one is complete).
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sugar.io import atomic_directory, atomic_write_text, verify_checksum, write_checksum
from sugar.train.state_codec import decode, encode

__all__ = ["latest_checkpoint", "load_checkpoint", "rng_state", "save_checkpoint", "set_rng_state"]

TENSORS = "state.safetensors"
TREE = "state.json"
PICKLED = "state.pt"  # the format before issue 18: refused, never loaded
_NAME = re.compile(r"step-\d{6,}")


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
    tensors, tree = encode(state)
    with atomic_directory(root / name) as tmp:
        save_file(tensors, str(tmp / TENSORS))
        write_checksum(tmp / TENSORS)
        atomic_write_text(tmp / TREE, json.dumps(tree))
        write_checksum(tmp / TREE)
    atomic_write_text(root / "latest", name + "\n")
    if keep > 0:
        by_step = sorted(
            (p for p in root.glob("step-*") if _NAME.fullmatch(p.name)),
            key=lambda p: int(p.name.split("-")[1]),
        )
        for old in by_step[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return root / name


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint directory of a run, or ``None``; ``ValueError`` when
    ``latest`` names anything but a ``step-NNNNNN`` directory of this run's checkpoints."""
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    name = pointer.read_text(encoding="utf-8", errors="replace").strip()
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"{pointer}:1: names {name[:80]!r}; it may only name a step-NNNNNN checkpoint of "
            "this run"
        )
    directory = pointer.parent / name
    if (directory / PICKLED).is_file() and not (directory / TREE).is_file():
        _refuse_pickled(directory)
    if not (directory / TREE).is_file():
        raise FileNotFoundError(f"{pointer} names {name}, which has no {TREE}")
    return directory


def _refuse_pickled(directory: Path) -> None:
    raise ValueError(
        f"{directory / PICKLED}: a checkpoint in the pickle format of sugar before issue 18; "
        "loading it could run arbitrary code, so this sugar never loads it. Start a fresh run "
        "(another run.output_dir), or finish this one with the sugar that wrote it"
    )


def load_checkpoint(directory: str | Path) -> dict[str, Any]:
    """Verify and read a checkpoint's state (``ChecksumError`` when it was altered,
    ``ValueError`` naming the file when it is not a checkpoint this sugar wrote)."""
    directory = Path(directory)
    if (directory / PICKLED).is_file() and not (directory / TREE).is_file():
        _refuse_pickled(directory)
    for name in (TENSORS, TREE):
        verify_checksum(directory / name)
    try:
        tensors = load_file(str(directory / TENSORS))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(
            f"{directory / TENSORS}: not a readable safetensors file ({exc})"
        ) from None
    try:
        tree = json.loads((directory / TREE).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{directory / TREE}: not a JSON training state ({exc})") from None
    state = decode(tensors, tree, where=str(directory / TREE))
    if not isinstance(state, dict):
        raise ValueError(f"{directory / TREE}: holds a {type(state).__name__}, not a state")
    return state
