"""Serving throughput: embedding requests/s and p95 latency at 1, 8 and 32 concurrent clients,
with and without micro-batching, over real HTTP on 127.0.0.1.

Prints figures; it is not a test. The default architecture (``ModelConfig``: width 192, 4
layers, vocabulary 1024 trained on the world's texts) with an untrained 256-d retrieval
projector (speed does not depend on the weights), saved as a bundle and served by ``sugar
serve`` in a child process (one torch thread by default), once with ``--batching`` and once
with ``--no-batching``. Each request embeds one caption of the generated world (texts only, so
the frozen vision tower is not what is measured). Each cell: ``--requests`` requests from C
clients after an untimed warm-up of 2C requests; one run per cell (load tests are noisy on a
shared machine: read the ratio, not the third digit).

    python benchmarks/bench_serve.py
    python benchmarks/bench_serve.py --requests 400 --threads 2 --max-wait-ms 2
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from _tiny import save_tiny_bundle  # benchmarks/_tiny.py (scripts run from their folder)

from sugar.data.jsonl import read_samples
from sugar.data.world import generate_world
from sugar.serve.load import run_load, server_process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    parser.add_argument("--requests", type=int, default=256, help="requests per cell")
    parser.add_argument("--clients", type=str, default="1,8,32")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    generate_world(base / "world", seed=0, train_per_task=200, val_per_task=0, test_per_task=0)
    captions = read_samples(base / "world" / "caption" / "train.jsonl", base / "world")
    texts = [s.text for x in captions for s in x.segments if s.text]
    model = save_tiny_bundle(base / "bundle", texts)
    bodies = [{"input": texts[i % len(texts)]} for i in range(args.requests)]
    clients = [int(c) for c in args.clients.split(",")]
    env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    print(
        f"torch {torch.__version__}; server {args.threads} thread(s); width "
        f"{model.hidden_size}; {args.requests} requests per cell; max batch "
        f"{args.max_batch_size}, max wait {args.max_wait_ms} ms"
    )
    results: dict[tuple[bool, int], dict[str, float]] = {}
    for batching in (True, False):
        flags = ["--model", str(base / "bundle"), "--max-batch-size", str(args.max_batch_size),
                 "--max-wait-ms", str(args.max_wait_ms),
                 "--batching" if batching else "--no-batching"]  # fmt: skip
        with server_process(flags, env=env) as url:
            for c in clients:
                run_load(url, bodies[: 2 * c], clients=c)  # warm-up
                stats = run_load(url, bodies, clients=c)
                if stats["errors"]:
                    raise RuntimeError(f"{stats['errors']} failed requests: {stats['statuses']}")
                results[batching, c] = stats
    print(f"{'clients':>7} | {'batched req/s':>13} {'p95 ms':>7} | {'one-by-one req/s':>16} "
          f"{'p95 ms':>7} | {'speed-up':>8}")  # fmt: skip
    for c in clients:
        on, off = results[True, c], results[False, c]
        ratio = on["requests_per_s"] / off["requests_per_s"]
        print(f"{c:>7} | {on['requests_per_s']:>13.1f} {on['p95_ms']:>7.1f} | "
              f"{off['requests_per_s']:>16.1f} {off['p95_ms']:>7.1f} | {ratio:>7.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
