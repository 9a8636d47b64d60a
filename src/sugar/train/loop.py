"""``train()``: the one training loop, readable top to bottom (STYLE.md point 1).

forward (:class:`~sugar.train.objective.SugarObjective`: L_g + alpha * L_d) -> backward over
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
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from sugar.align import SliceEmbeddings, TypeMedians, auto_delta, triple_kernel_medians
from sugar.config import SugarConfig, to_dict, to_yaml
from sugar.data.jsonl import read_samples
from sugar.data.schema import Sample
from sugar.eval.grounding import grounding
from sugar.io import atomic_write_json, atomic_write_text, write_manifest
from sugar.models.base import MLLM, backbone_class
from sugar.models.bundle import load_bundle, save_bundle
from sugar.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from sugar.train.distributed import init_from_environment, sum_gradients
from sugar.train.objective import SugarObjective, TeacherLookup
from sugar.train.retrieval import check_pool, is_retrieval_source, retrieval_batch, split_pool
from sugar.train.views import apply_views, is_caption_pair

__all__ = ["TrainResult", "evaluate", "train"]

SliceLookup = Callable[[Sequence[Sample], str | Path], SliceEmbeddings]


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


def _parameter_groups(
    model: MLLM, modules: Sequence[nn.Module], weight_decay: float, lr: float
) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices only; the model's own parameters at
    ``lr * model.parameter_lr_scale(name)`` (the objective's at ``lr``)."""
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for module in (model, *modules):
        for name, parameter in module.named_parameters():
            if not parameter.requires_grad:
                continue
            plain = parameter.dim() < 2 or "embed" in name or "position" in name
            scale = model.parameter_lr_scale(name) if module is model else 1.0
            groups.setdefault((plain, scale), []).append(parameter)
    return [
        {"params": params, "weight_decay": 0.0 if plain else weight_decay, "lr": lr * scale}
        for (plain, scale), params in sorted(
            groups.items(), key=lambda item: (-item[0][1], item[0][0])
        )
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
    builtin = cfg.model.builtin_kwargs()
    model = backbone_class(cfg.model.family).build(texts, builtin, cfg.model.hf_kwargs())
    model.prepare(train_samples, cfg.data.root)
    return model


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
    if objective.lm_weight > 0 and len(pairs) >= 2:  # does the model use its images?
        for name, value in grounding(model, pairs, root, batch_size, seed).items():
            if isinstance(value, float):
                metrics[f"val_grounding_{name}"] = value
    if (objective.alpha > 0 or objective.contrastive_weight > 0) and len(pairs) >= 2:
        from sugar.embed import embed_vectors
        from sugar.eval.metrics import recall_at_k
        from sugar.train.views import caption_view

        views = {
            view: embed_vectors(
                model,
                objective.projector,
                [caption_view(s, view) for s in pairs],
                root,
                batch_size=batch_size,
                image_pool=objective.image_pool,
                slice_text_by=objective.slice_text_by,
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
    if objective.alpha > 0 or objective.contrastive_weight > 0:
        state = dict(objective.projector.state_dict())
        spec = {**objective.projector.spec, "image_pool": objective.image_pool}
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
        model.hidden_size, alpha=s.alpha, delta=delta, teacher=teacher,
        slice_text_by=s.slice_text_by, prefixes_per_sample=s.prefixes_per_sample,
        image_pool=s.image_pool, projector_dim=s.projector_dim, sigma_mode=s.sigma_mode,
        gak_normalisation=s.gak_normalisation, medians=medians,
        triple_kernel=s.triple_kernel, use_gak=s.use_gak,
        predicted_kernel=s.predicted_kernel, same_sample_target=s.same_sample_target,
        structure_reduction=s.structure_reduction, lm_weight=cfg.train.lm_weight,
        contrastive_weight=cfg.contrastive.weight, hard_negatives=cfg.contrastive.hard_negatives,
    )  # fmt: skip
    objective.to(device)
    if main:
        atomic_write_text(run_dir / "config.yaml", to_yaml(cfg))
        write_manifest(
            run_dir, cfg.run.seed, extra={"config": to_dict(cfg), "world_size": shard.world}
        )

    t = cfg.train
    optimiser = torch.optim.AdamW(
        _parameter_groups(model, [objective], t.weight_decay, t.lr), lr=t.lr
    )
    pool: list[Sample] = []
    if t.retrieval_batch and (s.alpha > 0 or cfg.contrastive.weight > 0):
        if cfg.data.retrieval:
            pool = read_files(root, cfg.data.retrieval)
            check_pool(pool, f"data.retrieval {cfg.data.retrieval}")
        else:
            pool = [sample for sample in train_samples if is_retrieval_source(sample)]
            if not pool:
                raise ValueError(
                    f"train.retrieval_batch={t.retrieval_batch}: no sample of data.train "
                    f"{cfg.data.train} makes a query/document pair (sugar.train.retrieval); "
                    "name files in data.retrieval or set train.retrieval_batch=0"
                )
    pools = split_pool(pool)
    # With a retrieval micro-batch, the generative batch holds only samples with a target:
    # the others (stories, documents) would cost a forward pass for no L_g token.
    generative = train_samples
    if pool:
        generative = [x for x in train_samples if any(g.role == "target" for g in x.segments)]
        generative = generative or train_samples
    ran: dict[str, int] = {}  # micro-batches in which each configured loss ran (logged at end)
    warned: set[str] = set()
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
                indices = batch_indices(len(generative), t.batch_size, cfg.run.seed, position)
                samples = [generative[i] for i in indices]
                retrieval = None
                if pool:  # L_d / InfoNCE on their own micro-batch; L_g on samples as they are
                    retrieval = retrieval_batch(
                        pools, (t.retrieval_batch, t.retrieval_interleaved), cfg.run.seed,
                        step * t.grad_accum + micro,
                    )  # fmt: skip
                else:
                    samples = apply_views(
                        samples, cfg.data.view_weights, cfg.run.seed, step * t.grad_accum + micro
                    )
                generator = _seeded(cfg.run.seed, step, micro)
                parts = objective(model, samples, root, generator, shard, retrieval)
                _count_losses(parts, ran, warned, s.alpha, cfg.contrastive.weight, step)
                (parts.pop("loss") / t.grad_accum).backward()
                parts["loss"] = (
                    t.lm_weight * parts["lm_loss"]
                    + s.alpha * parts.get("structure_loss", 0.0)
                    + cfg.contrastive.weight * parts.get("contrastive_loss", 0.0)
                )
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
    if main and ran:
        shares = {
            name: round(count / max(1, step * t.grad_accum), 4) for name, count in ran.items()
        }
        with open(run_dir / "log.jsonl", "a", encoding="utf-8") as summary:
            summary.write(json.dumps({"step": step, "loss_share": shares}) + "\n")
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


def _count_losses(
    parts: dict[str, Tensor],
    ran: dict[str, int],
    warned: set[str],
    alpha: float,
    contrastive: float,
    step: int,
) -> None:
    """Count the micro-batches in which each configured loss ran; warn the first time a
    configured loss could not run (InfoNCE needs two query/document pairs)."""
    for name, weight in (("structure_loss", alpha), ("contrastive_loss", contrastive)):
        if weight <= 0:
            continue
        if name in parts:
            ran[name] = ran.get(name, 0) + 1
        else:
            ran.setdefault(name, 0)
            if name not in warned:
                warnings.warn(
                    f"step {step}: {name} is configured (weight {weight}) but could not run "
                    f"({int(parts.get('contrastive_pairs', 0))} query/document pairs in the "
                    "batch); set train.retrieval_batch to give every step its pairs",
                    stacklevel=2,
                )
                warned.add(name)


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


def teacher_lookup_from_config(cfg: SugarConfig) -> TeacherLookup:
    """The teacher L_d uses, from the config's ``teacher`` section, with its persistent cache.

    The ``offline`` family reads the head trained by ``sugar train-teacher`` from
    ``teacher.head_dir`` (``FileNotFoundError`` naming it when missing).
    """
    from sugar.models.teachers import build_teacher, teacher_cache

    t = cfg.teacher
    cache_dir = t.cache_dir or None
    options: dict[str, Any] = {}
    if t.family == "offline":
        if not (Path(t.head_dir) / "head.json").is_file():
            raise FileNotFoundError(
                f"teacher.head_dir={t.head_dir!r}: no trained head; run sugar train-teacher first"
            )
        options = {"head_dir": t.head_dir, "feature_cache_dir": cache_dir}
    teacher = build_teacher(t.family, **options)
    return TeacherLookup(teacher, teacher_cache(cache_dir, teacher), cfg.structure.slice_text_by)
