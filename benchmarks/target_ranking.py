"""How much of each retrieval task do L_d's targets carry? (issue 17: Sugar's story retrieval
stays at 24.5-33 % whatever its teacher, while CAFe-style reaches 54-60 %)

L_d regresses the student's similarity of two prefixes onto ``Ml``, the normalised GAK of the
teacher's slice sequences (sugar.losses.structure.structure_targets), with a query and its own
document set to 1 by the same-sample rule. So among *other* documents the student is taught the
ranking that ``Ml`` itself gives. For the validation pairs of each task this script builds the
retrieval micro-batch's (query, document) pairs exactly as training does
(sugar.train.retrieval.retrieval_pair), computes ``Ml`` between every query's full prefix and
every document with the run's teacher, bandwidth (``target_stats.json``) and structure options,
and prints per task:

- the R@1 of ranking the documents by ``Ml`` alone (the same-sample rule left out): how well
  the targets themselves retrieve;
- the mean target of the right pair (before the rule sets it to 1) and of wrong pairs;
- for queries of several text segments, the same from each query's last text segment alone.

    python benchmarks/target_ranking.py --run runs/demo/sugar [--limit 200] [key=value ...]

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from sugar.config import load_config
from sugar.data.jsonl import read_samples
from sugar.data.schema import Sample
from sugar.eval.metrics import recall_at_k
from sugar.losses.structure import StructureOptions, structure_targets
from sugar.teachers.lookup import TeacherLookup, teacher_lookup_from_config
from sugar.train.retrieval import is_retrieval_source, retrieval_pair

TASKS = {"caption": "caption/val.jsonl", "story": "story/val.jsonl", "kb": "kb/train.jsonl"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a Sugar run directory")
    parser.add_argument("--limit", type=int, default=200, help="pairs per task (200)")
    parser.add_argument("overrides", nargs="*", help="key=value over the run's config "
                        "(e.g. structure.slice_text_by=sentence)")  # fmt: skip
    args = parser.parse_args()
    cfg = load_config(args.run / "config.yaml", args.overrides)
    delta = float(json.loads((args.run / "target_stats.json").read_text())["delta"])
    options = replace(cfg.structure.options(), same_sample_target="kernel")
    root = Path(cfg.data.root)
    lookup = teacher_lookup_from_config(cfg)
    print(f"{args.run}: teacher {cfg.teacher.family}, slices by {options.slice_text_by}, "
          f"delta {delta:.3f}, normalisation {options.gak_normalisation}")  # fmt: skip
    for task, path in TASKS.items():
        if not (root / path).is_file():
            continue
        started = time.perf_counter()
        sources = [s for s in read_samples(root / path, root) if is_retrieval_source(s)]
        if len(sources) < 2:
            print(f"  {task:8s} no retrieval pairs in {path}")
            continue
        pairs = [retrieval_pair(s) for s in sources[: args.limit]]
        queries, documents = [q for q, _ in pairs], [d for _, d in pairs]
        ml, query_slices = _targets(lookup, queries, documents, root, delta, options)
        _print(task, f"{len(pairs)} pairs, {query_slices:.1f} query slices", ml, started)
        texts = [sum(g.kind == "text" for g in q.segments) for q in queries]
        if max(texts) > 1:  # the same documents from each query's last text segment alone
            started = time.perf_counter()
            alone = [
                replace(q, segments=[[g for g in q.segments if g.kind == "text"][-1]])
                for q in queries
            ]
            ml = _targets(lookup, alone, documents, root, delta, options)[0]
            _print("", "the query's last text segment alone", ml, started)


def _targets(
    lookup: TeacherLookup,
    queries: list[Sample],
    documents: list[Sample],
    root: Path,
    delta: float,
    options: StructureOptions,
) -> tuple[Tensor, float]:
    """(queries, documents) Ml between full prefixes, without the same-sample rule; the mean
    number of query slices."""
    slices = lookup(queries + documents, root)
    n = len(queries)
    target = structure_targets(
        slices, torch.arange(2 * n), slices.lengths - 1, sigma=delta, options=options
    )  # (2n, 2n)
    return target[:n, n:], slices.lengths[:n].float().mean().item()


def _print(task: str, what: str, ml: torch.Tensor, started: float) -> None:
    """One line: Ml's R@1 over the documents and its right and wrong pairs' means."""
    n = len(ml)
    wrong = ml[~torch.eye(n, dtype=torch.bool)]
    print(f"  {task:8s} {what}: Ml R@1 {100 * recall_at_k(ml, torch.arange(n), 1):5.1f}  "
          f"right pair {ml.diag().mean():.3f}  wrong pairs {wrong.mean():.3f} "
          f"(90th pct {wrong.quantile(0.9):.3f})  "
          f"[{time.perf_counter() - started:.0f} s]")  # fmt: skip


if __name__ == "__main__":
    main()
