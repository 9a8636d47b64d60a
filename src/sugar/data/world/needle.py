"""Needle probes: one useful image-caption pair among distractors, then a yes/no question.

``needle/<split>.jsonl`` samples are ``[i1, c1, ..., iP, cP (context), question (context),
answer (target)]`` with ``P = pairs`` (default 6) and meta ``{"needle_position" (0-based),
"answer", "question", "objects", "relation", "variant", "images", "captions", "scenes",
"split"}``. The question is ``Is the <A> <relation> the <B>?`` about two colour+shape
combinations ``A`` and ``B``:

- the *useful* pair is a pool scene holding both ``A`` and ``B``; the answer (``yes``/``no``) is
  read from it (``no`` asks a relation other than the true one);
- every distractor holds at most one of ``A``, ``B`` (so the question is unanswerable from it)
  and shares words with the question: one *decoy* names all four of ``A``'s and ``B``'s colours
  and shapes (either the bindings swapped, ``colour(A) shape(B)`` and ``colour(B) shape(A)``, or
  one of ``A``/``B`` plus the other's colour and shape on other objects), so keyword overlap
  cannot find the useful pair; the others each hold exactly one of ``A``, ``B``.

The *variant* is ``(position, answer)``; samples run through shuffled blocks of all
``2 * pairs`` variants, so positions are uniform (exactly, for whole blocks) and every variant
occurs in every split of at least ``2 * pairs`` samples. Distractors come from the pool when one
fits (a few random probes), else from a fresh scene rendered under ``images/needle/``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import partial

from sugar.data.schema import Sample, Segment
from sugar.data.world.context import SplitContext
from sugar.data.world.language import describe
from sugar.data.world.probes import combo_name
from sugar.data.world.questions import answer_question, relation_check_question
from sugar.data.world.scene import Scene, relation
from sugar.data.world.vocab import Combo

__all__ = ["build_needle"]

Pair = tuple[Scene, str, str]  # scene, image path, caption


def _keywords(scene: Scene) -> set[str]:
    return {o.colour for o in scene.objects} | {o.shape for o in scene.objects}


def _not_both(s: Scene, a: Combo, b: Combo) -> bool:
    """Whether ``s`` lacks ``a`` or ``b`` (so a question about both is unanswerable from it)."""
    return s.find(a) is None or s.find(b) is None


def _full(s: Scene, a: Combo, b: Combo) -> bool:
    """A decoy: unanswerable, yet naming every colour and shape of ``a`` and ``b``."""
    return _not_both(s, a, b) and _keywords(s) >= {*a, *b}


def _decoy_combos(
    ctx: SplitContext, rng: random.Random, a: Combo, b: Combo
) -> tuple[list[Combo], list[Combo]]:
    """Required and forbidden combinations of a fresh decoy scene."""
    swapped = [(a[0], b[1]), (b[0], a[1])]
    distinct = a[0] != b[0] and a[1] != b[1]
    if distinct and rng.random() < 0.5 and all(ctx.vocab.allowed(c, ctx.split) for c in swapped):
        return swapped, [a, b]
    keep, other = (a, b) if rng.random() < 0.5 else (b, a)
    required = [keep]
    if other[0] != keep[0]:
        shapes = [s for s in ctx.vocab.shapes if s != other[1] and (other[0], s) != keep]
        shapes = [s for s in shapes if ctx.vocab.allowed((other[0], s), ctx.split)]
        required.append((other[0], rng.choice(shapes)))
    if other[1] not in {c[1] for c in required}:
        colours = [c for c in ctx.vocab.colours if c != other[0]]
        colours = [c for c in colours if (c, other[1]) not in required]
        colours = [c for c in colours if ctx.vocab.allowed((c, other[1]), ctx.split)]
        required.append((rng.choice(colours), other[1]))
    return required, [other]


def _pick(
    ctx: SplitContext,
    rng: random.Random,
    seeds: list[Combo],
    ok: Callable[[Scene], bool],
    used: set[int],
) -> int | None:
    """A random unused pool index holding one of ``seeds`` and passing ``ok`` (few probes)."""
    for _ in range(8):
        index_list = ctx.pool.by_combo.get(rng.choice(seeds), [])
        if not index_list:
            continue
        index = rng.choice(index_list)
        if index not in used and ok(ctx.pool.scenes[index]):
            used.add(index)
            return index
    return None


def build_needle(ctx: SplitContext, count: int, pairs: int) -> list[Sample]:
    """``count`` needle probes of ``pairs`` image-caption pairs each."""
    rng = ctx.rng("needle")
    pool = ctx.pool
    variants = [(p, answer) for p in range(pairs) for answer in ("yes", "no")]
    block: list[tuple[int, str]] = []
    fresh = 0
    samples = []
    for i in range(count):
        if i % len(variants) == 0:
            block = variants[:]
            rng.shuffle(block)
        position, answer = block[i % len(variants)]
        useful = rng.randrange(len(pool.scenes))
        scene = pool.scenes[useful]
        ia, ib = rng.sample(range(len(scene.objects)), 2)
        a, b = scene.objects[ia].combo, scene.objects[ib].combo
        true = relation(scene.objects[ia], scene.objects[ib])
        assert true is not None  # the sampler relates every pair of a pool scene
        rel = true if answer == "yes" else rng.choice([r for r in ctx.vocab.relations if r != true])
        question = relation_check_question(a, rel, b)
        used = {useful}

        not_both = partial(_not_both, a=a, b=b)
        full = partial(_full, a=a, b=b)

        distractors: list[Pair] = []
        for k in range(pairs - 1):
            seeds, test = (
                ([a, b, (a[0], b[1]), (b[0], a[1])], full) if k == 0 else ([a, b], not_both)
            )
            index = _pick(ctx, rng, seeds, test, used)
            if index is not None:
                distractors.append((pool.scenes[index], pool.images[index], pool.captions[index]))
                continue
            if k == 0:
                required, forbidden = _decoy_combos(ctx, rng, a, b)
            else:
                keep = rng.choice([a, b])
                required, forbidden = [keep], [b if keep == a else a]
            n = rng.randint(max(ctx.min_objects, len(required)), ctx.max_objects)
            extra = ctx.sampler.scene(rng, n, ctx.split, required, forbidden)
            path = ctx.images.write(ctx.image_path("needle", f"{fresh:06d}"), extra, rng)
            fresh += 1
            distractors.append((extra, path, describe(extra)))
        rng.shuffle(distractors)
        needle = (scene, pool.images[useful], pool.captions[useful])
        chosen = [*distractors[:position], needle, *distractors[position:]]
        segments: list[Segment] = []
        for _, path, caption in chosen:
            segments += [Segment.image_(path), Segment.text_(caption)]
        segments += [Segment.text_(question), Segment.text_(answer, role="target")]
        assert answer_question(scene, question) == answer
        meta = {
            "needle_position": position,
            "answer": answer,
            "question": question,
            "objects": [combo_name(a), combo_name(b)],
            "relation": rel,
            "variant": f"{position}-{answer}",
            "images": [p for _, p, _ in chosen],
            "captions": [c for _, _, c in chosen],
            "scenes": [s.to_dict() for s, _, _ in chosen],
            "split": ctx.split,
        }
        samples.append(Sample(f"needle-{ctx.split}-{i:06d}", segments, "needle", meta))
    return samples
