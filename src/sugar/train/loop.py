"""``train()``: the one training loop, readable top to bottom (STYLE.md point 1).

forward (:class:`~sugar.train.objective.SugarObjective`: the weighted parts and their total,
logged as returned) -> backward over
``grad_accum`` micro-batches -> clip -> AdamW step -> cosine schedule -> log -> evaluate ->
checkpoint. Under gradient accumulation each loss is computed per micro-batch and the step
uses the mean of the micro-batches' losses (L_g: a mean of per-micro-batch token means; L_d:
its n, targets and same-sample pairs are the micro-batch's). Everything that makes a step is a
pure function of (seed, step): the micro-batch
indices (a per-epoch permutation), the views of caption pairs, the prefixes L_d picks. With
the model, objective, optimiser, scheduler and RNG states in each checkpoint, ``resume=True``
continues exactly where an interrupted run (even a SIGKILLed one) last checkpointed.

Run directory::

    config.yaml        the resolved config (delta = auto replaced by its value)
    manifest.json      versions, threads, seed, commit, data hashes
    target_stats.json  delta, per-type medians (tk_standardise), how they were computed
    log.jsonl          one JSON object per logged step and per evaluation
    checkpoints/       sugar.train.checkpoint
    model/             the final bundle (backbone + retrieval projector)
    best/              the bundle at the best ``select_metric`` on validation
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from sugar.align import TypeMedians, auto_delta, triple_kernel_medians
from sugar.config import SugarConfig, to_dict, to_yaml
from sugar.data.jsonl import read_samples
from sugar.data.schema import Sample
from sugar.data.views import apply_views, is_caption_pair
from sugar.io import atomic_write_json, atomic_write_text, write_manifest
from sugar.models.base import MLLM, backbone_class
from sugar.models.bundle import load_bundle, save_bundle
from sugar.teachers.lookup import SliceLookup, teacher_lookup_from_config
from sugar.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from sugar.train.distributed import init_from_environment, sum_gradients
from sugar.train.objective import SugarObjective

__all__ = ["TrainResult", "evaluate", "train"]


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


def _seeded(*parts: int) -> torch.Generator:
    """A generator whose state is a pure function of ``parts``."""
    value = 0
    for part in parts:
        value = (value * 1_000_003 + part) % (2**63 - 1)
    return torch.Generator().manual_seed(value)


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
    return torch.randperm(count, generator=_seeded(seed, epoch))


def lr_multiplier(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _parameter_groups(modules: Sequence[nn.Module], weight_decay: float) -> list[dict[str, Any]]:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for module in modules:
        for name, parameter in module.named_parameters():
            if not parameter.requires_grad:
                continue
            plain = parameter.dim() < 2 or "embed" in name or "position" in name
            (no_decay if plain else decay).append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
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
    (:meth:`MLLM.build`: the tiny MLLM trains its tokenizer on the training texts; a Hugging
    Face family loads ``model.pretrained`` and adds LoRA)."""
    if cfg.train.init_from:
        return load_bundle(cfg.train.init_from).model
    texts = [seg.text for s in train_samples for seg in s.segments if seg.text is not None]
    tiny = {**cfg.model.tiny_kwargs(), "vocab_size": cfg.model.vocab_size}
    return backbone_class(cfg.model.family).build(texts, tiny, cfg.model.hf_kwargs())


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


@torch.no_grad()
def evaluate(
    model: MLLM,
    objective: SugarObjective,
    samples: Sequence[Sample],
    root: str | Path,
    batch_size: int,
    seed: int,
) -> dict[str, float]:
    """Validation losses (same objective, fixed prefixes) and, when a projector is trained,
    caption retrieval text->image R@1 among the validation caption pairs."""
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    batches = 0
    for index, start in enumerate(range(0, len(samples), batch_size)):
        chunk = samples[start : start + batch_size]
        parts = objective(model, chunk, root, _seeded(seed, 10**6, index))
        for name, value in parts.items():
            if name != "lm_tokens":
                totals[name] = totals.get(name, 0.0) + float(value.detach())
        batches += 1
    metrics = {f"val_{name}": value / max(1, batches) for name, value in totals.items()}
    pairs = [s for s in samples if is_caption_pair(s)]
    if objective.weights.uses_projector and len(pairs) >= 2:
        from sugar.data.views import caption_view
        from sugar.embed import embed_vectors
        from sugar.eval.metrics import recall_at_k

        views = {
            view: embed_vectors(
                model,
                objective.projector,
                [caption_view(s, view) for s in pairs],
                root,
                batch_size=batch_size,
                image_pool=objective.options.image_pool,
                slice_text_by=objective.options.slice_text_by,
            )
            for view in ("image_only", "caption_only")
        }
        images, texts = views["image_only"], views["caption_only"]
        scores = texts @ images.T  # (captions, images); caption i's image is i
        metrics["val_t2i_r1"] = float(recall_at_k(scores, torch.arange(len(pairs)), 1))
    model.train(was_training)
    return metrics


def _better(metric: str, new: float, old: float | None) -> bool:
    if old is None:
        return True
    return new < old if metric.endswith("loss") or metric.endswith("mse") else new > old


def _save_bundle(directory: Path, model: MLLM, objective: SugarObjective, cfg: SugarConfig) -> None:
    """The bundle; the projector goes in only when L_d or L_c trained it: an untrained
    projector would give chance-level "embeddings" where "n/a" is the truth."""
    extras = {}
    if objective.weights.uses_projector:
        state = dict(objective.projector.state_dict())
        spec = {**objective.projector.spec, "image_pool": objective.options.image_pool}
        extras["projector"] = (spec, state)
    save_bundle(directory, model, extras=extras, config_yaml=to_yaml(cfg))


def train(
    cfg: SugarConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    teacher: SliceLookup | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train per ``cfg``; see the module docstring for what the run directory holds.

    ``teacher``: the slice-embedding lookup L_d needs (built from ``cfg.teacher`` when None
    and alpha > 0). ``stop_after``: return after that many steps, as an interrupted run would
    (tests use it for resume).
    """
    run_dir = Path(cfg.run.output_dir)
    shard = init_from_environment()
    main = shard.rank == 0  # only rank 0 writes files
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.run.torch_threads:
        torch.set_num_threads(cfg.run.torch_threads)
    root = cfg.data.root
    train_samples = read_files(root, cfg.data.train, cfg.data.upsample)
    val_samples = read_files(root, cfg.data.val)[: cfg.train.eval_samples] if cfg.data.val else []
    checkpoint = latest_checkpoint(run_dir) if resume else None
    if resume and checkpoint is None:
        raise FileNotFoundError(f"--resume: no checkpoint in {run_dir / 'checkpoints'}")
    if not resume and latest_checkpoint(run_dir) is not None:
        raise FileExistsError(
            f"{run_dir} already holds a run: pass --resume or another run.output_dir"
        )
    state = load_checkpoint(checkpoint) if checkpoint is not None else None

    torch.manual_seed(cfg.run.seed)
    device = resolve_device(cfg.run.device)
    model = build_model(cfg, train_samples).to(device)
    s = cfg.structure
    delta: float | None = None
    medians: TypeMedians | None = None
    if s.alpha > 0:
        if teacher is None:
            teacher = teacher_lookup_from_config(cfg)
        if state is not None:
            delta, medians = state["delta"], state["medians"]
        else:
            delta, medians, stats = resolve_targets(cfg, teacher, train_samples, root)
            if main:
                atomic_write_json(run_dir / "target_stats.json", stats)
        cfg = replace(cfg, structure=replace(s, delta=delta))
    objective = SugarObjective(
        model.hidden_size, cfg.loss_weights(), s.options(), delta=delta, teacher=teacher,
        medians=medians, hard_negatives=cfg.contrastive.hard_negatives,
    )  # fmt: skip
    objective.to(device)
    if main:
        atomic_write_text(run_dir / "config.yaml", to_yaml(cfg))
        write_manifest(
            run_dir, cfg.run.seed, extra={"config": to_dict(cfg), "world_size": shard.world}
        )

    t = cfg.train
    optimiser = torch.optim.AdamW(_parameter_groups([model, objective], t.weight_decay), lr=t.lr)
    warmup = int(t.warmup_ratio * t.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: lr_multiplier(step, t.steps, warmup)
    )
    step, best_metric, history = 0, None, []
    if state is not None:
        model.load_state_dict(state["model"], strict=False)
        objective.load_state_dict(state["objective"])
        optimiser.load_state_dict(state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        step, best_metric = state["step"], state["best_metric"]
        if main:
            _truncate_log(run_dir / "log.jsonl", step)
    trainable = [p for group in optimiser.param_groups for p in group["params"]]
    model.train()
    log = open(os.devnull if not main else run_dir / "log.jsonl", "a", encoding="utf-8")  # noqa: SIM115
    writer = _tensorboard(run_dir) if main else None
    bar = tqdm(
        total=t.steps, initial=step, desc="train", disable=not (progress and main), unit="step"
    )
    start_time = time.perf_counter()
    last: dict[str, float] = {}
    try:
        while step < t.steps:
            sums: dict[str, float] = {}
            for micro in range(t.grad_accum):
                position = (step * t.grad_accum + micro) * t.batch_size
                indices = batch_indices(len(train_samples), t.batch_size, cfg.run.seed, position)
                samples = apply_views(
                    [train_samples[i] for i in indices], cfg.data.view_weights, cfg.run.seed,
                    step * t.grad_accum + micro,
                )  # fmt: skip
                generator = _seeded(cfg.run.seed, step, micro)
                parts = objective(model, samples, root, generator, shard)
                (parts["loss"] / t.grad_accum).backward()
                for name, value in parts.items():
                    sums[name] = sums.get(name, 0.0) + float(value.detach()) / t.grad_accum
            sum_gradients(trainable, shard)
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, t.clip_norm or float("inf"))
            step_lr = float(scheduler.get_last_lr()[0])  # the rate this step uses
            optimiser.step()
            scheduler.step()
            optimiser.zero_grad(set_to_none=True)
            step += 1
            last = {**sums, "grad_norm": float(grad_norm), "lr": step_lr}
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in sums.items() if k.endswith("loss")})
            if step % t.log_every == 0 or step == t.steps:
                record = {"step": step, "time": round(time.perf_counter() - start_time, 3), **last}
                history.append(record)
                log.write(json.dumps(record) + "\n")
                log.flush()
                if writer is not None:
                    for name, value in last.items():
                        writer.add_scalar(f"train/{name}", value, step)
            evaluate_now = (t.eval_every and step % t.eval_every == 0) or step == t.steps
            if evaluate_now and val_samples and main:
                metrics = evaluate(model, objective, val_samples, root, t.batch_size, cfg.run.seed)
                record = {"step": step, **metrics}
                history.append(record)
                log.write(json.dumps(record) + "\n")
                log.flush()
                value = metrics.get(t.select_metric)
                if value is None:
                    raise ValueError(
                        f"train.select_metric={t.select_metric!r} is not among the validation "
                        f"metrics {sorted(metrics)}"
                    )
                if _better(t.select_metric, value, best_metric):
                    best_metric = value
                    _save_bundle(run_dir / "best", model, objective, cfg)
            checkpoint_now = (t.checkpoint_every and step % t.checkpoint_every == 0) or (
                step == t.steps
            )
            if checkpoint_now and main:
                model.flush_caches()
                save_checkpoint(
                    run_dir,
                    step,
                    {
                        "step": step,
                        "model": model.trainable_state_dict(),
                        "objective": objective.state_dict(),
                        "optimiser": optimiser.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "rng": rng_state(),
                        "best_metric": best_metric,
                        "delta": delta,
                        "medians": medians,
                        "config": to_dict(cfg),
                    },
                )
            if stop_after is not None and step >= stop_after:
                break
    finally:
        model.flush_caches()
        bar.close()
        log.close()
        if writer is not None:
            writer.close()
    bundle = run_dir / "model"
    if step == t.steps and main:
        _save_bundle(bundle, model, objective, cfg)
    best = run_dir / "best"
    return TrainResult(
        run_dir=run_dir,
        step=step,
        bundle=bundle,
        best=best if best.exists() else None,
        best_metric=best_metric,
        history=history,
    )


def _truncate_log(path: Path, step: int) -> None:
    """Keep the log lines up to ``step`` (a resumed run rewrites what came after)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    kept = [line for line in kept if json.loads(line).get("step", 0) <= step]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))
