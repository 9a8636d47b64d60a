"""One lock per index directory, shared by every process that mutates it (server and CLI).

>>> from sugar.index.lock import index_lock
>>> with index_lock("runs/kb_index"):   # doctest: +SKIP
...     index = Index.load("runs/kb_index"); index.add(...); index.save("runs/kb_index")

The lock is a sibling file ``DIR.lock`` (:mod:`filelock`, an OS-level lock released when its
holder exits, even on a crash), not a file inside ``DIR``: :meth:`sugar.index.Index.save`
replaces the directory atomically, which would drop a lock file kept inside it. Readers need no
lock: a save swaps in a complete directory.
"""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock

__all__ = ["index_lock", "lock_path"]


def lock_path(directory: str | Path) -> Path:
    """The lock file of the index at ``directory``: ``DIR.lock`` beside it."""
    directory = Path(directory).resolve()
    return directory.with_name(directory.name + ".lock")


def index_lock(directory: str | Path, timeout: float = 60.0) -> FileLock:
    """A context manager holding the exclusive mutation lock of the index at ``directory``;
    raises :class:`filelock.Timeout` after ``timeout`` seconds (``-1``: wait forever)."""
    path = lock_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path, timeout=timeout)
