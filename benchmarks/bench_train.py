"""Cost of L_d in a training step: step time with and without it, with the teacher cache warm.

Prints figures; it is not a test. Needs a world and a trained offline teacher head:

    sugar data world --out runs/world --size 1000
    sugar train-teacher --data runs/world/caption/train.jsonl --root runs/world --out runs/teacher
    python benchmarks/bench_train.py [--world runs/world --teacher runs/teacher --steps 20]

Default architecture, batch 32 of captions, stories and VQA (the default views), 1 thread. The
same micro-batches are timed with alpha = 0 (L_g only) and alpha = 1 (L_g + L_d), after one
warm-up pass over them fills the teacher caches (the persistent one and the lookup's in-memory
layer). Also timed alone: the teacher lookup and the target matrix (GAK DP). Target (issue 8):
L_d adds at most 5 % per step with the cache warm.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from sugar.config import load_config
from sugar.data.slices import slices
from sugar.data.views import apply_views
from sugar.losses import LossWeights, StructureOptions
from sugar.losses.structure import sample_prefixes, structure_targets
from sugar.teachers.lookup import teacher_lookup_from_config
from sugar.train.objective import SugarObjective
from sugar.train.run import (
    batch_indices,
    build_model,
    read_files,
    resolve_targets,
    seeded,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world", default="runs/world")
    parser.add_argument("--teacher", default="runs/teacher")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(
        None,
        [f"data.root={args.world}", f"teacher.head_dir={args.teacher}", "model.feature_cache=null"],
    )
    root = Path(args.world)
    train_samples = read_files(root, cfg.data.train)
    model = build_model(cfg, train_samples)
    lookup = teacher_lookup_from_config(cfg)
    delta, medians, _ = resolve_targets(cfg, lookup, train_samples, root)
    batches = [
        apply_views(
            [
                train_samples[i]
                for i in batch_indices(len(train_samples), args.batch, 0, step * args.batch)
            ],
            cfg.data.view_weights,
            0,
            step,
        )
        for step in range(args.steps)
    ]
    options = StructureOptions(gak_normalisation=cfg.structure.gak_normalisation)
    objectives = {
        alpha: SugarObjective(
            model.hidden_size,
            LossWeights(alpha=alpha),
            options,
            delta=delta,
            teacher=lookup,
            medians=medians,
        )
        for alpha in (0.0, 1.0)
    }
    for batch in batches:  # warm-up: vision features and teacher vectors into the caches
        lookup(batch, root)
        model.collate(batch, root)
        model(model.collate(batch, root))
    cache = lookup.cache
    cache.hits = cache.misses = 0
    times: dict[float, list[float]] = {0.0: [], 1.0: []}
    for step, batch in enumerate(batches):
        for alpha, objective in objectives.items():
            start = time.perf_counter()
            parts = objective(model, batch, root, seeded(0, step, 0))
            parts["loss"].backward()
            model.zero_grad(set_to_none=True)
            objective.zero_grad(set_to_none=True)
            times[alpha].append(time.perf_counter() - start)
    lookup_times, target_times = [], []
    for step, batch in enumerate(batches):
        start = time.perf_counter()
        teacher_slices = lookup(batch, root)
        lookup_times.append(time.perf_counter() - start)
        counts = [len(slices(s)) for s in batch]
        b, e, _ = sample_prefixes(counts, 2, seeded(0, step, 0))
        start = time.perf_counter()
        structure_targets(teacher_slices, b, e, sigma=delta, medians=medians,
                          options=options)  # fmt: skip
        target_times.append(time.perf_counter() - start)
    plain, sugar = statistics.median(times[0.0]), statistics.median(times[1.0])
    print(f"batch {args.batch}, {args.steps} steps, median ms per step (forward + backward):")
    print(f"  L_g only        {1000 * plain:8.1f}   ({args.batch / plain:.1f} samples/s)")
    print(f"  L_g + L_d       {1000 * sugar:8.1f}   ({args.batch / sugar:.1f} samples/s)")
    print(f"  L_d adds        {100 * (sugar / plain - 1):8.1f} %   (target: <= 5 %)")
    print(
        f"  teacher lookup  {1000 * statistics.median(lookup_times):8.1f} ms (served from memory; "
        f"persistent cache: {cache.hits} hits, {cache.misses} misses after warm-up)"
    )
    print(f"  target matrix   {1000 * statistics.median(target_times):8.1f} ms")


if __name__ == "__main__":
    main()
