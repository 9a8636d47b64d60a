"""The control branch's figures over seeds: per-way means and sds of the ``instructed`` task,
and the paired bootstrap of control minus instruction-as-text, and minus the base model without
instruction, pooled over the seeds' items.

Usage (one ``sugar eval --tasks instructed`` report per seed, each with one model)::

    python benchmarks/control_figures.py runs/ctl/eval-s0/report.json runs/ctl/eval-s1/...
"""

from __future__ import annotations

import itertools
import json
import statistics
import sys
from pathlib import Path

from sugar.eval.metrics import paired_bootstrap

WAYS = ("base", "text", "control")


def main(paths: list[str]) -> None:
    runs = []
    for path in paths:
        results = json.loads(Path(path).read_text(encoding="utf-8"))["results"]
        runs += [r["instructed"] for r in results.values()]
    metrics = [k[len("control_") :] for k in runs[0] if k.startswith("control_") and
               "_vs_" not in k and isinstance(runs[0][k], float)]  # fmt: skip
    print(f"{len(runs)} seeds; mean (sd) in %")
    print("| metric | " + " | ".join(WAYS) + " |\n|---|---|---|---|")
    for metric in metrics:
        cells = []
        for way in WAYS:
            values = [100 * r[f"{way}_{metric}"] for r in runs]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.1f} ({sd:.1f})")
        print(f"| {metric} | " + " | ".join(cells) + " |")
    for other, group in itertools.product(
        ("text", "base"), ("mean_r1", "heldout_r1", "mean_ndcg10", "heldout_ndcg10")
    ):
        ours = [x for r in runs for x in r["per_item"][f"control_{group}"]]
        theirs = [x for r in runs for x in r["per_item"][f"{other}_{group}"]]
        test = paired_bootstrap(ours, theirs)
        low, high = 100 * test["ci_low"], 100 * test["ci_high"]
        print(f"control - {other} {group}: {100 * test['difference']:+.1f} points, 95 % CI "
              f"[{low:+.1f}, {high:+.1f}], p {test['p_value']:.3f} "
              f"(pooled over {len(runs)} seeds, n = {test['n']})")  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1:])
