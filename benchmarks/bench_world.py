"""Speed of the built-in world's generation: samples per second, images included.

Prints figures; it is not a test. Generates a world of about ``--samples`` samples (all eight
task files, the default train/val/test proportions, every other option at its default) into a
fresh directory under ``--dir``, ``--repeats`` times, and prints the median time, samples/s and
images/s. One process, one core (numpy and zlib are single-threaded here).

    python benchmarks/bench_world.py                       # N = 10,000, under the temp dir
    python benchmarks/bench_world.py --dir /dev/shm        # the same without disk latency

What dominates: each image is one PNG file, and sugar.io.atomic_directory fsyncs every file
before it swaps the world in, so on a slow disk the fsyncs (0.3-1 ms each) outweigh rendering
(about 0.1 ms an image); ``--dir /dev/shm`` shows the CPU-bound rate.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from sugar.config import WorldConfig
from sugar.data.world import TASKS, generate_world


def _options(samples: int) -> dict[str, int]:
    """Per-task split sizes in the default proportions, about ``samples`` in all."""
    default = WorldConfig()
    per_task = samples / len(TASKS)
    total = default.train_per_task + default.val_per_task + default.test_per_task
    return {
        name: max(1, round(per_task * getattr(default, name) / total))
        for name in ("train_per_task", "val_per_task", "test_per_task")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    options = _options(args.samples)
    times, manifest = [], {}
    for r in range(args.repeats):
        parent = Path(tempfile.mkdtemp(prefix="bench-world-", dir=args.dir))
        try:
            start = time.perf_counter()
            manifest = generate_world(parent / "world", seed=args.seed + r, **options)
            times.append(time.perf_counter() - start)
        finally:
            shutil.rmtree(parent, ignore_errors=True)
    seconds = statistics.median(times)
    samples, images = manifest["world"]["samples"], manifest["world"]["images"]
    print(f"world: {options} -> {samples} samples, {images} images, in {args.dir}")
    print(f"cpu: {os.cpu_count()} visible, 1 used; runs: {', '.join(f'{t:.2f}' for t in times)} s")
    print(
        f"median {seconds:.2f} s: {samples / seconds:,.0f} samples/s, "
        f"{images / seconds:,.0f} images/s"
    )


if __name__ == "__main__":
    main()
