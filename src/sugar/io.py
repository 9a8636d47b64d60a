"""Safe I/O: atomic files and directories, content checksums, run manifests.

Every artefact sugar writes (configs, checkpoints, caches, indexes, reports) goes through this
module, so a crash or a kill at any moment leaves either the old artefact or the new one, never a
partial one:

- :func:`atomic_write` writes to a hidden temporary file in the same directory, flushes and
  ``fsync``-s it, then ``os.replace``-s it over the target (atomic on POSIX) and ``fsync``-s the
  directory. An exception inside the ``with`` block removes the temporary file; a killed process
  leaves a hidden ``.NAME.sugar-tmp-PID-XXXX`` file that the next write to the same target removes.
- :func:`atomic_directory` builds a directory under a temporary name and swaps it in; the previous
  version is kept under a backup name until the swap is done and restored if it was interrupted.
- :func:`write_checksum` / :func:`verify_checksum` keep a ``NAME.sha256`` sidecar;
  :class:`ChecksumError` (a ``ValueError``) reports a mismatch with both digests.
- :func:`write_manifest` records what makes a run reproducible.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from sugar.owned import check_replaceable, write_marker

__all__ = [
    "ChecksumError",
    "atomic_directory",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_writable_file",
    "host_facts",
    "read_json_object",
    "read_log",
    "read_log_lines",
    "sha256_bytes",
    "sha256_file",
    "verify_checksum",
    "write_checksum",
    "write_manifest",
]

_TMP_TAG = ".sugar-tmp-"
_OLD_TAG = ".sugar-old-"


class ChecksumError(ValueError):
    """A file's content does not match its recorded checksum."""


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temps(target: Path) -> None:
    """Remove temporaries of ``target`` left by processes that no longer exist."""
    prefix = f".{target.name}{_TMP_TAG}"
    for stale in target.parent.glob(f"{prefix}*"):
        pid_text = stale.name[len(prefix) :].split("-", 1)[0]
        if pid_text.isdigit() and not _pid_alive(int(pid_text)):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file that replaces ``path`` only when the block exits cleanly.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
    >>> with atomic_write(target, "w") as f:
    ...     _ = f.write("hello")
    >>> target.read_text()
    'hello'
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode={mode!r}: atomic_write supports 'w' and 'wb'")
    target = Path(path)
    if target.is_dir():  # else os.replace names the temporary file, not the user's path
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a file", str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(target)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}{_TMP_TAG}{os.getpid()}-", dir=target.parent
    )
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode, encoding=encoding if "b" not in mode else None) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_writable_file(path: str | Path) -> Path:
    """Refuse, before any work, a file path :func:`atomic_write` would fail on at the end: an
    existing directory (``IsADirectoryError``), a file where a parent directory should be
    (``NotADirectoryError``), or a nearest existing parent this process cannot write in
    (``PermissionError``). Missing parents are fine (``atomic_write`` creates them)."""
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a file", str(target))
    parent = target.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "is a file, not a directory", str(parent))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "cannot write in this directory", str(parent))
    return target


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; returns the path."""
    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return Path(path)


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON (keys in insertion order, UTF-8) atomically; returns the path."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def read_json_object(path: str | Path, error: type[ValueError] = ValueError) -> dict[str, Any]:
    """The JSON object in ``path`` (a manifest, a state); ``error`` naming the file when it is
    not valid UTF-8 JSON, nested too deeply, or not an object.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = atomic_write_json(Path(d) / "m.json", [1])
    ...     read_json_object(Path(d) / "m.json")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: .../m.json: holds a JSON list, not an object
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise error(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: holds a JSON {type(data).__name__}, not an object")
    return data


def read_log_lines(path: str | Path) -> list[tuple[int, str, dict[str, Any]]]:
    """Each record of a JSON-lines log (a run's ``log.jsonl``) with its line number and its
    line as written. A torn
    last line (the run was killed while appending it) is dropped; a malformed line anywhere
    else is a ``ValueError`` naming the file and line.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = atomic_write_text(Path(d) / "log.jsonl", '{"step": 1}\\n{"step": 2, "lo')
    ...     read_log_lines(Path(d) / "log.jsonl")
    [(1, '{"step": 1}', {'step': 1})]
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    torn = not text.endswith("\n")  # then the last element is a partly written line
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"a JSON {type(record).__name__}, not an object")
        except (ValueError, RecursionError) as exc:
            if torn and number == len(lines):
                break  # the torn last line of a killed run
            raise ValueError(f"{path}:{number}: not a log record ({exc})") from None
        records.append((number, line, record))
    return records


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines log, as :func:`read_log_lines` reads them."""
    return [record for _, _, record in read_log_lines(path)]


def _exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2`` with
    ``RENAME_EXCHANGE``): no moment where either name is missing. False where the system or
    the filesystem cannot (the caller then falls back to two renames)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)  # glibc >= 2.28
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    status = renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange)
    if status == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def _restore_interrupted_swap(target: Path) -> None:
    """If a previous swap died between its two renames, put the old directory back."""
    backups = sorted(target.parent.glob(f".{target.name}{_OLD_TAG}*"))
    if not backups:
        return
    if not target.exists():
        os.replace(backups[-1], target)
        backups = backups[:-1]
    for leftover in backups:
        shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def atomic_directory(
    path: str | Path, *, replace: bool = True, kind: str = "output"
) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces ``path`` when the block exits cleanly.

    An existing ``path`` is replaced only when it is empty, or when ``replace`` is true and it is
    a directory sugar wrote with nothing foreign in it (:mod:`sugar.owned`; checked before the
    block runs and again before the swap); the new directory gets the ``.sugar-owned`` marker
    (``kind``, and every top-level name written in the block).

    Readers see the old directory or the new one: on Linux the swap is one atomic exchange of
    the two names (``renameat2``, ``RENAME_EXCHANGE``), after which the old directory (now
    under the temporary name) is removed; a crash before that removal leaves it as a stale
    temporary, removed by the next call. Where the exchange is unavailable the swap is two
    renames (old -> backup, new -> path): a reader may then find no directory for that moment,
    and a crash between them leaves the old directory under a backup name, which the next
    ``atomic_directory(path)`` restores before it starts.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(target)
    _restore_interrupted_swap(target)
    check_replaceable(target, replace)
    tmp = Path(
        tempfile.mkdtemp(prefix=f".{target.name}{_TMP_TAG}{os.getpid()}-", dir=target.parent)
    )
    try:
        yield tmp
        write_marker(tmp, kind, (p.name for p in tmp.iterdir()))
        for file in tmp.rglob("*"):
            if file.is_file():
                with open(file, "rb") as handle:
                    os.fsync(handle.fileno())
        os.chmod(tmp, 0o755)
        check_replaceable(target, replace)  # the block may have run for a long time
        if target.exists() and _exchange(tmp, target):
            shutil.rmtree(tmp)  # the old directory, now under the temporary name
        elif target.exists():
            backup = Path(
                tempfile.mkdtemp(
                    prefix=f".{target.name}{_OLD_TAG}{os.getpid()}-", dir=target.parent
                )
            )
            os.replace(target, backup)
            os.replace(tmp, target)
            shutil.rmtree(backup)
        else:
            os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --------------------------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------------------------


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``.

    >>> sha256_bytes(b"")[:16]
    'e3b0c44298fc1c14'
    """
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's content, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def write_checksum(path: str | Path) -> str:
    """Record the SHA-256 of ``path`` in ``path.sha256`` (atomically); returns the digest."""
    path = Path(path)
    digest = sha256_file(path)
    atomic_write_text(_sidecar(path), f"{digest}  {path.name}\n")
    return digest


def verify_checksum(path: str | Path) -> str:
    """Check ``path`` against its ``.sha256`` sidecar; returns the digest.

    Raises ``FileNotFoundError`` when the file or its sidecar is missing and
    :class:`ChecksumError` when the content changed.
    """
    path = Path(path)
    sidecar = _sidecar(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    if not sidecar.is_file():
        raise FileNotFoundError(f"checksum file not found: {sidecar}")
    expected = sidecar.read_text(encoding="utf-8").split()[0] if sidecar.stat().st_size else ""
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(
            f"{path}: checksum mismatch (recorded {expected or '<empty>'}, content {actual}); "
            "the file is corrupt or was changed after it was written"
        )
    return actual


# --------------------------------------------------------------------------------------------
# Run manifests
# --------------------------------------------------------------------------------------------

_MANIFEST_PACKAGES = ("sugar-mllm", "torch", "numpy", "transformers", "peft", "faiss-cpu")


def _git_commit(cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")


def _torch_threads() -> int | None:
    if "torch" not in sys.modules:
        return None
    import torch

    return int(torch.get_num_threads())


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def host_facts() -> dict[str, Any]:
    """What a run's figures and timings depend on about its machine: the platform, the CPU
    model and count, and (once torch is loaded) whether the CPU multiplies bfloat16 natively,
    since ``model.autocast: auto`` computes in float32 where it does not, with other figures."""
    host: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
    }
    if "torch" in sys.modules:
        import torch

        from sugar.models.precision import native_bfloat16

        host["cpu_bfloat16"] = native_bfloat16(torch.device("cpu"))
    return host


def write_manifest(
    run_dir: str | Path,
    seed: int,
    inputs: Mapping[str, str | Path] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``run_dir/manifest.json``: versions, threads, seed, git commit, input hashes.

    ``inputs`` maps a name to a file whose SHA-256 is recorded (a directory is hashed over its
    sorted files). Returns the manifest.
    """
    run_dir = Path(run_dir)
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _MANIFEST_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    hashes = {name: _hash_path(Path(p)) for name, p in (inputs or {}).items()}
    manifest: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv,
        "seed": seed,
        "git_commit": _git_commit(Path(__file__).resolve().parent),
        "versions": versions,
        "torch_threads": _torch_threads(),
        "host": host_facts(),
        "inputs": hashes,
        **dict(extra or {}),
    }
    atomic_write_json(run_dir / "manifest.json", manifest)
    return manifest


def _hash_path(path: Path) -> str:
    if path.is_file():
        return sha256_file(path)
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(file.relative_to(path)).encode())
            digest.update(sha256_file(file).encode())
        return digest.hexdigest()
    raise FileNotFoundError(f"manifest input not found: {path}")
