"""Loading Hugging Face files without surprise downloads: the one place that calls
``from_pretrained`` for teachers (:mod:`sugar.teachers.hf`) and backbones
(:mod:`sugar.models.hf`).

A local directory is read as it is, and with ``HF_HUB_OFFLINE`` set (or ``offline=True``)
only the local cache is read; a model whose files are not on this machine raises
``FileNotFoundError`` naming it and saying how to get it, instead of a hub traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["hub_offline", "load_local"]


def hub_offline(offline: bool | None = None) -> bool:
    """``offline`` when given, else whether ``HF_HUB_OFFLINE`` is set to a true value."""
    if offline is not None:
        return offline
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")


def load_local(
    loader: Any, name: str, what: str, offline: bool | None = None, **options: Any
) -> Any:
    """``loader.from_pretrained(name, **options)``, never downloading from a local directory
    or offline; ``FileNotFoundError`` naming ``what`` and ``name`` when its files are not here."""
    local_only = hub_offline(offline) or Path(name).is_dir()
    try:
        return loader.from_pretrained(name, local_files_only=local_only, **options)
    except (OSError, ValueError) as exc:
        if Path(name).is_dir():
            raise FileNotFoundError(
                f"{what} {name!r}: cannot load from the directory: {exc}"
            ) from exc
        raise FileNotFoundError(
            f"{what} {name!r} is not a local directory and not in the local Hugging Face cache"
            + (" (HF_HUB_OFFLINE is set: nothing is downloaded)" if local_only else "")
            + f"; download it where the hub is reachable (hf download {name}) or pass a "
            f"directory: {exc}"
        ) from None
