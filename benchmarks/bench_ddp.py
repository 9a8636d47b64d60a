"""Data-parallel step time: one optimiser step of a shipped config over 1 or N local gloo ranks,
and where each rank's time goes.

Prints figures; it is not a test. Needs a world and a trained offline teacher head (as
``benchmarks/bench_ld_share.py``):

    sugar data world --out runs/world --size 1000
    sugar train-teacher --data runs/world/caption/train.jsonl --root runs/world --out runs/teacher
    python benchmarks/bench_ddp.py --workers 2 [--config configs/sugar.yaml --steps 3] [k=v ...]

Each rank builds the run as ``sugar train`` under torchrun would (``sugar.train.loop.build``,
a fresh model: ``train.init_from=null``), fills the teacher cache for every timed step's
retrieval batch (the steady state after the first epoch), runs one untimed warm-up step, then
times ``steps`` real steps (``sugar.train.loop.step``), 1 torch thread per rank. Per step it
reports, as the median over steps of rank 0 and the other ranks' figures alongside:

- the step, in CPU seconds of the process (``time.process_time``, gloo's threads included)
  and wall seconds;
- L_g's forward (``SugarObjective._chunked_generative_loss``, this rank's share), the retrieval
  encoding (``encode_chunks``: this rank's share of the retrieval micro-batch), L_d and InfoNCE
  on the gathered vectors (teacher lookup, target matrix, losses: the *global* batch on every
  rank), the backward (with DDP, its all-reduce overlaps it), the hand-written gradient sum of
  the code before DDP (when the tree has one), AdamW, and the rest (clipping, bookkeeping);
- one all-reduce of a flat buffer as large as all trainable parameters, alone.

Run it against another source tree (``PYTHONPATH=/other/src``) to compare code versions: the
timers wrap whichever of those functions exist.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from multiprocessing import get_context
from typing import Any

from _timing import CpuTimer  # benchmarks/_timing.py (scripts run from their folder)

PHASES = ("generative", "encode", "retrieval_losses", "backward", "sum_gradients", "optimiser")


def _rank(rank: int, world: int, port: int, args: argparse.Namespace, out: Any) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port), OMP_NUM_THREADS="1",
    )  # fmt: skip
    import torch

    from sugar.config import load_config
    from sugar.train.loop import build, step
    from sugar.train.retrieval import retrieval_batch

    torch.set_num_threads(1)
    cfg = load_config(
        args.config,
        [
            f"data.root={args.world}", f"teacher.head_dir={args.teacher}", "train.init_from=null",
            f"run.output_dir={tempfile.mkdtemp(prefix='bench_ddp_')}", "run.torch_threads=1",
            *args.overrides,
        ],
    )  # fmt: skip
    run = build(cfg, resume=False, teacher=None)
    run.model.train()
    t = run.cfg.train
    if run.objective.teacher is not None:  # the teacher's cache warm for every timed batch
        for micro_step in range((args.steps + 1) * t.grad_accum):
            sizes = (t.retrieval_batch, t.retrieval_interleaved)
            batch = retrieval_batch(run.pools, sizes, run.cfg.run.seed, micro_step)
            run.objective.teacher(batch, run.root)
    timers = {name: CpuTimer() for name in PHASES}
    objective = run.objective
    objective._chunked_generative_loss = timers["generative"].wrap(  # type: ignore[method-assign]
        objective._chunked_generative_loss
    )
    objective.encode_chunks = timers["encode"].wrap(objective.encode_chunks)  # type: ignore[method-assign]
    for name in ("retrieval_parts", "contrastive_parts", "structure_parts"):  # either version
        if hasattr(objective, name):
            setattr(objective, name, timers["retrieval_losses"].wrap(getattr(objective, name)))
    # backward: DDP's bucketed all-reduce runs inside it; the hand-written sum before this
    # branch ran after it (sugar.train.loop.sum_gradients)
    torch.Tensor.backward = timers["backward"].wrap(torch.Tensor.backward)  # type: ignore[method-assign]
    import sugar.train.loop as loop_module

    if hasattr(loop_module, "sum_gradients"):
        loop_module.sum_gradients = timers["sum_gradients"].wrap(loop_module.sum_gradients)  # type: ignore[attr-defined]
    run.optimiser.step = timers["optimiser"].wrap(run.optimiser.step)  # type: ignore[method-assign]
    step(run)  # warm-up
    rows = []
    for _ in range(args.steps):
        for timer in timers.values():
            timer.seconds = 0.0
        wall, cpu = time.perf_counter(), time.process_time()
        step(run)
        cpu_s, wall_s = time.process_time() - cpu, time.perf_counter() - wall
        phases = {name: timers[name].seconds for name in PHASES}
        rows.append({"cpu": cpu_s, "wall": wall_s, **phases, "rest": cpu_s - sum(phases.values())})
    row = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    if args.profile and rank == 0:  # one more step under torch.profiler: its costliest ops
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            step(run)
        row["profile"] = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
    # what the gradient all-reduce alone costs: one all-reduce of as many floats as the step
    # reduces (every trainable parameter), timed the same way
    count = sum(p.numel() for p in run.trainable)
    row["parameters"] = count
    if run.shard.active:
        import torch.distributed as dist

        flat = torch.ones(count)
        dist.all_reduce(flat)  # warm-up
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(args.steps):
            dist.all_reduce(flat)
        row["all_reduce_cpu"] = (time.process_time() - cpu) / args.steps
        row["all_reduce_wall"] = (time.perf_counter() - wall) / args.steps
    out.put((rank, row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/sugar.yaml")
    parser.add_argument("--world", default="runs/world")
    parser.add_argument("--teacher", default="runs/teacher")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="rank 0's top ops of one step")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides.")
    args = parser.parse_args()
    from sugar.serve.load import free_port

    context = get_context("spawn")
    out = context.Queue()
    port = free_port()
    ranks = [
        context.Process(target=_rank, args=(rank, args.workers, port, args, out))
        for rank in range(args.workers)
    ]
    for process in ranks:
        process.start()
    results = dict(out.get() for _ in ranks)
    for process in ranks:
        process.join()
    print(
        f"{args.config} {' '.join(args.overrides)}: {args.workers} rank(s), median of "
        f"{args.steps} steps after a warm-up, 1 thread per rank, CPU s of each rank's process"
    )
    for rank, row in sorted(results.items()):
        print(
            f"  rank {rank}: step {row['cpu']:.2f} CPU s ({row['wall']:.2f} s wall) = "
            f"L_g forward {row['generative']:.2f} + retrieval encoding {row['encode']:.2f} + "
            f"L_d/InfoNCE on the global batch {row['retrieval_losses']:.2f} + backward "
            f"{row['backward']:.2f} + hand-written sum {row['sum_gradients']:.2f} + AdamW "
            f"{row['optimiser']:.2f} + other {row['rest']:.2f}"
        )
        if "profile" in row:
            print(row["profile"])
        if "all_reduce_cpu" in row:
            print(
                f"          one all-reduce of the {row['parameters'] / 1e6:.1f} M trainable "
                f"parameters alone: {row['all_reduce_cpu']:.2f} CPU s "
                f"({row['all_reduce_wall']:.2f} s wall)"
            )


if __name__ == "__main__":
    main()
