"""Speed of tokenizer training, collation and token-budget batching on synthetic stories.

Prints figures; it is not a test. Samples are short stories (2-4 images interleaved with 1-3
sentence captions, the last caption a target), like the built-in world's.

    python benchmarks/bench_collate.py            # 20,000 samples
    python benchmarks/bench_collate.py --quick    # 2,000 samples

Timed warm, the median of ``--repeats`` runs, one torch thread.
"""

from __future__ import annotations

import argparse
import random

import torch
from _timing import median_time  # benchmarks/_timing.py (scripts run from their folder)

from sugar.data.collate import batches_by_token_budget, collate
from sugar.data.schema import Sample, Segment
from sugar.models.tokenizer import Tokenizer

_ADJECTIVES = ["red", "blue", "green", "big", "small", "old"]
_NOUNS = ["cat", "dog", "square", "circle", "tree", "boat"]
_LINKS = ["sits left of", "runs near", "is on top of", "looks at"]


def _sentence(rng: random.Random) -> str:
    first, second = (f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}" for _ in range(2))
    return f"The {first} {rng.choice(_LINKS)} the {second}{rng.choice('.!?')}"


def _samples(count: int, seed: int = 0) -> list[Sample]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        segments: list[Segment] = []
        images = rng.randint(2, 4)
        for j in range(images):
            segments.append(Segment.image_(f"img/{i}_{j}.png"))
            text = " ".join(_sentence(rng) for _ in range(rng.randint(1, 3)))
            segments.append(Segment.text_(text, role="target" if j == images - 1 else "context"))
        out.append(Sample(f"s{i}", segments, task="story"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    count = 2_000 if args.quick else 20_000
    samples = _samples(count)
    texts = [s.text for sample in samples for s in sample.segments if s.text is not None]

    seconds = median_time(lambda: Tokenizer.train(texts, vocab_size=1024), args.repeats)
    print(f"train tokenizer  {len(texts):>7} texts           {seconds * 1e3:9.1f} ms")
    tokenizer = Tokenizer.train(texts, vocab_size=1024)

    batch = samples[:64]
    seconds = median_time(lambda: collate(batch, tokenizer, image_tokens=4), args.repeats)
    shape = tuple(collate(batch, tokenizer, image_tokens=4).input_ids.shape)
    print(
        f"collate          64 samples -> {shape}  {seconds * 1e3:9.2f} ms"
        f"  ({64 / seconds:,.0f} samples/s)"
    )

    for window in (None, 256):

        def group(window: int | None = window) -> list[list[Sample]]:
            return list(batches_by_token_budget(samples, tokenizer, 4, 8192, sort_window=window))

        seconds = median_time(group, max(1, args.repeats // 2))
        batches = group()
        lengths = [collate(b, tokenizer, 4).input_ids.numel() for b in batches[:200]]
        padded = sum(lengths)
        real = sum(int(collate(b, tokenizer, 4).lengths.sum()) for b in batches[:200])
        print(
            f"budget 8192      sort_window={window!s:>4} {len(batches):>5} batches"
            f"  {seconds * 1e3:9.1f} ms  ({count / seconds:,.0f} samples/s,"
            f" padding {1 - real / padded:.1%} over the first 200 batches)"
        )


if __name__ == "__main__":
    main()
