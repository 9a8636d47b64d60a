"""Does FSDP2 (``torch.distributed.fsdp.fully_shard``) run on CPU/gloo with the installed torch?

Prints one line; it is not a test. Two spawned gloo processes shard a small MLP per layer, each
backpropagates its half of a batch of 4, and rank 0 compares the sharded gradient (gathered
with ``full_tensor``, times the world size: FSDP2 averages) with one process over the whole
batch. Issue 20 ran it with torch 2.13.0+cpu: it runs and the gradients agree; sugar has no
FSDP2 option yet (README, Training).

    python benchmarks/probe_fsdp2.py
"""

from __future__ import annotations

import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def _rank(rank: int, init_file: str) -> None:
    from torch.distributed.fsdp import fully_shard

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    model, reference = _mlp(), _mlp()
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer)
    fully_shard(model)
    batch = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    model(batch[2 * rank : 2 * rank + 2]).pow(2).sum().backward()
    reference(batch).pow(2).sum().backward()
    sharded = model[0].weight.grad.full_tensor() * 2  # type: ignore[union-attr,operator]
    if rank == 0:
        agree = torch.allclose(sharded, reference[0].weight.grad, atol=1e-6)  # type: ignore[arg-type]
        print(
            f"torch {torch.__version__}: fully_shard on gloo runs; parameters are "
            f"{type(model[0].weight).__name__}; gradients equal one process: {agree}"
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    init = os.path.join(tempfile.mkdtemp(prefix="probe_fsdp2_"), "init")
    mp.spawn(_rank, args=(init,), nprocs=2)
