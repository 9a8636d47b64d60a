"""The vector index interface: ids, metadata, validation, search results and the on-disk format.

Shape legend: N entries, Q queries, D width, K results per query.

An :class:`Index` holds float32 unit-norm vectors of width D, each under a string id with a JSON
metadata object (a sample's JSON; for prefix-level indexing the document id and slice position,
see :func:`prefix_entry`). Scores are inner products, i.e. cosine similarities of unit vectors.
This class owns everything id-related; a backend (``exact.py``, ``faiss_index.py``,
``milvus_index.py``) only sees int64 *labels*, allocated in increasing order and never reused,
so a backend never renumbers and insertion order is label order.

On-disk format (a directory, written with :func:`sugar.io.atomic_directory`, so a failed write
leaves the previous version intact)::

    manifest.json          format, format_version, backend, params, dim, count, normalize,
                           model_identity, files {name: sha256}
    entries.jsonl          one live entry per line in label order: {"label", "id", "metadata"}
    vectors.npy | index.faiss | milvus-files.json + milvus.db/   the backend's data
    *.sha256               a sidecar per file (sugar.io.write_checksum)

:meth:`Index.load` verifies every checksum (the sidecar and the digest in the manifest) before
reading, and refuses an index built with another model identity than the expected one.
"""

from __future__ import annotations

import abc
import copy
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
import torch

from sugar.io import (
    ChecksumError,
    atomic_directory,
    atomic_write_json,
    read_json_object,
    verify_checksum,
    write_checksum,
)

__all__ = [
    "ChecksumError",
    "Index",
    "IndexFormatError",
    "ModelIdentityError",
    "build_index",
    "prefix_entry",
]

FORMAT = "sugar-index"
FORMAT_VERSION = 1
NORM_TOLERANCE = 1e-3
"""A vector is unit-norm when ``abs(norm - 1) <= NORM_TOLERANCE``."""

VectorsLike = npt.ArrayLike | torch.Tensor
_BACKENDS: dict[str, type[Index]] = {}


LOAD_ATTEMPTS = 5
"""Reads of an index that a concurrent save replaced while :meth:`Index.load` read it."""


def _manifest_bytes(directory: Path) -> bytes | None:
    try:
        return (directory / "manifest.json").read_bytes()
    except OSError:
        return None


class IndexFormatError(ValueError):
    """An index directory is not in the format this version reads, or is inconsistent."""


class ModelIdentityError(ValueError):
    """An index was built with the embeddings of another model than the expected one."""


def prefix_entry(
    document_id: str, position: int, metadata: Mapping[str, Any] | None = None
) -> tuple[str, dict[str, Any]]:
    """The id and metadata of the prefix of ``document_id`` that ends at slice ``position``.

    >>> prefix_entry("story-7", 2, {"task": "story"})
    ('story-7#2', {'task': 'story', 'document_id': 'story-7', 'position': 2})
    """
    if position < 0:
        raise ValueError(f"position={position}: a slice position is >= 0")
    return f"{document_id}#{position}", {
        **dict(metadata or {}),
        "document_id": document_id,
        "position": position,
    }


def as_unit_rows(
    vectors: VectorsLike,
    dim: int,
    normalize: bool,
    ids: Sequence[str] | None = None,
    what: str = "vector",
) -> np.ndarray:
    """``vectors`` as a C-contiguous float32 (N, D) array of unit rows, or a ValueError.

    Rows must be finite; with ``normalize=False`` each norm must be within
    :data:`NORM_TOLERANCE` of 1, with ``normalize=True`` rows are divided by their norm (a zero row
    is refused). Errors name the row and, when ``ids`` are given, its id.

    >>> as_unit_rows([[3.0, 4.0]], dim=2, normalize=True)
    array([[0.6, 0.8]], dtype=float32)
    >>> as_unit_rows([[3.0, 4.0]], dim=2, normalize=False)
    Traceback (most recent call last):
    ...
    ValueError: vector row 0 has norm 5 (not within 0.001 of 1); pass normalize=True to normalize
    """
    if isinstance(vectors, torch.Tensor):
        vectors = vectors.detach().to("cpu", torch.float32).numpy()
    matrix = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))  # (N, D)
    if matrix.ndim != 2 or matrix.shape[1] != dim:
        raise ValueError(f"{what} matrix has shape {tuple(matrix.shape)}, expected (N, {dim})")

    def name(row: int) -> str:
        return f"{what} row {row}" + (f" (id {ids[row]!r})" if ids is not None else "")

    finite = np.isfinite(matrix).all(axis=1)  # (N,)
    if not finite.all():
        raise ValueError(f"{name(int(np.argmin(finite)))} has a non-finite value (nan or inf)")
    norms = np.linalg.norm(matrix.astype(np.float64), axis=1)  # (N,)
    if normalize:
        if (norms == 0).any():
            raise ValueError(f"{name(int(np.argmin(norms)))} is all zeros: cannot normalize")
        return np.ascontiguousarray(matrix / norms[:, None].astype(np.float32))
    off = np.abs(norms - 1.0)
    if (off > NORM_TOLERANCE).any():
        row = int(np.argmax(off))
        raise ValueError(
            f"{name(row)} has norm {norms[row]:.6g} (not within {NORM_TOLERANCE} of 1); "
            "pass normalize=True to normalize"
        )
    return matrix


class Index(abc.ABC):
    """A persistent inner-product index over unit vectors with string ids and JSON metadata.

    Build one with :func:`build_index`, open one with :meth:`Index.load`. Subclasses set
    ``backend`` and ``defaults`` (their parameters) and implement the label-level methods.

    Args:
        dim: D, the vector width.
        model_identity: the identity string of the model bundle whose embeddings are indexed;
            :meth:`load` can refuse an index of another model.
        normalize: divide added vectors and queries by their norm instead of requiring unit norm.
        **params: backend parameters (unknown names are refused); see ``defaults``.
    """

    backend: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    data_files: ClassVar[tuple[str, ...]] = ()
    """The backend's files in the index directory, besides the manifest and entries."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.backend:
            _BACKENDS[cls.backend] = cls

    def __init__(
        self, dim: int, model_identity: str, *, normalize: bool = False, **params: Any
    ) -> None:
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim={dim!r}: must be a positive int")
        if not isinstance(model_identity, str) or not model_identity:
            raise ValueError(f"model_identity={model_identity!r}: must be a non-empty string")
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"unknown {self.backend} index parameter(s) {unknown}; "
                f"known: {sorted(self.defaults)}"
            )
        self.dim = dim
        self.model_identity = model_identity
        self.normalize = normalize
        self.params: dict[str, Any] = {**self.defaults, **params}
        self._label_of: dict[str, int] = {}  # id -> label, live entries in label order
        self._id_of: dict[int, str] = {}  # label -> id
        self._metadata: dict[str, dict[str, Any]] = {}
        self._next_label = 0

    # ---- backend interface (labels only) -----------------------------------------------------

    @abc.abstractmethod
    def _add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        """Store ``vectors`` (N, D) under int64 ``labels`` (N,), all new."""

    @abc.abstractmethod
    def _remove(self, labels: np.ndarray) -> None:
        """Make ``labels`` (M,), all live, unreachable by :meth:`_search`."""

    @abc.abstractmethod
    def _search(self, queries: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query of ``queries`` (Q, D): (scores (K',), labels (K',)) of live entries, K' >= k
        when that many are live (more only for ties at the k-th score)."""

    @abc.abstractmethod
    def _write(self, directory: Path) -> None:
        """Write :attr:`data_files` into ``directory`` with rows in ascending label order."""

    @abc.abstractmethod
    def _read(self, directory: Path, labels: np.ndarray) -> None:
        """Restore from :attr:`data_files`; ``labels`` (N,) are the saved live labels in order."""

    def compact(self) -> None:
        """Reclaim the space of deleted entries (a no-op where deletion already frees it)."""
        return None

    # ---- public API --------------------------------------------------------------------------

    def __len__(self) -> int:
        """The number of live entries."""
        return len(self._label_of)

    def __contains__(self, id: object) -> bool:
        return id in self._label_of

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, count={len(self)}, params={self.params})"

    def ids(self) -> list[str]:
        """Live ids in insertion order."""
        return list(self._label_of)

    def get_metadata(self, id: str) -> dict[str, Any]:
        """A copy of the metadata stored with ``id``."""
        if id not in self._metadata:
            raise KeyError(f"unknown id {id!r}")
        return copy.deepcopy(self._metadata[id])

    def info(self) -> dict[str, Any]:
        """What the manifest records: backend, params, dim, count, normalize, model identity."""
        return {
            "backend": self.backend,
            "params": dict(self.params),
            "dim": self.dim,
            "count": len(self),
            "normalize": self.normalize,
            "model_identity": self.model_identity,
        }

    def add(
        self,
        ids: Sequence[str],
        vectors: VectorsLike,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> None:
        """Add ``vectors`` (N, D) under ``ids`` (N,), with optional JSON ``metadata`` (N,).

        Everything is validated before anything is stored: a duplicate id, a non-unit or
        non-finite row, or metadata that is not a JSON object raises ``ValueError`` naming it.
        """
        ids = list(ids)
        for row, id in enumerate(ids):
            if not isinstance(id, str):
                raise ValueError(f"id at row {row} is {id!r}: ids are strings")
        seen: set[str] = set()
        for id in ids:
            if id in self._label_of or id in seen:
                raise ValueError(f"duplicate id {id!r}: already in the index or in this batch")
            seen.add(id)
        matrix = as_unit_rows(vectors, self.dim, self.normalize, ids)  # (N, D)
        if matrix.shape[0] != len(ids):
            raise ValueError(f"{len(ids)} ids but {matrix.shape[0]} vectors")
        entries = [None] * len(ids) if metadata is None else list(metadata)
        if len(entries) != len(ids):
            raise ValueError(f"{len(ids)} ids but {len(entries)} metadata objects")
        objects = [_json_object(id, entry) for id, entry in zip(ids, entries, strict=True)]
        if not ids:
            return
        labels = np.arange(self._next_label, self._next_label + len(ids), dtype=np.int64)
        self._add(labels, matrix)
        self._next_label += len(ids)
        for id, label, obj in zip(ids, labels.tolist(), objects, strict=True):
            self._label_of[id] = label
            self._id_of[label] = id
            self._metadata[id] = obj

    def delete(self, ids: Sequence[str]) -> None:
        """Remove the entries of ``ids``; an unknown id raises ``ValueError`` (nothing removed)."""
        unique = list(dict.fromkeys(ids))
        missing = [id for id in unique if id not in self._label_of]
        if missing:
            raise ValueError(f"cannot delete unknown id(s) {missing[:5]!r}")
        if not unique:
            return
        labels = np.array([self._label_of[id] for id in unique], dtype=np.int64)
        self._remove(labels)
        for id, label in zip(unique, labels.tolist(), strict=True):
            del self._label_of[id], self._id_of[label], self._metadata[id]

    def search(
        self, queries: VectorsLike, k: int, with_metadata: bool = False
    ) -> list[list[dict[str, Any]]]:
        """The ``k`` best entries for each row of ``queries`` (Q, D).

        Returns, per query, ``[{"id": str, "score": float}, ...]`` (plus ``"metadata"`` when
        ``with_metadata``) sorted by score descending, ties broken by id; all live entries when
        fewer than ``k`` are live. Score = inner product = cosine similarity of unit vectors.
        Which of several entries tied at the k-th score are kept is decided by id on the exact
        backend and by FAISS on the others (ties inside the returned list are always by id).
        """
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k={k!r}: must be a positive int")
        matrix = as_unit_rows(queries, self.dim, self.normalize, what="query")  # (Q, D)
        if len(self) == 0:
            return [[] for _ in range(matrix.shape[0])]
        results = []
        for scores, labels in self._search(matrix, min(k, len(self))):
            hits = sorted(
                zip(
                    scores.tolist(), [self._id_of[label] for label in labels.tolist()], strict=True
                ),
                key=lambda hit: (-hit[0], hit[1]),
            )[:k]
            results.append([self._hit(id, score, with_metadata) for score, id in hits])
        return results

    def _hit(self, id: str, score: float, with_metadata: bool) -> dict[str, Any]:
        if with_metadata:
            return {"id": id, "score": score, "metadata": copy.deepcopy(self._metadata[id])}
        return {"id": id, "score": score}

    # ---- persistence -------------------------------------------------------------------------

    def save(self, directory: str | Path, replace: bool = True) -> Path:
        """Write the index to ``directory`` atomically (compacting first); returns the path.

        An existing ``directory`` is replaced only if it is empty or a directory sugar wrote
        with nothing else in it (:mod:`sugar.owned`), and only when ``replace`` is true, so a
        wrong path cannot wipe unrelated files.
        """
        target = Path(directory)
        self.compact()
        with atomic_directory(target, replace=replace, kind="index") as tmp:
            entries = tmp / "entries.jsonl"
            with open(entries, "w", encoding="utf-8") as handle:
                for id, label in self._label_of.items():
                    line = {"label": label, "id": id, "metadata": self._metadata[id]}
                    handle.write(json.dumps(line, ensure_ascii=False) + "\n")
            files = {entries.name: write_checksum(entries)}
            self._write(tmp)
            for name in self.data_files:
                files[name] = write_checksum(tmp / name)
            manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **self.info()}
            atomic_write_json(tmp / "manifest.json", {**manifest, "files": files})
            write_checksum(tmp / "manifest.json")
        return target

    @classmethod
    def load(cls, directory: str | Path, expected_model_identity: str | None = None) -> Index:
        """Open an index written by :meth:`save`, verifying every file's checksum.

        Readers take no lock: a save swaps in a whole directory at once, but a reader opens
        its files one by one, so a swap between two opens would mix two versions. When a read
        fails and the manifest has changed meanwhile, the new version is read again (up to
        :data:`LOAD_ATTEMPTS` times); a failure on an unchanged manifest is a damaged index.

        Raises ``FileNotFoundError`` (missing file), :class:`~sugar.io.ChecksumError` (a file
        was truncated or altered), :class:`ModelIdentityError` (built with another model than
        ``expected_model_identity``) or :class:`IndexFormatError` (not a readable index).
        """
        directory = Path(directory)
        for attempt in range(1, LOAD_ATTEMPTS + 1):
            before = _manifest_bytes(directory)
            try:
                return cls._load_once(directory, expected_model_identity)
            except (IndexFormatError, ChecksumError, OSError):
                if attempt == LOAD_ATTEMPTS or _manifest_bytes(directory) == before:
                    raise
        raise AssertionError("unreachable")  # the last attempt returns or raises

    @classmethod
    def _load_once(cls, directory: Path, expected_model_identity: str | None) -> Index:
        """One read of :meth:`load`, with no retry."""
        manifest_path = directory / "manifest.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{directory}: not a sugar index (no manifest.json)")
        verify_checksum(manifest_path)
        manifest = _read_manifest(manifest_path)
        if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
            raise IndexFormatError(
                f"{manifest_path}: format {manifest.get('format')!r} version "
                f"{manifest.get('format_version')!r}; this sugar reads {FORMAT!r} {FORMAT_VERSION}"
            )
        identity = manifest["model_identity"]
        if expected_model_identity is not None and identity != expected_model_identity:
            raise ModelIdentityError(
                f"{directory}: the index was built with model identity {identity!r}, "
                f"not the expected {expected_model_identity!r}; re-embed and rebuild it"
            )
        backend = _BACKENDS.get(manifest["backend"])
        if backend is None:
            raise IndexFormatError(
                f"{manifest_path}: unknown backend {manifest['backend']!r}; "
                f"known: {sorted(_BACKENDS)}"
            )
        if not issubclass(backend, cls):
            raise IndexFormatError(f"{directory}: a {backend.__name__}, not a {cls.__name__}")
        files = manifest["files"]
        for name in ("entries.jsonl", *backend.data_files):
            if name not in files:
                raise IndexFormatError(f"{manifest_path}: lists no checksum for {name}")
            if verify_checksum(directory / name) != files[name]:
                raise ChecksumError(f"{directory / name}: checksum differs from the manifest's")
        index = backend(
            manifest["dim"], identity, normalize=manifest["normalize"], **manifest["params"]
        )
        labels, ids, metadata = _read_entries(directory / "entries.jsonl")
        if len(ids) != manifest["count"]:
            raise IndexFormatError(
                f"{directory / 'entries.jsonl'}: {len(ids)} entries, manifest says "
                f"{manifest['count']}"
            )
        label_array = np.asarray(labels, dtype=np.int64)
        index._read(directory, label_array)
        index._label_of = dict(zip(ids, labels, strict=True))
        index._id_of = dict(zip(labels, ids, strict=True))
        index._metadata = dict(zip(ids, metadata, strict=True))
        index._next_label = labels[-1] + 1 if labels else 0
        return index


_MANIFEST_SHAPE: dict[str, type | tuple[type, ...]] = {
    "model_identity": str, "backend": str, "files": dict, "dim": int, "normalize": bool,
    "params": dict, "count": int,
}  # fmt: skip


def _read_manifest(path: Path) -> dict[str, Any]:
    """An index's ``manifest.json``, its shape checked (:class:`IndexFormatError` naming the
    field)."""
    manifest = read_json_object(path, IndexFormatError)
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        return manifest  # the caller names the format
    for key, kind in _MANIFEST_SHAPE.items():
        value = manifest.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise IndexFormatError(f"{path}: {key}: {value!r:.80} is not of the expected type")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in manifest["files"].items()):
        raise IndexFormatError(f"{path}: files: expected file name -> SHA-256 strings")
    if not all(isinstance(k, str) for k in manifest["params"]):
        raise IndexFormatError(f"{path}: params: keys must be strings")
    return manifest


def _json_object(id: str, metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ValueError(f"metadata of id {id!r} is a {type(metadata).__name__}, not a mapping")
    try:
        return json.loads(json.dumps(dict(metadata), allow_nan=False))
    except (TypeError, ValueError) as error:
        raise ValueError(f"metadata of id {id!r} is not JSON-serialisable: {error}") from None


def _read_entries(path: Path) -> tuple[list[int], list[str], list[dict[str, Any]]]:
    labels: list[int] = []
    ids: list[str] = []
    metadata: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                entry = json.loads(line)
                label, id, meta = int(entry["label"]), entry["id"], entry["metadata"]
            except (ValueError, KeyError, TypeError) as error:
                raise IndexFormatError(f"{path}, line {number}: bad entry ({error})") from None
            if labels and label <= labels[-1]:
                raise IndexFormatError(f"{path}, line {number}: labels must increase")
            labels.append(label)
            ids.append(id)
            metadata.append(meta)
    if len(set(ids)) != len(ids):
        raise IndexFormatError(f"{path}: duplicate ids")
    return labels, ids, metadata


def build_index(
    backend: Literal["exact", "flat", "hnsw", "ivf", "milvus"],
    dim: int,
    model_identity: str,
    **params: Any,
) -> Index:
    """A new empty index of ``backend`` ("exact", "flat", "hnsw", "ivf", "milvus").

    ``params``: ``normalize`` (every backend), HNSW ``M``, ``efConstruction``, ``efSearch``
    (defaults 32, 200, 128), IVF ``nlist``, ``nprobe``, Milvus ``index_type``. Unknown names
    raise ``ValueError``.

    >>> index = build_index("exact", 2, "demo-model")
    >>> index.add(["a", "b"], [[1.0, 0.0], [0.0, 1.0]], [{"text": "A"}, None])
    >>> index.search([[0.6, 0.8]], k=1)
    [[{'id': 'b', 'score': 0.800000011920929}]]
    """
    if backend not in _BACKENDS:
        raise ValueError(f"unknown index backend {backend!r}; choose one of {sorted(_BACKENDS)}")
    cls = _BACKENDS[backend]
    unknown = sorted(set(params) - set(cls.defaults) - {"normalize"})
    if unknown:
        raise ValueError(
            f"unknown {backend} index parameter(s) {unknown}; known: {sorted(cls.defaults)}"
        )
    return cls(dim, model_identity, **params)
