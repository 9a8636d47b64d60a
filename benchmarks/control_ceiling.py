"""How far can query-side steering go on a base model? A reference point for the control branch.

The control branch (``sugar.control``) only moves the *query* vector: documents stay the base
model's, so an intent can be served only as far as the base's document vectors separate what it
asks for. This script measures that room directly, without the branch: per trained intent, a map
of the base model's query vector, ``q -> normalise(q * g)`` (``diag``: P gains) or ``q ->
normalise(q @ W)`` (``full``: P x P), initialised to the identity and trained with the branch's
loss (InfoNCE at the branch's temperature over the whole training corpus, every positive of a
query counted, its excluded candidates masked) on the training split's queries of that intent,
the step kept by R@1 on the validation split (checked every ``--every`` steps, step 0 included,
so a map that never helps stays the identity). Reported on the evaluation split, R@1 in %, per
intent and as the mean over the trained intents, beside the base model without instruction.

The maps are told the intent (one map per intent, no instruction to read), so they are the
easier problem; but they act on the final vector only, while the branch steers early layers, so
they are a reference point, not a bound. Held-out intents have no training queries and are
listed without a map.

Usage::

    python benchmarks/control_ceiling.py --model runs/demo/sugar/model --world runs/demo/world
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor
from torch.nn import functional as F

from sugar.eval.metrics import recall_at_k

Kind = Literal["diag", "full"]
KINDS: tuple[Kind, ...] = ("diag", "full")


def r_at_1(queries: Tensor, corpus: Tensor, relevance: Tensor, excluded: Tensor) -> float:
    """R@1 of query vectors (Q, P) against corpus vectors (C, P), excluded candidates never
    ranked: :func:`sugar.eval.metrics.recall_at_k` as the control run's validation reads it
    (:func:`sugar.control.train.intent_recall`; ties count against the query)."""
    scores = (queries @ corpus.T).masked_fill(excluded, -1e9)  # (Q, C)
    return recall_at_k(scores.detach().numpy(), relevance.numpy(), 1)


def _apply(kind: Kind, weight: Tensor, queries: Tensor) -> Tensor:
    mapped = queries * weight if kind == "diag" else queries @ weight
    return F.normalize(mapped, dim=-1)


def fit_map(
    kind: Kind,
    train: tuple[Tensor, Tensor, Tensor, Tensor],
    val: tuple[Tensor, Tensor, Tensor, Tensor],
    *,
    steps: int = 300,
    every: int = 25,
    lr: float = 1e-2,
    temperature: float = 0.05,
) -> tuple[Callable[[Tensor], Tensor], int]:
    """A query map trained on ``train`` = (queries (Q, P), corpus (C, P), relevance (Q, C),
    excluded (Q, C)) and the step (0 = the identity) kept by mean R@1 on ``val`` (same layout;
    the first best step wins). Returns ``(map, step)``."""
    queries, corpus, relevance, excluded = train
    if not bool(relevance.any(dim=1).all()):
        raise ValueError("every training query needs a relevant candidate")
    p = queries.shape[1]
    weight = torch.nn.Parameter(torch.ones(p) if kind == "diag" else torch.eye(p))
    optimiser = torch.optim.Adam([weight], lr=lr)
    best, best_step, kept = -1.0, 0, weight.detach().clone()
    for step in range(steps + 1):
        if step % every == 0 or step == steps:
            with torch.no_grad():
                score = r_at_1(_apply(kind, weight, val[0]), *val[1:])
            if score > best:
                best, best_step, kept = score, step, weight.detach().clone()
        if step == steps:
            break
        logits = (_apply(kind, weight, queries) @ corpus.T / temperature).masked_fill(
            excluded, float("-inf")
        )  # (Q, C)
        positive = logits.masked_fill(~relevance, float("-inf")).logsumexp(dim=1)
        loss = (logits.logsumexp(dim=1) - positive).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return (lambda q: _apply(kind, kept, q)), best_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a sugar bundle with a projector")
    parser.add_argument("--world", required=True, help="a root with instructed/ files")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--val-split", default="val")
    parser.add_argument("--eval-split", default="test")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--temperature", type=float, default=0.05, help="the branch's (0.05)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    from sugar.data.instructed import read_instructed
    from sugar.embed import embed_vectors
    from sugar.eval.tasks import load_eval_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = load_eval_model(args.model)
    if model.projector is None:
        raise SystemExit(f"{args.model}: no retrieval projector, nothing embeds")
    world = Path(args.world)
    splits = dict.fromkeys((args.train_split, args.val_split, args.eval_split))
    parts: dict[str, dict[str, tuple[Tensor, Tensor, Tensor, Tensor]]] = {}
    heldout: set[str] = set()
    order: list[str] = []
    for split in splits:
        data = read_instructed(world / "instructed" / f"{split}.jsonl", world)
        options = {"batch_size": model.batch_size, "image_pool": model.image_pool}
        queries = embed_vectors(model.backbone, model.projector, data.queries, world, **options)
        corpus = embed_vectors(model.backbone, model.projector, data.corpus, world, **options)
        intents = [str(q.meta.get("intent", "user")) for q in data.queries]
        heldout |= {i for q, i in zip(data.queries, intents, strict=True)
                    if q.meta.get("heldout_intent")}  # fmt: skip
        order += [i for i in dict.fromkeys(intents) if i not in order]
        parts[split] = {}
        for intent in dict.fromkeys(intents):
            rows = torch.tensor([i == intent for i in intents])
            relevance, excluded = data.relevance[rows], data.excluded[rows]
            parts[split][intent] = (queries[rows], corpus, relevance, excluded)
    print(f"R@1 in % on {args.eval_split} (maps trained on {args.train_split}, step kept on "
          f"{args.val_split}); step kept in brackets")  # fmt: skip
    print("| intent | n | base | diag map | full map |\n|---|---|---|---|---|")
    means: dict[str, list[float]] = {"base": [], "diag": [], "full": []}
    for intent in order:
        if intent not in parts[args.eval_split]:
            continue
        test = parts[args.eval_split][intent]
        base = 100 * r_at_1(*test)
        cells = [f"{base:.1f}"]
        trainable = intent in parts[args.train_split] and intent in parts[args.val_split]
        for kind in KINDS:
            if not trainable:
                cells.append("-")
                continue
            mapped, step = fit_map(
                kind, parts[args.train_split][intent], parts[args.val_split][intent],
                steps=args.steps, every=args.every, lr=args.lr, temperature=args.temperature,
            )  # fmt: skip
            with torch.no_grad():
                score = 100 * r_at_1(mapped(test[0]), *test[1:])
            cells.append(f"{score:.1f} ({step})")
            means[kind].append(score)
        if trainable:
            means["base"].append(base)
        label = f"{intent} (held out)" if intent in heldout else intent
        print(f"| {label} | {len(test[0])} | " + " | ".join(cells) + " |")
    if means["base"]:
        row = [sum(v) / len(v) for v in means.values()]
        print("| mean of the trained intents | | " + " | ".join(f"{x:.1f}" for x in row) + " |")


if __name__ == "__main__":
    main()
