"""Set a variant trained outside `sugar bench quality` beside the bench's runs, seed by seed.

`sugar bench quality` pairs Sugar with every other row; a variant trained by hand (for
instance Sugar + InfoNCE at the bench's chosen lr for 3 seeds, then `sugar eval --split test`
per seed) has no row there. This script reads the bench's `bench.json` and one `sugar eval`
report per seed of the new variant (the k-th report is seed k), prints the variant's mean +- sd
per headline metric beside the bench's rows, and the paired bootstrap of the new variant minus
each named bench variant, items of seed k paired with seed k and pooled over the seeds, as the
bench pools them (`sugar.recipes.bench.pooled_items`, `sugar.eval.metrics.paired_bootstrap`).

    python benchmarks/pool_seeds.py --bench runs/demo/bench/bench.json --name sugar_infonce \
        --report R0/report.json --report R1/report.json --report R2/report.json \
        --versus cafe --versus sugar
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from sugar.eval.metrics import paired_bootstrap
from sugar.recipes.bench import pooled_items

HEADLINE = [
    ("caption_retrieval", "t2i_r1"), ("caption_retrieval", "i2t_r1"),
    ("winoground", "emb_group"), ("story_retrieval", "c5i4_r1"), ("kb_qa", "retrieval_r1"),
    ("kb_qa", "retrieved"), ("hard_negatives", "emb_attribute_swap"),
    ("hard_negatives", "emb_relation_swap"), ("hard_negatives", "emb_wrong_colour"),
    ("hard_negatives", "emb_wrong_count"), ("vqa", "exact_match"), ("pope", "f1"),
    ("needle", "accuracy"), ("grounding", "nll_gap"),
]  # fmt: skip


def _one_model(path: Path) -> dict[str, Any]:
    results = json.loads(path.read_text())["results"]
    if len(results) != 1:
        raise SystemExit(f"{path}: expected the report of one model, found {sorted(results)}")
    return next(iter(results.values()))


def _seeds(runs: dict[str, dict[str, Any]], variant: str) -> list[dict[str, Any]]:
    return [r for n, r in runs.items() if n.split("/")[0] == variant]


def _fmt(values: list[float], scale: float) -> str:
    if not values:
        return "n/a"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{scale * statistics.mean(values):.1f} +- {scale * sd:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", type=Path, required=True, help="the bench's bench.json")
    parser.add_argument("--name", required=True, help="the new variant's name")
    parser.add_argument(
        "--report", type=Path, action="append", required=True,
        help="a sugar eval report.json of one model, seed 0 first (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--versus", action="append", default=[], help="a bench variant (repeatable)"
    )
    args = parser.parse_args()

    runs = json.loads(args.bench.read_text())["runs"]
    if any(n.split("/")[0] == args.name for n in runs):
        raise SystemExit(f"{args.bench} already has runs of variant {args.name!r}")
    runs.update({f"{args.name}/s{k}": _one_model(p) for k, p in enumerate(args.report)})
    rows = {v: _seeds(runs, v) for v in [args.name, *sorted({*args.versus, "teacher"})]}
    for name, seeds in rows.items():
        if not seeds:
            raise SystemExit(f"{args.bench}: no runs of variant {name!r}")
    print(f"| metric | {' | '.join(rows)} |\n|---|{'---|' * len(rows)}")
    for task, metric in HEADLINE:
        scale = 1.0 if metric == "nll_gap" else 100.0
        cells = []
        for seeds in rows.values():
            got = [s.get(task, {}).get(metric) for s in seeds]
            values = [v for v in got if isinstance(v, (int, float))]
            cells.append(_fmt(values, scale))
        print(f"| {task}.{metric} | {' | '.join(cells)} |")

    for other in args.versus:
        paired = sum(f"{other}/s{k}" in runs for k in range(len(args.report)))
        print(f"\n{args.name} - {other}, paired over {paired} seeds:\n")
        print("| task.metric | difference | 95 % CI | n |\n|---|---|---|---|")
        for task, metric in HEADLINE:
            a, b = pooled_items(runs, args.name, other, task, metric)
            if not a:
                continue
            r = paired_bootstrap(a, b)
            ci = f"[{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}]"
            print(f"| {task}.{metric} | {100 * r['difference']:+.1f} | {ci} | {r['n']} |")


if __name__ == "__main__":
    main()
