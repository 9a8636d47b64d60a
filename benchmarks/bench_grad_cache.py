"""GradCache (``train.embedding_chunk``): peak memory and time of a training step with L_d and
InfoNCE over a retrieval micro-batch of n samples, with and without chunked embedding.

Prints figures; it is not a test. Needs a world and a trained offline teacher head:

    sugar data world --out runs/world --size 1000
    sugar train-teacher --data runs/world/caption/train.jsonl --root runs/world --out runs/teacher
    python benchmarks/bench_grad_cache.py [--world runs/world --teacher runs/teacher]
        [--samples 64 256 1024 --chunk 32] [key=value ...]

The built-in tiny model (``model.family=tiny``, width 192, 4 layers, the small trainable ViT)
trains a real step (``sugar.train.loop.step``) of a generative micro-batch of 2 and a retrieval
micro-batch of n samples (n / 2 caption pairs, each a query and a document; L_d's
n x prefixes_per_sample prefixes), 1 thread. Peak memory: the most bytes of torch tensors alive
at once during the step beyond those alive before it, from ``torch.profiler``'s memory events
(allocations and frees in time order; the CPU has no allocator high-water mark). Time: the CPU
seconds (``time.process_time``) and wall seconds of another, unprofiled step. The teacher's
cache is filled for every step's batch beforehand, and one untimed step warms the rest up.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace

import torch
from torch.profiler import ProfilerActivity, profile

from sugar.config import load_config
from sugar.train.loop import Run, build, step
from sugar.train.retrieval import retrieval_batch


def _peak_bytes(run: Run) -> int:
    """Peak torch-tensor bytes of one step above what was alive before it."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        step(run)
    changes = sorted(
        (event.time_range.start, event.self_cpu_memory_usage) for event in profiler.events()
    )
    current = peak = 0
    for _, change in changes:
        current += change
        peak = max(peak, current)
    return peak


def _timed(run: Run) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    step(run)
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world", default="runs/world")
    parser.add_argument("--teacher", default="runs/teacher")
    parser.add_argument("--samples", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--chunk", type=int, default=32)
    parser.add_argument("overrides", nargs="*", help="key=value config overrides.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"GradCache chunk {args.chunk} vs one pass; tiny model {' '.join(args.overrides)}; "
        "peak = torch tensors of one step beyond those alive before it"
    )
    for samples in args.samples:
        cfg = load_config(
            None,
            [
                f"data.root={args.world}", f"teacher.head_dir={args.teacher}",
                f"run.output_dir={tempfile.mkdtemp(prefix='bench_grad_cache_')}",
                "run.torch_threads=1", "model.family=tiny", "model.vision=vit",
                "model.feature_cache=null", "data.train=[caption/train.jsonl]",
                "train.batch_size=2", f"train.retrieval_batch={samples // 2}",
                "train.steps=100", "structure.alpha=1.0", "contrastive.weight=1.0",
                *args.overrides,
            ],
        )  # fmt: skip
        run = build(cfg, resume=False, teacher=None)
        run.model.train()
        t = run.cfg.train
        for micro_step in range(5 * t.grad_accum):  # the teacher's cache warm for every step
            batch = retrieval_batch(run.pools, (t.retrieval_batch, 0), cfg.run.seed, micro_step)
            run.objective.teacher(batch, run.root)
        step(run)  # warm-up
        figures = {}
        for chunk in (0, args.chunk):
            run.cfg = replace(cfg, train=replace(t, embedding_chunk=chunk))
            figures[chunk] = (_peak_bytes(run), *_timed(run))
        (one_peak, one_cpu, one_wall), (cached_peak, cached_cpu, cached_wall) = (
            figures[0], figures[args.chunk]
        )  # fmt: skip
        prefixes = samples * cfg.structure.prefixes_per_sample
        print(
            f"  n = {samples} samples ({prefixes} L_d prefixes): peak {one_peak / 2**20:.1f} MiB "
            f"-> {cached_peak / 2**20:.1f} MiB with GradCache ({cached_peak / one_peak:.2f}x); "
            f"step {one_cpu:.2f} -> {cached_cpu:.2f} CPU s ({one_wall:.2f} -> "
            f"{cached_wall:.2f} s wall)"
        )


if __name__ == "__main__":
    main()
