"""The Milvus backend: vectors in an embedded Milvus (milvus-lite) collection, inner product.

Shape legend: N entries, Q queries, D width, K results per query.

Why Milvus: it is a distributed vector database (query, data and index nodes over object
storage) whose Python client, ``pymilvus.MilvusClient``, is the same object against an
embedded file (milvus-lite, in this process) and against a cluster (``http://host:19530``).
The comparison with Qdrant and LanceDB is in the README ("A vector store that scales out").

Labels are the collection's INT64 primary keys; ids and metadata stay in ``entries.jsonl`` like
every backend's (:mod:`sugar.index.base`). Each opened or built index works on a private copy of
the milvus-lite database in a temporary directory (milvus-lite admits one process per database,
and an index directory must stay readable while another process serves it);
:meth:`Index.save` closes that copy, copies it into the new index directory (swapped in whole by
:func:`sugar.io.atomic_directory`, like the FAISS file) and reopens it. So this backend
guarantees what the others do: a save is all or nothing, writers take turns under the index's
lock, readers see a complete directory. Data file: ``milvus-files.json``, the SHA-256 of every
file under ``milvus.db/``, each checked before the database is opened.

Searches use a ``FLAT`` index (exact; ``index_type="HNSW"`` or ``"IVF_FLAT"`` are Milvus' own
approximate ones). Milvus searches only flushed segments quickly, so an add or delete marks the
collection dirty and the next search flushes it first. Milvus caps K at 16,384.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from sugar.index.base import Index, IndexFormatError
from sugar.io import ChecksumError, atomic_write_json, read_json_object, sha256_file

__all__ = ["MilvusIndex", "import_pymilvus"]

COLLECTION = "sugar"
DATABASE = "milvus.db"
LISTING = "milvus-files.json"
MAX_K = 16_384
"""Milvus' largest ``limit`` of one search."""
_INDEX_TYPES = ("FLAT", "HNSW", "IVF_FLAT")
_SKIPPED = frozenset({"LOCK"})
"""milvus-lite's lock file: neither copied nor checksummed."""


def import_pymilvus() -> Any:
    """The ``pymilvus`` module with milvus-lite, or an ImportError that says how to install
    them."""
    try:
        import milvus_lite  # noqa: F401
        import pymilvus
    except ImportError as error:
        raise ImportError(
            "the milvus index backend needs pymilvus and milvus-lite: "
            "pip install 'sugar-mllm[milvus]'"
        ) from error
    return pymilvus


def _release(client: Any, database: Path) -> None:
    """Close ``client`` and stop milvus-lite's in-process server of ``database`` (it keeps one
    per path until the process exits otherwise), so its files are complete and closed."""
    from milvus_lite.server_manager import server_manager_instance

    client.close()
    server_manager_instance.release_server(str(database))


def _close(client: Any, scratch: Path) -> None:
    _release(client, scratch / DATABASE)
    shutil.rmtree(scratch, ignore_errors=True)


class MilvusIndex(Index):
    """Inner-product search in an embedded Milvus collection (see the module docstring).

    ``params``: ``index_type`` ("FLAT", exact, the default; "HNSW"; "IVF_FLAT").

    >>> index = MilvusIndex(2, "demo-model")  # doctest: +SKIP
    >>> index.add(["a", "b"], [[1.0, 0.0], [0.0, 1.0]])  # doctest: +SKIP
    >>> index.search([[0.6, 0.8]], k=1)  # doctest: +SKIP
    [[{'id': 'b', 'score': 0.800000011920929}]]
    """

    backend: ClassVar[str] = "milvus"
    defaults: ClassVar[dict[str, Any]] = {"index_type": "FLAT"}
    data_files: ClassVar[tuple[str, ...]] = (LISTING,)

    def __init__(
        self, dim: int, model_identity: str, *, normalize: bool = False, **params: Any
    ) -> None:
        super().__init__(dim, model_identity, normalize=normalize, **params)
        if self.params["index_type"] not in _INDEX_TYPES:
            raise ValueError(
                f"index_type={self.params['index_type']!r}: choose one of {list(_INDEX_TYPES)}"
            )
        self._pymilvus = import_pymilvus()
        self._scratch = Path(tempfile.mkdtemp(prefix="sugar-milvus-"))
        self._client = self._open(create=True)
        self._finalizer = weakref.finalize(self, _close, self._client, self._scratch)
        self._dirty = False

    def _open(self, create: bool) -> Any:
        """A client of the private database copy; with ``create``, an empty collection."""
        client = self._pymilvus.MilvusClient(str(self._scratch / DATABASE))
        if create:
            schema = client.create_schema(auto_id=False)
            schema.add_field("label", self._pymilvus.DataType.INT64, is_primary=True)
            schema.add_field("vector", self._pymilvus.DataType.FLOAT_VECTOR, dim=self.dim)
            index_params = client.prepare_index_params()
            index_params.add_index("vector", index_type=self.params["index_type"], metric_type="IP")
            client.create_collection(COLLECTION, schema=schema, index_params=index_params)
        else:
            client.load_collection(COLLECTION)
        return client

    def _add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        pairs = zip(labels.tolist(), vectors, strict=True)
        rows = [{"label": label, "vector": row} for label, row in pairs]
        self._client.insert(COLLECTION, rows)
        self._dirty = True

    def _remove(self, labels: np.ndarray) -> None:
        self._client.delete(COLLECTION, ids=labels.tolist())
        self._dirty = True

    def _search(self, queries: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        if k > MAX_K:
            raise ValueError(f"k={k}: the milvus backend returns at most {MAX_K} results")
        if self._dirty:
            self._client.flush(COLLECTION)
            self._dirty = False
        found = self._client.search(
            COLLECTION, data=[row for row in queries], limit=k, output_fields=["label"],
            search_params={"metric_type": "IP"},
        )  # fmt: skip
        return [
            (
                np.array([hit["distance"] for hit in hits], dtype=np.float32),
                np.array([hit["label"] for hit in hits], dtype=np.int64),
            )
            for hits in found
        ]

    def _write(self, directory: Path) -> None:
        """Close the private copy (flushing it), copy it to ``directory/milvus.db`` with a
        checksum listing of its files, reopen it."""
        self._client.flush(COLLECTION)
        self._finalizer.detach()
        _release(self._client, self._scratch / DATABASE)
        try:
            shutil.copytree(
                self._scratch / DATABASE, directory / DATABASE,
                ignore=lambda _, names: [n for n in names if n in _SKIPPED],
            )  # fmt: skip
        finally:
            self._reopen()
        files = {
            path.relative_to(directory).as_posix(): sha256_file(path)
            for path in sorted((directory / DATABASE).rglob("*"))
            if path.is_file()
        }
        atomic_write_json(directory / LISTING, files)

    def _reopen(self) -> None:
        """Open the private copy again (after :func:`_release`)."""
        self._client = self._open(create=False)
        self._finalizer = weakref.finalize(self, _close, self._client, self._scratch)
        self._dirty = False

    def _read(self, directory: Path, labels: np.ndarray) -> None:
        listing = read_json_object(directory / LISTING, IndexFormatError)
        present = {
            path.relative_to(directory).as_posix()
            for path in (directory / DATABASE).rglob("*")
            if path.is_file() and path.name not in _SKIPPED
        }
        if present != set(listing):
            raise IndexFormatError(
                f"{directory / DATABASE}: files {sorted(present ^ set(listing))[:5]} differ from "
                f"{LISTING}"
            )
        for name, digest in listing.items():
            if sha256_file(directory / name) != digest:
                raise ChecksumError(f"{directory / name}: checksum mismatch with {LISTING}")
        # replace the empty collection __init__ made with a copy of the saved database
        self._finalizer.detach()
        _release(self._client, self._scratch / DATABASE)
        shutil.rmtree(self._scratch / DATABASE)
        shutil.copytree(directory / DATABASE, self._scratch / DATABASE)
        self._reopen()
        stored = self._client.query(COLLECTION, filter="", output_fields=["count(*)"])
        count = int(stored[0]["count(*)"])
        if count != len(labels):
            raise IndexFormatError(
                f"{directory / DATABASE}: {count} vectors, entries.jsonl lists {len(labels)}"
            )
