"""Training state without pickle: tensors in safetensors, everything else in JSON.

:func:`encode` splits a nested training state (dicts, lists, tuples, numbers, strings, ``None``,
tensors and the dataclasses named in :data:`DATACLASSES`) into a flat ``{key: tensor}`` map that
:mod:`safetensors` stores and a JSON-able tree in which each tensor is ``{"$tensor": key}``;
:func:`decode` puts them back. Neither format can run code when read: safetensors is a JSON
header plus raw bytes, and the JSON tree is rebuilt only from the tags below, with dataclasses
from an explicit allow-list (never a name looked up in a module).

Tags: ``{"$tensor": KEY}``, ``{"$tuple": [...]}``, ``{"$dict": [[KEY, VALUE], ...]}`` (a dict
whose keys are not all strings, or whose string keys start with ``$``), ``{"$dataclass": NAME,
"fields": {...}}``. Non-finite floats are JSON's ``NaN`` / ``Infinity`` extensions.

>>> import torch
>>> tensors, tree = encode({"step": 3, "rng": (1, (2, 3), None), "w": torch.ones(2)})
>>> tree
{'step': 3, 'rng': {'$tuple': [1, {'$tuple': [2, 3]}, None]}, 'w': {'$tensor': 't0'}}
>>> decode(tensors, tree)["rng"]
(1, (2, 3), None)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from sugar.align import TypeMedians

__all__ = ["DATACLASSES", "decode", "encode"]

DATACLASSES: dict[str, type] = {"TypeMedians": TypeMedians}
"""The only classes a training state may hold besides plain data and tensors."""


def encode(state: Any) -> tuple[dict[str, Tensor], Any]:
    """(tensors by key, a JSON-able tree referencing them) of ``state``."""
    tensors: dict[str, Tensor] = {}

    def walk(value: Any) -> Any:
        if isinstance(value, Tensor):
            key = f"t{len(tensors)}"
            tensors[key] = value.detach().cpu().contiguous().clone()
            return {"$tensor": key}
        if value is None or isinstance(value, bool | int | float | str):
            return value
        if isinstance(value, tuple):
            return {"$tuple": [walk(v) for v in value]}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, Mapping):
            if all(isinstance(k, str) and not k.startswith("$") for k in value):
                return {k: walk(v) for k, v in value.items()}
            return {"$dict": [[walk(k), walk(v)] for k, v in value.items()]}
        name = type(value).__name__
        if dataclasses.is_dataclass(value) and DATACLASSES.get(name) is type(value):
            fields = {f.name: walk(getattr(value, f.name)) for f in dataclasses.fields(value)}
            return {"$dataclass": name, "fields": fields}
        raise TypeError(f"a training state cannot hold a {type(value).__qualname__}: {value!r}")

    return tensors, walk(state)


def decode(tensors: Mapping[str, Tensor], tree: Any, where: str = "state") -> Any:
    """Rebuild what :func:`encode` split; ``ValueError`` naming ``where`` and the tag on a tree
    that :func:`encode` could not have written."""

    def walk(value: Any) -> Any:
        if value is None or isinstance(value, bool | int | float | str):
            return value
        if isinstance(value, list):
            return [walk(v) for v in value]
        if not isinstance(value, dict):
            raise ValueError(f"{where}: unexpected {type(value).__name__} {value!r}")
        if "$tensor" in value:
            key = value["$tensor"]
            if not isinstance(key, str) or key not in tensors:
                raise ValueError(f"{where}: tensor {key!r} is not in the tensor file")
            return tensors[key]
        if "$tuple" in value:
            return tuple(walk(v) for v in _list(value["$tuple"], "$tuple"))
        if "$dict" in value:
            pairs = _list(value["$dict"], "$dict")
            if not all(isinstance(p, list) and len(p) == 2 for p in pairs):
                raise ValueError(f"{where}: $dict holds something other than [key, value] pairs")
            return {walk(k): walk(v) for k, v in pairs}
        if "$dataclass" in value:
            cls = DATACLASSES.get(value["$dataclass"])
            fields = value.get("fields")
            if cls is None or not isinstance(fields, dict):
                name = value["$dataclass"]
                raise ValueError(f"{where}: dataclass {name!r} is not one of {sorted(DATACLASSES)}")
            try:
                return cls(**{k: walk(v) for k, v in fields.items()})
            except TypeError as exc:
                raise ValueError(f"{where}: {value['$dataclass']}: {exc}") from None
        return {k: walk(v) for k, v in value.items()}

    def _list(value: Any, tag: str) -> list[Any]:
        if not isinstance(value, list):
            raise ValueError(f"{where}: {tag} holds a {type(value).__name__}, not a list")
        return value

    return walk(tree)
