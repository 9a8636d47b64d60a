"""Fixtures for the index tests: random unit vectors, one FAISS thread (like one torch thread)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

faiss = pytest.importorskip("faiss")
faiss.omp_set_num_threads(1)

HAS_MILVUS = all(importlib.util.find_spec(name) for name in ("pymilvus", "milvus_lite"))
needs_milvus = pytest.mark.skipif(
    not HAS_MILVUS,
    reason="pymilvus and milvus-lite are not installed (pip install 'sugar-mllm[milvus]'; "
    "scripts/setup.sh installs them)",
)
BACKENDS = ["exact", "flat", "hnsw", "ivf", pytest.param("milvus", marks=needs_milvus)]
"""Every backend; IVF is built with ``IVF_PARAMS`` so the small corpora below can train it."""
IVF_PARAMS = {"nlist": 4, "nprobe": 4}  # nprobe == nlist: IVF visits every list, exact results


def unit_rows(count: int, dim: int, seed: int) -> torch.Tensor:
    """(count, dim) float32 rows uniform on the unit sphere."""
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(count, dim, generator=generator), dim=1)


def params_of(backend: str) -> dict[str, int]:
    return IVF_PARAMS if backend == "ivf" else {}


@pytest.fixture(scope="session")
def corpus() -> tuple[list[str], torch.Tensor]:
    """200 ids and (200, 16) unit vectors: enough to train IVF with nlist=4 (39 * 4 = 156)."""
    return [f"doc-{i:03d}" for i in range(200)], unit_rows(200, 16, seed=1)


@contextmanager
def milvus_server(database: Path) -> Iterator[str]:
    """The URI of a Milvus server: milvus-lite's own gRPC server (in this process, on the
    loopback), which speaks the protocol a Milvus cluster does to the same ``MilvusClient``;
    stopped (its port closed) when the block ends."""
    from milvus_lite.server_manager import server_manager_instance

    uri = server_manager_instance.start_and_get_uri(str(database))
    assert uri is not None and uri.startswith("http://127.0.0.1:")
    try:
        yield uri
    finally:
        server_manager_instance.release_server(str(database))
