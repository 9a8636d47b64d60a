"""``train()``: the one training loop, readable top to bottom (STYLE.md point 1).

``train()`` is three steps: :func:`build` (files, model, targets, objective, optimiser, resumed
state), then per optimiser step :func:`step` (forward with
:class:`~sugar.train.objective.SugarObjective`, which returns the weighted parts and their
total, backward over ``grad_accum`` micro-batches, clip, AdamW, cosine schedule) and
:func:`log_evaluate_checkpoint`. Under gradient accumulation each loss is computed per
micro-batch and the step uses the mean of the micro-batches' losses (L_g: a mean of
per-micro-batch token means; L_d: its n, targets and same-sample pairs are the micro-batch's).
Everything that makes a step is a pure function of (seed, step): the micro-batch indices (a
per-epoch permutation), the views of caption pairs, the prefixes L_d picks, the dropout masks
(torch's generator seeded per micro-batch and rank, :func:`~sugar.train.run.seed_step`).
With the model, objective, optimiser, scheduler and RNG states in each checkpoint,
``resume=True`` continues exactly where an interrupted run (even a SIGKILLed one) last
checkpointed. Run-directory support is :mod:`sugar.train.run`; validation is
:mod:`sugar.eval.validation`.

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

import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, cast

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from sugar.align import TypeMedians
from sugar.config import SugarConfig, to_dict, to_yaml
from sugar.data.schema import Sample
from sugar.data.views import apply_views
from sugar.eval.validation import evaluate
from sugar.io import atomic_write_json, atomic_write_text, write_manifest
from sugar.models.base import MLLM
from sugar.teachers.lookup import SliceLookup, teacher_lookup_from_config
from sugar.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from sugar.train.distributed import DataParallel, Shard, init_from_environment, local_device
from sugar.train.grad_cache import cached_forward_backward
from sugar.train.guard import check_finite, compare_configs, environment_main, run_directory
from sugar.train.objective import SugarObjective
from sugar.train.retrieval import check_pool, is_retrieval_source, retrieval_batch, split_pool
from sugar.train.run import (
    TrainResult,
    batch_indices,
    better,
    build_model,
    check_state_keys,
    lr_multiplier,
    parameter_groups,
    read_files,
    read_validation,
    resolve_device,
    resolve_targets,
    save_run_bundle,
    seed_step,
    seeded,
    tensorboard,
    truncate_log,
)

__all__ = ["Run", "TrainResult", "build", "evaluate", "log_evaluate_checkpoint", "step", "train"]


@dataclass
class Run:
    """Everything :func:`build` makes for a run, and the state the steps advance."""

    cfg: SugarConfig
    run_dir: Path
    shard: Shard
    main: bool  # only rank 0 writes files
    root: str
    train_samples: list[Sample]
    val_samples: list[Sample]
    model: MLLM
    objective: SugarObjective
    optimiser: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    trainable: list[nn.Parameter]
    parallel: DataParallel
    """The forward-backward passes, gradients summed over ranks (DistributedDataParallel)."""
    delta: float | None
    medians: TypeMedians | None
    step: int = 0
    best_metric: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    generative: list[Sample] = field(default_factory=list)
    """What the generative micro-batches draw from (all training samples, or with a retrieval
    micro-batch only those with a target)."""
    pools: tuple[list[Sample], list[Sample]] = ([], [])
    """The retrieval micro-batch's sources: (caption pairs, others); empty without one."""
    ran: dict[str, int] = field(default_factory=dict)
    """Micro-batches in which each configured L_d / InfoNCE ran (logged at the end)."""
    warned: set[str] = field(default_factory=set)


def train(
    cfg: SugarConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    teacher: SliceLookup | None = None,
    stop_after: int | None = None,
    allow_changes: bool = False,
    pause_at: int | None = None,
) -> TrainResult:
    """Train per ``cfg``; see the module docstring for what the run directory holds.

    ``teacher``: the slice-embedding lookup L_d needs (built from ``cfg.teacher`` when None
    and alpha > 0). ``stop_after``: return after that many steps, as an interrupted run would
    (tests use it for resume). ``pause_at``: return after that step with a checkpoint of it,
    which ``resume=True`` continues on any world size (``sugar demo`` resumes Sugar's run on
    both workers once the other is free). ``allow_changes``: a resume may change the
    hyper-parameters in :data:`sugar.train.guard.ADJUSTABLE` (logged at the resumed step). The
    run directory is claimed and locked for the whole run
    (:func:`sugar.train.guard.run_directory`).
    """
    with run_directory(Path(cfg.run.output_dir), environment_main()):
        return _train(cfg, resume, progress, teacher, stop_after, allow_changes, pause_at)


def _train(
    cfg: SugarConfig,
    resume: bool,
    progress: bool,
    teacher: SliceLookup | None,
    stop_after: int | None,
    allow_changes: bool,
    pause_at: int | None = None,
) -> TrainResult:
    if pause_at is not None and not 0 < pause_at < cfg.train.steps:
        raise ValueError(
            f"pause_at={pause_at}: must lie strictly between 0 and train.steps={cfg.train.steps}"
        )
    run = build(cfg, resume=resume, teacher=teacher, allow_changes=allow_changes)
    t = run.cfg.train
    run.model.train()
    mode = "a" if resume else "w"  # a fresh run never appends to a killed run's log
    log = open(os.devnull if not run.main else run.run_dir / "log.jsonl", mode, encoding="utf-8")  # noqa: SIM115
    writer = tensorboard(run.run_dir) if run.main else None
    bar = tqdm(
        total=t.steps, initial=run.step, desc="train", disable=not (progress and run.main),
        unit="step",
    )  # fmt: skip
    start_time, first_step = time.perf_counter(), run.step
    try:
        while run.step < t.steps:
            last = step(run)
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in last.items() if k.endswith("loss")})
            log_evaluate_checkpoint(run, last, log, writer, time.perf_counter() - start_time)
            if stop_after is not None and run.step >= stop_after:
                break
            if run.step == pause_at:
                if not _checkpoint_due(run):  # log_evaluate_checkpoint has not just written it
                    save_training_state(run)
                break
    finally:
        run.model.flush_caches()
        bar.close()
        log.close()
        if writer is not None:
            writer.close()
    if run.main and run.ran:
        done = max(1, (run.step - first_step) * t.grad_accum)  # this process's micro-batches
        shares = {name: round(count / done, 4) for name, count in run.ran.items()}
        with open(run.run_dir / "log.jsonl", "a", encoding="utf-8") as summary:
            summary.write(json.dumps({"step": run.step, "loss_share": shares}) + "\n")
    bundle = run.run_dir / "model"
    if run.step == t.steps:
        whole = run.parallel.full_modules()  # under FSDP2 a collective, rank 0's copy
        if run.main and whole is not None:
            save_run_bundle(bundle, whole[0], whole[1], run.cfg)  # type: ignore[arg-type]
    best = run.run_dir / "best"
    return TrainResult(
        run_dir=run.run_dir,
        step=run.step,
        bundle=bundle,
        best=best if best.exists() else None,
        best_metric=run.best_metric,
        history=run.history,
    )


def build(
    cfg: SugarConfig, *, resume: bool, teacher: SliceLookup | None, allow_changes: bool = False
) -> Run:
    """Read the files, build the model, resolve L_d's targets, build the objective and the
    optimiser, and restore a checkpoint when resuming (its config compared with ``cfg``:
    :func:`sugar.train.guard.compare_configs`); the run directory gets its config and manifest
    only after the state has loaded."""
    run_dir = Path(cfg.run.output_dir)
    device = resolve_device(cfg.run.device)
    shard = init_from_environment(device)
    if cfg.train.parallel == "fsdp2":  # every forward pass is a collective (sugar.train.fsdp)
        shard = Shard(shard.rank, shard.world, lockstep=True)
    device = local_device(device, shard)
    main = shard.rank == 0  # only rank 0 writes files
    if cfg.run.torch_threads:
        torch.set_num_threads(cfg.run.torch_threads)
    root = cfg.data.root
    train_samples = read_files(root, cfg.data.train, cfg.data.upsample)
    val_samples = []
    if cfg.data.val:
        val_samples = read_validation(root, cfg.data.val, cfg.train.eval_samples)
    checkpoint = latest_checkpoint(run_dir) if resume else None
    if resume and checkpoint is None:
        raise FileNotFoundError(f"--resume: no checkpoint in {run_dir / 'checkpoints'}")
    if not resume and latest_checkpoint(run_dir) is not None:
        raise FileExistsError(
            f"{run_dir} already holds a run: pass --resume or another run.output_dir"
        )
    state = load_checkpoint(checkpoint) if checkpoint is not None else None

    torch.manual_seed(cfg.run.seed)
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

    def make_objective() -> SugarObjective:
        return SugarObjective(
            model.hidden_size, cfg.loss_weights(), s.options(), delta=delta, teacher=teacher,
            medians=medians, hard_negatives=cfg.contrastive.hard_negatives,
            lm_reduction=cfg.train.lm_reduction,
        ).to(device)  # fmt: skip

    objective = make_objective()
    if cfg.train.embedding_chunk and cfg.contrastive.hard_negatives:
        raise ValueError(
            f"train.embedding_chunk={cfg.train.embedding_chunk} (GradCache) does not support "
            f"contrastive.hard_negatives={cfg.contrastive.hard_negatives}: set one of them to 0"
        )
    changes = {}
    if state is not None:
        where = str(checkpoint)
        changes = compare_configs(state["config"], to_dict(cfg), allow_changes, where)

    if state is not None:  # before FSDP2 shards the parameters
        check_state_keys(model, state["model"], str(checkpoint))
        model.load_state_dict(state["model"], strict=False)
        objective.load_state_dict(state["objective"])

    def rebuild() -> tuple[MLLM, SugarObjective]:  # FSDP2: rank 0's plain copy
        torch.manual_seed(cfg.run.seed)
        return build_model(cfg, train_samples).to(device), make_objective()

    t = cfg.train
    parallel = DataParallel(
        model, objective, shard, engine=t.parallel, layers=model.decoder_layers(),
        rebuild=rebuild if main else None,
    )  # fmt: skip
    groups = parameter_groups(model, [objective], t.weight_decay, t.lr)
    optimiser = torch.optim.AdamW(  # after sharding: FSDP2 replaces the parameters
        groups, lr=t.lr, fused=fused_adam(groups)
    )
    warmup = int(t.warmup_ratio * t.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: lr_multiplier(step, t.steps, warmup)
    )
    run = Run(
        cfg, run_dir, shard, main, root, train_samples, val_samples, model, objective, optimiser,
        scheduler, [], parallel, delta, medians,
    )  # fmt: skip
    if state is not None:
        parallel.load_optimiser_state(optimiser, state["optimiser"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        run.step, run.best_metric = state["step"], state["best_metric"]
        if main:
            truncate_log(run_dir / "log.jsonl", run.step)
            if changes:
                with open(run_dir / "log.jsonl", "a", encoding="utf-8") as log:
                    log.write(json.dumps({"step": run.step, "config_changes": changes}) + "\n")
    if main:  # only now: a failed resume leaves the run's record as it was
        atomic_write_text(run_dir / "config.yaml", to_yaml(cfg))
        write_manifest(
            run_dir, cfg.run.seed, extra={"config": to_dict(cfg), "world_size": shard.world}
        )
    run.trainable = [p for group in optimiser.param_groups for p in group["params"]]
    run.generative, run.pools = _retrieval_sources(cfg, train_samples)
    return run


def _retrieval_sources(
    cfg: SugarConfig, train_samples: list[Sample]
) -> tuple[list[Sample], tuple[list[Sample], list[Sample]]]:
    """(the generative batches' samples, the retrieval pools) of a run
    (:mod:`sugar.train.retrieval`): without ``train.retrieval_batch`` and
    ``train.retrieval_interleaved`` every sample is generative (with views) and there is no
    pool; with them, the samples with a target are generative, and the pool is empty for a run
    without L_d and InfoNCE."""
    t = cfg.train
    if not (t.retrieval_batch or t.retrieval_interleaved):
        return train_samples, ([], [])
    # The generative batch then holds only samples with a target, as they are (no views): the
    # others (stories, documents) would cost a forward pass for no L_g token. Generative-only
    # runs (no L_d, no InfoNCE) draw the same generative batches and no retrieval batch.
    generative = [s for s in train_samples if any(g.role == "target" for g in s.segments)]
    generative = generative or train_samples
    if not cfg.loss_weights().uses_projector:
        return generative, ([], [])
    if cfg.data.retrieval:
        pool = read_files(cfg.data.root, cfg.data.retrieval)
        check_pool(pool, f"data.retrieval {cfg.data.retrieval}")
    else:
        pool = [sample for sample in train_samples if is_retrieval_source(sample)]
        if not pool:
            raise ValueError(
                f"train.retrieval_batch={t.retrieval_batch}: no sample of data.train "
                f"{cfg.data.train} makes a query/document pair (sugar.train.retrieval); name "
                "files in data.retrieval or set train.retrieval_batch=0"
            )
    return generative, split_pool(pool)


def fused_adam(groups: Sequence[dict[str, Any]]) -> bool | None:
    """True (AdamW's fused kernel) when every parameter is a plain floating tensor on a CPU or
    CUDA device; None (torch's default) otherwise, e.g. FSDP2's DTensors. Measured on the
    demo's MiniLM (23.5 M trainable values, 1 thread): an AdamW step 128 ms per-tensor, 96-118
    ms ``foreach``, 28-30 ms fused; the same update to rounding."""
    plain = all(
        type(p) in (Tensor, nn.Parameter) and p.device.type in ("cpu", "cuda")
        and p.is_floating_point()
        for group in groups for p in group["params"]
    )  # fmt: skip
    return True if plain else None


def densify_gradients(parameters: Sequence[Tensor]) -> None:
    """Replace each sparse gradient (a word-embedding table's lookups, e.g.
    :class:`~sugar.models.minilm.MiniLMMLLM`) by the dense sum of its entries: clipping and AdamW
    need dense gradients, and a table no lookup reached keeps ``None``."""
    for parameter in parameters:
        if parameter.grad is not None and parameter.grad.is_sparse:
            parameter.grad = parameter.grad.to_dense()


def step(run: Run) -> dict[str, float]:
    """One optimiser step over ``grad_accum`` micro-batches; returns what to log: the mean of
    the objective's parts over the micro-batches, the gradient norm and the step's rate."""
    cfg, t = run.cfg, run.cfg.train
    sums: dict[str, float] = {}
    for micro in range(t.grad_accum):
        micro_step = run.step * t.grad_accum + micro
        position = micro_step * t.batch_size
        indices = batch_indices(len(run.generative), t.batch_size, cfg.run.seed, position)
        samples = [run.generative[i] for i in indices]
        retrieval = None
        if run.pools[0] or run.pools[1]:  # L_d / InfoNCE on their own micro-batch
            sizes = (t.retrieval_batch, t.retrieval_interleaved)
            retrieval = retrieval_batch(run.pools, sizes, cfg.run.seed, micro_step)
        elif not (t.retrieval_batch or t.retrieval_interleaved):  # one mixed batch, with views
            samples = apply_views(samples, cfg.data.view_weights, cfg.run.seed, micro_step)
        generator = seeded(cfg.run.seed, run.step, micro)
        seed_step(cfg.run.seed, run.step, micro, run.shard.rank)
        sync = micro == t.grad_accum - 1  # gradients all-reduced once per step
        if t.embedding_chunk and retrieval is not None:  # GradCache (sugar.train.grad_cache)
            parts = cached_forward_backward(
                run.parallel, samples, retrieval, run.root, generator, run.shard,
                t.embedding_chunk, scale=1 / t.grad_accum, sync=sync,
            )  # fmt: skip
        else:
            parts = run.parallel.forward_backward(
                _objective, samples, run.root, generator, run.shard, retrieval,
                scale=1 / t.grad_accum, sync=sync,
            )  # fmt: skip
        _count_losses(run, parts)
        for name, value in parts.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach()) / t.grad_accum
    densify_gradients(run.trainable)
    grad_norm = run.parallel.clip_gradients(run.trainable, t.clip_norm or float("inf"))
    check_finite(run.step + 1, {**sums, "grad_norm": float(grad_norm)})  # before it is applied
    step_lr = float(run.scheduler.get_last_lr()[0])  # the rate this step uses
    run.optimiser.step()
    run.scheduler.step()
    run.optimiser.zero_grad(set_to_none=True)
    run.step += 1
    return {**sums, "grad_norm": float(grad_norm), "lr": step_lr}


def _objective(model: MLLM, objective: SugarObjective, *arguments: Any) -> dict[str, torch.Tensor]:
    """The objective's parts on one micro-batch (the pass :class:`DataParallel` runs)."""
    parts: dict[str, torch.Tensor] = objective(model, *arguments)
    return parts


def _count_losses(run: Run, parts: dict[str, torch.Tensor]) -> None:
    """Count the micro-batches in which each configured loss ran; warn the first time a
    configured loss could not run (InfoNCE needs two query/document pairs)."""
    weights = run.objective.weights
    for name, weight in (
        ("structure_loss", weights.alpha),
        ("contrastive_loss", weights.contrastive),
    ):
        if weight <= 0:
            continue
        run.ran[name] = run.ran.get(name, 0) + (name in parts)
        if name not in parts and name not in run.warned:
            pairs = int(parts.get("contrastive_pairs", torch.tensor(0)))
            warnings.warn(
                f"step {run.step}: {name} is configured (weight {weight}) but could not run "
                f"({pairs} query/document pairs in the batch); set train.retrieval_batch to "
                "give every step its pairs",
                stacklevel=2,
            )
            run.warned.add(name)


def log_evaluate_checkpoint(
    run: Run, last: dict[str, float], log: IO[str], writer: Any, elapsed: float
) -> None:
    """After a step: the log line (every ``log_every``), validation and the best bundle (every
    ``eval_every``), a checkpoint (every ``checkpoint_every``); each also at the last step."""
    t, step_now = run.cfg.train, run.step
    if step_now % t.log_every == 0 or step_now == t.steps:
        record = {"step": step_now, "time": round(elapsed, 3), **last}
        run.history.append(record)
        log.write(json.dumps(record) + "\n")
        log.flush()
        if writer is not None:
            for name, number in last.items():
                writer.add_scalar(f"train/{name}", number, step_now)
    evaluate_now = (t.eval_every and step_now % t.eval_every == 0) or step_now == t.steps
    whole = run.parallel.full_modules() if evaluate_now and run.val_samples else None
    if evaluate_now and run.val_samples and run.main and whole is not None:
        model, objective = cast(MLLM, whole[0]), cast(SugarObjective, whole[1])
        seed = run.cfg.run.seed
        metrics = evaluate(model, objective, run.val_samples, run.root, t.batch_size, seed)
        record = {"step": step_now, **metrics}
        run.history.append(record)
        log.write(json.dumps(record) + "\n")
        log.flush()
        value = metrics.get(t.select_metric)
        if value is None:
            raise ValueError(
                f"train.select_metric={t.select_metric!r} is not among the validation "
                f"metrics {sorted(metrics)}"
            )
        if better(t.select_metric, value, run.best_metric):
            run.best_metric = value
            save_run_bundle(run.run_dir / "best", model, objective, run.cfg)
    if _checkpoint_due(run):
        save_training_state(run)


def _checkpoint_due(run: Run) -> bool:
    """Whether the step just taken is one :func:`log_evaluate_checkpoint` checkpoints."""
    t = run.cfg.train
    return bool(t.checkpoint_every and run.step % t.checkpoint_every == 0) or run.step == t.steps


def save_training_state(run: Run) -> None:
    """Checkpoint the run at its current step (a collective under FSDP2: every rank calls it;
    rank 0 writes)."""
    modules = None
    if run.main or run.parallel.sharded:
        modules = run.parallel.training_state(run.optimiser)
    if run.main and modules is not None:  # under FSDP2 gathered on rank 0
        run.model.flush_caches()
        save_checkpoint(
            run.run_dir,
            run.step,
            {
                "step": run.step,
                **modules,
                "scheduler": run.scheduler.state_dict(),
                "rng": rng_state(),
                "best_metric": run.best_metric,
                "delta": run.delta,
                "medians": run.medians,
                "config": to_dict(run.cfg),
            },
        )
