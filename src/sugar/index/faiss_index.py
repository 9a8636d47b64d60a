"""FAISS backends: flat (exact), HNSW (graph) and IVF (inverted lists), all inner product.

Shape legend: N entries, Q queries, D width, K results per query.

FAISS is imported when a backend is built or loaded, so ``sugar.index`` imports without it; a
missing FAISS raises ``ImportError`` naming the ``index`` extra. Labels are the int64 FAISS ids.
Data file: ``index.faiss`` (``faiss.write_index``). Deletion, per backend:

- flat: ``IndexIDMap2(IndexFlatIP)``; ``remove_ids`` removes the rows at once (O(N)).
- IVF: ``IndexIVFFlat`` carries ids natively; ``remove_ids`` scans the lists (O(N)), at once.
- HNSW: a graph cannot drop nodes, so a deleted label becomes a tombstone that searches skip
  (an ``IDSelectorNot`` in the search parameters, so the graph walk still returns K live
  results); :meth:`HNSWIndex.compact` (run by ``save``) rebuilds the graph from the live vectors
  under the same labels, so a saved index has no tombstones.

IVF trains its coarse quantizer on the first ``add`` (or an explicit :meth:`IVFIndex.train`),
which needs at least 39 vectors per list, FAISS' own threshold for a usable k-means.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from sugar.index.base import Index, IndexFormatError, VectorsLike, as_unit_rows

__all__ = ["FlatIndex", "HNSWIndex", "IVFIndex", "import_faiss"]

_MIN_POINTS_PER_LIST = 39


def import_faiss() -> Any:
    """The ``faiss`` module, or an ImportError that says how to install it."""
    try:
        import faiss
    except ImportError as error:
        raise ImportError(
            "the flat, hnsw and ivf index backends need FAISS: pip install 'sugar-mllm[index]'"
        ) from error
    return faiss


def _positive(name: str, value: Any) -> int:
    """``value`` when it is a positive int, else ``ValueError`` naming the parameter."""
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r}: must be a positive int")
    return value


class _SearchParameter:
    """A search-time parameter kept in ``params[key]`` that may change after building (HNSW's
    ``efSearch``, IVF's ``nprobe``): read as an int, set only to a positive int."""

    def __init__(self, key: str, doc: str) -> None:
        self.key = key
        self.__doc__ = f"{doc} (``{key}``)"

    def __get__(self, index: Any, owner: Any = None) -> Any:
        return self if index is None else int(index.params[self.key])

    def __set__(self, index: Any, value: int) -> None:
        index.params[self.key] = _positive(self.key, value)


class _FaissIndex(Index):
    """A FAISS index with ids: add_with_ids, remove_ids, write_index / read_index."""

    data_files: ClassVar[tuple[str, ...]] = ("index.faiss",)

    def __init__(
        self, dim: int, model_identity: str, *, normalize: bool = False, **params: Any
    ) -> None:
        """``params``: the backend's parameters (its ``defaults`` for those not given), each a
        positive int."""
        super().__init__(dim, model_identity, normalize=normalize, **params)
        for name, value in self.params.items():
            _positive(name, value)
        self._faiss = import_faiss()
        self._index = self._new_index()

    def _new_index(self) -> Any:
        raise NotImplementedError

    def _search_parameters(self) -> Any:
        return None

    def _add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        self._index.add_with_ids(vectors, labels)

    def _remove(self, labels: np.ndarray) -> None:
        removed = self._index.remove_ids(labels)
        assert removed == len(labels), (removed, len(labels))

    def _search_exhaustive(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact (scores (Q, K), labels (Q, K)) for queries the approximate search left short."""
        raise NotImplementedError

    def _search(self, queries: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        scores, labels = self._index.search(queries, k, params=self._search_parameters())
        # An approximate search can return fewer than K (k <= live count here): a graph walk
        # that does not reach every node, IVF lists that hold fewer than K. Those queries are
        # answered exhaustively, so "k >= count returns every live entry" holds on every backend.
        short = np.flatnonzero((labels < 0).any(axis=1))  # (S,)
        if len(short):
            scores[short], labels[short] = self._search_exhaustive(queries[short], k)
        found = labels >= 0  # (Q, K)
        return [(scores[row][found[row]], labels[row][found[row]]) for row in range(len(labels))]

    def _write(self, directory: Path) -> None:
        self._faiss.write_index(self._index, str(directory / "index.faiss"))

    def _read(self, directory: Path, labels: np.ndarray) -> None:
        path = directory / "index.faiss"
        index = self._faiss.read_index(str(path))
        if index.d != self.dim or index.ntotal != len(labels):
            raise IndexFormatError(
                f"{path}: {index.ntotal} vectors of width {index.d}, "
                f"expected {len(labels)} of width {self.dim}"
            )
        self._index = index


class FlatIndex(_FaissIndex):
    """FAISS exact search (``IndexFlatIP`` under ``IndexIDMap2``); equals :class:`ExactIndex`
    up to float rounding and tie order."""

    backend: ClassVar[str] = "flat"

    def _new_index(self) -> Any:
        return self._faiss.IndexIDMap2(self._faiss.IndexFlatIP(self.dim))

    def _search_exhaustive(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._index.search(queries, k)  # flat search is already exhaustive


class HNSWIndex(_FaissIndex):
    """FAISS HNSW graph (``IndexHNSWFlat`` under ``IndexIDMap2``) with tombstone deletion.

    Args:
        M: graph degree (memory and recall grow with it).
        efConstruction: candidate list size while building.
        efSearch: candidate list size while searching (recall vs latency; can be changed with
            :attr:`ef_search` after building).
    """

    backend: ClassVar[str] = "hnsw"
    defaults: ClassVar[dict[str, Any]] = {"M": 32, "efConstruction": 200, "efSearch": 128}

    def __init__(
        self, dim: int, model_identity: str, *, normalize: bool = False, **params: int
    ) -> None:
        self._tombstones: set[int] = set()
        self._selector: Any = None
        super().__init__(dim, model_identity, normalize=normalize, **params)

    ef_search = _SearchParameter("efSearch", "The search-time candidate list size.")

    def _new_index(self) -> Any:
        graph = self._faiss.IndexHNSWFlat(
            self.dim, self.params["M"], self._faiss.METRIC_INNER_PRODUCT
        )
        graph.hnsw.efConstruction = self.params["efConstruction"]
        return self._faiss.IndexIDMap2(graph)

    def _search_parameters(self) -> Any:
        parameters = self._faiss.SearchParametersHNSW()
        parameters.efSearch = self.ef_search
        if self._selector is not None:
            parameters.sel = self._selector
        return parameters

    def _remove(self, labels: np.ndarray) -> None:
        self._tombstones.update(labels.tolist())
        dead = np.fromiter(self._tombstones, dtype=np.int64, count=len(self._tombstones))
        # Both selectors are kept referenced: the parameters object holds raw pointers.
        self._batch = self._faiss.IDSelectorBatch(dead)
        self._selector = self._faiss.IDSelectorNot(self._batch)

    def _search_exhaustive(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # The graph keeps its vectors in a flat storage: search it, skip tombstones.
        storage = self._faiss.downcast_index(self._faiss.downcast_index(self._index.index).storage)
        fetch = min(storage.ntotal, k + len(self._tombstones))
        scores, positions = storage.search(queries, fetch)  # (S, fetch), positions in storage
        labels = self._faiss.vector_to_array(self._index.id_map)[positions]  # (S, fetch)
        labels[positions < 0] = -1
        if self._tombstones:
            dead = np.isin(labels, np.fromiter(self._tombstones, dtype=np.int64))
            labels[dead] = -1
            scores[dead] = -np.inf
            order = np.argsort(labels < 0, axis=1, kind="stable")  # live first, score order kept
            scores = np.take_along_axis(scores, order, axis=1)
            labels = np.take_along_axis(labels, order, axis=1)
        return scores[:, :k], labels[:, :k]

    def compact(self) -> None:
        """Rebuild the graph from the live vectors, same labels, dropping the tombstones."""
        if not self._tombstones:
            return
        graph = self._faiss.downcast_index(self._index.index)
        vectors = graph.reconstruct_n(0, graph.ntotal)  # (N + tombstones, D), insertion order
        labels = self._faiss.vector_to_array(self._index.id_map)  # (N + tombstones,)
        live = ~np.isin(labels, np.fromiter(self._tombstones, dtype=np.int64))
        self._index = self._new_index()
        self._index.add_with_ids(np.ascontiguousarray(vectors[live]), labels[live])
        self._tombstones.clear()
        self._selector = None

    def info(self) -> dict[str, Any]:
        return {**super().info(), "tombstones": len(self._tombstones)}


class IVFIndex(_FaissIndex):
    """FAISS inverted lists (``IndexIVFFlat`` over an ``IndexFlatIP`` quantizer).

    Args:
        nlist: number of lists (k-means centroids); training needs >= 39 * nlist vectors.
        nprobe: lists visited per query (recall vs latency; :attr:`nprobe` can be changed).
    """

    backend: ClassVar[str] = "ivf"
    defaults: ClassVar[dict[str, Any]] = {"nlist": 100, "nprobe": 10}

    nprobe = _SearchParameter("nprobe", "Lists visited per query.")

    def _new_index(self) -> Any:
        self._quantizer = self._faiss.IndexFlatIP(self.dim)  # referenced: the IVF borrows it
        return self._faiss.IndexIVFFlat(
            self._quantizer, self.dim, self.params["nlist"], self._faiss.METRIC_INNER_PRODUCT
        )

    def _search_parameters(self) -> Any:
        parameters = self._faiss.SearchParametersIVF()
        parameters.nprobe = self.nprobe
        return parameters

    def _search_exhaustive(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        parameters = self._faiss.SearchParametersIVF()
        parameters.nprobe = self.params["nlist"]  # every list: exhaustive
        return self._index.search(queries, k, params=parameters)

    def train(self, vectors: VectorsLike) -> None:
        """Train the coarse quantizer on ``vectors`` (N, D), N >= 39 * nlist; before any add."""
        if self._index.is_trained:
            raise ValueError("this IVF index is already trained")
        matrix = as_unit_rows(vectors, self.dim, self.normalize, what="training vector")
        nlist = self.params["nlist"]
        needed = _MIN_POINTS_PER_LIST * nlist
        if matrix.shape[0] < needed:
            raise ValueError(
                f"IVF with nlist={nlist} needs >= {needed} training vectors "
                f"({_MIN_POINTS_PER_LIST} per list), got {matrix.shape[0]}; "
                "add more vectors at once, lower nlist, or use the hnsw or flat backend"
            )
        self._index.train(matrix)

    def _add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        if not self._index.is_trained:
            self.train(vectors)
        super()._add(labels, vectors)
