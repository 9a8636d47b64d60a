"""``sugar train-control``: iterative training of a control branch over a frozen sugar bundle.

Shapes: B queries per step, n candidates of a step, C corpus, P projector width.

1. Load the bundle; freeze the backbone and its retrieval projector (eval mode, no gradients).
   Embed the training and validation corpora once with the base model: documents never see an
   instruction, so their vectors are fixed for the whole run.
2. Round 1: each step draws B queries; its candidates are one positive per query (in-batch
   negatives for the others) and every query's stated negatives (``meta.negatives``). The loss
   is InfoNCE over cosine / ``temperature`` with every positive of a query among the
   candidates counted as positive (multi-positive log-sum-exp) and its excluded candidates
   masked. Only the branch trains (AdamW). With ``candidates: corpus`` every query is scored
   against the whole training corpus instead (its vectors are cached, so this is cheap).
3. Round r+1: hard negatives are mined per query *with its instruction* by the round-r branch
   (:func:`sugar.control.mine.mine_instructed`, ``sugar mine``'s false-negative margin) and
   join the step's candidates; then train again for ``steps_per_round``. (``corpus``
   candidates already hold every negative: mining is skipped; a cosine lr still restarts.)
4. After each round: validation mean per-intent R@1 (over the intents of the training set,
   and the held-out ones separately) in ``log.jsonl``. At the end the bundle ``model/``: the
   base backbone and projector unchanged plus the extra module ``control``.

Resumable like ``sugar train``: checkpoints (:mod:`sugar.control.checkpoint`) hold the branch,
optimiser, sampler state, round, step and mined negatives; ``resume=True`` continues from the
newest one at the same step.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from sugar.control.branch import ControlBranch
from sugar.control.checkpoint import (
    load_control_checkpoint,
    load_round_branch,
    save_control_checkpoint,
    save_round_branch,
)
from sugar.control.config import ControlConfig
from sugar.control.embed import embed_instructed, instructed_vectors, read_instructions
from sugar.control.mine import mine_instructed
from sugar.data.instructed import InstructedSet, read_instructed
from sugar.embed import embed_vectors
from sugar.eval.metrics import recall_at_k
from sugar.io import atomic_write_text, write_manifest
from sugar.models.bundle import load_bundle, save_bundle
from sugar.models.prefix import projector_from_extras
from sugar.train.guard import run_directory

__all__ = [
    "ControlResult",
    "intent_recall",
    "round_lr",
    "slice_text_by_of",
    "step_loss",
    "train_control",
]


@dataclass
class ControlResult:
    run_dir: Path
    bundle: Path
    step: int
    validation: dict[str, float]
    seconds: float


def slice_text_by_of(config: str | None) -> Literal["sentence", "segment"]:
    """A bundle run's ``structure.slice_text_by`` from its raw config YAML (default
    ``sentence``), as :class:`sugar.api.SugarModel` reads it."""
    data = yaml.safe_load(config) if config else None
    structure = data.get("structure") if isinstance(data, dict) else None
    value = structure.get("slice_text_by") if isinstance(structure, dict) else None
    if value not in (None, "sentence", "segment"):
        raise ValueError(f"bundle config: structure.slice_text_by={value!r}")
    return "segment" if value == "segment" else "sentence"


def intent_recall(
    queries: torch.Tensor, corpus: torch.Tensor, data: InstructedSet
) -> dict[str, float]:
    """R@1 per intent (``r1_<intent>``) of query vectors (Q, P) against corpus vectors (C, P);
    excluded candidates are never ranked."""
    scores = (queries @ corpus.T).masked_fill(data.excluded, -1e9)
    relevance = data.relevance
    intents = [str(q.meta.get("intent", "user")) for q in data.queries]
    out = {}
    for intent in dict.fromkeys(intents):
        rows = torch.tensor([i for i, name in enumerate(intents) if name == intent])
        out[f"r1_{intent}"] = recall_at_k(scores[rows], relevance[rows], 1)
    return out


def round_lr(cfg: ControlConfig, round_step: int) -> float:
    """The learning rate of step ``round_step`` (0-based) of a round: ``cfg.lr`` for
    ``constant``; for ``cosine``, ``lr * (floor + (1 - floor) * (1 + cos(pi * s / S)) / 2)``
    with ``S`` the round's steps, so the first step uses ``lr`` and the last nears ``lr *
    floor``. A pure function of the step, so a resumed run needs no scheduler state.

    >>> cfg = ControlConfig(base="b", lr=1.0, lr_schedule="cosine", lr_floor=0.0,
    ...                     steps_per_round=4)
    >>> [round(round_lr(cfg, s), 3) for s in range(4)]
    [1.0, 0.854, 0.5, 0.146]
    """
    if cfg.lr_schedule == "constant":
        return cfg.lr
    progress = round_step / cfg.steps_per_round
    return cfg.lr * (cfg.lr_floor + (1 - cfg.lr_floor) * (1 + math.cos(math.pi * progress)) / 2)


def step_loss(
    vectors: torch.Tensor, corpus: torch.Tensor, data: InstructedSet, picked: list[int],
    mined: dict[str, list[str]], generator: torch.Generator, temperature: float,
    candidates: Literal["batch", "corpus"] = "batch",
) -> torch.Tensor:  # fmt: skip
    """Multi-positive InfoNCE of one step's query vectors (B, P) against corpus vectors (C, P)
    (module docstring): for each query ``log sum_all exp(s / t) - log sum_positive exp(s / t)``
    over its candidates, excluded ones left out, averaged. ``batch``: the candidates are one
    positive drawn per query plus every query's stated and ``mined`` negatives; ``corpus``:
    all C documents (``mined`` and ``generator`` unused)."""
    if candidates == "corpus":
        chosen = torch.arange(corpus.shape[0])  # (n,) = (C,)
    else:
        rows: dict[int, None] = {}
        for i in picked:
            query = data.queries[i]
            positives = query.meta["positives"]
            choice = int(torch.randint(len(positives), (1,), generator=generator))
            rows[data.row[positives[choice]]] = None
            for cid in [*query.meta.get("negatives", []), *mined.get(query.id, [])]:
                rows[data.row[cid]] = None
        chosen = torch.tensor(list(rows))  # (n,)
    logits = vectors @ corpus[chosen].T / temperature  # (B, n)
    index = torch.tensor(picked)
    positive = data.relevance[index][:, chosen]  # (B, n)
    logits = logits.masked_fill(data.excluded[index][:, chosen], float("-inf"))
    top = torch.logsumexp(logits.masked_fill(~positive, float("-inf")), dim=1)
    return (torch.logsumexp(logits, dim=1) - top).mean()


RUN_ENTRIES = ("control.yaml", "manifest.json", "checkpoints", "rounds", "model", "log.jsonl")
"""What a control run writes in its directory (nothing else may be there)."""


def train_control(
    cfg: ControlConfig, *, resume: bool = False, say: Callable[[str], None] = print
) -> ControlResult:
    """Train a control branch (module docstring); returns where the bundle went.

    The run directory follows ``sugar train``'s rules (:func:`sugar.train.guard.run_directory`):
    claimed (a non-empty directory sugar did not write is refused, untouched), locked for the
    whole run (a second writer is refused at once), and removed again when the run fails
    before writing anything in it."""
    run_dir = Path(cfg.output_dir)
    if (run_dir / "checkpoints").exists() and not resume:
        raise FileExistsError(f"{run_dir}: a run exists there; pass --resume or another output_dir")
    with run_directory(run_dir, True, kind="control run", entries=RUN_ENTRIES):
        return _train_control(cfg, resume, say)


def _train_control(cfg: ControlConfig, resume: bool, say: Callable[[str], None]) -> ControlResult:
    started = time.perf_counter()
    torch.set_num_threads(cfg.torch_threads)
    run_dir, root = Path(cfg.output_dir), Path(cfg.data_root)
    bundle = load_bundle(cfg.base)
    model = bundle.model.eval().requires_grad_(False)
    projector, image_pool = projector_from_extras(bundle.extras, bundle.extra_specs, cfg.base)
    if projector is None:
        raise ValueError(f"{cfg.base}: no retrieval projector; the control branch steers one")
    projector.requires_grad_(False)
    slicing = slice_text_by_of(bundle.config)
    options: dict[str, Any] = {"image_pool": image_pool, "slice_text_by": slicing}
    train_set = read_instructed(root / cfg.train, root)
    val_set = read_instructed(root / cfg.val, root)
    trained_intents = {str(q.meta.get("intent", "user")) for q in train_set.queries}
    corpus = embed_vectors(model, projector, train_set.corpus, root, batch_size=64, **options)
    val_corpus = embed_vectors(model, projector, val_set.corpus, root, batch_size=64, **options)
    # the frozen model's reading of each [instruction, query], once: every step, mining and
    # validation reuse it (sugar.control.embed)
    readings = read_instructions(model, train_set.queries, train_set.instructions, root,
                                 slice_text_by=slicing)  # fmt: skip
    val_readings = read_instructions(model, val_set.queries, val_set.instructions, root,
                                     slice_text_by=slicing)  # fmt: skip

    if cfg.joins > len(model.decoder_layers()):
        raise ValueError(f"joins={cfg.joins} > the backbone's {len(model.decoder_layers())} layers")
    torch.manual_seed(cfg.seed)
    branch = ControlBranch(model.hidden_size, cfg.joins, cfg.layers, cfg.heads, cfg.join,
                           cfg.output_experts, projector.dim)  # fmt: skip
    optimizer = torch.optim.AdamW(branch.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    state: dict[str, Any] = {"step": 0, "round": 0, "round_step": 0, "mined": {}, "log": []}
    if resume:
        loaded = load_control_checkpoint(run_dir, branch, optimizer, generator)
        if loaded is None:
            raise FileNotFoundError(f"{run_dir}: no checkpoint to resume from")
        state = loaded
        say(f"[control] resumed at step {state['step']} (round {state['round'] + 1})")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "control.yaml", cfg.to_yaml())
    write_manifest(run_dir, cfg.seed, inputs={"train": root / cfg.train},
                   extra={"base": bundle.identity})  # fmt: skip

    def checkpoint() -> None:
        save_control_checkpoint(run_dir, branch, optimizer, generator, state)

    def log(record: dict[str, Any]) -> None:
        state["log"].append(record)
        say("[control] " + json.dumps(record))

    validation: dict[str, float] = {}
    while state["round"] < cfg.rounds:
        if cfg.candidates == "corpus" and state["round"] > 0 and state["round_step"] == 0:
            # every document is already a candidate of every step: mining would add nothing
            log({"round": state["round"] + 1, "mining": "skipped (candidates: corpus)"})
        elif state["round"] > 0 and state["round_step"] == 0 and not state["mined"]:
            state["mined"], summary = mine_instructed(
                model, projector, branch, train_set, corpus, root, k=cfg.mined_negatives,
                margin=cfg.mining_margin, depth=cfg.mining_depth, readings=readings, **options,
            )  # fmt: skip
            log({"round": state["round"] + 1, "mining": summary})
        branch.train()
        while state["round_step"] < cfg.steps_per_round:
            picked = torch.randperm(len(train_set.queries), generator=generator)[: cfg.batch_size]
            indices = picked.tolist()
            vectors = instructed_vectors(
                model, projector, branch, [train_set.queries[i] for i in indices],
                [train_set.instructions[i] for i in indices], root,
                readings=[readings[i] for i in indices], **options,
            )  # fmt: skip
            loss = step_loss(vectors, corpus, train_set, indices, state["mined"], generator,
                             cfg.temperature, cfg.candidates)  # fmt: skip
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for group in optimizer.param_groups:
                group["lr"] = round_lr(cfg, state["round_step"])
            optimizer.step()
            state["step"] += 1
            state["round_step"] += 1
            if state["step"] % 10 == 0:
                log({"step": state["step"], "round": state["round"] + 1, "loss": loss.item()})
            if cfg.checkpoint_every and state["step"] % cfg.checkpoint_every == 0:
                checkpoint()
        vectors = embed_instructed(
            model, projector, branch, val_set.queries, val_set.instructions, root,
            batch_size=64, readings=val_readings, **options,
        )  # fmt: skip
        validation = intent_recall(vectors, val_corpus, val_set)
        trained = [v for k, v in validation.items() if k[3:] in trained_intents]
        validation["mean_r1"] = sum(trained) / max(1, len(trained))
        log({"round": state["round"] + 1, "step": state["step"], "validation": validation})
        record = {"round": state["round"] + 1, "step": state["step"], "validation": validation}
        save_round_branch(run_dir, state["round"] + 1, branch, record)
        best = state.get("best")
        if best is None or validation["mean_r1"] >= best["validation"]["mean_r1"]:
            state["best"] = record
        state.update({"round": state["round"] + 1, "round_step": 0, "mined": {}})
        checkpoint()
    chosen = cfg.rounds
    if cfg.select_round == "best":  # the branch is the last round's until then
        chosen = int(state.get("best", {}).get("round", cfg.rounds))
        validation = load_round_branch(run_dir, chosen, branch)["validation"]
    log({"selected_round": chosen, "select_round": cfg.select_round, "validation": validation})
    extras = {
        name: (bundle.extra_specs.get(name, {}), tensors)
        for name, tensors in bundle.extras.items()
        if name != "control"
    }
    extras["control"] = (dict(branch.spec), branch.state_dict())
    card = (
        f"# sugar bundle with a control branch\n\nBase bundle `{cfg.base}` (identity "
        f"{bundle.identity[:12]}), frozen; extra module `control` ({branch.spec}) trained by "
        f"`sugar train-control` for {state['step']} steps in {cfg.rounds} rounds; it holds "
        f"round {chosen}'s branch "
        f"(select_round: {cfg.select_round}).\n"
    )
    save_bundle(run_dir / "model", model, extras=extras, config_yaml=bundle.config, card=card)
    seconds = time.perf_counter() - started
    atomic_write_text(run_dir / "log.jsonl", "".join(json.dumps(r) + "\n" for r in state["log"]))
    say(f"[control] bundle {run_dir / 'model'} in {seconds:.0f} s")
    return ControlResult(run_dir, run_dir / "model", state["step"], validation, seconds)
