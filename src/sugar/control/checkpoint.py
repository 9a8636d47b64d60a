"""Checkpoints of a control-branch run, without pickle: tensors in safetensors, the rest JSON.

Layout::

    run_dir/checkpoints/step-000100/tensors.safetensors   branch.*, optimizer.<i>.<key>,
                                                          generator (the batch sampler's state)
    run_dir/checkpoints/step-000100/state.json            step, round, mined negatives, log
    run_dir/checkpoints/latest                            the newest complete checkpoint's name

Each directory is written whole (:func:`sugar.io.atomic_directory`) before ``latest`` names it,
so an interrupted run resumes from the last complete checkpoint.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sugar.io import atomic_directory, atomic_write_json, atomic_write_text, read_json_object

__all__ = ["load_control_checkpoint", "load_round_branch", "save_control_checkpoint",
           "save_round_branch"]  # fmt: skip

TENSORS = "tensors.safetensors"
STATE = "state.json"


def _branch_tensors(branch: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + k: v.detach().contiguous() for k, v in branch.state_dict().items()}


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; ``ValueError`` naming it when it cannot be read."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:  # e.g. a truncated file
        raise ValueError(f"{path}: not a readable safetensors file ({exc})") from None


def save_control_checkpoint(
    run_dir: Path,
    branch: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write checkpoint ``state["step"]`` (``state``: JSON-serialisable) and point ``latest``
    at it; the oldest beyond ``keep`` are removed."""
    root = run_dir / "checkpoints"
    name = f"step-{int(state['step']):06d}"
    tensors = _branch_tensors(branch, "branch.")
    for index, values in optimizer.state_dict()["state"].items():
        for key, value in values.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value).contiguous()
    tensors["generator"] = generator.get_state()
    with atomic_directory(root / name) as tmp:
        save_file(tensors, str(tmp / TENSORS))
        atomic_write_json(tmp / STATE, state)
    atomic_write_text(root / "latest", name + "\n")
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return root / name


def load_control_checkpoint(
    run_dir: Path,
    branch: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> dict[str, Any] | None:
    """Restore the newest checkpoint into ``branch``, ``optimizer`` and ``generator``; its JSON
    state, or None when the run has none."""
    pointer = run_dir / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    name = pointer.read_text(encoding="utf-8", errors="replace").strip()
    if not re.fullmatch(r"step-\d{6}", name):  # as sugar train's: never a path outside the run
        raise ValueError(
            f"{pointer}:1: names {name[:80]!r}; it may only name a step-NNNNNN checkpoint of "
            "this run"
        )
    directory = pointer.parent / name
    if not (directory / TENSORS).is_file() or not (directory / STATE).is_file():
        raise FileNotFoundError(f"{pointer} names {directory}, which is incomplete")
    state = read_json_object(directory / STATE)  # names the file when it is not JSON
    tensors = _read_tensors(directory / TENSORS)
    try:
        branch.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("branch.")})
        optimizer_state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                optimizer_state.setdefault(int(index), {})[name] = value
        groups = optimizer.state_dict()["param_groups"]
        optimizer.load_state_dict({"state": optimizer_state, "param_groups": groups})
        generator.set_state(tensors["generator"])
    except (RuntimeError, ValueError, KeyError) as exc:  # another branch's, or tampered with
        detail = " ".join(str(exc).split())[:300]
        raise ValueError(
            f"{directory / TENSORS}: not a checkpoint of this branch ({detail})"
        ) from None
    return state


def save_round_branch(
    run_dir: Path, round_number: int, branch: torch.nn.Module, record: dict[str, Any]
) -> None:
    """Write the branch as it ends round ``round_number`` and ``record`` (JSON: its validation)
    to ``run_dir/rounds/round-NN`` (atomically; a rerun of the round replaces it)."""
    tensors = _branch_tensors(branch)
    with atomic_directory(run_dir / "rounds" / f"round-{round_number:02d}") as tmp:
        save_file(tensors, str(tmp / TENSORS))
        atomic_write_json(tmp / STATE, record)


def load_round_branch(run_dir: Path, round_number: int, branch: torch.nn.Module) -> dict[str, Any]:
    """Load the branch of round ``round_number`` (:func:`save_round_branch`) into ``branch``;
    its record. Errors name the file."""
    directory = run_dir / "rounds" / f"round-{round_number:02d}"
    if not (directory / TENSORS).is_file() or not (directory / STATE).is_file():
        raise FileNotFoundError(f"{directory}: round {round_number}'s branch is missing")
    record = read_json_object(directory / STATE)
    tensors = _read_tensors(directory / TENSORS)
    try:
        branch.load_state_dict(tensors)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise ValueError(f"{directory / TENSORS}: not this branch's weights ({detail})") from None
    return record
