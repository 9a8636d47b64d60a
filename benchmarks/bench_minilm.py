"""Step costs of the MiniLM built-in model: forward + backward of a generative batch, and of the
retrieval micro-batch encoded as one padded batch vs per role in length-sorted chunks (the
objective's way). Prints figures; not a test.

    python benchmarks/bench_minilm.py [--threads 1] [--out /tmp/bench_minilm]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from _timing import median_time

from sugar.data.jsonl import read_samples
from sugar.data.world import generate_world
from sugar.losses import LossWeights, StructureOptions
from sugar.losses.generative import generative_loss
from sugar.models.minilm import MiniLMMLLM
from sugar.train.objective import SugarObjective
from sugar.train.retrieval import retrieval_pair


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = (args.out or Path(tempfile.mkdtemp())) / "world"
    if not (root / "manifest.json").is_file():
        generate_world(root, seed=0, train_per_task=160, val_per_task=4, test_per_task=4)
    captions = read_samples(root / "caption" / "train.jsonl", root)
    vqa = read_samples(root / "vqa" / "train.jsonl", root)
    texts = [g.text for s in captions + vqa for g in s.segments if g.text]
    options = {"image_size": 128, "grid": 1, "feature_cache": None, "dropout": 0.0}
    model = MiniLMMLLM.build(texts, {**options, "max_positions": 512}, {})
    model.prepare(captions, root)
    model.train()
    objective = SugarObjective(model.hidden_size, LossWeights(alpha=0.0, contrastive=1.0),
                               StructureOptions())  # fmt: skip
    generative = captions[:16] + vqa[:16]
    pairs = [view for source in captions[100:164] for view in retrieval_pair(source)]

    def generative_step() -> None:
        batch = model.collate(generative, root)
        out = model(batch)
        generative_loss(out.logits, batch.labels)["lm_loss"].backward()

    def padded_step() -> None:
        batch = model.collate(pairs, root)
        model(batch).hidden.pow(2).mean().backward()

    def chunked_step() -> None:
        states = objective.encode_chunks(model, pairs, root)
        sum(hidden.pow(2).mean() for _, hidden, _ in states.chunks).backward()

    for name, step in (
        ("generative batch of 32 (captions + VQA), fwd+bwd", generative_step),
        ("retrieval batch of 64 caption pairs, one padded pass, fwd+bwd", padded_step),
        ("retrieval batch of 64 caption pairs, per role in sorted chunks, fwd+bwd", chunked_step),
    ):
        seconds = median_time(step, repeats=3)
        print(f"{name}: {1000 * seconds:.0f} ms")
        model.zero_grad(set_to_none=True)
    print(f"output vocabulary: {model.output_vocab_size} of {model.tokenizer.vocab_size} ids")


if __name__ == "__main__":
    main()
