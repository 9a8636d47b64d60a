"""Run-directory support for :func:`sugar.train.loop.train`: everything a run needs that is not
the loop itself.

Reading the training files, building the backbone, the device, the schedule, the (seed, step)
-> batch indices stream, the per-run target statistics, the best-checkpoint rule, the bundles
and the log files of a run directory, and :class:`TrainResult`.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from sugar.align import TypeMedians, auto_delta, triple_kernel_medians
from sugar.config import SugarConfig, to_yaml
from sugar.data.jsonl import read_samples
from sugar.data.schema import Sample
from sugar.io import atomic_write_text, read_log_lines
from sugar.models.base import MLLM, backbone_class
from sugar.models.bundle import load_bundle, read_manifest, save_bundle
from sugar.strict import ConfigError
from sugar.teachers.lookup import SliceLookup

if TYPE_CHECKING:  # the objective's retrieval batches read this module's batch streams
    from sugar.train.objective import SugarObjective

__all__ = [
    "TrainResult",
    "batch_indices",
    "better",
    "build_model",
    "check_state_keys",
    "lr_multiplier",
    "parameter_groups",
    "read_files",
    "read_validation",
    "resolve_device",
    "resolve_targets",
    "save_run_bundle",
    "seed_step",
    "seeded",
    "tensorboard",
    "truncate_log",
]


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    run_dir: Path
    step: int
    bundle: Path
    best: Path | None
    best_metric: float | None
    history: list[dict[str, Any]] = field(default_factory=list)


def read_files(
    root: str | Path, files: Sequence[str], upsample: Mapping[str, int] | None = None
) -> list[Sample]:
    """The samples of ``files`` (relative to ``root``), in order; a file named in ``upsample``
    contributes its samples that many times (``data.upsample``)."""
    samples: list[Sample] = []
    for name in files:
        samples.extend(read_samples(Path(root) / name, root) * (upsample or {}).get(name, 1))
    if not samples:
        raise ValueError(f"no samples in {list(files)} under {root}")
    return samples


def read_validation(root: str | Path, files: Sequence[str], limit: int) -> list[Sample]:
    """The first ``limit`` samples of the validation ``files`` (``train.eval_samples``), in
    order. A file that contributes none of them (its samples all come after the first
    ``limit``) is named in a warning, with the ``train.eval_samples`` that would reach it: its
    metrics (``val_answer_accuracy`` from a VQA or POPE file) would otherwise be missing from
    the log without a word."""
    kept: list[Sample] = []
    left_out: list[tuple[str, int]] = []  # (file, train.eval_samples that reaches its first)
    before = 0  # samples of the files before this one
    for name in files:
        samples = read_samples(Path(root) / name, root)
        if samples and before >= limit:
            left_out.append((name, before + 1))
        kept.extend(samples[: max(0, limit - len(kept))])
        before += len(samples)
    if not kept:
        raise ValueError(f"no samples in {list(files)} under {root}")
    for name, needed in left_out:
        warnings.warn(
            f"data.val file {name!r} is not validated: train.eval_samples={limit} keeps only "
            f"the validation samples before it (set train.eval_samples >= {needed} to reach "
            "it, or list it earlier in data.val)",
            stacklevel=2,
        )
    return kept


def _mixed(parts: tuple[int, ...]) -> int:
    value = 0
    for part in parts:
        value = (value * 1_000_003 + part) % (2**63 - 1)
    return value


def seeded(*parts: int) -> torch.Generator:
    """A generator whose state is a pure function of ``parts``."""
    return torch.Generator().manual_seed(_mixed(parts))


_DROPOUT_STREAM = 7
"""Keeps the dropout stream apart from ``seeded(seed, step, micro)``, the prefix picks'."""


def seed_step(seed: int, step: int, micro: int, rank: int) -> None:
    """Seed torch's global generator, which dropout draws from, as a pure function of (seed,
    step, micro-batch, rank): each data-parallel rank draws its own masks (seeded alike, two
    ranks drew the same masks for their shards), and a resumed run draws what an uninterrupted
    one does on any world size."""
    torch.manual_seed(_mixed((seed, step, micro, rank, _DROPOUT_STREAM)))


def batch_indices(count: int, batch_size: int, seed: int, position: int) -> list[int]:
    """Items ``position .. position + batch_size`` of the endless stream of per-epoch
    permutations of ``range(count)`` (epoch e's permutation seeded by (seed, e))."""
    out = []
    for k in range(position, position + batch_size):
        epoch, offset = divmod(k, count)
        out.append(int(_permutation(count, seed, epoch)[offset]))
    return out


@functools.lru_cache(maxsize=2)
def _permutation(count: int, seed: int, epoch: int) -> Tensor:
    """Epoch ``epoch``'s order of ``range(count)`` (cached: a batch reads it many times)."""
    return torch.randperm(count, generator=seeded(seed, epoch))


def lr_multiplier(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def parameter_groups(
    model: MLLM, modules: Sequence[nn.Module], weight_decay: float, lr: float
) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices only; the model's own parameters at
    ``lr * model.parameter_lr_scale(name)`` (a pretrained trunk may learn slower), the
    objective's (``modules``) at ``lr``."""
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for module in (model, *modules):
        for name, parameter in module.named_parameters():
            if not parameter.requires_grad:
                continue
            plain = parameter.dim() < 2 or "embed" in name or "position" in name
            scale = model.parameter_lr_scale(name) if module is model else 1.0
            groups.setdefault((scale, plain), []).append(parameter)
    ordered = sorted(groups.items(), key=lambda item: (-item[0][0], item[0][1]))
    return [
        {"params": params, "weight_decay": 0.0 if plain else weight_decay, "lr": lr * scale}
        for (scale, plain), params in ordered
    ]


def resolve_device(name: str) -> torch.device:
    """``run.device`` as a torch device (``auto``: cuda when available); a cuda device that is
    not there is refused naming it."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        index = int(name.split(":")[1]) if ":" in name else 0
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise ValueError(
                f"run.device={name!r}: this machine has {torch.cuda.device_count()} CUDA "
                "devices (torch.cuda.is_available() is "
                f"{torch.cuda.is_available()}); use run.device=cpu or auto"
            )
    return torch.device(name)


def build_model(cfg: SugarConfig, train_samples: Sequence[Sample]) -> MLLM:
    """The backbone: from ``train.init_from`` (a bundle), or a fresh one of ``model.family``
    (:meth:`MLLM.build`: the tiny MLLM trains its tokenizer on the training texts, the MiniLM
    one takes its output vocabulary from them; a Hugging Face family loads ``model.pretrained``
    and adds LoRA), then :meth:`MLLM.prepare` on the training samples."""
    if cfg.train.init_from:  # the run's feature cache serves the bundle's model too
        return load_bundle(
            cfg.train.init_from,
            feature_cache=cfg.model.feature_cache,
            spec_overrides=init_from_overrides(cfg),
        ).model
    texts = [seg.text for s in train_samples for seg in s.segments if seg.text is not None]
    builtin = cfg.model.builtin_kwargs()
    model = backbone_class(cfg.model.family).build(texts, builtin, cfg.model.hf_kwargs())
    model.prepare(train_samples, cfg.data.root)
    return model


TRAINING_TIME_OPTIONS = (
    "dropout", "image_dropout", "trunk_lr_scale", "autocast", "gradient_checkpointing",
    "lora_dropout", "attn_implementation",
)  # fmt: skip
"""``model`` fields a run from ``train.init_from`` takes from its config, not from the bundle:
how the weights train, not what they are."""
ARCHITECTURE_OPTIONS = (
    "width", "layers", "heads", "mlp_ratio", "max_positions", "vision", "image_size", "grid",
    "vit_patch", "vit_width", "vit_layers",
)  # fmt: skip
"""``model`` fields the bundle of ``train.init_from`` fixes: a config that sets another value
is refused rather than silently ignored."""


def init_from_overrides(cfg: SugarConfig) -> dict[str, Any]:
    """The training-time settings of ``cfg.model`` that differ from ``train.init_from``'s
    bundle (its spec is replaced by them); ``ConfigError`` when an architecture field differs.

    A bundle records its model's settings; before, a run from it used all of them, so
    ``model.image_dropout=0`` in the fine-tune's config was recorded there but not applied."""
    assert cfg.train.init_from
    spec = read_manifest(cfg.train.init_from)["spec"]
    wanted = {**cfg.model.hf_kwargs(), **cfg.model.builtin_kwargs()}
    for name in ARCHITECTURE_OPTIONS:
        if name in spec and wanted.get(name) is not None and spec[name] != wanted[name]:
            raise ConfigError(
                f"model.{name}={wanted[name]!r}: train.init_from={cfg.train.init_from} was "
                f"built with {name}={spec[name]!r}, which it keeps; set model.{name} to that "
                "value (or start without init_from)"
            )
    return {
        name: wanted[name]
        for name in TRAINING_TIME_OPTIONS
        if name in spec and wanted.get(name) is not None and spec[name] != wanted[name]
    }


def check_state_keys(model: MLLM, saved: Mapping[str, Tensor], where: str) -> None:
    """A checkpoint's model tensors are exactly the model's trainable ones (the frozen rest is
    rebuilt), with the same shapes; ``ValueError`` naming ``where`` and the first differences."""
    expected = model.trainable_state_dict()
    missing = sorted(expected.keys() - saved.keys())
    unexpected = sorted(saved.keys() - expected.keys())
    shapes = [
        f"{k} {tuple(saved[k].shape)} vs {tuple(expected[k].shape)}"
        for k in sorted(expected.keys() & saved.keys())
        if saved[k].shape != expected[k].shape
    ]
    if missing or unexpected or shapes:
        raise ValueError(
            f"{where}: its model tensors do not match this model (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, shapes {shapes[:3]}); it is another architecture"
        )


def resolve_targets(
    cfg: SugarConfig, lookup: SliceLookup, samples: Sequence[Sample], root: str | Path
) -> tuple[float, TypeMedians | None, dict[str, Any]]:
    """``delta`` (``auto``: median sqrt(phi) over ``delta_pairs`` training slice pairs) and the
    per-type medians (``tk_standardise = median``), computed once before step 0."""
    s = cfg.structure
    pool = [
        samples[i] for i in batch_indices(len(samples), min(512, len(samples)), cfg.run.seed, 0)
    ]
    slices = lookup(pool, root)
    medians = None
    if s.tk_standardise == "median":
        medians = triple_kernel_medians(slices, n_pairs=s.delta_pairs, seed=cfg.run.seed)
    if s.delta == "auto":
        delta = auto_delta(
            slices, n_pairs=s.delta_pairs, seed=cfg.run.seed, triple_kernel=s.triple_kernel,
            medians=medians,
        )  # fmt: skip
    else:
        delta = float(s.delta)
    stats = {
        "delta": delta,
        "delta_source": "auto" if s.delta == "auto" else "config",
        "samples": len(pool),
        "slices": int(slices.lengths.sum()),
        "pairs": s.delta_pairs,
        "medians": None if medians is None else vars(medians),
    }
    return delta, medians, stats


def better(metric: str, new: float, old: float | None) -> bool:
    if old is None:
        return True
    return new < old if metric.endswith("loss") or metric.endswith("mse") else new > old


def save_run_bundle(
    directory: Path, model: MLLM, objective: SugarObjective, cfg: SugarConfig
) -> None:
    """The bundle; the projector goes in only when L_d or L_c trained it: an untrained
    projector would give chance-level "embeddings" where "n/a" is the truth."""
    extras = {}
    if objective.weights.uses_projector:
        state = dict(objective.projector.state_dict())
        spec = {**objective.projector.spec, "image_pool": objective.options.image_pool}
        extras["projector"] = (spec, state)
    save_bundle(directory, model, extras=extras, config_yaml=to_yaml(cfg))


def truncate_log(path: Path, step: int) -> None:
    """Keep the log lines up to ``step`` (a resumed run rewrites what came after). A torn
    last line (the run was killed while writing it) is dropped; a malformed line elsewhere is
    a ``ValueError`` naming the file and line (:func:`sugar.io.read_log_lines`)."""
    if not path.is_file():
        return
    kept = []
    for number, line, record in read_log_lines(path):
        try:
            logged = int(record.get("step", 0))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: not a log record ({exc})") from None
        if logged <= step:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))
