"""Two gloo processes on this machine, for the data-parallel parity tests.

:func:`on_two_gloo_ranks` spawns 2 processes that join one gloo group (a file rendezvous in the
test's tmp dir), each calling ``compute(rank, *arguments)``; it returns rank 0's result (saved
with ``torch.save``, so tensors, numbers, lists and dicts). ``compute`` must be a module-level
function (it crosses the spawn boundary by name).
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["on_two_gloo_ranks"]


def _rank(
    rank: int, compute: Callable[..., Any], arguments: tuple[Any, ...], init_file: str, out: str
) -> None:
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    result = compute(rank, *arguments)
    if rank == 0:
        torch.save(result, out)
    # Every run's DistributedDataParallel (its reducer and hooks) is freed and both ranks are
    # done before the group goes: one run in about five ended with rank 1 aborting at exit
    # ("terminate called without an active exception") when it tore down first.
    del result
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()


def on_two_gloo_ranks(compute: Callable[..., Any], *arguments: Any, tmp_path: Path) -> Any:
    """Rank 0's ``compute(rank, *arguments)`` of 2 spawned gloo processes (module doc)."""
    out = tmp_path / "rank0.pt"
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(_rank, args=(compute, arguments, str(tmp_path / "init"), str(out)), nprocs=2)
    return torch.load(out)
