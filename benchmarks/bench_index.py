"""Index build time, single-query latency (p50/p99) and recall@k against the exact index.

Prints figures; it is not a test. One thread (torch and FAISS), queries one at a time through the
public ``Index.search`` (validation, id mapping and result dicts included), timed after a warm-up.

    python benchmarks/bench_index.py                          # 100k x 256, random unit vectors
    python benchmarks/bench_index.py --n 20000                # smaller
    python benchmarks/bench_index.py --data clustered         # 1000 Gaussian clusters on the sphere

``random`` (uniform on the sphere) is the worst case for graph and list indexes: every point is
nearly equidistant from every other. ``clustered`` is closer to real embeddings, which
concentrate around topics. HNSW is built once and searched at each ``--ef-search``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch

from sugar.index import HNSWIndex, Index, IVFIndex, build_index
from sugar.index.faiss_index import import_faiss


def _data(kind: str, n: int, queries: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) corpus and (queries, dim) queries, unit rows."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        points = rng.standard_normal((n + queries, dim), dtype=np.float32)
    else:
        centres = rng.standard_normal((1000, dim), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        noise = rng.standard_normal((n + queries, dim), dtype=np.float32) * (0.5 / math.sqrt(dim))
        points = centres[rng.integers(0, len(centres), n + queries)] + noise
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points[:n], points[n:]


def _latencies(index: Index, queries: np.ndarray, k: int) -> tuple[list[list[str]], list[float]]:
    for row in range(min(20, len(queries))):  # warm-up
        index.search(queries[row : row + 1], k)
    found, times = [], []
    for row in range(len(queries)):
        start = time.perf_counter()
        hits = index.search(queries[row : row + 1], k)[0]
        times.append(time.perf_counter() - start)
        found.append([hit["id"] for hit in hits])
    return found, times


def _recall(found: list[list[str]], truth: list[list[str]]) -> float:
    pairs = zip(found, truth, strict=True)
    return sum(len(set(f) & set(t)) / len(t) for f, t in pairs) / len(truth)


def _row(name: str, build_s: float | None, times: list[float], recall: float) -> None:
    p50 = statistics.median(times) * 1e3
    p99 = float(np.percentile(times, 99)) * 1e3
    build = f"{build_s:8.1f}" if build_s is not None else f"{'':>8}"
    print(f"{name:<26} {build} {p50:9.3f} {p99:9.3f} {recall:10.4f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="corpus size")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--data", choices=["random", "clustered"], default="random")
    parser.add_argument("--ef-search", type=int, nargs="+", default=[32, 64, 128, 256, 512])
    parser.add_argument(
        "--nlist", type=int, default=None, help="IVF lists (default 4 sqrt(n), at most n/39)"
    )
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--backends", nargs="+", default=["exact", "flat", "hnsw", "ivf"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(1)
    import_faiss().omp_set_num_threads(1)
    vectors, queries = _data(args.data, args.n, args.queries, args.dim, args.seed)
    ids = [f"v{i}" for i in range(args.n)]
    nlist = args.nlist or max(1, min(int(4 * math.sqrt(args.n)), args.n // 39))
    print(f"{args.n} x {args.dim} {args.data} unit vectors, {args.queries} queries, k={args.k},")
    print("1 thread, latency of one query through Index.search\n")
    print(f"{'backend':<26} {'build s':>8} {'p50 ms':>9} {'p99 ms':>9} {'recall@k':>10}")

    exact = build_index("exact", args.dim, "bench")
    start = time.perf_counter()
    exact.add(ids, vectors)
    build_s = time.perf_counter() - start
    truth, times = _latencies(exact, queries, args.k)
    if "exact" in args.backends:
        _row("exact (torch)", build_s, times, 1.0)

    for backend in [b for b in args.backends if b != "exact"]:
        params = {"nlist": nlist} if backend == "ivf" else {}
        index = build_index(backend, args.dim, "bench", **params)
        start = time.perf_counter()
        index.add(ids, vectors)
        build_s = time.perf_counter() - start
        if isinstance(index, HNSWIndex):
            for ef in args.ef_search:
                index.ef_search = ef
                found, times = _latencies(index, queries, args.k)
                _row(f"hnsw M=32 efSearch={ef}", build_s, times, _recall(found, truth))
                build_s = None
        elif isinstance(index, IVFIndex):
            for nprobe in args.nprobe:
                index.nprobe = nprobe
                found, times = _latencies(index, queries, args.k)
                _row(f"ivf nlist={nlist} nprobe={nprobe}", build_s, times, _recall(found, truth))
                build_s = None
        else:
            found, times = _latencies(index, queries, args.k)
            _row(f"{backend} (faiss)", build_s, times, _recall(found, truth))


if __name__ == "__main__":
    main()
