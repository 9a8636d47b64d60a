"""CPU seconds of one optimiser step of a shipped config (the whole ``sugar.train.loop.step``:
the generative and retrieval micro-batches, every loss, backward, AdamW), on a fresh model, so
the cost of a recipe change can be read without training. Prints figures; not a test.

CPU time of this process (``time.process_time``), not wall time: on a shared machine the wall
time moves with the load, the CPU time much less. One torch thread.

    python benchmarks/bench_step.py --world runs/demo/world --teacher runs/demo/teacher \\
        -c configs/sugar.yaml [model.autocast=none ...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from sugar.config import load_config
from sugar.train.loop import build, step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--world", type=Path, required=True, help="A world (sugar data world).")
    parser.add_argument("--teacher", type=Path, required=True, help="Its teacher head directory.")
    parser.add_argument("--steps", type=int, default=3, help="Timed steps after one warm-up.")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(tempfile.mkdtemp()) / "run"
    cfg = load_config(
        args.config,
        [
            f"data.root={args.world}", f"teacher.head_dir={args.teacher}",
            f"model.feature_cache={args.world.parent / 'cache' / 'vision'}",
            f"teacher.cache_dir={args.world.parent / 'cache' / 'teachers'}",
            "train.init_from=null", f"run.output_dir={out}", "train.eval_every=0",
            "train.checkpoint_every=0", *args.overrides,
        ],
    )  # fmt: skip
    run = build(cfg, resume=False, teacher=None)
    run.model.train()
    step(run)  # warm-up: caches, the allocator
    costs = []
    for _ in range(args.steps):
        start = time.process_time()
        step(run)
        costs.append(time.process_time() - start)
    print(
        f"{args.config} {' '.join(args.overrides)}: {statistics.median(costs):.2f} CPU s per "
        f"step (median of {args.steps}; {[round(c, 2) for c in costs]})"
    )


if __name__ == "__main__":
    main()
