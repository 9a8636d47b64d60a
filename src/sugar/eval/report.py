"""Evaluation reports: JSON with every figure, a Markdown table, PNG plots.

``results`` maps a variant (a model's name) to ``{task: {metric: value}}`` as
:func:`sugar.eval.tasks.run_tasks` returns; values are floats or ``"n/a"``. The report keeps,
next to the figures, what produced them (``meta``: config, seeds, commit, data hashes, timings).

- ``report.json``: ``{"meta": ..., "results": ..., "comparisons": ..., "skipped": ...}``;
- ``report.md``: the headline table (variants x :data:`HEADLINE` metrics, best in bold, "n/a"
  where a variant cannot do a task; a task no variant ran has no column), the tasks not run
  and why (``skipped``, e.g. ``sugar eval`` on a dataset without their files), and one table
  per task with every metric;
- ``needle_by_position.png``, ``hard_negatives_by_kind.png`` and, given run logs,
  ``loss_curves.png`` (matplotlib, extra ``report``; skipped with a note when missing).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sugar.io import atomic_write_json, atomic_write_text, read_log

__all__ = ["HEADLINE", "headline_table", "paired_comparison", "write_report"]

Results = Mapping[str, Mapping[str, Mapping[str, Any]]]

HEADLINE: list[tuple[str, str, str]] = [
    ("caption_retrieval", "t2i_r1", "caption t2i R@1"),
    ("caption_retrieval", "i2t_r1", "caption i2t R@1"),
    ("winoground", "emb_group", "Winoground group (emb)"),
    ("winoground", "ll_group", "Winoground group (LL)"),
    ("hard_negatives", "emb_relation_swap", "relation swap (emb)"),
    ("hard_negatives", "ll_relation_swap", "relation swap (LL)"),
    ("story_retrieval", "c5i4_r1", "story 5c+4i R@1"),
    ("needle", "accuracy", "needle acc"),
    ("vqa", "exact_match", "VQA EM"),
    ("pope", "f1", "POPE F1"),
    ("kb_qa", "retrieved", "KB-QA retrieved"),
    ("kb_qa", "retrieval_r1", "KB fact R@1"),
    ("grounding", "gap_positive", "captions grounded"),
    ("instructed", "text_mean_r1", "instructed R@1 (as text)"),
    ("instructed", "control_mean_r1", "instructed R@1 (branch)"),
    ("edit", "unike_100_mean", "UniKE, 100 edits (mean)"),
]
"""(task, metric, column title) of the headline table; higher is better for each."""
IN_PERCENT = {"edit"}
"""Tasks whose metrics are already percentages (the others are fractions)."""


def _cell(value: Any, task: str = "") -> str:
    if not isinstance(value, float):
        return str(value)
    return f"{value if task in IN_PERCENT else 100 * value:.1f}"


def headline_table(results: Results) -> str:
    """The Markdown headline table: percentages, best per column in bold, n/a kept."""
    columns = [c for c in HEADLINE if any(c[0] in r for r in results.values())]
    lines = [
        "| variant | " + " | ".join(title for _, _, title in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    best = {}
    for task, metric, _ in columns:
        values = [r.get(task, {}).get(metric) for r in results.values()]
        numbers = [v for v in values if isinstance(v, float)]
        best[(task, metric)] = max(numbers) if numbers else None
    for variant, tasks in results.items():
        cells = []
        for task, metric, _ in columns:
            value = tasks.get(task, {}).get(metric, "n/a")
            text = _cell(value, task)
            if isinstance(value, float) and value == best[(task, metric)] and len(results) > 1:
                text = f"**{text}**"
            cells.append(text)
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _task_tables(results: Results) -> str:
    tasks = sorted({t for r in results.values() for t in r})
    parts = []
    for task in tasks:
        metrics = sorted({m for r in results.values() for m in r.get(task, {}) if m != "per_item"})
        parts.append(f"### {task}\n")
        parts.append("| variant | " + " | ".join(metrics) + " |")
        parts.append("|---|" + "---|" * len(metrics))
        for variant, r in results.items():
            row = r.get(task, {})
            cells = [
                f"{row[m]:.4g}" if isinstance(row.get(m), float) else str(row.get(m, "-"))
                for m in metrics
            ]
            parts.append(f"| {variant} | " + " | ".join(cells) + " |")
        parts.append("")
    return "\n".join(parts)


def _plots(out_dir: Path, results: Results, logs: Mapping[str, Path]) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["plots skipped: matplotlib is not installed (pip install 'sugar-mllm[report]')"]
    written = []
    series = {
        variant: sorted(
            (int(k.split("_")[1]), v)
            for k, v in r.get("needle", {}).items()
            if k.startswith("position_") and k != "position_spread" and isinstance(v, float)
        )
        for variant, r in results.items()
    }
    if any(series.values()):  # no needle figures (e.g. a caption-only dataset): no plot
        figure, axis = plt.subplots(figsize=(6, 4))
        for variant, points in series.items():
            if points:
                positions, accuracies = [p for p, _ in points], [v for _, v in points]
                axis.plot(positions, accuracies, marker="o", label=variant)
        axis.set(xlabel="needle position", ylabel="accuracy", title="Needle accuracy by position")
        axis.legend()
        figure.savefig(out_dir / "needle_by_position.png", dpi=100, bbox_inches="tight")
        plt.close(figure)
        written.append("needle_by_position.png")
    kinds = sorted(
        {
            k[3:]
            for r in results.values()
            for k in r.get("hard_negatives", {})
            if k.startswith("ll_")
        }
    )
    if kinds:  # no hard negatives in the data: no plot
        figure, axis = plt.subplots(figsize=(7, 4))
        width = 0.8 / max(1, 2 * len(results))
        for index, (variant, r) in enumerate(results.items()):
            row = r.get("hard_negatives", {})
            for offset, scoring in enumerate(("emb", "ll")):
                values = [row.get(f"{scoring}_{k}") for k in kinds]
                xs = [i + (2 * index + offset) * width for i in range(len(kinds))]
                heights = [v if isinstance(v, float) else 0.0 for v in values]
                axis.bar(xs, heights, width, label=f"{variant} ({scoring})")
        axis.set_xticks([i + 0.4 for i in range(len(kinds))], kinds, rotation=20)
        axis.set(ylabel="pairwise accuracy", title="Hard negatives by kind (n/a drawn as 0)")
        axis.legend(fontsize=7)
        figure.savefig(out_dir / "hard_negatives_by_kind.png", dpi=100, bbox_inches="tight")
        plt.close(figure)
        written.append("hard_negatives_by_kind.png")
    if logs:
        figure, axis = plt.subplots(figsize=(6, 4))
        for variant, path in logs.items():
            records = read_log(path)  # a torn last line (a killed run) is dropped
            steps = [r["step"] for r in records if "loss" in r]
            axis.plot(steps, [r["loss"] for r in records if "loss" in r], label=variant)
        axis.set(xlabel="step", ylabel="training loss", title="Loss curves", yscale="log")
        axis.legend()
        figure.savefig(out_dir / "loss_curves.png", dpi=100, bbox_inches="tight")
        plt.close(figure)
        written.append("loss_curves.png")
    return written


def paired_comparison(
    results: Results, variant: str, baseline: str, n_resamples: int = 10_000
) -> list[dict[str, Any]]:
    """``variant - baseline`` on every metric both scored item by item (same items, same
    order): the difference in mean and its paired-bootstrap 95 % CI (seed 0). A win is claimed
    only when the CI excludes 0 (``significant``)."""
    from sugar.eval.metrics import paired_bootstrap

    rows = []
    for task, metrics in results.get(variant, {}).items():
        theirs = results.get(baseline, {}).get(task, {}).get("per_item", {})
        for metric, ours in metrics.get("per_item", {}).items():
            if metric not in theirs or len(theirs[metric]) != len(ours) or not ours:
                continue
            stats = paired_bootstrap(ours, theirs[metric], n_resamples=n_resamples)
            significant = stats["ci_low"] > 0 or stats["ci_high"] < 0
            rows.append({"task": task, "metric": metric, **stats, "significant": significant})
    return rows


def _comparison_table(rows: list[dict[str, Any]], variant: str, baseline: str) -> str:
    if not rows:
        return f"No metric was scored item by item by both {variant} and {baseline}.\n"
    lines = [
        f"| task | metric | {variant} - {baseline} | 95 % CI | n | CI excludes 0 |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['metric']} | {100 * r['difference']:+.1f} | "
            f"[{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}] | {r['n']} | "
            f"{'yes' if r['significant'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def write_report(
    out_dir: str | Path,
    results: Results,
    meta: Mapping[str, Any],
    logs: Mapping[str, Path] | None = None,
    compare: tuple[str, Sequence[str]] | None = None,
    skipped: Mapping[str, str] | None = None,
) -> Path:
    """Write report.json, report.md and the plots to ``out_dir``; returns the Markdown path.

    ``compare = (variant, baselines)`` adds paired-bootstrap CIs of variant - each baseline
    (:func:`paired_comparison`; also stored in report.json under ``comparisons``).
    ``skipped`` maps each task that was not run to why (``{"vqa": "DATA/vqa/test.jsonl is
    absent"}``): listed under the headline table and stored under ``skipped``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    comparisons: dict[str, list[dict[str, Any]]] = {}
    if compare is not None:
        variant, baselines = compare
        for baseline in baselines:
            comparisons[f"{variant} - {baseline}"] = paired_comparison(results, variant, baseline)
    not_run = dict(skipped or {})
    atomic_write_json(
        out / "report.json",
        {"meta": dict(meta), "results": results, "comparisons": comparisons, "skipped": not_run},
    )
    notes = _plots(out, results, logs or {})
    text = [
        "# sugar evaluation report\n",
        "Percentages; best per column in **bold**; n/a where a variant cannot do a task "
        "(no trained projector: no embedding scores). emb = embedding cosine, LL = caption "
        "log-likelihood under the LM.\n",
        headline_table(results),
        *[f"\nNot run: {task} ({why})." for task, why in not_run.items()],
        *[
            f"\n## {name} (paired bootstrap, 10,000 resamples)\n\n"
            + _comparison_table(rows, *name.split(" - "))
            for name, rows in comparisons.items()
        ],
        "\n## Every metric\n",
        _task_tables(results),
        "\n## Plots\n",
        *[f"- {n}" for n in notes],
        "\n## Provenance\n",
        "```json",
        json.dumps(meta, indent=2, default=str),
        "```\n",
    ]
    return atomic_write_text(out / "report.md", "\n".join(text))
