"""Can the offline teacher tell the world's hard negatives apart if its head is trained on them?
(issue 17: Sugar's L_d regresses onto the teacher's similarities, so a kind the teacher cannot
tell apart gives Sugar no signal.)

The offline teacher is a cross-modal head over two frozen encoders (EfficientNet-Lite0 pooled
features, all-MiniLM-L6-v2 sentence vectors; :mod:`sugar.teachers.training`). This script trains
that head as ``sugar train-teacher`` does (symmetric InfoNCE, learnable temperature, AdamW,
300 steps of 256, dropout 0.7, the same-picture mask) on the world's training captions, once as
shipped and once with every stated ``meta.negatives`` caption of each pair added as an
image->text candidate (the hard negatives CAFe-style's ``contrastive.hard_negatives`` uses), and
prints, per seed, the head's pairwise accuracy per negative kind on a held-out split (image vs
caption and its negative, by cosine), its text->image R@1 there, and the frozen text encoder's
cosine between a caption and its negative.

    python benchmarks/teacher_hard_negatives.py --world runs/demo/world \
        --cache runs/demo/cache/teachers [--split val] [--seeds 0,1,2] [--grid 1]

Prints figures; asserts nothing. Each head trains in seconds once the features are cached.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import Tensor

from sugar.data.jsonl import read_samples
from sugar.losses.contrastive import contrastive_loss_without_false_negatives, same_image_mask
from sugar.teachers import ImageFeatures, TextFeatures
from sugar.teachers.heads import CrossModalHead
from sugar.teachers.training import image_feature_table

KINDS = ("attribute_swap", "relation_swap", "wrong_colour", "wrong_count")


def _features(
    world: Path, split: str, images: ImageFeatures, texts: TextFeatures
) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor], dict[str, Tensor]]:
    """(N, Fi) image features, (N,) picture rows, (N, Ft) caption features, and per kind the
    (N, Ft) features of each caption's negative (the caption itself where it has none) and an
    (N,) mask of the captions that have one."""
    samples = read_samples(world / "caption" / f"{split}.jsonl", world)
    paths = [str(s.images[0]) for s in samples]
    captions = [s.segments[-1].text or "" for s in samples]
    table, pictures = image_feature_table(images, world, paths)
    stated = [{n["kind"]: n["caption"] for n in s.meta.get("negatives", [])} for s in samples]
    negatives = {
        k: texts([n.get(k, c) for n, c in zip(stated, captions, strict=True)]) for k in KINDS
    }
    has = {k: torch.tensor([k in n for n in stated]) for k in KINDS}
    return table[pictures], pictures, texts(captions), negatives, has


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", type=Path, required=True, help="a world (sugar data world)")
    parser.add_argument("--cache", type=Path, default=None, help="teacher feature cache")
    parser.add_argument("--split", default="val", help="held-out split to score (val)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (0,1,2)")
    parser.add_argument("--grid", type=int, default=1, help="image feature grid (1)")
    parser.add_argument("--steps", type=int, default=300, help="head steps (300, as shipped)")
    args = parser.parse_args()
    images = ImageFeatures(128, args.grid, args.cache)
    texts = TextFeatures(args.cache)
    train_i, train_p, train_t, train_n, _ = _features(args.world, "train", images, texts)
    test_i, _, test_t, test_n, test_has = _features(args.world, args.split, images, texts)
    cosine = torch.nn.functional.cosine_similarity
    print(f"frozen MiniLM cosine, caption vs its negative ({args.split}):", end="")
    for kind in KINDS:
        mask = test_has[kind]
        print(f" {kind} {cosine(test_t[mask], test_n[kind][mask]).mean():.4f}", end="")
    print(f"\n{'head':>22} {'seed':>4} {'t2i R@1':>8} " + " ".join(f"{k:>14}" for k in KINDS))
    n = len(train_t)
    for hard in (False, True):
        for seed in (int(s) for s in args.seeds.split(",")):
            torch.manual_seed(seed)
            head = CrossModalHead(images.dim, texts.dim, 256, 0.7)
            head.set_feature_statistics(train_i, train_t)
            optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.1)
            order = torch.Generator().manual_seed(seed)
            permutation, cursor, size = torch.randperm(n, generator=order), 0, min(256, n)
            head.train()
            for _ in range(args.steps):
                if cursor + size > n:
                    permutation, cursor = torch.randperm(n, generator=order), 0
                batch = permutation[cursor : cursor + size]
                cursor += size
                negatives = None
                if hard:  # (B, 4, D): each pair's stated negatives (its own caption if none)
                    negatives = torch.stack(
                        [head.encode_text(train_n[k][batch]) for k in KINDS], dim=1
                    )
                loss = contrastive_loss_without_false_negatives(
                    head.encode_image(train_i[batch]), head.encode_text(train_t[batch]),
                    head.logit_scale, same_image_mask(train_p[batch].tolist()), negatives,
                )["contrastive_loss"]  # fmt: skip
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            head.eval()
            with torch.no_grad():
                image, caption = head.encode_image(test_i), head.encode_text(test_t)
                right = (image * caption).sum(-1)
                r1 = ((image @ caption.T).argmax(0) == torch.arange(len(caption))).float().mean()
                row = []
                for kind in KINDS:
                    wrong = (image * head.encode_text(test_n[kind])).sum(-1)
                    row.append((right > wrong)[test_has[kind]].float().mean().item())
            name = "with hard negatives" if hard else "as shipped"
            print(
                f"{name:>22} {seed:>4} {100 * r1:>8.1f} "
                + " ".join(f"{100 * a:>14.1f}" for a in row)
            )


if __name__ == "__main__":
    main()
