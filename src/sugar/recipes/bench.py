"""``sugar bench quality``: every variant of METHOD.md section 7 from one shared base, tuned on
validation with one budget, several seeds, paired-bootstrap CIs and the pre-registered bars of
issue 10.

Protocol, in this order (each step's output is in ``OUT/bench``):

1. **Shared stages**: the demo's world, teacher and generative base (:mod:`sugar.recipes.demo`, same
   sizes; the demo's own fine-tunes are not used).
2. **Difficulty, frozen before any other variant is trained**: the teacher alone on the
   validation split's discriminative tasks, and the generative-only variant's lr grid on
   validation (then the chosen model's validation tasks); written to ``difficulty.json`` with
   the world's settings and manifest hash, and each headline figure flagged ``floor`` /
   ``ceiling`` when it leaves ``[0.02, 0.98]``. The world is not changed after it.
3. **Tuning, one budget per variant** (seed 0): the same lr grid for every variant at its
   default loss weight, then its own loss weight (Sugar, its ablations and Sugar + InfoNCE:
   ``structure.alpha``; CAFe-style: ``contrastive.weight``) times each factor at the chosen lr.
   Generative-only and contrastive-only have no weight to tune (contrastive-only's weight is a
   pure scale of its only loss). Selection on the variant's validation metric (``val_lm_loss``
   for generative-only, ``val_t2i_r1`` otherwise); ties go to the default value, then the
   earlier grid value. Every setting tried is listed with its validation figures.
4. **Test**: each chosen setting for ``seeds`` seeds (headline variants: generative-only,
   CAFe-style, Sugar) or seed 0 (ablations, contrastive-only, and ``sugar_infonce``: L_d and
   InfoNCE together, an extension beside the paper's method, not part of it); each model reads
   the test split once. The teacher alone is the ``teacher`` row (embedding tasks only; "n/a"
   elsewhere).

Training and evaluation run in ``workers`` one-thread processes.

Aggregation: mean and sd over seeds per metric; paired bootstrap of Sugar minus each other row
on every per-item metric, items of seed k paired with seed k and pooled over the seeds both
have; the bars (the teacher row is reported beside them, not judged):

1. Winoground group score (embedding) >= CAFe-style + 5 points (means over seeds);
2. VQA within 1 point of generative-only: the CI of Sugar - generative inside [-1, +1];
3. story 5c+4i R@1: Sugar's mean is the best of all variants;
4. KB-QA: retrieval lifts Sugar's accuracy by >= 10 points (retrieved - no context);
5. needle: Sugar's accuracy spread across positions <= 3 points.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from sugar.config import SugarConfig, load_config, to_dict
from sugar.eval.metrics import paired_bootstrap
from sugar.eval.report import HEADLINE, write_report
from sugar.eval.tasks import TASKS, run_tasks
from sugar.io import atomic_write_json, atomic_write_text, sha256_file, write_manifest
from sugar.recipes.demo import BENCH_FIELDS, recipe_size, run_config, stage
from sugar.recipes.jobs import in_one_torch_thread, train_and_evaluate

__all__ = ["HEADLINE_VARIANTS", "VARIANTS", "pooled_items", "run_quality_bench"]

VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "generative": {"structure": {"alpha": 0.0}, "train": {"select_metric": "val_lm_loss"}},
    "cafe": {"structure": {"alpha": 0.0}, "contrastive": {"weight": 1.0}},
    "sugar": {"structure": {"alpha": 1.0}},
    "sugar_no_gak": {"structure": {"alpha": 1.0, "use_gak": False}},
    "sugar_tk": {"structure": {"alpha": 1.0, "triple_kernel": True}},
    "sugar_no_avgpool": {"structure": {"alpha": 1.0, "image_pool": "last"}},
    # not the paper's method: Sugar's L_d beside CAFe-style's InfoNCE on the same pairs
    "sugar_infonce": {"structure": {"alpha": 1.0}, "contrastive": {"weight": 1.0}},
    "contrastive": {
        "structure": {"alpha": 0.0},
        "contrastive": {"weight": 1.0},
        "train": {"lm_weight": 0.0},
    },
}
"""Variant -> config changes (section -> fields) over the shared fine-tuning config."""
HEADLINE_VARIANTS = ("generative", "cafe", "sugar")
TEACHER = "teacher"
"""The row of the teacher alone (embedding tasks only)."""
WEIGHTS: dict[str, tuple[str, str]] = {
    "cafe": ("contrastive", "weight"),
    "sugar": ("structure", "alpha"),
    "sugar_no_gak": ("structure", "alpha"),
    "sugar_tk": ("structure", "alpha"),
    "sugar_no_avgpool": ("structure", "alpha"),
    "sugar_infonce": ("structure", "alpha"),
}
"""Variant -> the (section, field) of its own loss weight, tuned after the lr."""
GRIDS: dict[str, dict[str, tuple[float, ...]]] = {
    "demo": {"lr": (5e-4, 1e-3, 2e-3), "weight_factors": (0.3, 1.0, 3.0)},
    "long": {"lr": (1e-3,), "weight_factors": (1.0,)},
    "smoke": {"lr": (1e-3, 2e-3), "weight_factors": (1.0, 3.0)},
}
"""The tuning budget: the same lr grid for every variant, then weight x factor (1.0 = default).
``long`` tries only the defaults (no tuning; said in its report): 2-3x the steps of ``demo``
and its grid do not fit the 90 minutes."""
DEFAULT_LR = 1e-3
BAND = (0.02, 0.98)
"""A frozen-difficulty figure outside this band is flagged (floor / ceiling)."""
DIFFICULTY_METRICS = [
    ("caption_retrieval", "t2i_r1"), ("caption_retrieval", "i2t_r1"),
    ("hard_negatives", "emb_relation_swap"), ("hard_negatives", "ll_relation_swap"),
    ("winoground", "emb_group"), ("winoground", "ll_group"), ("story_retrieval", "c5i4_r1"),
    ("needle", "accuracy"), ("vqa", "exact_match"), ("pope", "accuracy"), ("kb_qa", "oracle"),
]  # fmt: skip


def _select_metric(variant: str) -> str:
    return "val_lm_loss" if variant == "generative" else "val_t2i_r1"


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def pooled_items(
    runs: dict[str, dict[str, Any]], variant: str, other: str, task: str, metric: str
) -> tuple[list[float], list[float]]:
    """Per-item scores of ``variant`` and ``other`` on ``task.metric`` for a paired bootstrap:
    ``runs`` is keyed ``variant/s<seed>``; the items of seed k pair with ``other``'s seed k and
    are pooled over the seeds both have (a one-seed variant pairs with seed 0 only)."""
    ours: list[float] = []
    theirs: list[float] = []
    for name, results in runs.items():
        v, seed = name.split("/")
        if v != variant:
            continue
        partner = runs.get(f"{other}/{seed}")  # a one-seed variant pairs with seed 0 only
        if partner is None:
            continue
        a = results.get(task, {}).get("per_item", {}).get(metric)
        b = partner.get(task, {}).get("per_item", {}).get(metric)
        if a is not None and b is not None and len(a) == len(b):
            ours += a
            theirs += b
    return ours, theirs


def summarise(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Means and sds per variant, Sugar-minus-each CIs, and the five bars."""
    order = [*VARIANTS, TEACHER]
    variants = sorted({name.split("/")[0] for name in runs}, key=order.index)
    means: dict[str, dict[str, Any]] = {}
    for variant in variants:
        seeds = [r for name, r in runs.items() if name.split("/")[0] == variant]
        table: dict[str, Any] = {}
        for task in TASKS:
            metrics = {m for r in seeds for m in r.get(task, {}) if m not in ("per_item", "items")}
            for metric in sorted(metrics):
                values = [r[task][metric] for r in seeds if isinstance(r[task].get(metric), float)]
                if values:
                    mean, sd = _mean_sd(values)
                    table[f"{task}.{metric}"] = {"mean": mean, "sd": sd, "seeds": len(values)}
                else:
                    table[f"{task}.{metric}"] = "n/a"
        means[variant] = table
    comparisons: dict[str, list[dict[str, Any]]] = {}
    for other in variants:
        if other == "sugar" or "sugar" not in variants:
            continue
        rows = []
        for task in TASKS:
            for metric in sorted(
                {m for name, r in runs.items() if name.startswith("sugar/")
                 for m in r.get(task, {}).get("per_item", {})}
            ):  # fmt: skip
                ours, theirs = pooled_items(runs, "sugar", other, task, metric)
                if ours:
                    stats = paired_bootstrap(ours, theirs)
                    excludes = stats["ci_low"] > 0 or stats["ci_high"] < 0
                    rows.append({"task": task, "metric": metric, **stats, "significant": excludes})
        comparisons[f"sugar - {other}"] = rows
    return {"means": means, "comparisons": comparisons, "bars": _bars(means, comparisons)}


def _value(means: dict[str, Any], variant: str, key: str) -> float | None:
    cell = means.get(variant, {}).get(key)
    return cell["mean"] if isinstance(cell, dict) else None


def _bars(
    means: dict[str, Any], comparisons: dict[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    bars: list[dict[str, Any]] = []
    sugar_wino, cafe_wino = (_value(means, v, "winoground.emb_group") for v in ("sugar", "cafe"))
    bars.append({
        "bar": "Winoground group (emb) >= CAFe-style + 5 points",
        "figures": {"sugar": sugar_wino, "cafe": cafe_wino},
        "met": None if sugar_wino is None or cafe_wino is None else sugar_wino >= cafe_wino + 0.05,
    })  # fmt: skip
    vqa = next(
        (r for r in comparisons.get("sugar - generative", [])
         if (r["task"], r["metric"]) == ("vqa", "exact_match")), None,
    )  # fmt: skip
    bars.append({
        "bar": "VQA within 1 point of generative-only (CI inside +-1)",
        "figures": vqa,
        "met": None if vqa is None else vqa["ci_low"] >= -0.01 and vqa["ci_high"] <= 0.01,
    })  # fmt: skip
    story = {v: _value(means, v, "story_retrieval.c5i4_r1") for v in means if v != TEACHER}
    numbers = {v: x for v, x in story.items() if x is not None}
    bars.append({
        "bar": "story 5c+4i R@1: Sugar best of all variants",
        "figures": numbers,
        "met": None if "sugar" not in numbers else numbers["sugar"] >= max(numbers.values()),
    })  # fmt: skip
    retrieved, plain = (_value(means, "sugar", f"kb_qa.{m}") for m in ("retrieved", "no_context"))
    bars.append({
        "bar": "KB-QA: retrieval lifts Sugar by >= 10 points",
        "figures": {"retrieved": retrieved, "no_context": plain},
        "met": None if retrieved is None or plain is None else retrieved - plain >= 0.10,
    })  # fmt: skip
    spread = _value(means, "sugar", "needle.position_spread")
    bars.append({
        "bar": "needle: Sugar's spread across positions <= 3 points",
        "figures": {"spread": spread},
        "met": None if spread is None else spread <= 0.03,
    })  # fmt: skip
    return bars


def _markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    variants = list(summary["means"])
    lines = ["# sugar bench quality\n", f"Wall time {meta['wall_s']} s; seeds {meta['seeds']}; "
             f"sizes `{meta['size']}`; commit `{meta['provenance']['git_commit']}`; lr grid "
             f"{meta['grid']['lr']}, weight factors {meta['grid']['weight_factors']}. Mean +- sd "
             "over seeds, percentages; the teacher row is the teacher alone.\n"]  # fmt: skip
    lines.append("| variant | " + " | ".join(t for _, _, t in HEADLINE) + " |")
    lines.append("|---|" + "---|" * len(HEADLINE))
    for variant in variants:
        cells = []
        for task, metric, _ in HEADLINE:
            cell = summary["means"][variant].get(f"{task}.{metric}", "n/a")
            cells.append(
                f"{100 * cell['mean']:.1f} +- {100 * cell['sd']:.1f}"
                if isinstance(cell, dict)
                else "n/a"
            )
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines.append("\n## Pre-registered bars\n")
    for bar in summary["bars"]:
        state = {True: "met", False: "missed", None: "not measurable"}[bar["met"]]
        lines.append(f"- **{state}**: {bar['bar']}: `{json.dumps(bar['figures'], default=str)}`")
    for name, rows in summary["comparisons"].items():
        lines.append(f"\n## {name} (paired bootstrap over pooled seeds)\n")
        lines.append("| task | metric | difference | 95 % CI | n | CI excludes 0 |")
        lines.append("|---|---|---|---|---|---|")
        for r in rows:
            lines.append(
                f"| {r['task']} | {r['metric']} | {100 * r['difference']:+.1f} | "
                f"[{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}] | {r['n']} | "
                f"{'yes' if r['significant'] else 'no'} |"
            )
    lines.append("\n## Difficulty, frozen before the other variants were trained\n")
    lines.append(f"World settings: `{json.dumps(meta['difficulty']['world'])}`\n")
    lines.append("| row | task.metric (validation) | value | flag |")
    lines.append("|---|---|---|---|")
    for row in meta["difficulty"]["figures"]:
        value = row["value"]
        shown = f"{100 * value:.1f}" if isinstance(value, float) else str(value)
        lines.append(f"| {row['row']} | {row['key']} | {shown} | {row['flag']} |")
    lines.append("\n## Every setting tried (seed 0, validation)\n")
    lines.append("| variant | lr | weight | select metric | value | chosen |")
    lines.append("|---|---|---|---|---|---|")
    for trial in meta["tuning"]:
        value = trial["value"]
        lines.append(
            f"| {trial['variant']} | {trial['lr']:g} | "
            f"{'-' if trial['weight'] is None else format(trial['weight'], 'g')} | "
            f"{trial['metric']} | {'n/a' if value is None else format(value, '.4f')} | "
            f"{'**yes**' if trial['chosen'] else ''} |"
        )
    return "\n".join(lines) + "\n"


def _choose(trials: list[dict[str, Any]], metric: str, default: str) -> dict[str, Any]:
    """The best trial on ``metric`` (lower is better for a loss); ties: the one whose
    ``default`` flag (``default_lr`` / ``default_weight``) is set, then the earlier one."""
    lower = metric.endswith("loss")
    scored = [t for t in trials if t["value"] is not None]
    if not scored:
        raise ValueError(f"no trial reported {metric}: {[t['dir'] for t in trials]}")
    best = min(t["value"] for t in scored) if lower else max(t["value"] for t in scored)
    tied = [t for t in scored if t["value"] == best]
    return next((t for t in tied if t[default]), tied[0])


def _difficulty(
    teacher: dict[str, dict[str, Any]], generative: dict[str, dict[str, Any]], world: dict[str, Any]
) -> dict[str, Any]:
    figures = []
    for row, results in ((TEACHER, teacher), ("generative", generative)):
        for task, metric in DIFFICULTY_METRICS:
            value = results.get(task, {}).get(metric, "n/a")
            flag = ""
            if isinstance(value, float):
                flag = "floor" if value < BAND[0] else "ceiling" if value > BAND[1] else "ok"
            figures.append({"row": row, "key": f"{task}.{metric}", "value": value, "flag": flag})
    return {"world": world, "band": list(BAND), "figures": figures}


@in_one_torch_thread
def run_quality_bench(
    out: str | Path,
    *,
    smoke: bool = False,
    size_name: str | None = None,
    seeds: int = 3,
    workers: int = 2,
    variants: list[str] | None = None,
    config: SugarConfig | None = None,
    say: Callable[[str], None] = print,
    overrides: Sequence[str] = (),
) -> Path:
    """Run the protocol of the module doc into ``out`` (world, teacher and base via ``sugar
    demo``'s stages, in ``out``); returns the path of ``bench.md`` (``bench.json`` holds every
    figure). ``variants``: a subset of :data:`VARIANTS` (generative-only is always run: the
    difficulty step needs it). ``config`` and ``overrides`` as in
    :func:`~sugar.recipes.demo.run_demo`; the bench also sets each variant's loss weights
    itself (:data:`~sugar.recipes.demo.BENCH_FIELDS`)."""
    from sugar.recipes.demo import run_demo
    from sugar.teachers.sensitivity import TeacherEvalModel

    unknown = sorted(set(variants or []) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    name = size_name or ("smoke" if smoke else "demo")
    size = recipe_size(name, overrides, BENCH_FIELDS)  # refused before anything is written
    wanted = set(variants or VARIANTS) | {"generative"}
    chosen_variants = [v for v in VARIANTS if v in wanted]
    out = Path(out)
    bench_dir = out / "bench"
    start = time.perf_counter()
    base_cfg = config or load_config(None)
    run_demo(
        out,
        size_name=name,
        seed=0,
        config=base_cfg,
        say=say,
        progress=False,
        through_base=True,
        workers=workers,
        overrides=overrides,
    )
    grid = GRIDS[name]
    world = out / "world"
    limit = size["eval_limit"]

    def job(variant: str, lr: float, weight: float | None, seed: int) -> dict[str, Any]:
        changes = VARIANTS[variant]
        sections = {k: dict(v) for k, v in changes.items() if k != "train"}
        sections["structure"] = {**size["structure"], **sections.get("structure", {})}
        if weight is not None:
            section, field = WEIGHTS[variant]
            sections.setdefault(section, {})[field] = weight
        train_changes = {
            "batch_size": size["batch_size"], "eval_every": 0, "checkpoint_every": 0,
            "log_every": 10, "eval_samples": 200, "steps": size["tune_steps"], "lr": lr,
            "select_metric": _select_metric(variant), "init_from": str(out / "base" / "model"),
            **size["train"], **changes.get("train", {}),
        }  # fmt: skip
        run_name = f"{variant}-lr{lr:g}" + ("" if weight is None else f"-w{weight:g}")
        cfg = run_config(
            base_cfg, out, f"bench/runs/{run_name}-s{seed}", size, run={"seed": seed},
            train=train_changes,
            **sections,
        )  # fmt: skip
        return to_dict(cfg)

    timings: dict[str, Any] = {}
    tuning: list[dict[str, Any]] = []
    test_runs: dict[str, dict[str, Any]] = {}

    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:

        def submit_all(
            configs: dict[str, dict[str, Any]], split: str | None
        ) -> dict[str, dict[str, Any]]:
            futures = {
                key: pool.submit(train_and_evaluate, cfg, str(world), limit, split)
                for key, cfg in configs.items()
            }
            outcomes = {}
            for key, future in futures.items():
                outcomes[key] = outcome = future.result()
                timings[key] = {"train_s": outcome["train_s"], "eval_s": outcome["eval_s"]}
                say(f"  {key}: trained {outcome['train_s']} s, evaluated {outcome['eval_s']} s")
            return outcomes

        def tune(stage_variants: list[str], weights: bool) -> dict[str, dict[str, Any]]:
            """One tuning stage: the lr grid (``weights`` False) or the weight factors at each
            variant's chosen lr; returns each variant's chosen trial."""
            trials: dict[str, dict[str, Any]] = {}
            for variant in stage_variants:
                default_weight = None
                if variant in WEIGHTS:
                    section, field = WEIGHTS[variant]
                    default_weight = float(
                        VARIANTS[variant].get(section, {}).get(field)
                        or getattr(getattr(base_cfg, section), field)
                    )
                if not weights:
                    settings = [(lr, default_weight) for lr in grid["lr"]]
                elif default_weight is not None:
                    lr = chosen[variant]["lr"]
                    settings = [(lr, default_weight * f) for f in grid["weight_factors"]]
                else:
                    continue
                for lr, weight in settings:
                    key = f"{variant}/lr{lr:g}" + ("" if weight is None else f"/w{weight:g}")
                    if any(t["key"] == key for t in tuning):
                        continue  # the default weight at the chosen lr: tried in the lr stage
                    trials[key] = {"variant": variant, "lr": lr, "weight": weight, "key": key,
                                   "default_lr": lr == DEFAULT_LR,
                                   "default_weight": weight == default_weight,
                                   "config": job(variant, lr, weight, 0)}  # fmt: skip
            outcomes = submit_all({k: t["config"] for k, t in trials.items()}, None)
            for key, trial in trials.items():
                metric = _select_metric(trial["variant"])
                value = outcomes[key]["validation"].get(metric)
                tuning.append({
                    "key": key, "variant": trial["variant"], "lr": trial["lr"],
                    "weight": trial["weight"], "default_lr": trial["default_lr"],
                    "default_weight": trial["default_weight"], "metric": metric,
                    "value": value, "validation": outcomes[key]["validation"], "chosen": False,
                    "dir": trial["config"]["run"]["output_dir"],
                })  # fmt: skip
            picked = {}
            for variant in stage_variants:
                mine = [t for t in tuning if t["variant"] == variant]
                if weights:  # among the weights tried at the chosen lr
                    mine = [t for t in mine if t["lr"] == chosen[variant]["lr"]]
                    if len(mine) < 2:
                        continue  # no weight to tune
                for t in mine:
                    t["chosen"] = False
                flag = "default_weight" if weights else "default_lr"
                picked[variant] = _choose(mine, _select_metric(variant), flag)
                picked[variant]["chosen"] = True
            return picked

        # 2. difficulty: the teacher alone and generative-only on validation, nothing else yet
        done = stage("difficulty: teacher alone and generative-only on validation", {}, say)
        teacher_model = TeacherEvalModel.offline(out / "teacher", out / "cache" / "teachers")
        teacher_val = run_tasks(teacher_model, world, list(TASKS), split="val", limit=limit)
        chosen: dict[str, dict[str, Any]] = {}
        chosen.update(tune(["generative"], weights=False))
        generative_val = submit_all(
            {"generative/validation": job("generative", chosen["generative"]["lr"], None, 0)},
            "val",
        )["generative/validation"]["results"]
        manifest = json.loads((world / "manifest.json").read_text(encoding="utf-8"))
        difficulty = _difficulty(
            teacher_val, generative_val,
            {"config": manifest.get("config"), "manifest_sha256": sha256_file(
                world / "manifest.json")},
        )  # fmt: skip
        atomic_write_json(bench_dir / "difficulty.json", difficulty)
        done()

        # 3. tuning: the lr grid for every other variant, then their own loss weights
        others = [v for v in chosen_variants if v != "generative"]
        done = stage(f"tune {len(others)} variants on validation", {}, say)
        chosen.update(tune(others, weights=False))
        chosen.update(tune(others, weights=True))
        done()

        # 4. test: every chosen setting, all seeds of the headline variants
        done = stage("train the other seeds and evaluate every model on the test split", {}, say)
        finals: dict[str, dict[str, Any]] = {}
        for variant in chosen_variants:
            pick = chosen[variant]
            for seed in range(seeds if variant in HEADLINE_VARIANTS else 1):
                finals[f"{variant}/s{seed}"] = job(variant, pick["lr"], pick["weight"], seed)
        outcomes = submit_all(finals, "test")
        test_runs = {key: outcome["results"] for key, outcome in outcomes.items()}
        done()
    test_runs[f"{TEACHER}/s0"] = run_tasks(teacher_model, world, list(TASKS), limit=limit)

    summary = summarise(test_runs)
    provenance = write_manifest(
        bench_dir, seed=0,
        inputs={"world_manifest": world / "manifest.json", "teacher": out / "teacher",
                "base": out / "base" / "model"},
    )  # fmt: skip
    meta = {
        "wall_s": round(time.perf_counter() - start, 1),
        "provenance": provenance,
        "seeds": seeds,
        "size": name,
        "workers": workers,
        "grid": {k: list(v) for k, v in grid.items()},
        "timings": timings,
        "difficulty": difficulty,
        "tuning": tuning,
        "configs": finals,
    }
    atomic_write_json(bench_dir / "bench.json", {"meta": meta, "runs": test_runs, **summary})
    write_report(
        bench_dir / "per_run",
        test_runs,
        meta,
        logs={key: Path(cfg["run"]["output_dir"]) / "log.jsonl" for key, cfg in finals.items()},
        compare=("sugar/s0", [n for n in test_runs if n != "sugar/s0"])
        if "sugar/s0" in test_runs
        else None,
    )
    path = atomic_write_text(bench_dir / "bench.md", _markdown(summary, meta))
    say(f"[bench] {path} ({meta['wall_s']} s)")
    return path
