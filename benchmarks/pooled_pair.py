"""Two models' paired difference on one metric, per `sugar eval` report and pooled over them.

Each report is one seed's `sugar eval` of both models on the same items (for instance a
demo's Sugar and generative-only models on a world generated with a larger `test_per_task`,
README "Generation kept, measured on 20x the VQA items"). Prints, per report and pooled over them
(items of report k paired with report k, as `sugar bench quality` pools seeds): each model's
mean, the paired-bootstrap difference with its 95 % CI (`sugar.eval.metrics.paired_bootstrap`),
the share of items on which the two disagree, and how many items a CI of +-`--half-width`
points would take at that spread (the normal approximation, 1.96 sd / sqrt(n)). A model is
named as in its report (its run directory's name); where the name differs from report to
report, give `--first` or `--second` once per report, in the reports' order.

    python benchmarks/pooled_pair.py --first sugar --second generative --metric vqa.exact_match \
        --report E0/report.json --report E1/report.json --report E2/report.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from sugar.eval.metrics import paired_bootstrap


def _items(path: Path, model: str, task: str, metric: str) -> np.ndarray:
    results = json.loads(path.read_text())["results"]
    if model not in results:
        raise SystemExit(f"{path}: no model {model!r} (it has {sorted(results)})")
    values = results[model].get(task, {}).get("per_item", {}).get(metric)
    if values is None:
        raise SystemExit(f"{path}: {model!r} has no per-item {task}.{metric}")
    return np.asarray(values, dtype=np.float64)


def _per_report(names: list[str], reports: list[Path], flag: str) -> list[str]:
    if len(names) == 1:
        return names * len(reports)
    if len(names) != len(reports):
        raise SystemExit(
            f"{flag} given {len(names)} times for {len(reports)} reports: once or once per report"
        )
    return names


def _row(label: str, a: np.ndarray, b: np.ndarray, half_width: float) -> str:
    if a.shape != b.shape:
        raise SystemExit(f"{label}: {a.size} items against {b.size}: not the same items")
    r = paired_bootstrap(a, b)
    sd = float(np.std(a - b, ddof=1)) if a.size > 1 else 0.0
    needed = math.ceil((1.96 * sd / (half_width / 100)) ** 2)
    return (
        f"| {label} | {100 * a.mean():.1f} | {100 * b.mean():.1f} | {100 * r['difference']:+.1f} "
        f"| [{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}] | {r['n']} "
        f"| {100 * float(np.mean(a != b)):.1f} | {needed:,} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--first", action="append", required=True,
        help="model name in the reports (minuend); once, or once per report",
    )  # fmt: skip
    parser.add_argument(
        "--second", action="append", required=True,
        help="model name in the reports; once, or once per report",
    )  # fmt: skip
    parser.add_argument("--metric", default="vqa.exact_match", help="task.metric")
    parser.add_argument(
        "--report", type=Path, action="append", required=True,
        help="a sugar eval report.json holding both models (repeatable, one per seed)",
    )  # fmt: skip
    parser.add_argument("--half-width", type=float, default=1.0, help="CI half-width, points")
    args = parser.parse_args()
    task, _, metric = args.metric.partition(".")
    if not metric:
        raise SystemExit(f"--metric {args.metric!r}: expected task.metric")

    first = _per_report(args.first, args.report, "--first")
    second = _per_report(args.second, args.report, "--second")
    pairs = [
        (_items(p, a, task, metric), _items(p, b, task, metric))
        for p, a, b in zip(args.report, first, second, strict=True)
    ]
    a_name, b_name = "/".join(dict.fromkeys(first)), "/".join(dict.fromkeys(second))
    print(
        f"{a_name} - {b_name}, {args.metric}, in points:\n\n"
        f"| report | {a_name} | {b_name} | difference | 95 % CI | n | disagree % "
        f"| n for +-{args.half_width:g} |\n|---|---|---|---|---|---|---|---|"
    )
    for path, (a, b) in zip(args.report, pairs, strict=True):
        print(_row(str(path), a, b, args.half_width))
    if len(pairs) > 1:
        pooled = [np.concatenate(side) for side in zip(*pairs, strict=True)]
        print(_row(f"pooled over {len(pairs)}", pooled[0], pooled[1], args.half_width))


if __name__ == "__main__":
    main()
