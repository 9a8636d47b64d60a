"""Directories sugar owns: a marker names what sugar wrote, so nothing else is ever deleted.

Every directory sugar creates as a whole (a world, a bundle, an index, a checkpoint, an export:
:func:`sugar.io.atomic_directory`; a run directory, a teacher head: :func:`claim_directory`)
holds a marker file ``.sugar-owned``, JSON ``{"written_by": "sugar", "kind": KIND, "entries":
[NAME, ...]}`` listing the top-level names sugar writes there. The rule every command follows:

- a missing or empty directory may be written;
- a non-empty directory without the marker is refused (:class:`ForeignDirectoryError`):
  sugar never deletes, replaces or writes into a directory it did not make;
- a directory with the marker is replaced only when the caller asks to replace (``--force`` or
  a command whose nature is to update it, like ``index add``), and even then never when it holds
  a top-level name the marker does not list (a user's file put inside): that is refused, naming
  the files.

Written by hand: no library keeps "which directory did this program write" (it is a convention
of each tool, like git's ``.git`` or pip's ``RECORD``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "MARKER",
    "ForeignDirectoryError",
    "check_replaceable",
    "claim_directory",
    "marker_entries",
    "remove_owned",
    "write_marker",
]

MARKER = ".sugar-owned"
_TRANSIENT = (".sugar-tmp-", ".sugar-old-")  # sugar's own temporaries (sugar.io)


class ForeignDirectoryError(FileExistsError):
    """A directory sugar would replace, delete or write into holds what sugar did not write."""


def write_marker(directory: Path, kind: str, entries: Iterable[str]) -> None:
    """Write ``directory/.sugar-owned`` (atomically) listing ``entries``."""
    record = {"written_by": "sugar", "kind": kind, "entries": sorted(set(entries) - {MARKER})}
    fd, tmp = tempfile.mkstemp(prefix=f".{MARKER}.sugar-tmp-{os.getpid()}-", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(record, handle)
    os.chmod(tmp, 0o644)
    os.replace(tmp, directory / MARKER)


def marker_entries(directory: Path) -> tuple[str, set[str]] | None:
    """(kind, entries) of the marker in ``directory``, or ``None`` when there is none or it is
    not one sugar writes."""
    path = directory / MARKER
    try:
        record: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (isinstance(record, dict) and record.get("written_by") == "sugar"):
        return None
    entries = record.get("entries")
    if not (isinstance(entries, list) and all(isinstance(e, str) for e in entries)):
        return None
    return str(record.get("kind")), set(entries)


def _names(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if not any(t in p.name for t in _TRANSIENT)}


def check_replaceable(directory: str | Path, replace: bool, ignore: Iterable[str] = ()) -> None:
    """Refuse to replace ``directory`` unless it is missing, empty, or sugar's (marker) with
    nothing else in it and ``replace`` is true. ``ignore``: names that do not count (a lock)."""
    directory = Path(directory)
    if not directory.exists():
        return
    if not directory.is_dir():
        raise ForeignDirectoryError(f"{directory}: exists and is not a directory")
    names = _names(directory) - set(ignore)
    if not names:
        return
    owned = marker_entries(directory)
    if owned is None:
        raise ForeignDirectoryError(
            f"{directory}: not empty and not written by sugar (no {MARKER} marker); sugar "
            "replaces only directories it wrote: choose another path or empty it yourself"
        )
    foreign = sorted(names - owned[1] - {MARKER})
    if foreign:
        raise ForeignDirectoryError(
            f"{directory}: holds {', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}, "
            f"which sugar did not write; move them out first (sugar never deletes them)"
        )
    if not replace:
        raise FileExistsError(
            f"{directory}: already holds a sugar {owned[0]}; pass --force to replace it"
        )


def claim_directory(
    directory: str | Path,
    kind: str,
    entries: Iterable[str],
    ignore: Iterable[str] = (),
    create: bool = True,
) -> Path:
    """Create ``directory`` (or accept an empty one, or one sugar claimed for the same ``kind``
    with nothing foreign in it) and mark it as sugar's ``kind`` with ``entries``; returns it.
    ``create=False``: only check (before long work whose failure should leave nothing)."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ForeignDirectoryError(f"{directory}: exists and is not a directory")
    if not create and not directory.exists():
        return directory
    if create:
        directory.mkdir(parents=True, exist_ok=True)
    owned = marker_entries(directory)
    names = _names(directory) - set(ignore) - {MARKER}
    if names and owned is None:
        raise ForeignDirectoryError(
            f"{directory}: not empty and not written by sugar (no {MARKER} marker); a {kind} "
            "needs an empty or new directory"
        )
    allowed = set(entries) | (owned[1] if owned else set())
    foreign = sorted(names - allowed)
    if foreign:
        raise ForeignDirectoryError(
            f"{directory}: holds {', '.join(foreign[:5])}, which sugar did not write; a {kind} "
            "needs an empty or new directory"
        )
    if owned is not None and owned[0] != kind:
        raise ForeignDirectoryError(f"{directory}: holds a sugar {owned[0]}, not a {kind}")
    if create:
        write_marker(directory, kind, allowed)
    return directory


def remove_owned(directory: str | Path, ignore: Iterable[str] = ()) -> None:
    """Delete ``directory`` if sugar wrote everything in it (the marker lists it all);
    :class:`ForeignDirectoryError` otherwise, deleting nothing."""
    directory = Path(directory)
    if not directory.exists():
        return
    check_replaceable(directory, replace=True, ignore=ignore)
    shutil.rmtree(directory)
