"""Config files: defaults, then one or more YAML files merged in order, then ``key=value``
overrides, for any typed dataclass tree (:mod:`sugar.config`'s and train-control's).

A later file is an *overlay*: it changes only the keys it names (sections merge key by key,
a list replaces the list before it), so one file can apply to many configs, as the smoke
overlay does (``sugar train -c configs/sugar.yaml -c configs/smoke.yaml``). A file may also
carry one top-level ``rebase`` entry (not a config key) that moves path fields::

    rebase:
      prefix: runs/           # a value that starts with this ...
      to: runs/smoke/         # ... starts with this instead
      fields: [run.output_dir, data.root, train.init_from, teacher.head_dir]

Rebases apply after every file is merged and before the overrides, to the listed fields'
values, defaults included (``runs/base/model`` -> ``runs/smoke/base/model``); other values
(absolute paths, ``null``) stay as they are, and an override always has the last word.

Errors name the file: an unknown key as soon as its file is merged, a bad value (found when
the tree is built) with the list of files that made the config.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from sugar.strict import ConfigError, build_dataclass, merge_override, parse_override

__all__ = ["PathRebase", "load_tree", "read_yaml_mapping"]

T = TypeVar("T")
REBASE = "rebase"
"""The top-level key of a config file that holds a :class:`PathRebase` (never a config key)."""


@dataclass(frozen=True)
class PathRebase:
    """Move path fields from one prefix to another (the module docstring's ``rebase`` entry)."""

    prefix: str
    """A field's value that starts with this (a relative folder ending in ``/``) is moved."""
    to: str
    """... to start with this instead (a folder ending in ``/``)."""
    fields: list[str]
    """The dotted fields moved, e.g. ``run.output_dir`` (each a text field of the tree)."""

    def __post_init__(self) -> None:
        for name in ("prefix", "to"):
            value = getattr(self, name)
            if not value.endswith("/"):
                raise ConfigError(f"{name}={value!r}: must be a folder ending in '/'")
        if not self.fields:
            raise ConfigError(f"fields={self.fields!r}: name at least one field")

    def apply(self, data: dict[str, Any], cls: type) -> None:
        """Rewrite the listed fields of ``data`` (plain data of tree ``cls``) in place."""
        for name in self.fields:
            keys = name.split(".")
            value = _lookup(data, cls, keys, f"{REBASE}.fields: {name!r}")
            if isinstance(value, str) and value.startswith(self.prefix):
                merge_override(data, cls, keys, self.to + value[len(self.prefix) :])


def _lookup(data: dict[str, Any], cls: type, keys: list[str], where: str) -> Any:
    """The value of dotted ``keys`` in ``data``, else the tree's default; the field must hold
    text (``str`` or ``str | None``)."""
    node: Any = data
    for depth, key in enumerate(keys):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if key not in fields:
            raise ConfigError(f"{where}: no such config field")
        tp = typing.get_type_hints(cls)[key]
        if depth == len(keys) - 1:
            if tp not in (str, str | None):
                raise ConfigError(f"{where}: not a text field ({tp})")
            if isinstance(node, dict) and key in node:
                return node[key]
            spec = fields[key]
            return spec.default if spec.default is not dataclasses.MISSING else None
        if not (dataclasses.is_dataclass(tp) and isinstance(tp, type)):
            raise ConfigError(f"{where}: {key!r} is not a section")
        node = node.get(key) if isinstance(node, dict) else None
        cls = tp
    raise AssertionError("unreachable: keys is never empty")  # pragma: no cover


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The YAML mapping in ``path`` (an empty file is ``{}``); ``FileNotFoundError`` or
    :class:`ConfigError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return loaded or {}


def _leaves(mapping: dict[Any, Any], cls: type, prefix: list[str]) -> list[tuple[list[str], Any]]:
    """(dotted keys, value) of every value of ``mapping`` that is not a section of ``cls``:
    sections merge key by key, anything else (a list, a number) replaces what was there."""
    hints = typing.get_type_hints(cls)
    out: list[tuple[list[str], Any]] = []
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise ConfigError(f"config key {key!r}: keys must be text")
        section = hints.get(key)
        if isinstance(value, dict) and dataclasses.is_dataclass(section):
            out += _leaves(value, typing.cast(type, section), [*prefix, key])
        else:
            out.append(([*prefix, key], value))
    return out


def load_tree(
    cls: type[T],
    paths: str | Path | Sequence[str | Path] | None = None,
    overrides: Sequence[str] = (),
) -> T:
    """Defaults of ``cls``, then each YAML file of ``paths`` in order, then ``overrides``
    (``dotted.key=value``); validated (module docstring)."""
    if paths is None:
        files: list[Path] = []
    elif isinstance(paths, str | Path):
        files = [Path(paths)]
    else:
        files = [Path(p) for p in paths]
    data: dict[str, Any] = {}
    rebases: list[tuple[Path, PathRebase]] = []
    for path in files:
        mapping = dict(read_yaml_mapping(path))
        try:
            if REBASE in mapping:
                entry = mapping.pop(REBASE)
                if not isinstance(entry, dict):
                    raise ConfigError(f"{REBASE}: expected a mapping, got {entry!r}")
                rebases.append((path, build_dataclass(PathRebase, entry, REBASE)))
            for keys, value in _leaves(mapping, cls, []):
                merge_override(data, cls, keys, value)  # checks each key against the tree
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    for path, rebase in rebases:
        try:
            rebase.apply(data, cls)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    for text in overrides:
        keys, value = parse_override(text)
        merge_override(data, cls, keys, value)
    try:
        return build_dataclass(cls, data, "")
    except ConfigError as exc:
        source = " + ".join(str(p) for p in files)
        raise ConfigError(f"{source}: {exc}" if source else str(exc)) from None
