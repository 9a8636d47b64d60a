"""Speed of the built-in small MLLM: training step time per sample type and generation speed.

Prints figures; it is not a test. The default architecture (``ModelConfig``: width 192, 4
layers, vocabulary 1024 trained on the world's captions and stories) on a generated world
(64 px images): forward + backward + AdamW step at batch 32 for captions, stories (5 captions,
4 images) and needle documents, for both vision paths, with the frozen path's feature cache
warm (features are computed once per image; the first pass is not timed); then greedy
generation tokens/s (KV cache on and off) for 32 captions.

    python benchmarks/bench_model.py                 # 1 and 2 threads
    python benchmarks/bench_model.py --threads 1

Timed warm, the median of ``--repeats`` runs. Target (issue 6): a caption batch of 32 in under
0.3 s on 2 cores.
"""

from __future__ import annotations

import argparse
import tempfile
from functools import partial
from pathlib import Path

import torch
from _timing import median_time  # benchmarks/_timing.py (scripts run from their folder)

from sugar.config import ModelConfig
from sugar.data.collate import Batch
from sugar.data.jsonl import read_samples
from sugar.data.schema import Sample
from sugar.data.world import generate_world
from sugar.models.base import target_log_likelihood
from sugar.models.tiny import TinyMLLM
from sugar.models.tokenizer import Tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-model-")) / "world"
    generate_world(root, seed=0, train_per_task=200, val_per_task=0, test_per_task=0)
    tasks = {
        task: read_samples(root / task / "train.jsonl", root)
        for task in ("caption", "story", "needle")
    }
    texts = [
        s.text for task in ("caption", "story") for x in tasks[task] for s in x.segments if s.text
    ]
    tokenizer = Tokenizer.train(texts, vocab_size=ModelConfig().vocab_size)
    print(f"torch {torch.__version__}; tokenizer {tokenizer.vocab_size} ids; batch {args.batch}")
    print(
        f"{'threads':>7} {'vision':>12} {'task':>8} {'tokens':>7} {'step ms':>8} {'samples/s':>10}"
    )
    for threads in args.threads:
        torch.set_num_threads(threads)
        for vision in ("frozen_grid", "vit"):
            kwargs = ModelConfig(vision=vision, feature_cache=None).tiny_kwargs()
            model = TinyMLLM(tokenizer, **kwargs).train()
            optimiser = torch.optim.AdamW(model.parameter_groups()["trainable"], lr=1e-4)
            for task, samples in tasks.items():
                batch = model.collate(samples[: args.batch], root)

                step = partial(_train_step, model, optimiser, batch)
                seconds = median_time(step, args.repeats)
                print(
                    f"{threads:>7} {vision:>12} {task:>8} {tuple(batch.input_ids.shape)[1]:>7} "
                    f"{1000 * seconds:>8.1f} {args.batch / seconds:>10.1f}"
                )
        model = TinyMLLM(tokenizer, **ModelConfig(feature_cache=None).tiny_kwargs()).eval()
        prompts = tasks["caption"][: args.batch]
        for use_cache in (True, False):
            generated: list[list[int]] = []
            run = partial(_generate_into, generated, model, prompts, root, use_cache)
            seconds = median_time(run, max(1, args.repeats // 2))
            count = sum(len(row) for row in generated)
            print(
                f"{threads:>7} generation (KV cache {'on' if use_cache else 'off'}): "
                f"{count / seconds:.0f} tokens/s ({count} tokens for {len(prompts)} captions, "
                f"untrained model, up to 24 each)"
            )


def _train_step(model: TinyMLLM, optimiser: torch.optim.Optimizer, batch: Batch) -> None:
    out = model(batch)
    loss = -target_log_likelihood(out.logits, batch.labels).sum()
    loss.backward()
    optimiser.step()
    optimiser.zero_grad()


def _generate_into(
    out: list[list[int]], model: TinyMLLM, prompts: list[Sample], root: Path, use_cache: bool
) -> None:
    out[:] = model.generate_ids(prompts, root, max_new_tokens=24, use_cache=use_cache)


if __name__ == "__main__":
    main()
