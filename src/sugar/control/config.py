"""The typed config of ``sugar train-control`` (strict YAML + ``KEY=VALUE`` overrides).

A flat section of its own rather than a section of :class:`sugar.config.SugarConfig`: the
control branch trains over a finished bundle, never inside a Sugar run.

>>> load_control_config(None, ["base=runs/base/model", "rounds=1"]).rounds
1
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import yaml

from sugar.config_files import load_tree
from sugar.control.branch import JoinKind
from sugar.strict import check

__all__ = ["ControlConfig", "load_control_config"]


@dataclass
class ControlConfig:
    """Everything a control-branch run reads."""

    base: str = ""
    """The trained sugar bundle to steer (frozen; it must have a retrieval projector)."""
    data_root: str = "runs/world"
    """World root (or a root with the instructed layout, :mod:`sugar.data.instructed`)."""
    train: str = "instructed/train.jsonl"
    """Training queries, relative to ``data_root``."""
    val: str = "instructed/val.jsonl"
    """Validation queries (mean per-intent R@1 after each round), relative to ``data_root``."""
    output_dir: str = "runs/control"
    """Run directory: checkpoints, log.jsonl, the bundle in ``model/``."""
    seed: int = 0
    """Seed of the branch's initialisation and of batch sampling."""
    torch_threads: int = 1
    """torch intra-op threads (1 on small shared CPUs)."""
    joins: int = 3
    """J: the first J decoder blocks of the frozen model receive a control vector."""
    join: JoinKind = "film"
    """How a control vector steers a joined block's hidden states: ``film`` (``h * (1 + g) +
    c``: it can also re-weight features; chosen on validation, README) or ``add``
    (ControlNet's ``h + c``); :mod:`sugar.control.branch`."""
    output_experts: int = 8
    """K: zero-initialised (P, P) maps of the query's final vector, mixed by a routing from the
    instruction (:mod:`sugar.control.branch`; chosen on validation, README); 0 for joins
    only."""
    layers: int = 2
    """Transformer blocks of the branch."""
    heads: int = 4
    """Attention heads of the branch's blocks (must divide the backbone's width)."""
    rounds: int = 3
    """Training rounds: round 1 uses in-batch and stated negatives, each later round adds
    negatives mined with the previous round's model."""
    steps_per_round: int = 100
    """Optimiser steps per round."""
    batch_size: int = 32
    """Queries per step."""
    lr: float = 1e-3
    """AdamW learning rate (the peak, under ``lr_schedule``)."""
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """``constant``: ``lr`` throughout. ``cosine``: within each round, from ``lr`` down to
    ``lr * lr_floor`` along a half cosine (:func:`sugar.control.train.round_lr`), restarting
    at ``lr`` when the next round brings its mined negatives."""
    lr_floor: float = 0.1
    """The cosine schedule's last learning rate as a fraction of ``lr`` (0 to 1)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    temperature: float = 0.05
    """InfoNCE temperature over cosine scores."""
    candidates: Literal["batch", "corpus"] = "batch"
    """What each query of a step is scored against: ``batch`` (the step's positives, one per
    query, plus its stated and mined negatives) or ``corpus`` (every document of the training
    corpus: its document vectors are fixed and cached, so this costs one (B, C) product; every
    hard negative is then in every step, so rounds after the first skip mining; on the demo
    world it overfits: 2-seed validation 23.1 against 26.4, README)."""
    mined_negatives: int = 3
    """Hard negatives mined per query for rounds after the first."""
    mining_margin: float = 0.05
    """False-negative margin: a candidate scoring above ``positive - margin`` is dropped
    (:func:`sugar.mine.select_negatives`). At 0 and above only candidates scoring below the
    best positive can be mined; a negative margin trusts the labels that far (down to -2,
    which drops nothing: cosines differ by at most 2), for data whose positives are complete,
    as the built-in world's are."""
    mining_depth: int = 50
    """Candidates examined per query when mining, best first."""
    checkpoint_every: int = 50
    """Steps between checkpoints (0: only at the end of each round)."""
    select_round: Literal["best", "last"] = "best"
    """The round whose branch the bundle holds: ``best`` on validation (mean per-intent R@1
    over the trained intents; a tie goes to the later round) or ``last``. Each round still
    mines with the previous round's branch."""

    def __post_init__(self) -> None:
        for name in ("joins", "layers", "heads", "rounds", "steps_per_round", "batch_size",
                     "torch_threads", "mined_negatives", "mining_depth"):  # fmt: skip
            check(getattr(self, name) >= 1, name, getattr(self, name))
        check(self.batch_size >= 2, "batch_size", self.batch_size, "must be >= 2 (in-batch)")
        check(self.lr > 0, "lr", self.lr, "must be > 0")
        check(self.lr_schedule in ("constant", "cosine"), "lr_schedule", self.lr_schedule,
              "must be constant or cosine")  # fmt: skip
        check(0 <= self.lr_floor <= 1, "lr_floor", self.lr_floor, "must be in [0, 1]")
        check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "must be >= 0")
        check(self.temperature > 0, "temperature", self.temperature, "must be > 0")
        check(self.candidates in ("batch", "corpus"), "candidates", self.candidates,
              "must be batch or corpus")  # fmt: skip
        check(self.mining_margin >= -2, "mining_margin", self.mining_margin, "must be >= -2")
        check(self.checkpoint_every >= 0, "checkpoint_every", self.checkpoint_every, ">= 0")
        check(self.output_experts >= 0, "output_experts", self.output_experts, "must be >= 0")

    def to_yaml(self) -> str:
        return yaml.safe_dump(asdict(self), sort_keys=False)


def load_control_config(
    path: str | Path | Sequence[str | Path] | None, overrides: list[str]
) -> ControlConfig:
    """Defaults, then the YAML at ``path`` (a list: each file merged over the one before,
    :mod:`sugar.config_files`), then overrides; ``ConfigError`` names the file and key.
    ``base`` must be given."""
    cfg = load_tree(ControlConfig, path, overrides)
    check(bool(cfg.base), "base", cfg.base, "name the sugar bundle to steer")
    return cfg
