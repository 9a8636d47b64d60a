"""How well does a teacher rank captions from what L_d's slices give it? (issue 17: why the
CAFe-style model as Sugar's teacher lowered caption retrieval under sentence slices)

With ``structure.slice_text_by: sentence`` the teacher embeds each sentence of a caption alone;
with ``segment`` each text segment (a whole caption) is one slice. For each config given, this
script embeds the validation captions' images and texts with the config's teacher (through its
cache) and prints the teacher's own text->image R@1 among them, once from each caption's first
sentence alone and once from the whole caption, plus the cosine of right pairs and of wrong ones.

    python benchmarks/teacher_slicing.py -c runs/sugar/config.yaml -c runs/distil/config.yaml \
        [--limit 200]

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from sugar.config import load_config
from sugar.data.jsonl import read_samples
from sugar.data.schema import Sample, Segment
from sugar.eval.metrics import recall_at_k
from sugar.teachers.lookup import teacher_lookup_from_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", action="append", required=True, help="a run config")
    parser.add_argument("--limit", type=int, default=200, help="validation captions (200)")
    args = parser.parse_args()
    for path in args.config:
        cfg = load_config(path, ["structure.slice_text_by=sentence"])
        root = Path(cfg.data.root)
        samples = read_samples(root / cfg.data.val[0], root)[: args.limit]
        images = [Sample(f"i{i}", [Segment.image_(s.images[0])]) for i, s in enumerate(samples)]
        texts = [s.segments[-1].text or "" for s in samples]
        lookup = teacher_lookup_from_config(cfg)
        image = lookup(images, root).cross[:, 0]  # (N, Dc)
        by_sentence = lookup([Sample(f"t{i}", [Segment.text_(t)]) for i, t in enumerate(texts)],
                             root)  # fmt: skip
        first = by_sentence.cross[:, 0]  # each caption's first sentence
        whole_cfg = load_config(path, ["structure.slice_text_by=segment"])
        whole = teacher_lookup_from_config(whole_cfg)(
            [Sample(f"t{i}", [Segment.text_(t)]) for i, t in enumerate(texts)], root
        ).cross[:, 0]
        own = torch.arange(len(samples))
        sentences = by_sentence.lengths.float().mean().item()
        print(f"{path}: teacher {cfg.teacher.family}, {len(samples)} captions, "
              f"{sentences:.2f} sentences each")  # fmt: skip
        for name, text in (("first sentence", first), ("whole caption", whole)):
            scores = text @ image.T
            off = ~torch.eye(len(samples), dtype=torch.bool)
            print(f"  {name:15s} t2i R@1 {100 * recall_at_k(scores, own, 1):5.1f}  "
                  f"right-pair cosine {scores.diag().mean():.3f}  "
                  f"wrong-pair cosine {scores[off].mean():.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
