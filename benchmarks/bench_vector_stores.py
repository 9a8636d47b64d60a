"""The three embedded vector stores that also run as clusters, side by side with FAISS (issue 20).

Prints figures; it is not a test. For each engine that is importable, in its embedded mode, on
the same random unit vectors: the time to add N x D (one call per 5,000 rows), the median
single-query search latency (k = 10, one query at a time after a warm-up), recall@10 against
exact inner-product search (FAISS ``IndexFlatIP``), whether a delete and a metadata filter work,
and the size on disk. Wall seconds (the engines run their own threads); CPU seconds of this
process beside them (milvus-lite's work happens in its server process, outside that figure).

    python benchmarks/bench_vector_stores.py                       # 20k x 384, 100 queries
    python benchmarks/bench_vector_stores.py --engines milvus --n 100000
    python benchmarks/bench_vector_stores.py --sugar --n 100000   # sugar's milvus vs flat index

``--sugar`` compares sugar's own ``milvus`` backend with its FAISS ``flat`` backend through the
public ``Index`` API (ids, validation and result dicts included), in the same run: add, save,
load, single-query latency, recall@k against FAISS, and the latency ratio.

Install the engines first (each is on PyPI): ``pip install qdrant-client 'pymilvus[milvus-lite]'
lancedb``; an engine that is not importable is reported as such and skipped.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def _data(n: int, queries: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    points = np.random.default_rng(seed).standard_normal((n + queries, dim), dtype=np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    return points[:n], points[n:]


def _truth(corpus: np.ndarray, queries: np.ndarray, k: int) -> list[set[int]]:
    import faiss

    index = faiss.IndexFlatIP(corpus.shape[1])
    index.add(corpus)
    return [set(row.tolist()) for row in index.search(queries, k)[1]]


class _Engine:
    """add(ids, vectors, tags), search(query, k) -> ids, delete(ids), filtered(query, k, tag)."""

    add: Callable[[np.ndarray, np.ndarray, list[str]], None]
    search: Callable[[np.ndarray, int], list[int]]
    delete: Callable[[list[int]], None]
    filtered: Callable[[np.ndarray, int, str], list[int]]


def _qdrant(path: Path, dim: int) -> _Engine:
    from qdrant_client import QdrantClient, models

    client = QdrantClient(path=str(path))
    client.create_collection(
        "bench", vectors_config=models.VectorParams(size=dim, distance=models.Distance.DOT)
    )
    engine = _Engine()

    def add(ids: np.ndarray, vectors: np.ndarray, tags: list[str]) -> None:
        points = models.Batch(
            ids=ids.tolist(), vectors=vectors.tolist(), payloads=[{"tag": t} for t in tags]
        )
        client.upsert("bench", points=points)

    def search(query: np.ndarray, k: int, flt: Any = None) -> list[int]:
        hits = client.query_points("bench", query=query.tolist(), limit=k, query_filter=flt)
        return [int(p.id) for p in hits.points]

    def filtered(query: np.ndarray, k: int, tag: str) -> list[int]:
        match = models.FieldCondition(key="tag", match=models.MatchValue(value=tag))
        return search(query, k, models.Filter(must=[match]))

    def delete(ids: list[int]) -> None:
        client.delete("bench", points_selector=models.PointIdsList(points=ids))  # type: ignore[arg-type]

    engine.add, engine.search, engine.filtered, engine.delete = add, search, filtered, delete
    return engine


def _milvus(path: Path, dim: int) -> _Engine:
    from pymilvus import MilvusClient

    client = MilvusClient(str(path / "bench.db"))
    client.create_collection("bench", dimension=dim, metric_type="IP", auto_id=False)
    engine = _Engine()

    def add(ids: np.ndarray, vectors: np.ndarray, tags: list[str]) -> None:
        rows = [
            {"id": int(i), "vector": v, "tag": t}
            for i, v, t in zip(ids, vectors, tags, strict=True)
        ]
        client.insert("bench", rows)

    def search(query: np.ndarray, k: int, flt: str = "") -> list[int]:
        hits = client.search("bench", data=[query.tolist()], limit=k, filter=flt)[0]
        return [int(hit["id"]) for hit in hits]

    def add_then_flush(ids: np.ndarray, vectors: np.ndarray, tags: list[str]) -> None:
        add(ids, vectors, tags)
        client.flush("bench")  # unflushed (growing) segments are searched ~20x slower

    def filtered(query: np.ndarray, k: int, tag: str) -> list[int]:
        return search(query, k, f'tag == "{tag}"')

    def delete(ids: list[int]) -> None:
        client.delete("bench", ids=ids)

    engine.add, engine.search, engine.filtered, engine.delete = (
        add_then_flush,
        search,
        filtered,
        delete,
    )
    return engine


def _lancedb(path: Path, dim: int) -> _Engine:
    import lancedb
    import pyarrow as pa

    db = lancedb.connect(str(path))
    schema = pa.schema(
        [("id", pa.int64()), ("vector", pa.list_(pa.float32(), dim)), ("tag", pa.string())]
    )
    table = db.create_table("bench", schema=schema)
    engine = _Engine()

    def add(ids: np.ndarray, vectors: np.ndarray, tags: list[str]) -> None:
        column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim)
        table.add(pa.table({"id": pa.array(ids), "vector": column, "tag": pa.array(tags)}))

    def search(query: np.ndarray, k: int, flt: str | None = None) -> list[int]:
        request = table.search(query).metric("dot").limit(k)
        if flt:
            request = request.where(flt, prefilter=True)
        return [int(i) for i in request.to_arrow()["id"].to_pylist()]

    def filtered(query: np.ndarray, k: int, tag: str) -> list[int]:
        return search(query, k, f"tag = '{tag}'")

    def delete(ids: list[int]) -> None:
        table.delete(f"id IN ({', '.join(map(str, ids))})")

    engine.add, engine.search, engine.filtered, engine.delete = add, search, filtered, delete
    return engine


_ENGINES = {"qdrant": _qdrant, "milvus": _milvus, "lancedb": _lancedb}


def _measure(name: str, corpus: np.ndarray, queries: np.ndarray, k: int) -> dict[str, Any]:
    truth = _truth(corpus, queries, k)
    tags = ["even" if i % 2 == 0 else "odd" for i in range(len(corpus))]
    with tempfile.TemporaryDirectory() as tmp:
        start, cpu = time.perf_counter(), time.process_time()
        engine = _ENGINES[name](Path(tmp), corpus.shape[1])
        for begin in range(0, len(corpus), 5000):
            rows = np.arange(begin, min(begin + 5000, len(corpus)))
            engine.add(rows, corpus[rows], [tags[i] for i in rows])
        add_s, add_cpu = time.perf_counter() - start, time.process_time() - cpu
        for query in queries[:5]:
            engine.search(query, k)
        times, found = [], []
        for query in queries:
            start = time.perf_counter()
            found.append(set(engine.search(query, k)))
            times.append(time.perf_counter() - start)
        recall = statistics.mean(len(f & t) / k for f, t in zip(found, truth, strict=True))
        odd = engine.filtered(queries[0], k, "odd")
        filter_ok = len(odd) == k and all(i % 2 == 1 for i in odd)
        gone = sorted(truth[0])[:3]
        engine.delete(gone)
        delete_ok = not (set(engine.search(queries[0], k)) & set(gone))
        disk = subprocess.run(["du", "-sm", tmp], capture_output=True, text=True).stdout.split()[0]
    return {
        "add_s": add_s,
        "add_cpu_s": add_cpu,
        "search_ms_p50": 1e3 * statistics.median(times),
        "recall": recall,
        "filter": filter_ok,
        "delete": delete_ok,
        "disk_mb": int(disk),
    }


def _through_sugar(corpus: np.ndarray, queries: np.ndarray, k: int) -> None:
    from sugar.index import Index, build_index

    ids = [f"doc-{i}" for i in range(len(corpus))]
    results: dict[str, list[list[str]]] = {}
    latency: dict[str, float] = {}
    for backend in ("flat", "milvus"):
        index = build_index(backend, corpus.shape[1], "bench")  # type: ignore[arg-type]
        start, cpu = time.perf_counter(), time.process_time()
        index.add(ids, corpus)
        index.search(queries[:1], k)  # milvus flushes on the first search after an add
        add_s, add_cpu = time.perf_counter() - start, time.process_time() - cpu
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            index.save(Path(tmp) / "index")
            save_s = time.perf_counter() - start
            start = time.perf_counter()
            index = Index.load(Path(tmp) / "index")
            load_s = time.perf_counter() - start
        for row in range(5):
            index.search(queries[row : row + 1], k)
        times, found = [], []
        for row in range(len(queries)):
            start = time.perf_counter()
            hits = index.search(queries[row : row + 1], k)[0]
            times.append(time.perf_counter() - start)
            found.append([hit["id"] for hit in hits])
        results[backend], latency[backend] = found, statistics.median(times)
        recall = statistics.mean(
            len(set(f) & set(t)) / k for f, t in zip(found, results["flat"], strict=True)
        )
        print(
            f"sugar {backend:7s} add+flush {add_s:.2f} s ({add_cpu:.2f} CPU s)  save {save_s:.2f} s"
            f"  load {load_s:.2f} s  search p50 {1e3 * latency[backend]:.2f} ms"
            f"  recall@{k} vs flat {recall:.3f}"
        )
    print(f"latency ratio milvus / flat: {latency['milvus'] / latency['flat']:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="qdrant,milvus,lancedb")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--sugar", action="store_true", help="sugar's milvus vs flat index")
    args = parser.parse_args()
    corpus, queries = _data(args.n, args.queries, args.dim, seed=0)
    print(f"{args.n} x {args.dim}, {args.queries} queries, k={args.k}")
    if args.sugar:
        _through_sugar(corpus, queries, args.k)
        return
    for name in args.engines.split(","):
        try:
            figures = _measure(name, corpus, queries, args.k)
        except ImportError as error:
            print(f"{name:8s} not importable ({error})")
            continue
        print(
            f"{name:8s} "
            + "  ".join(
                f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}"
                for key, value in figures.items()
            )
        )


if __name__ == "__main__":
    main()
