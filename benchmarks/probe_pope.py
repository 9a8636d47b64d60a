"""Is a model's POPE answer grounded, and do the frozen image features hold it? (issue 17)

Two diagnostics on a world (``sugar data world``) and a bundle:

1. ``--model M``: for every POPE probe of ``--split``, the log-likelihood of the answer "yes"
   minus that of "no" (:meth:`MLLM.score`), and the ROC AUC of that margin against the truth,
   over all probes and per negative setting (random / popular / adversarial: each setting's
   "no" probes against every "yes" probe), with the same probes' images shuffled as the control.
   AUC 0.5: the answer ignores the image; a positive mean margin with AUC 0.5: "always yes".
2. ``--features``: a logistic probe (L2, LBFGS, on standardised features) per colour and per
   shape, trained on the caption images of the train split to predict the object's presence,
   scored by test AUC: whether the frozen EfficientNet-Lite0 vectors (``--image-size``,
   ``--grid``) hold what POPE asks. Then POPE itself from the features: each probe of
   ``--split`` scored by a probe for its colour+shape *combination* (trained on the train
   images; combinations with fewer than 5 training images, the held-out ones among them, fall
   back to the next score) and by the sum of its colour and shape probes' logits (presence of
   both attributes, not of the bound object): the AUC over the POPE probes, per setting.

3. ``--model M --hidden``: a logistic probe on the model's last-layer hidden state at the
   answer position (the prompt's last token, whose logits write the answer), trained on the
   train split's POPE probes, scored by ``--split`` AUC (with the right images and shuffled
   ones). High AUC with an answer AUC near 0.5: the trunk carries the image's answer to that
   position and the LM head does not read it; near 0.5: the trunk never routes it there. Also
   the presence probes of 2. on the image token the trunk reads (after the projector).

    python benchmarks/probe_pope.py --world runs/demo/world --model runs/demo/generative/model \
        --cache runs/demo/cache/vision --features

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from sugar.data.jsonl import read_samples
from sugar.data.schema import Sample
from sugar.models.base import MLLM, prompt_of
from sugar.models.bundle import load_bundle
from sugar.models.tiny import FrozenGridVision


def auc(scores: torch.Tensor, truth: torch.Tensor) -> float:
    """P(score of a random positive > score of a random negative), ties counting one half."""
    positive, negative = scores[truth], scores[~truth]
    greater = (positive[:, None] > negative[None, :]).float()
    ties = (positive[:, None] == negative[None, :]).float()
    return float((greater + 0.5 * ties).mean())


def answer_margins(model: MLLM, samples: list[Sample], root: Path) -> torch.Tensor:
    """log p("yes") - log p("no") of each probe's answer. # (N,)"""

    def answering(sample: Sample, answer: str) -> Sample:
        segments = [s if s.role != "target" else replace(s, text=answer) for s in sample.segments]
        return replace(sample, segments=segments)

    margins = []
    with torch.no_grad():
        for start in range(0, len(samples), 32):
            chunk = samples[start : start + 32]
            yes = model.score([answering(s, "yes") for s in chunk], root)
            no = model.score([answering(s, "no") for s in chunk], root)
            margins.append(yes - no)
    return torch.cat(margins)


def with_shuffled_images(samples: list[Sample]) -> list[Sample]:
    """``samples`` with their (one) image each replaced by another sample's, a fixed
    permutation (seed 0): the control that shows whether an answer reads its image."""
    images = [next(seg.image for seg in s.segments if seg.image is not None) for s in samples]
    random.Random(0).shuffle(images)
    return [
        replace(s, segments=[replace(g, image=images[i]) if g.image else g for g in s.segments])
        for i, s in enumerate(samples)
    ]


def probe_model(args: argparse.Namespace) -> None:
    root = Path(args.world)
    model = load_bundle(args.model, feature_cache=args.cache).model.eval()
    samples = read_samples(root / "pope" / f"{args.split}.jsonl", root)
    truth = torch.tensor([s.meta["answer"] == "yes" for s in samples])
    margins = answer_margins(model, samples, root)
    print(f"{args.model} on pope/{args.split} ({len(samples)} probes, {int(truth.sum())} yes)")
    says_yes = float((margins > 0).float().mean())
    print(f"  mean margin yes-no {margins.mean():+.3f} nats, says yes {says_yes:.1%}")
    print(f"  AUC all {auc(margins, truth):.3f}", end="")
    for setting in ("random", "popular", "adversarial"):
        kinds = [s.meta.get("negative_kind") for s in samples]
        chosen = truth | torch.tensor([kind == setting for kind in kinds])
        if bool((chosen & ~truth).any()):
            print(f", {setting} {auc(margins[chosen], truth[chosen]):.3f}", end="")
    shuffled = with_shuffled_images(samples)
    print(f"; shuffled images: AUC {auc(answer_margins(model, shuffled, root), truth):.3f}")


def answer_states(model: MLLM, samples: list[Sample], root: Path) -> torch.Tensor:
    """Last-layer hidden state at each probe prompt's last token. # (N, D)"""
    states = []
    with torch.no_grad():
        for start in range(0, len(samples), 32):
            prompts = [prompt_of(s) for s in samples[start : start + 32]]
            batch = model.collate(prompts, root)
            hidden = model(batch).hidden.float()  # (B, T, D)
            last = batch.lengths - 1
            states.append(hidden[torch.arange(len(prompts)), last])
    return torch.cat(states)


def probe_hidden(args: argparse.Namespace) -> None:
    root = Path(args.world)
    model = load_bundle(args.model, feature_cache=args.cache).model.eval()
    train = read_samples(root / "pope" / "train.jsonl", root)
    test = read_samples(root / "pope" / f"{args.split}.jsonl", root)
    y_train = torch.tensor([s.meta["answer"] == "yes" for s in train])
    y_test = torch.tensor([s.meta["answer"] == "yes" for s in test])
    x_train, x_test = answer_states(model, train, root), answer_states(model, test, root)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-3
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    weight, bias = fit_logistic(x_train, y_train, args.l2)
    x_shuffled = (answer_states(model, with_shuffled_images(test), root) - mean) / std
    with torch.no_grad():
        fit = auc(x_train @ weight + bias, y_train)
        right = auc(x_test @ weight + bias, y_test)
        control = auc(x_shuffled @ weight + bias, y_test)
    presence_probes(args, model.image_tokens_of, "the image token after the projector")
    print(
        f"{args.model}: hidden-state probe at the answer position ({len(train)} train probes): "
        f"train AUC {fit:.3f}, {args.split} AUC {right:.3f}, shuffled images {control:.3f}"
    )


def fit_logistic(
    features: torch.Tensor, labels: torch.Tensor, l2: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-regularised logistic regression by LBFGS: the weight and the bias."""
    weight = torch.zeros(features.shape[1], requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], max_iter=200)
    target = labels.float()

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        logits = features @ weight + bias
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        loss = loss + l2 * weight.square().sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return weight.detach(), bias.detach()


Encoder = Callable[[list[str]], torch.Tensor]


def presence_probes(
    args: argparse.Namespace, encode: Encoder, what: str
) -> tuple[torch.Tensor, list[list[dict[str, str]]], torch.Tensor]:
    """Per-colour and per-shape presence probes on ``encode``'s vectors of the caption images
    (train -> test AUC, printed); returns the standardised train vectors, their objects and the
    standardised test vectors."""
    root = Path(args.world)

    def load(split: str) -> tuple[torch.Tensor, list[list[dict[str, str]]]]:
        rows = [json.loads(line) for line in (root / "caption" / f"{split}.jsonl").open()]
        paths = [
            str(root / next(s["image"] for s in row["segments"] if s.get("image"))) for row in rows
        ]
        with torch.no_grad():
            vectors = torch.cat([encode(paths[i : i + 128]) for i in range(0, len(paths), 128)])
        return vectors.float().flatten(1), [row["meta"]["scene"]["objects"] for row in rows]

    train, train_objects = load("train")
    test, test_objects = load("test")
    mean, std = train.mean(0), train.std(0) + 1e-3
    train, test = (train - mean) / std, (test - mean) / std
    print(f"logistic probes on {what} ({len(train)} train / {len(test)} test images)")
    for field in ("colour", "shape"):
        values = sorted({o[field] for objects in train_objects for o in objects})
        aucs = []
        for value in values:
            y_train = torch.tensor([any(o[field] == value for o in obs) for obs in train_objects])
            y_test = torch.tensor([any(o[field] == value for o in obs) for obs in test_objects])
            weight, bias = fit_logistic(train, y_train, args.l2)
            with torch.no_grad():
                aucs.append(auc(test @ weight + bias, y_test))
        listed = ", ".join(f"{v} {a:.3f}" for v, a in zip(values, aucs, strict=True))
        print(f"  {field}: mean test AUC {sum(aucs) / len(aucs):.3f} ({listed})")
    return train, train_objects, test


def probe_features(args: argparse.Namespace) -> None:
    vision = FrozenGridVision(args.image_size, args.grid, args.cache)
    train, train_objects, test = presence_probes(args, vision, "frozen features")
    vision.cache.flush()
    probe_pope_from_features(args, train, train_objects, test)


def probe_pope_from_features(
    args: argparse.Namespace,
    train: torch.Tensor,
    train_objects: list[list[dict[str, str]]],
    test: torch.Tensor,
) -> None:
    """POPE answered by linear probes on the frozen features (module doc, item 2)."""
    root = Path(args.world)
    rows = [json.loads(line) for line in (root / "caption" / f"{args.split}.jsonl").open()]
    row_of = {
        next(s["image"] for s in row["segments"] if s.get("image")): i for i, row in enumerate(rows)
    }
    samples = read_samples(root / "pope" / f"{args.split}.jsonl", root)
    truth = torch.tensor([s.meta["answer"] == "yes" for s in samples])
    logits: dict[tuple[str, str], torch.Tensor] = {}  # (field or "combo", value) -> test logits

    def probe(key: tuple[str, str], present: torch.Tensor) -> torch.Tensor:
        if key not in logits:
            weight, bias = fit_logistic(train, present, args.l2)
            logits[key] = (test @ weight + bias).detach()
        return logits[key]

    combo_scores, attribute_scores = [], []
    for sample in samples:
        image = next(seg.image for seg in sample.segments if seg.image is not None)
        row = row_of[image]
        colour, shape = sample.meta["object"].split(" ")
        has = {
            "colour": torch.tensor(
                [any(o["colour"] == colour for o in obs) for obs in train_objects]
            ),
            "shape": torch.tensor([any(o["shape"] == shape for o in obs) for obs in train_objects]),
            "combo": torch.tensor(
                [
                    any((o["colour"], o["shape"]) == (colour, shape) for o in obs)
                    for obs in train_objects
                ]
            ),
        }
        both = (
            probe(("colour", colour), has["colour"])[row]
            + probe(("shape", shape), has["shape"])[row]
        )
        attribute_scores.append(float(both))
        enough = int(has["combo"].sum()) >= 5
        combo_scores.append(
            float(probe(("combo", sample.meta["object"]), has["combo"])[row])
            if enough
            else float(both)
        )
    kinds = [s.meta.get("negative_kind") for s in samples]
    for name, values in (
        ("combination probe", combo_scores),
        ("colour + shape probes", attribute_scores),
    ):
        scores = torch.tensor(values)
        print(f"  POPE/{args.split} by {name}: AUC all {auc(scores, truth):.3f}", end="")
        for setting in ("random", "popular", "adversarial"):
            chosen = truth | torch.tensor([kind == setting for kind in kinds])
            if bool((chosen & ~truth).any()):
                print(f", {setting} {auc(scores[chosen], truth[chosen]):.3f}", end="")
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", required=True)
    parser.add_argument("--model", help="a bundle: its POPE answer margins")
    parser.add_argument("--split", default="test")
    parser.add_argument("--cache", help="the run's feature cache (model.feature_cache)")
    parser.add_argument("--features", action="store_true", help="probe the frozen features")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--grid", type=int, default=1)
    parser.add_argument("--hidden", action="store_true", help="probe the answer position's state")
    parser.add_argument("--l2", type=float, default=1e-3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.model:
        probe_hidden(args) if args.hidden else probe_model(args)
    if args.features:
        probe_features(args)


if __name__ == "__main__":
    main()
