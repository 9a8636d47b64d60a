"""The Milvus backend: vectors in a Milvus collection, embedded (milvus-lite) or on a server.

Shape legend: N entries, Q queries, D width, K results per query.

Why Milvus: it is a distributed vector database (query, data and index nodes over object
storage) whose Python client, ``pymilvus.MilvusClient``, is the same object against an
embedded database (milvus-lite, in this process) and against a cluster (``http://host:19530``).
The comparison with Qdrant and LanceDB is in the README ("A vector store that scales out").

Labels are the collection's INT64 primary keys; ids and metadata stay in ``entries.jsonl`` like
every backend's (:mod:`sugar.index.base`). Data file: ``milvus-files.json``.

Embedded (``uri=""``, the default): each opened or built index works on a private copy of the
milvus-lite database in a temporary directory (milvus-lite admits one process per database, and
an index directory must stay readable while another process serves it); :meth:`Index.save`
closes that copy, copies it into the new index directory (``milvus.db/``, swapped in whole by
:func:`sugar.io.atomic_directory`, like the FAISS file) and reopens it; ``milvus-files.json``
holds the SHA-256 of every file under ``milvus.db/``, each checked before the database is
opened. So it guarantees what the other backends do: a save is all or nothing, writers take
turns under the index's lock, readers see a complete directory.

Server (``uri="http://host:port"``, ``collection=NAME``): the vectors live in the server's
collection and the directory holds the manifest and entries only (``milvus-files.json`` is
``{}``). An add or delete is one Milvus request (durable in Milvus' write-ahead log) sent at
once; the directory is written atomically by the next save, under the index's lock. A writer
killed between the two leaves server rows the directory does not list: searches never return
them (they filter ``label < `` the directory's next label, which also keeps a reader on its own
snapshot while others write) and the next add overwrites them (``upsert`` of the same labels);
or listed entries whose vectors it already deleted (never returned). Saving one server index
to two directories makes two writers of one collection: do not.

Searches use a ``FLAT`` index (exact; ``index_type="HNSW"`` or ``"IVF_FLAT"`` are Milvus' own
approximate ones). Milvus searches only flushed segments quickly, so an add or delete marks the
collection dirty and the next search flushes it first. Milvus caps K at 16,384.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from sugar.index.base import Index, IndexFormatError
from sugar.io import ChecksumError, atomic_write_json, read_json_object, sha256_file

__all__ = ["MilvusIndex", "import_pymilvus"]

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
    for name in _RaisedAnyway.loggers:
        logger = logging.getLogger(name)
        if not any(isinstance(each, _RaisedAnyway) for each in logger.filters):
            logger.addFilter(_RaisedAnyway())
    return pymilvus


class _RaisedAnyway(logging.Filter):
    """Drop pymilvus' logs of a failed call, each a traceback on stderr written just before it
    raises the error it describes: the raised error reaches the caller (the CLI prints it as
    one line, which would otherwise follow screens of traceback). pymilvus 3.0 writes them
    from these functions."""

    loggers: ClassVar[dict[str, str]] = {
        "pymilvus.decorators": "_log_rpc_error",  # every failed call, then re-raised
        "pymilvus.client.connection_manager": "_recover",  # a failed reconnect, then re-raised
    }

    def filter(self, record: logging.LogRecord) -> bool:
        return self.loggers.get(record.name) != record.funcName


@contextmanager
def _reachable(pymilvus: Any, uri: str) -> Iterator[None]:
    """Turn pymilvus' failure to connect (``Status.CONNECT_FAILED``: a wrong host or port, a
    server that is down or stopped after the index was opened) into a ``ConnectionError``
    naming ``uri`` (the CLI prints it as one line)."""
    try:
        yield
    except pymilvus.MilvusException as error:
        if error.code != pymilvus.Status.CONNECT_FAILED:
            raise
        raise ConnectionError(
            f"{uri}: cannot connect to the Milvus server ({error.message}); check -o uri=... and "
            "that the server is running (and SUGAR_MILVUS_TOKEN, if it needs one)"
        ) from error


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
    """Inner-product search in a Milvus collection, embedded or on a server (module docstring).

    ``params``: ``index_type`` ("FLAT", exact, the default; "HNSW"; "IVF_FLAT"); ``uri`` (""
    embedded, the default; else a Milvus server, e.g. "http://host:19530", its token read from
    the environment variable ``SUGAR_MILVUS_TOKEN``, never stored); ``collection`` (the
    collection's name on that server; one index per collection).

    Example (needs the ``milvus`` extra)::

        index = build_index("milvus", 384, bundle.identity)                  # embedded
        index = build_index("milvus", 384, bundle.identity, uri="http://host:19530",
                            collection="kb")                                  # a server
    """

    backend: ClassVar[str] = "milvus"
    defaults: ClassVar[dict[str, Any]] = {"index_type": "FLAT", "uri": "", "collection": "sugar"}
    data_files: ClassVar[tuple[str, ...]] = (LISTING,)

    def __init__(
        self, dim: int, model_identity: str, *, normalize: bool = False, **params: Any
    ) -> None:
        super().__init__(dim, model_identity, normalize=normalize, **params)
        if self.params["index_type"] not in _INDEX_TYPES:
            raise ValueError(
                f"index_type={self.params['index_type']!r}: choose one of {list(_INDEX_TYPES)}"
            )
        uri, collection = self.params["uri"], self.params["collection"]
        if not isinstance(uri, str) or (uri and not uri.startswith(("http://", "https://"))):
            raise ValueError(f"uri={uri!r}: '' (embedded) or a server's http(s)://host:port")
        if not isinstance(collection, str) or not collection.replace("_", "a").isalnum():
            raise ValueError(f"collection={collection!r}: letters, digits and underscores")
        self._pymilvus = import_pymilvus()
        self._finalizer: weakref.finalize[Any, Any]
        self._collection: str = collection
        self._dirty = False
        if self.server:
            token = os.environ.get("SUGAR_MILVUS_TOKEN", "")
            with self._reachable():  # pymilvus connects here: a wrong URI fails at once
                self._client = self._pymilvus.MilvusClient(uri=uri, token=token)
            self._created = False  # on the first write (build) or by _read (load)
            self._finalizer = weakref.finalize(self, self._client.close)
        else:
            self._scratch = Path(tempfile.mkdtemp(prefix="sugar-milvus-"))
            self._client = self._pymilvus.MilvusClient(str(self._scratch / DATABASE))
            self._create()
            self._finalizer = weakref.finalize(self, _close, self._client, self._scratch)

    @property
    def server(self) -> bool:
        """Whether the collection lives on a Milvus server (``uri``) rather than embedded."""
        return bool(self.params["uri"])

    def _reachable(self) -> Any:
        """A block whose connection failures name this index's server (:func:`_reachable`)."""
        return _reachable(self._pymilvus, self.params["uri"])

    def _create(self) -> None:
        """Create the empty collection: INT64 primary key ``label``, FLOAT_VECTOR ``vector``.
        On a server, an existing collection is refused: it may hold someone else's data."""
        if self.server and self._client.has_collection(self._collection):
            raise ValueError(
                f"{self.params['uri']}: collection {self._collection!r} already exists; choose "
                "another (-o collection=NAME) or drop it on the server first"
            )
        schema = self._client.create_schema(auto_id=False)
        schema.add_field("label", self._pymilvus.DataType.INT64, is_primary=True)
        schema.add_field("vector", self._pymilvus.DataType.FLOAT_VECTOR, dim=self.dim)
        index_params = self._client.prepare_index_params()
        index_params.add_index("vector", index_type=self.params["index_type"], metric_type="IP")
        self._client.create_collection(self._collection, schema=schema, index_params=index_params)
        self._created = True

    def _add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        if not self._created:
            with self._reachable():
                self._create()
        pairs = zip(labels.tolist(), vectors, strict=True)
        rows = [{"label": label, "vector": row} for label, row in pairs]
        # upsert: on a server, rows a killed writer added but never saved reuse these labels
        with self._reachable():
            self._client.upsert(self._collection, rows)
        self._dirty = True

    def _remove(self, labels: np.ndarray) -> None:
        with self._reachable():
            self._client.delete(self._collection, ids=labels.tolist())
        self._dirty = True

    def _search(self, queries: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        if k > MAX_K:
            raise ValueError(f"k={k}: the milvus backend returns at most {MAX_K} results")
        with self._reachable():
            if self._dirty:
                self._client.flush(self._collection)
                self._dirty = False
            # only this snapshot's labels: on a server, later writers' rows have larger labels
            found = self._client.search(
                self._collection, data=[row for row in queries], limit=k, output_fields=["label"],
                filter=f"label < {self._next_label}", search_params={"metric_type": "IP"},
            )  # fmt: skip
        return [
            (
                np.array([hit["distance"] for hit in hits], dtype=np.float32),
                np.array([hit["label"] for hit in hits], dtype=np.int64),
            )
            for hits in found
        ]

    def _write(self, directory: Path) -> None:
        """Embedded: close the private copy (flushing it), copy it to ``directory/milvus.db``
        with a checksum listing of its files, reopen it. Server: flush; an empty listing."""
        with self._reachable():
            if not self._created:
                self._create()
            self._client.flush(self._collection)
        self._dirty = False
        if self.server:
            atomic_write_json(directory / LISTING, {})
            return
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
        self._client = self._pymilvus.MilvusClient(str(self._scratch / DATABASE))
        self._client.load_collection(self._collection)
        self._finalizer = weakref.finalize(self, _close, self._client, self._scratch)

    def _read(self, directory: Path, labels: np.ndarray) -> None:
        listing = read_json_object(directory / LISTING, IndexFormatError)
        if self.server:
            with self._reachable():
                self._read_server(directory, listing)
            return
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
        stored = self._client.query(self._collection, filter="", output_fields=["count(*)"])
        count = int(stored[0]["count(*)"])
        if count != len(labels):
            raise IndexFormatError(
                f"{directory / DATABASE}: {count} vectors, entries.jsonl lists {len(labels)}"
            )

    def _read_server(self, directory: Path, listing: dict[str, Any]) -> None:
        """Attach to the server's collection (no count check: see the module docstring)."""
        if listing or (directory / DATABASE).exists():
            raise IndexFormatError(f"{directory}: a server index holds no {DATABASE} files")
        if not self._client.has_collection(self._collection):
            raise IndexFormatError(
                f"{directory}: collection {self._collection!r} is not on {self.params['uri']} "
                "(dropped on the server?)"
            )
        self._client.load_collection(self._collection)
        self._created = True
