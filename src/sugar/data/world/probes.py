"""VQA questions and POPE presence probes, asked about the split's pool images.

**VQA** (``vqa/<split>.jsonl``): ``[image, question (context), answer (target)]``, meta
``{"question_type", "answer", "scene", "split", "heldout_combo"}``; the type cycles colour,
shape, count, relation; sample i asks about pool scene i (the next one that admits its type).
A file longer than the pool (``train_probes_per_image`` > 1) asks each scene again, the type
shifted by one per pass, so a scene's questions differ in type.
Answers come from :func:`~sugar.data.world.questions.answer_question`.

**POPE** (``pope/<split>.jsonl``, Li et al., EMNLP 2023): the same layout with ``yes``/``no``
answers to ``Is there a <colour> <shape> in the image?``; meta ``negative_kind`` is the setting
of a ``no`` (``random``, ``popular`` or ``adversarial``) and ``null`` for a ``yes``.

- ``val`` and ``test`` come in fours on one pool image: a ``yes`` about a present object, then a
  ``no`` about an absent one for each setting. As in POPE, the three settings share their
  positive questions: a setting's balanced set is every ``yes`` plus its own ``no``, and the
  evaluation (``sugar.eval.tasks.pope``) scores each setting on that set.
- ``train`` comes in pairs on one pool image, a ``yes`` then a ``no`` whose setting cycles
  random, popular, adversarial from pair to pair: half the answers are ``yes``, so a model
  learns no "no" prior (fours would make 75 % of the training answers ``no``).

An *object* is a colour+shape combination; with ``F`` its number of training pool scenes and
``C(a, b)`` the number holding both:

- random: an absent combination, uniformly;
- popular: uniformly among the ``top_k`` absent combinations of highest ``F``;
- adversarial: uniformly among the ``top_k`` absent combinations of highest ``sum_p C(p, x)``
  over the present combinations ``p``.

Ties rank by vocabulary order. The statistics are counted over the ``train`` pool (the world's
training images) and saved as ``pope/stats.json``; in ``train`` only non-held-out combinations
are asked about.
"""

from __future__ import annotations

import random
from typing import Any

from sugar.data.schema import Sample, Segment
from sugar.data.world.context import Pool, SplitContext
from sugar.data.world.questions import (
    answer_question,
    colour_question,
    count_question,
    presence_question,
    relation_question,
    shape_question,
)
from sugar.data.world.scene import Scene
from sugar.data.world.vocab import Combo, Vocabulary

__all__ = [
    "POPE_SETTINGS",
    "QUESTION_TYPES",
    "build_pope",
    "build_vqa",
    "combo_name",
    "pope_negative_kind",
    "pope_stats",
]

QUESTION_TYPES = ("colour", "shape", "count", "relation")
POPE_SETTINGS = ("random", "popular", "adversarial")


def combo_name(combo: Combo) -> str:
    """``("red", "square")`` -> ``"red square"``."""
    return f"{combo[0]} {combo[1]}"


def _question(kind: str, scene: Scene, rng: random.Random) -> str | None:
    order = list(range(len(scene.objects)))
    rng.shuffle(order)
    if kind == "colour":
        return next((q for i in order if (q := colour_question(scene, i))), None)
    if kind == "shape":
        return next((q for i in order if (q := shape_question(scene, i))), None)
    o = scene.objects[order[0]]
    if kind == "count":
        by = rng.choice(("shape", "colour", "all"))
        return count_question(
            o.shape if by == "shape" else None, o.colour if by == "colour" else None
        )
    return relation_question(o.combo, scene.objects[order[1]].combo)


def _sample(
    task: str, ctx: SplitContext, i: int, image: str, question: str, meta: dict[str, Any]
) -> Sample:
    segments = [
        Segment.image_(image),
        Segment.text_(question),
        Segment.text_(meta["answer"], role="target"),
    ]
    return Sample(f"{task}-{ctx.split}-{i:06d}", segments, task, meta)


def build_vqa(ctx: SplitContext, count: int) -> list[Sample]:
    """``count`` VQA samples over ``ctx.pool``: sample ``i`` asks about scene ``i`` (modulo the
    pool), so ``count`` above the pool size asks each scene again, cycling the question type."""
    rng = ctx.rng("vqa")
    pool = ctx.pool
    samples = []
    for i in range(count):
        kind = QUESTION_TYPES[(i + i // len(pool.scenes)) % len(QUESTION_TYPES)]
        for step in range(len(pool.scenes)):
            index = (i + step) % len(pool.scenes)
            question = _question(kind, pool.scenes[index], rng)
            if question is not None:
                break
        else:
            raise ValueError(f"vqa {i} ({ctx.split}): no pool scene admits a {kind} question")
        scene = pool.scenes[index]
        meta = {
            "question_type": kind,
            "answer": answer_question(scene, question),
            "scene": scene.to_dict(),
            "split": ctx.split,
            "heldout_combo": any(ctx.vocab.is_heldout(c) for c in scene.combos),
        }
        samples.append(_sample("vqa", ctx, i, pool.images[index], question, meta))
    return samples


def pope_stats(pool: Pool, vocab: Vocabulary) -> dict[str, Any]:
    """``{"frequency": {name: F}, "cooccurrence": {name: {name: C}}}`` over ``pool``."""
    frequency = {combo_name(c): 0 for c in vocab.combos}
    cooc: dict[str, dict[str, int]] = {combo_name(c): {} for c in vocab.combos}
    for scene in pool.scenes:
        names = [combo_name(c) for c in scene.combos]
        for a in names:
            frequency[a] += 1
            for b in names:
                if a != b:
                    cooc[a][b] = cooc[a].get(b, 0) + 1
    return {"frequency": frequency, "cooccurrence": cooc}


def _negative(
    setting: str,
    absent: list[Combo],
    present: list[Combo],
    stats: dict[str, Any],
    top_k: int,
    rng: random.Random,
) -> Combo:
    if setting == "random":
        return rng.choice(absent)
    if setting == "popular":
        score = {c: stats["frequency"][combo_name(c)] for c in absent}
    else:
        cooc = stats["cooccurrence"]
        score = {c: sum(cooc[combo_name(p)].get(combo_name(c), 0) for p in present) for c in absent}
    ranked = sorted(absent, key=lambda c: -score[c])  # stable: ties keep vocabulary order
    return rng.choice(ranked[:top_k])


def pope_negative_kind(split: str, i: int) -> str | None:
    """The setting of probe ``i`` of ``split`` (``None``: a ``yes``); see the module doc.

    >>> [pope_negative_kind("test", i) for i in range(4)]
    [None, 'random', 'popular', 'adversarial']
    >>> [pope_negative_kind("train", i) for i in range(6)]
    [None, 'random', None, 'popular', None, 'adversarial']
    """
    if split == "train":
        return None if i % 2 == 0 else POPE_SETTINGS[(i // 2) % len(POPE_SETTINGS)]
    return None if i % 4 == 0 else POPE_SETTINGS[i % 4 - 1]


def build_pope(ctx: SplitContext, count: int, stats: dict[str, Any], top_k: int) -> list[Sample]:
    """``count`` POPE probes over ``ctx.pool`` (pairs in ``train``, fours otherwise: see the
    module doc and :func:`pope_negative_kind`)."""
    rng = ctx.rng("pope")
    pool = ctx.pool
    group = 2 if ctx.split == "train" else 1 + len(POPE_SETTINGS)
    samples = []
    for i in range(count):
        index = (i // group) % len(pool.scenes)
        scene = pool.scenes[index]
        present = scene.combos
        kind = pope_negative_kind(ctx.split, i)
        if kind is None:
            combo = rng.choice(present)
        else:
            absent = [c for c in ctx.vocab.split_combos(ctx.split) if c not in present]
            combo = _negative(kind, absent, present, stats, top_k, rng)
        question = presence_question(combo)
        meta = {
            "question_type": "presence",
            "answer": answer_question(scene, question),
            "negative_kind": kind,
            "object": combo_name(combo),
            "scene": scene.to_dict(),
            "split": ctx.split,
        }
        samples.append(_sample("pope", ctx, i, pool.images[index], question, meta))
    return samples
