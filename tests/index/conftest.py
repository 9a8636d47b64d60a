"""Fixtures for the index tests: random unit vectors, one FAISS thread (like one torch thread)."""

from __future__ import annotations

import importlib.util

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
