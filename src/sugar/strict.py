"""Strict plain data -> typed dataclass trees: the machinery behind :mod:`sugar.config`.

Every key is checked against the dataclass's fields (an unknown key names its nearest valid
one), every value against the field's type (``Literal`` choices, unions, lists, mappings,
numbers written as YAML strings such as ``1e-3``); ``key=value`` overrides are parsed as YAML.
Nothing here knows the sections of Sugar's config.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from typing import Any, Literal, TypeVar, Union

import yaml

__all__ = ["ConfigError", "build_dataclass", "merge_override", "parse_override"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file, override or value is invalid; the message names the field."""


_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _nearest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.0)
    nearest = f"; did you mean {close[0]!r}?" if close else ""
    return f"{nearest} (valid keys: {', '.join(valid)})"


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Return ``value`` checked (and, for nested dataclasses, built) against type ``tp``."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return build_dataclass(tp, value, where)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices or isinstance(value, bool) != isinstance(choices[0], bool):
            raise ConfigError(f"{where}={value!r}: must be one of {list(choices)}")
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for arm in typing.get_args(tp):
            try:
                return _coerce(arm, value, where)
            except ConfigError as exc:
                errors.append(str(exc).split(": ", 1)[-1])
        raise ConfigError(f"{where}={value!r}: " + " or ".join(errors))
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{where}={value!r}: must be null")
        return None
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}={value!r}: expected a list")
        (item_tp, *_) = typing.get_args(tp)
        items = [_coerce(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}={value!r}: expected a mapping")
        _, val_tp = typing.get_args(tp)
        return {str(k): _coerce(val_tp, v, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}={value!r}: expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}={value!r}: expected an integer")
        return value
    if tp is float:
        if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}={value!r}: expected a number")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):  # a NaN or infinite rate trains a NaN model silently
            raise ConfigError(f"{where}={value!r:.40}: must be a finite number")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}={value!r}: expected a string")
        return value
    raise TypeError(f"{where}: unsupported config field type {tp!r}")  # a bug in the tree


def build_dataclass(cls: type[T], data: dict[str, Any], where: str) -> T:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ConfigError(f"unknown config key {path!r}{_nearest(str(key), names)}")
        kwargs[key] = _coerce(hints[key], value, path)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}.{exc}" if where else str(exc)) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b.c=value"`` into its key path and YAML-parsed value.

    >>> parse_override("structure.alpha=0.5")
    (['structure', 'alpha'], 0.5)
    >>> parse_override("run.output_dir=runs/x")
    (['run', 'output_dir'], 'runs/x')
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise ConfigError(f"bad override {text!r}: expected dotted.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"bad override {text!r}: value is not valid YAML ({exc})") from None
    return key.strip().split("."), value


def merge_override(data: dict[str, Any], cls: type, keys: list[str], value: Any) -> None:
    """Set ``data[k1][k2]... = value``, checking each key against the dataclass tree."""
    full = ".".join(keys)
    node, section = data, cls
    for depth, key in enumerate(keys):
        names = [f.name for f in dataclasses.fields(section)]
        if key not in names:
            raise ConfigError(f"unknown config key {full!r}{_nearest(key, names)}")
        if depth == len(keys) - 1:
            node[key] = value
            return
        section = typing.get_type_hints(section)[key]
        if not (dataclasses.is_dataclass(section) and isinstance(section, type)):
            raise ConfigError(f"unknown config key {full!r}: {key!r} is not a section")
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config section {key!r} must be a mapping, got {child!r}")
        node = child


def check(ok: bool, name: str, value: object, why: str = "must be >= 1") -> None:
    """Raise :class:`ConfigError` ``name=value: why`` unless ``ok`` (a section's rule)."""
    if not ok:
        raise ConfigError(f"{name}={value!r}: {why}")
