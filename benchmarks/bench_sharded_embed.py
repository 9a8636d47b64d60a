"""Throughput of ``sugar embed`` at 1 and 2 processes under torchrun (sharded embedding, issue 20).

Prints figures; it is not a test. The default architecture (``ModelConfig``: width 192, 4
layers) with an untrained 256-d retrieval projector, saved as a bundle, on the captions of a
generated world; one torch thread per process. Each run is the whole command, as a user runs
it: ``python -m torch.distributed.run --nproc-per-node N -m sugar.cli embed ...`` (process
start, bundle load, reading and checking the images, embedding, shard writes and the merge), in
wall seconds. A second figure subtracts the same command on a 1-sample corpus (the fixed cost
of starting). The vectors of N = 2 are compared with those of N = 1.

    python benchmarks/bench_sharded_embed.py                 # 400 captions
    python benchmarks/bench_sharded_embed.py --count 1000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _tiny import save_tiny_bundle  # benchmarks/_tiny.py (scripts run from their folder)

from sugar.data.jsonl import read_samples, write_samples
from sugar.data.world import generate_world


def _embed(processes: int, bundle: Path, data: Path, root: Path, out: Path) -> float:
    """Wall seconds of one ``sugar embed`` under torchrun with ``processes`` ranks."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={processes}", "-m", "sugar.cli", "embed", "--model",
               str(bundle), "--data", str(data), "--root", str(root), "--out", str(out),
               "--batch-size", "32"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SUGAR_TORCH_THREADS": "1"}
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=400, help="captions")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-sharded-"))
    root = base / "world"
    generate_world(root, seed=0, train_per_task=args.count, val_per_task=0, test_per_task=0)
    captions = read_samples(root / "caption" / "train.jsonl", root)
    texts = [s.text for x in captions for s in x.segments if s.text]
    model = save_tiny_bundle(base / "bundle", texts)
    data, tiny = root / "caption" / "train.jsonl", base / "one.jsonl"
    write_samples(tiny, captions[:1])
    print(f"torch {torch.__version__}; {len(captions)} captions; width {model.hidden_size}")
    vectors = {}
    for processes in (1, 2):
        startup = _embed(processes, base / "bundle", tiny, root, base / f"tiny{processes}.npz")
        out = base / f"out{processes}.npz"
        seconds = _embed(processes, base / "bundle", data, root, out)
        with np.load(out) as arrays:
            vectors[processes] = arrays["vectors"]
        print(f"{processes} process(es): {seconds:.1f} s wall, {len(captions) / seconds:.1f} "
              f"samples/s; without the {startup:.1f} s of a 1-sample run: "
              f"{len(captions) / max(seconds - startup, 1e-9):.1f} samples/s")  # fmt: skip
    difference = float(np.abs(vectors[2] - vectors[1]).max())
    print(f"max |vector difference| between 2 processes and 1: {difference:.2e}")


if __name__ == "__main__":
    main()
