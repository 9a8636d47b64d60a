"""Hugging Face backbones at tiny random configs vs the built-in tiny MLLM, on CPU, 1 thread.

Prints figures; it is not a test. Run from the repository root:

    python benchmarks/bench_hf.py [--batch 4 --repeats 10]

Per backbone, per sample of a batch of caption pairs and 3-image interleaved samples (the
tests' tiny checkpoints: hidden 32, 2 layers, 32 px vision towers, LoRA rank 4):

- ``fwd``: the adapter's forward (collated batch given), no gradient;
- ``fwd+bwd``: forward, a loss on logits and hidden states, backward;
- ``plain``: transformers' own forward on the same inputs (``model(**inputs).logits``);
- ``overhead``: (collate + forward + slice states of every prefix) / (plain forward +
  processor-side inputs) - 1, where "processor-side inputs" is the image processor call that
  any pipeline pays, so the ratio is the cost of span bookkeeping and hidden-state extraction.

Tiny configs measure the adapter's Python-side overhead, not real-model speed: at 7B the
forward dominates and these ratios shrink. Nothing here says anything about GPU speed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from _timing import median_time  # benchmarks/_timing.py (scripts run from their folder)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' checkpoint builders

from tests.models.hf_checkpoints import (
    WORDS,
    llava_checkpoint,
    qwen2vl_checkpoint,
    write_images,
)

from sugar.data.schema import Sample, Segment
from sugar.models.base import MLLM, backbone_class
from sugar.models.hf import HFMLLM
from sugar.models.prefix import all_prefixes, slice_states
from sugar.models.tiny import TinyMLLM
from sugar.models.tokenizer import Tokenizer


def samples(count: int) -> list[Sample]:
    pair = [Segment.image_("img/square.png"), Segment.text_("a red circle . A cat !", "target")]
    story = [
        Segment.text_("the picture shows a cat ."), Segment.image_("img/wide.png"),
        Segment.image_("img/tall.png"), Segment.text_("a dog . A star !"),
        Segment.image_("img/big.png"),
    ]  # fmt: skip
    return [Sample(f"s{i}", pair if i % 2 == 0 else story) for i in range(count)]


def time_model(model: MLLM, batch_samples: list[Sample], root: Path, repeats: int) -> dict:
    batch = model.collate(batch_samples, root)
    b, e = all_prefixes(batch.spans)

    def forward() -> None:
        with torch.no_grad():
            model(batch)

    def backward() -> None:
        output = model(batch)
        (output.logits.float().pow(2).mean() + output.hidden.pow(2).mean()).backward()
        model.zero_grad(set_to_none=True)

    def ours() -> None:
        with torch.no_grad():
            fresh = model.collate(batch_samples, root)
            slice_states(model(fresh).hidden, fresh.spans, b, e)

    figures = {
        "fwd": median_time(forward, repeats),
        "fwd+bwd": median_time(backward, repeats),
        "ours": median_time(ours, repeats),
    }
    if isinstance(model, HFMLLM):
        from PIL import Image

        inputs = model._inputs(batch)
        paths = batch.images

        def plain() -> None:
            with torch.no_grad():
                model.image_processor(
                    images=[Image.open(p).convert("RGB") for p in paths], return_tensors="pt"
                )
                model.base(**inputs)

        figures["plain"] = median_time(plain, repeats)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    batch_samples = samples(args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_images(root)
        llava_checkpoint(root / "hf-llava")
        llava_checkpoint(root / "hf-llava-next", next_=True)
        qwen2vl_checkpoint(root / "hf-qwen2-vl")
        models: dict[str, MLLM] = {
            "tiny (vit, width 32)": TinyMLLM(
                Tokenizer.train([" ".join(WORDS)] * 20, vocab_size=300),
                width=32,
                layers=2,
                heads=2,
                vision="vit",
                image_size=32,
                vit_patch=8,
                vit_width=32,
                vit_layers=2,
            ),
        }
        for family in ("hf-llava", "hf-llava-next", "hf-qwen2-vl"):
            models[family] = backbone_class(family).create(str(root / family), lora_rank=4)
        print(f"per sample, batch {args.batch} (caption pairs and 3-image samples), 1 thread")
        print(f"{'backbone':<22}{'tokens':>8}{'fwd ms':>9}{'fwd+bwd ms':>12}{'overhead':>10}")
        for name, model in models.items():
            model.train()
            figures = time_model(model, batch_samples, root, args.repeats)
            tokens = int(model.collate(batch_samples, root).lengths.float().mean())
            per = 1000 / args.batch
            overhead = (
                f"{figures['ours'] / figures['plain'] - 1:+.0%}" if "plain" in figures else "n/a"
            )
            print(
                f"{name:<22}{tokens:>8}{figures['fwd'] * per:>9.2f}"
                f"{figures['fwd+bwd'] * per:>12.2f}{overhead:>10}"
            )


if __name__ == "__main__":
    main()
