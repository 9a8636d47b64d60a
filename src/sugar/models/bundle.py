"""The model bundle: one directory that ``sugar.load``, indexes and every ``--model`` refer to.

Layout::

    model.json             format, version, backbone family and spec, extra module specs,
                           identity, files with their SHA-256
    <backbone files>       written by the backbone (tiny: backbone.safetensors, tokenizer.json)
    extras.safetensors     extra trained modules by name (e.g. the retrieval projector), if any
    config.yaml            the resolved run config, when the bundle comes from a run
    README.md              the model card

The whole directory is written atomically (:func:`sugar.io.atomic_directory`): a reader sees
the old bundle or the new one, never a mix. ``identity`` is the SHA-256 over the files' hashes
(model.json's ``files``) and model.json's family and specs; an index records it and refuses
another model's bundle. Loading checks every file against its recorded hash, the identity
against model.json, and refuses unlisted extras or config files, naming the file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save
from torch import Tensor

from sugar.io import (
    atomic_directory,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_json_object,
    sha256_bytes,
    sha256_file,
)
from sugar.models.base import MLLM, backbone_class

__all__ = ["FORMAT", "LoadedBundle", "bundle_identity", "load_bundle", "save_bundle"]

FORMAT = "sugar-bundle"
VERSION = 2  # 2: the identity covers model.json's family and specs
MANIFEST = "model.json"
EXTRAS = "extras.safetensors"


@dataclass
class LoadedBundle:
    """What :func:`load_bundle` returns."""

    model: MLLM
    directory: Path
    identity: str
    extras: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    """Extra module name -> its state dict (``name.param`` keys split at the first dot)."""
    extra_specs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Extra module name -> the JSON spec saved with it (what rebuilds the module)."""
    config: str | None = None
    """The resolved run config (YAML text), when saved."""


def _identity(files: dict[str, str], family: str, spec: Any, extras: Any) -> str:
    """SHA-256 over every file's hash *and* what model.json says about them (family, backbone
    spec, extra-module specs): editing any of them changes the identity."""
    record = {"files": files, "family": family, "spec": spec, "extras": extras}
    return sha256_bytes(json.dumps(record, sort_keys=True).encode("utf-8"))


def save_bundle(
    directory: str | Path,
    model: MLLM,
    *,
    extras: dict[str, tuple[dict[str, Any], dict[str, Tensor]]] | None = None,
    config_yaml: str | None = None,
    card: str | None = None,
) -> str:
    """Write ``model`` (and named extra modules as ``(spec, state_dict)``) atomically.

    Returns the bundle identity. An existing bundle at ``directory`` is replaced whole.
    """
    extras = extras or {}
    for name in extras:
        if not name or "." in name:
            raise ValueError(f"extra module name {name!r}: non-empty, without dots")
    bad = non_finite(model.state_dict()) + [
        f"{name}.{key}" for name, (_, state) in extras.items() for key in non_finite(state)
    ]
    if bad:
        raise ValueError(
            f"{directory}: refusing to write a bundle with non-finite weights ({len(bad)} "
            f"tensors, e.g. {', '.join(bad[:3])}); the training diverged"
        )
    with atomic_directory(directory, kind="bundle") as tmp:
        spec = model.save_pretrained(tmp)
        if extras:
            flat = {
                f"{name}.{key}": tensor.detach().cpu().contiguous()
                for name, (_, state) in extras.items()
                for key, tensor in state.items()
            }
            atomic_write_bytes(tmp / EXTRAS, save(flat))
        if config_yaml is not None:
            atomic_write_text(tmp / "config.yaml", config_yaml)
        atomic_write_text(tmp / "README.md", card or _default_card(model, list(extras)))
        files = {path.name: sha256_file(path) for path in sorted(tmp.iterdir()) if path.is_file()}
        extra_specs = {name: module_spec for name, (module_spec, _) in extras.items()}
        identity = _identity(files, model.family, spec, extra_specs)
        atomic_write_json(
            tmp / MANIFEST,
            {
                "format": FORMAT,
                "version": VERSION,
                "family": model.family,
                "spec": spec,
                "extras": extra_specs,
                "identity": identity,
                "files": files,
            },
        )
    return identity


def _default_card(model: MLLM, extras: list[str]) -> str:
    trainable = sum(p.numel() for p in model.parameter_groups()["trainable"])
    frozen = sum(p.numel() for p in model.parameter_groups()["frozen"])
    return (
        f"# sugar model bundle\n\nBackbone family: `{model.family}`, hidden size "
        f"{model.hidden_size}; {trainable:,} trainable and {frozen:,} frozen parameters.\n"
        f"Extra modules: {', '.join(extras) or 'none'}.\n\n"
        "Load it with `sugar.load(path)`; `model.json` lists every file with its SHA-256.\n"
    )


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """``model.json`` of a bundle, checked for format; errors name the directory."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"not a sugar model bundle (no {MANIFEST}): {directory}")
    manifest = read_json_object(path)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("version") != VERSION:
        raise ValueError(
            f"{path}: bundle version {manifest.get('version')}, this sugar reads {VERSION} "
            "(retrain or re-save it with this version)"
        )
    for key, kind in _MANIFEST_SHAPE.items():
        if not isinstance(manifest.get(key), kind):
            raise ValueError(
                f"{path}: {key}: expected a {kind.__name__}, got {manifest.get(key)!r:.80}"
            )
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in manifest["files"].items()):
        raise ValueError(f"{path}: files: expected file name -> SHA-256 strings")
    for name in manifest["files"]:
        if Path(name).name != name or name in ("", ".", ".."):
            raise ValueError(f"{path}: files: {name!r} is not a file name in the bundle")
    return manifest


_MANIFEST_SHAPE: dict[str, type] = {
    "family": str, "spec": dict, "extras": dict, "identity": str, "files": dict,
}  # fmt: skip


def non_finite(tensors: Mapping[str, Tensor]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity."""
    return [
        name
        for name, tensor in tensors.items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]


def bundle_identity(directory: str | Path) -> str:
    """The identity recorded in a bundle's ``model.json`` (no file is verified)."""
    return str(read_manifest(directory)["identity"])


def load_bundle(
    directory: str | Path,
    *,
    feature_cache: str | None = None,
    spec_overrides: Mapping[str, Any] | None = None,
) -> LoadedBundle:
    """Verify and load a bundle written by :func:`save_bundle`.

    ``feature_cache``: a directory where a built-in family keeps its frozen vision features
    (:attr:`MLLM.caches_image_features`; others ignore it): a run that starts from a bundle
    then reads the features earlier runs computed instead of encoding every image again.
    ``spec_overrides``: values replacing those of the bundle's spec (training-time settings
    such as dropout, chosen by the caller: :func:`sugar.train.run.build_model`).

    Raises ``FileNotFoundError`` for a missing directory or file, ``ValueError`` naming the
    file when its content differs from the recorded hash or the family is unknown.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    files: dict[str, str] = manifest["files"]
    for name, digest in files.items():
        path = directory / name
        if not path.is_file():
            raise FileNotFoundError(f"bundle file missing: {path}")
        if sha256_file(path) != digest:
            raise ValueError(f"{path}: content differs from the hash in {MANIFEST} (corrupt?)")
    expected = _identity(files, manifest["family"], manifest["spec"], manifest["extras"])
    if expected != manifest["identity"]:
        raise ValueError(
            f"{directory / MANIFEST}: identity does not match its files, family and specs "
            "(model.json was edited?)"
        )
    for name in (EXTRAS, "config.yaml"):
        if (directory / name).is_file() and name not in files:
            raise ValueError(f"{directory / name}: not listed in {MANIFEST}; refusing to load it")
    family = backbone_class(manifest["family"])
    spec = dict(manifest["spec"]) | dict(spec_overrides or {})
    if feature_cache is not None and family.caches_image_features:
        spec["feature_cache"] = feature_cache
    model = family.from_pretrained(directory, spec)
    extras: dict[str, dict[str, Tensor]] = {name: {} for name in manifest["extras"]}
    if (directory / EXTRAS).is_file():
        for key, tensor in load_file(str(directory / EXTRAS)).items():
            name, _, rest = key.partition(".")
            extras.setdefault(name, {})[rest] = tensor
    bad = non_finite(model.state_dict()) + [
        f"{name}.{key}" for name, state in extras.items() for key in non_finite(state)
    ]
    if bad:
        raise ValueError(
            f"{directory}: the bundle holds non-finite weights ({len(bad)} tensors, e.g. "
            f"{', '.join(bad[:3])}); refusing to load it"
        )
    config = directory / "config.yaml"
    return LoadedBundle(
        model=model,
        directory=directory,
        identity=manifest["identity"],
        extras=extras,
        extra_specs=manifest["extras"],
        config=config.read_text(encoding="utf-8") if config.is_file() else None,
    )
