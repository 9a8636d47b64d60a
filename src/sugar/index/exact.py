"""Exact inner-product search in torch: the reference every approximate backend is tested against.

Shape legend: N entries, Q queries, D width, K results per query.

Hand-written rather than FAISS because it is the naive reference (a matrix product and
``torch.topk``), needs no optional dependency, and resolves ties at the k-th score by id, which
makes its results fully deterministic. Deleting removes the rows at once (one O(N·D) copy per
``delete`` call), so there is nothing to compact. Data file: ``vectors.npy``, float32 (N, D),
rows in label order.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from sugar.index.base import Index, IndexFormatError

__all__ = ["ExactIndex"]

_CHUNK_SCORES = 1 << 24
"""At most this many scores (64 MiB of float32) are held per query chunk."""


class ExactIndex(Index):
    """Brute-force search: scores = queries @ vectorsᵀ, then top-k (see :class:`Index`).

    >>> index = ExactIndex(2, "demo-model")
    >>> index.add(["a", "b", "c"], [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    >>> [hit["id"] for hit in index.search([[0.0, 1.0]], k=1)[0]]  # b and c tie: by id
    ['b']
    """

    backend: ClassVar[str] = "exact"
    data_files: ClassVar[tuple[str, ...]] = ("vectors.npy",)

    def __init__(self, dim: int, model_identity: str, *, normalize: bool = False) -> None:
        super().__init__(dim, model_identity, normalize=normalize)
        self._vectors = torch.empty(0, dim)  # (N, D)
        self._labels = torch.empty(0, dtype=torch.int64)  # (N,)

    def _add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        self._vectors = torch.cat([self._vectors, torch.from_numpy(vectors.copy())])
        self._labels = torch.cat([self._labels, torch.from_numpy(labels.copy())])

    def _remove(self, labels: np.ndarray) -> None:
        keep = ~torch.isin(self._labels, torch.from_numpy(labels))  # (N,)
        self._vectors, self._labels = self._vectors[keep], self._labels[keep]

    def _search(self, queries: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        out: list[tuple[np.ndarray, np.ndarray]] = []
        chunk = max(1, _CHUNK_SCORES // max(1, len(self._labels)))
        for start in range(0, queries.shape[0], chunk):
            scores = torch.from_numpy(queries[start : start + chunk]) @ self._vectors.T  # (Q, N)
            top = torch.topk(scores, k, dim=1)  # (Q, K)
            kth = top.values[:, -1:]  # (Q, 1)
            ties = (scores >= kth).sum(dim=1)  # (Q,), > k where scores tie at the k-th place
            for row in range(scores.shape[0]):
                if int(ties[row]) > k:  # hand all tied candidates to the caller's id tie-break
                    rows = torch.nonzero(scores[row] >= kth[row]).squeeze(1)
                    values, positions = scores[row, rows], rows
                else:
                    values, positions = top.values[row], top.indices[row]
                out.append((values.numpy(), self._labels[positions].numpy()))
        return out

    def _write(self, directory: Path) -> None:
        np.save(directory / "vectors.npy", self._vectors.numpy(), allow_pickle=False)

    def _read(self, directory: Path, labels: np.ndarray) -> None:
        vectors = np.load(directory / "vectors.npy", allow_pickle=False)
        if vectors.dtype != np.float32 or vectors.shape != (len(labels), self.dim):
            raise IndexFormatError(
                f"{directory / 'vectors.npy'}: {vectors.dtype} {vectors.shape}, "
                f"expected float32 {(len(labels), self.dim)}"
            )
        self._vectors = torch.from_numpy(vectors)
        self._labels = torch.from_numpy(labels.copy())
