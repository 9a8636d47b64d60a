"""One writer at a time: exclusive locks on the directories sugar mutates.

Every index mutation (``sugar index build / add / delete``, the server's ``/v1/index`` routes)
holds the index's lock (:func:`sugar.index.lock.index_lock`: a sibling ``DIR.lock``, since a save
swaps the directory itself), and a training run holds its run directory's lock (``RUN.lock``
beside it) from before it reads a checkpoint until it returns. The locks are
:mod:`filelock`'s OS-level locks, released when the holder exits, even when it is killed, so a
stale lock file never blocks anyone. A second writer waits up to ``timeout`` seconds and then
gets :class:`BusyError` naming the directory and the lock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

__all__ = ["BusyError", "holding", "lock_path"]


class BusyError(TimeoutError):
    """Another process holds the lock of a directory sugar wants to write."""


def lock_path(directory: str | Path) -> Path:
    """The lock file of ``directory``: ``DIR.lock`` beside it."""
    directory = Path(directory).resolve()
    return directory.with_name(directory.name + ".lock")


@contextlib.contextmanager
def holding(
    directory: str | Path, timeout: float, what: str, lock_file: Path | None = None
) -> Iterator[FileLock]:
    """Hold the exclusive lock of ``directory`` for the block; :class:`BusyError` after
    ``timeout`` seconds (``0``: refuse at once, ``-1``: wait forever). ``what`` names the
    directory's role in the message ("index", "run directory"); ``lock_file``: the lock's file
    (default :func:`lock_path`)."""
    path = lock_file or lock_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        raise BusyError(
            f"{directory}: another sugar process is writing this {what} (it holds {path}; "
            f"waited {timeout:g} s); wait for it to finish or use another {what}"
        ) from None
    try:
        yield lock
    finally:
        lock.release()
