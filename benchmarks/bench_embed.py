"""Embedding throughput, and the prefix-embedding speed-up of one pass over per-prefix passes.

Prints figures; it is not a test. The default architecture (``ModelConfig``: width 192, 4
layers, ``frozen_grid`` vision, vocabulary 1024 trained on the world's texts) with an untrained
retrieval projector (2-layer MLP, 256-d; speed does not depend on the weights), on a generated
world, one torch thread by default, the frozen vision features warm in memory (computed once per
image; the first pass is not timed), the median of ``--repeats`` runs of
:func:`sugar.embed.embed_samples` at batch ``--batch``:

- throughput in samples/s for captions ([image, caption]) and stories (5 images, 5 captions);
- on 5-slice stories (each story cut after its 5th slice, slices = segments): every prefix
  from one pass (``prefixes=True``: 5 vectors per story) against embedding each of the 5
  prefixes as its own sample (5x the samples, batched the same way); the speed-up is the ratio
  of the two times, and the largest difference between the two sets of vectors is printed.

    python benchmarks/bench_embed.py
    python benchmarks/bench_embed.py --threads 2 --count 128
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Literal

import torch
from _timing import median_time  # benchmarks/_timing.py (scripts run from their folder)
from _tiny import tiny_embedder  # benchmarks/_tiny.py (scripts run from their folder)

from sugar.data.jsonl import read_samples
from sugar.data.schema import Sample
from sugar.data.slices import slices
from sugar.data.world import generate_world
from sugar.embed import embed_samples

Slicing = Literal["sentence", "segment"]


def _cut(sample: Sample, end: int) -> Sample:
    """``sample`` up to and including slice ``end`` (slices = segments)."""
    pieces = slices(sample, by="segment")
    return Sample(f"{sample.id}:{end}", list(sample.segments[: pieces[end].segment + 1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--count", type=int, default=200, help="samples per task")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    root = Path(tempfile.mkdtemp(prefix="bench-embed-")) / "world"
    generate_world(root, seed=0, train_per_task=args.count, val_per_task=0, test_per_task=0)
    tasks = {task: read_samples(root / task / "train.jsonl", root) for task in ("caption", "story")}
    texts = [s.text for samples in tasks.values() for x in samples for s in x.segments if s.text]
    model, projector = tiny_embedder(texts)
    print(
        f"torch {torch.__version__}; {args.threads} thread(s); width {model.hidden_size}; "
        f"batch {args.batch}; median of {args.repeats}"
    )

    def embed(
        samples: list[Sample], prefixes: bool = False, by: Slicing = "sentence"
    ) -> torch.Tensor | list[torch.Tensor]:
        return embed_samples(
            model, projector, samples, root, batch_size=args.batch, prefixes=prefixes,
            slice_text_by=by,
        )  # fmt: skip

    print(f"{'task':>8} {'samples':>8} {'seconds':>8} {'samples/s':>10}")
    for task, samples in tasks.items():
        seconds = median_time(lambda samples=samples: embed(samples), args.repeats)
        print(f"{task:>8} {len(samples):>8} {seconds:>8.3f} {len(samples) / seconds:>10.1f}")

    stories = [_cut(story, 4) for story in tasks["story"]]
    per_prefix = [_cut(story, end) for story in stories for end in range(5)]
    one_pass = median_time(lambda: embed(stories, prefixes=True, by="segment"), args.repeats)
    separate = median_time(lambda: embed(per_prefix, by="segment"), args.repeats)
    rows = embed(stories, prefixes=True, by="segment")
    alone = embed(per_prefix, by="segment")
    assert isinstance(rows, list) and isinstance(alone, torch.Tensor)
    difference = float((torch.cat(rows) - alone).abs().max())
    print(
        f"5-slice stories ({len(stories)} stories, {5 * len(stories)} prefixes): one pass "
        f"{one_pass:.3f} s ({5 * len(stories) / one_pass:.0f} prefixes/s), each prefix alone "
        f"{separate:.3f} s ({5 * len(stories) / separate:.0f} prefixes/s): speed-up "
        f"{separate / one_pass:.2f}x; max |difference| {difference:.2e}"
    )


if __name__ == "__main__":
    main()
