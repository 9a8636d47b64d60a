"""Knowledge editing on the built-in model (issue 23): every editor, 1 / 10 / 100 sequential
edits, MMEdit's five metrics and their mean, seconds per edit, and whether removing the edits
restores the unedited answers; one edit set per seed. Prints a Markdown table and writes
``OUT/edit_bench.json`` and ``OUT/edit_bench.md``.

    sugar data world --out runs/world --size 500 --seed 0
    sugar train -c configs/edit_base.yaml                       # the base (L_g, 150 steps)
    python benchmarks/bench_edit.py --model runs/edit_base/model --world runs/world \\
        --out runs/edit_bench --seeds 0 1 2

Editor settings are the code defaults, chosen on validation edits (``edit/val.jsonl``; README,
Knowledge editing); ``--validate`` runs UniKE's threshold x max_frequency grid on 50 of them
instead (``OUT/edit_validation.json``). The edit sets ``edit/train.jsonl`` and
``edit/test.jsonl`` under the
world are rewritten per seed.
"""

from __future__ import annotations

import argparse
import os

import torch

from sugar.recipes.edit import METHODS, bench_table, run_edit_bench, run_unike_validation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--world", required=True)
    parser.add_argument("--out", default="runs/edit_bench")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--validate", action="store_true", help="UniKE's settings on val edits")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.4, 0.5, 0.6])
    parser.add_argument("--max-frequencies", type=float, nargs="+", default=[0.05, 0.1, 0.15])
    parser.add_argument("--truth-strengths", type=float, nargs="+", default=[0.0])
    parser.add_argument(
        "--unike",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="UniKE options for the benchmark, e.g. truth_strength=0.5",
    )
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("SUGAR_TORCH_THREADS", "1")))
    if args.validate:
        run_unike_validation(args.model, args.world, args.out, thresholds=args.thresholds,
                             max_frequencies=args.max_frequencies,
                             truth_strengths=args.truth_strengths)  # fmt: skip
        return
    unike = {key: float(value) for key, _, value in (o.partition("=") for o in args.unike)}
    results = run_edit_bench(args.model, args.world, args.out, methods=args.methods,
                             seeds=args.seeds, count=args.count,
                             options={"unike": unike})  # fmt: skip
    print(bench_table(results))


if __name__ == "__main__":
    main()
