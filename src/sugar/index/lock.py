"""One lock per index directory, shared by every process that mutates it (server and CLI).

>>> from sugar.index.lock import index_lock
>>> with index_lock("runs/kb_index"):   # doctest: +SKIP
...     index = Index.load("runs/kb_index"); index.add(...); index.save("runs/kb_index")

The lock is a sibling file ``DIR.lock`` (:mod:`filelock`, an OS-level lock released when its
holder exits, even on a crash), not a file inside ``DIR``: :meth:`sugar.index.Index.save`
replaces the directory atomically, which would drop a lock file kept inside it. Readers need no
lock: a save swaps in a complete directory. :func:`sugar.locks.holding` is the same lock with a
clear error on timeout (the CLI's mutations use it).
"""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock

from sugar.locks import lock_path

__all__ = ["INDEX_LOCK_TIMEOUT", "index_lock", "lock_path"]

INDEX_LOCK_TIMEOUT = 60.0
"""Seconds a second writer of an index waits before it is refused."""


def index_lock(directory: str | Path, timeout: float = INDEX_LOCK_TIMEOUT) -> FileLock:
    """A context manager holding the exclusive mutation lock of the index at ``directory``;
    raises :class:`filelock.Timeout` after ``timeout`` seconds (``-1``: wait forever)."""
    path = lock_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path, timeout=timeout)
