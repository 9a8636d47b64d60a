"""L_d's share of a training step at the default recipe (configs/sugar.yaml: the MiniLM model,
a generative micro-batch of 16, a retrieval micro-batch of 64 caption pairs that L_d runs on).

Prints figures; it is not a test. Needs a world and a trained offline teacher head:

    sugar data world --out runs/world --size 1000
    sugar train-teacher --data runs/world/caption/train.jsonl --root runs/world --out runs/teacher
    python benchmarks/bench_ld_share.py [--world runs/world --teacher runs/teacher --steps 6]
        [--config configs/base.yaml] [key=value ...]

The step's CPU time alone also prices a recipe change (``model.autocast=none``, another
config; config overrides follow the options).

Times real optimiser steps (``sugar.train.loop.step``) of a fresh model (no ``init_from``), 1
thread, after one untimed warm-up step (numba, caches). Within each step it times the L_d
computation (``SugarObjective.structure_from``: teacher lookup, the Triple-Kernel GAK target
matrix, the predicted matrix and the loss; the prefix embeddings are made beside InfoNCE's in
``embed_plan`` since issue 20, a projector over n rows), the target matrix alone
(``structure_targets``, the alignment kernels' part) and the teacher lookup. The teacher's cache
is filled beforehand for every timed step's retrieval batch (as after the first epoch: a cold
lookup encodes slices with the teacher, which is not L_d's steady cost). The backward of L_d's
own operations (an n x n matrix, the projector on n prefixes) is not separable from the model's
and is left out; the encoding of the retrieval micro-batch is the recipe's, not L_d's (it also
serves InfoNCE when that is on). Bar (issue 21): L_d <= 2 % of the step. CPU time of this
process (``time.process_time``) is reported, so that other work on a shared machine slows the
figures less; wall time is printed alongside.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from _timing import CpuTimer  # benchmarks/_timing.py (scripts run from their folder)

import sugar.train.objective as objective_module
from sugar.config import load_config
from sugar.train.loop import build, step
from sugar.train.retrieval import retrieval_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/sugar.yaml")
    parser.add_argument("--world", default="runs/world")
    parser.add_argument("--teacher", default="runs/teacher")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("overrides", nargs="*", help="key=value config overrides.")
    args = parser.parse_args()
    out = tempfile.mkdtemp(prefix="bench_ld_share_")
    cfg = load_config(
        args.config,
        [
            f"data.root={args.world}",
            f"teacher.head_dir={args.teacher}",
            "train.init_from=null",
            f"run.output_dir={out}",
            "run.torch_threads=1",
            *args.overrides,
        ],
    )
    run = build(cfg, resume=False, teacher=None)
    run.model.train()
    t = run.cfg.train
    ld, targets, lookup = CpuTimer(), CpuTimer(), CpuTimer()
    if run.objective.teacher is not None:  # alpha > 0 (a generative recipe has no L_d)
        # the teacher's cache warm for every timed step's retrieval batch (as after an epoch)
        for micro_step in range((args.steps + 1) * t.grad_accum):
            sizes = (t.retrieval_batch, t.retrieval_interleaved)
            run.objective.teacher(retrieval_batch(run.pools, sizes, run.cfg.run.seed, micro_step),
                                  run.root)  # fmt: skip
        run.objective.structure_from = ld.wrap(run.objective.structure_from)  # type: ignore[method-assign]
        objective_module.structure_targets = targets.wrap(objective_module.structure_targets)  # type: ignore[attr-defined]
        run.objective.teacher = lookup.wrap(run.objective.teacher)  # type: ignore[assignment]
    step(run)  # warm-up
    rows: list[tuple[float, ...]] = []
    for _ in range(args.steps):
        ld.seconds = targets.seconds = lookup.seconds = 0.0
        wall, cpu = time.perf_counter(), time.process_time()
        step(run)
        rows.append((time.process_time() - cpu, time.perf_counter() - wall, ld.seconds,
                     targets.seconds, lookup.seconds))  # fmt: skip
    cpu_s, wall_s, ld_s, target_s, lookup_s = (
        statistics.median(r[k] for r in rows) for k in range(5)
    )
    print(
        f"recipe {args.config} {' '.join(args.overrides)}: model {run.cfg.model.family}, "
        f"generative batch {t.batch_size}, "
        f"retrieval batch {t.retrieval_batch} pairs, alpha {run.cfg.structure.alpha}; "
        f"median of {args.steps} steps, 1 thread"
    )
    print(f"  step             {1000 * cpu_s:9.1f} ms CPU ({1000 * wall_s:.1f} ms wall)")
    print(f"  L_d (forward)    {1000 * ld_s:9.1f} ms = {100 * ld_s / cpu_s:.2f} % of the step")
    share = 100 * lookup_s / cpu_s
    print(f"  teacher lookup   {1000 * lookup_s:9.1f} ms = {share:.2f} % (cache warm)")
    print(f"  target matrix    {1000 * target_s:9.1f} ms = {100 * target_s / cpu_s:.2f} %")
    print("  bar: L_d <= 2 % of the step")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
