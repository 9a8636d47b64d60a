"""Does FSDP2 (``torch.distributed.fsdp.fully_shard``) run on CPU/gloo with the installed torch,
and what does ``train.parallel=fsdp2`` save per rank?

Not a test; it prints figures. First line: two spawned gloo processes shard a small MLP per
layer, each backpropagates its half of a batch of 4, and rank 0 compares the sharded gradient
(gathered with ``full_tensor``, times the world size: FSDP2 averages) with one process over the
whole batch (torch 2.13.0+cpu: it runs and the gradients agree).

Then, with ``--memory``: the built-in tiny MLLM at its config defaults (frozen EfficientNet-Lite0
features, 4 decoder blocks of width 192) with the objective (InfoNCE, so the projector trains)
takes one training step on 2 gloo ranks under ``ddp`` and under ``fsdp2``
(:class:`sugar.train.distributed.DataParallel`), and each rank reports the bytes it holds,
counted from its own tensors (a DTensor's local shard): parameters at rest, the peak of
parameters during the step (at rest plus the unsharded copies alive at once, sampled at every
block's forward and at every gradient accumulation), gradients and AdamW moments. A CPU
figure (gloo, float32); on GPUs the same counts are device memory.

With ``--minilm-loop``: the demo's model family (``minilm``, the installed all-MiniLM-L6-v2 trunk,
all six blocks) through the training loop, 2 steps of 4 samples with L_d, InfoNCE, gradient
accumulation, GradCache and a validation, in one process and on 2 gloo ranks under ``ddp`` and
under ``fsdp2``; prints each run's logged losses, gradient norms and validation metrics and the
largest relative difference from one process (``--autocast bfloat16``: under bfloat16
autocast, where the differences are bfloat16's rounding, not a parity check).

    python benchmarks/probe_fsdp2.py [--memory] [--minilm-loop [--autocast bfloat16]]
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

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


def _bytes(tensor: torch.Tensor | None) -> int:
    """What a tensor holds on this rank (a DTensor: its local shard), by element count: FSDP2's
    shards and gradients are views into larger flat buffers."""
    if tensor is None:
        return 0
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    return local.numel() * local.element_size()


def _memory_rank(rank: int, init_file: str, world_root: str, engine: str, out: str) -> None:
    from sugar.config import ModelConfig
    from sugar.data.jsonl import read_samples
    from sugar.losses import LossWeights, StructureOptions
    from sugar.models.tiny import TinyMLLM
    from sugar.models.tokenizer import Tokenizer
    from sugar.train.distributed import DataParallel, Shard
    from sugar.train.objective import SugarObjective
    from sugar.train.retrieval import retrieval_pair
    from sugar.train.run import parameter_groups

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    root = Path(world_root)
    captions = read_samples(root / "caption" / "train.jsonl", root)[:8]
    texts = [s.text for x in captions for s in x.segments if s.text]
    torch.manual_seed(0)
    tokenizer = Tokenizer.train(texts, vocab_size=ModelConfig().vocab_size)
    model = TinyMLLM(tokenizer, **ModelConfig(feature_cache=None).tiny_kwargs())
    objective = SugarObjective(
        model.hidden_size, LossWeights(alpha=0.0, contrastive=1.0), StructureOptions()
    )
    shard = Shard(rank, 2, lockstep=engine == "fsdp2")
    parallel = DataParallel(
        model,
        objective,
        shard,
        engine=engine,
        layers=model.decoder_layers(),  # type: ignore[arg-type]
    )
    retrieval = [view for sample in captions for view in retrieval_pair(sample)]
    named = [*model.named_parameters(), *objective.named_parameters(prefix="objective")]
    resident = sum(_bytes(p) for _, p in named)
    unsharded: dict[int, torch.Tensor] = {}  # FSDP2's unsharded parameters (freed: 0 bytes)
    resting = {id(p) for _, p in named}  # what a rank holds between passes (whole or a shard)
    peak = [0]

    def sample(*_: object) -> None:
        if engine != "fsdp2":
            return
        for module in (parallel.wrapped, *model.decoder_layers()):
            for parameter in module.parameters():
                fresh = id(parameter) not in unsharded and id(parameter) not in resting
                if fresh and not hasattr(parameter, "to_local"):  # an unsharded copy
                    unsharded[id(parameter)] = parameter
                    if parameter.requires_grad:  # sampled in the backward too
                        parameter.register_post_accumulate_grad_hook(sample)
        storages = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes()
                    for p in unsharded.values()}  # fmt: skip
        alive = sum(size for pointer, size in storages.items() if size)  # freed ones are 0
        peak[0] = max(peak[0], alive)

    for layer in model.decoder_layers():
        layer.register_forward_pre_hook(sample)
        layer.register_forward_hook(sample)
    parallel.forward_backward(
        lambda model, objective: objective(model, captions, root, None, shard, retrieval)
    )
    optimiser = torch.optim.AdamW(parameter_groups(model, [objective], 0.01, 1e-3), lr=1e-3)
    trainable = [p for group in optimiser.param_groups for p in group["params"]]
    parallel.clip_gradients(trainable, 1.0)
    optimiser.step()
    grads = sum(_bytes(p.grad) for p in trainable)
    moments = sum(
        _bytes(value)
        for state in optimiser.state.values()
        for key, value in state.items()
        if key != "step"
    )
    figures = torch.tensor([resident, resident + peak[0], grads, moments], dtype=torch.float64)
    every = [torch.zeros_like(figures) for _ in range(2)]
    dist.all_gather(every, figures)
    if rank == 0:
        torch.save(torch.stack(every), out)
    dist.destroy_process_group()


def _memory() -> None:

    with tempfile.TemporaryDirectory(prefix="probe_fsdp2_memory_") as directory:
        _memory_in(Path(directory))


def _memory_in(work: Path) -> None:
    from sugar.data.world import generate_world

    generate_world(work / "world", seed=5, train_per_task=12, val_per_task=2, test_per_task=2)
    names = ("parameters at rest", "parameters, peak", "gradients", "AdamW moments")
    print("per rank, MiB (CPU, gloo, 2 ranks, float32; tiny MLLM at config defaults + projector)")
    for engine in ("ddp", "fsdp2"):
        out = work / f"{engine}.pt"
        init = str(work / f"init-{engine}")
        mp.spawn(_memory_rank, args=(init, str(work / "world"), engine, str(out)), nprocs=2)
        figures = torch.load(out)
        for rank in range(2):
            row = ", ".join(
                f"{name} {value / 2**20:.2f}"
                for name, value in zip(names, figures[rank].tolist(), strict=True)
            )
            print(f"{engine:>5} rank {rank}: {row}")


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests/
LOGGED = ("loss", "lm_loss", "structure_loss", "contrastive_loss", "grad_norm", "val_lm_loss")


def _loop_rank(rank: int, config: dict, port: int) -> None:
    from tests.train.fake_teacher import FakeTeacher

    from sugar.config import config_from_dict
    from sugar.train.loop import train

    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )  # fmt: skip
    torch.set_num_threads(1)
    train(config_from_dict(config), teacher=FakeTeacher(), progress=False)


def _minilm_loop(autocast: str) -> None:
    with tempfile.TemporaryDirectory(prefix="probe_fsdp2_minilm_") as directory:
        _minilm_runs(Path(directory), autocast)  # checkpoints of the word table: 1.4 GB


def _minilm_runs(work: Path, autocast: str) -> None:
    import json
    import time

    from tests.train.conftest import tiny_config
    from tests.train.fake_teacher import FakeTeacher
    from tests.train.test_world_size import OVERRIDES

    from sugar.config import to_dict
    from sugar.data.world import generate_world
    from sugar.serve.load import free_port
    from sugar.train.loop import train

    generate_world(work / "world", seed=5, train_per_task=24, val_per_task=8, test_per_task=2)
    overrides = (
        *OVERRIDES, "train.steps=2", "train.eval_every=2", "train.checkpoint_every=2",
        "train.eval_samples=4", "model.family=minilm", "model.image_dropout=0.0",
        f"model.autocast={autocast}", "model.image_size=64", "model.grid=1",
    )  # fmt: skip
    torch.set_num_threads(1)
    records = {}
    for run in ("one", "ddp", "fsdp2"):
        parallel = () if run == "one" else (f"train.parallel={run}",)
        cfg = tiny_config(work / "world", work / run, *overrides, *parallel)
        start = time.time()
        if run == "one":
            train(cfg, teacher=FakeTeacher(), progress=False)
        else:
            mp.spawn(_loop_rank, args=(to_dict(cfg), free_port()), nprocs=2, join=True)
        lines = (work / run / "log.jsonl").read_text(encoding="utf-8").splitlines()
        records[run] = [r for r in map(json.loads, lines) if any(k in r for k in LOGGED)]
        print(f"{run}: {time.time() - start:.0f} s wall (whole run, start-up included)")
        for record in records[run]:
            print("  ", {k: round(v, 6) for k, v in record.items() if k in LOGGED or k == "step"})
    for run in ("ddp", "fsdp2"):
        worst = max(
            abs(b[k] - a[k]) / abs(a[k])
            for a, b in zip(records["one"], records[run], strict=True)
            for k in LOGGED
            if a.get(k)
        )
        print(f"{run}: largest relative difference from one process {worst:.2g}")


if __name__ == "__main__":
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    with tempfile.TemporaryDirectory(prefix="probe_fsdp2_") as directory:
        mp.spawn(_rank, args=(os.path.join(directory, "init"),), nprocs=2)
    if "--memory" in sys.argv[1:]:
        _memory()
    if "--minilm-loop" in sys.argv[1:]:
        arguments = sys.argv[1:]
        chosen = arguments[arguments.index("--autocast") + 1] if "--autocast" in arguments else None
        _minilm_loop(chosen or "none")
