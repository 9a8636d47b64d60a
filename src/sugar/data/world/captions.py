"""Caption samples with hard negatives, and Winoground-style pairs.

**Captions** (``caption/<split>.jsonl``): ``[image, caption (target)]`` with meta
``{"scene", "split", "negatives", "heldout_combo"}``. The caption is
:func:`~sugar.data.world.language.describe` of the scene. Each sample carries one negative of
every kind its caption allows, each a claim edit of the caption that is false of the scene:

- ``attribute_swap``: one relation sentence's subject and object exchange their colour, size or
  shape (two words trade places);
- ``relation_swap``: one relation sentence's relation becomes its inverse (left <-> right,
  above <-> below; one word);
- ``wrong_count``: the count sentence's number changes (one number word, never below two);
- ``wrong_colour``: one object mention gets a colour no object of the scene has (one word).

A negative is ``{"kind", "caption", "edit"}``; ``edit`` names the sentence index and what changed
(``attribute`` / ``relation`` / ``number`` / ``role`` and ``colour``). In ``train`` no negative
names a held-out combination. A scene whose caption cannot take ``attribute_swap``,
``relation_swap`` and ``wrong_colour`` is redrawn; ``wrong_count`` exists exactly when the caption
has a count sentence (always with three or more objects).

**Winoground pairs** (``winoground/<split>.jsonl``): two two-object scenes and two one-sentence
captions with the same words in a different order, caption k true of image k only. Segments are
``[image 0, caption 0 (target)]`` (so the file also reads as a caption set); the pair is in
meta ``{"images": [p0, p1], "captions": [c0, c1], "scenes": [s0, s1], "swap", "split"}``,
``swap`` being ``object`` (the two objects trade places: "A is left of B" / "B is left of A"),
``colour``, ``size`` or ``shape`` (the two objects trade that attribute).
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from sugar.data.schema import Sample, Segment
from sugar.data.world.context import SplitContext
from sugar.data.world.language import (
    Count,
    Ref,
    Relation,
    Sentence,
    caption_fits,
    caption_sentences,
    caption_text,
    claim_holds,
    full_ref,
    sentence_text,
)
from sugar.data.world.scene import Scene, relation
from sugar.data.world.vocab import INVERSE, NUMBER_WORDS

__all__ = ["NEGATIVE_KINDS", "WINOGROUND_SWAPS", "build_captions", "build_winoground", "negatives"]

NEGATIVE_KINDS = ("attribute_swap", "relation_swap", "wrong_count", "wrong_colour")
WINOGROUND_SWAPS = ("object", "colour", "size", "shape")
_ATTRIBUTES = ("colour", "size", "shape")


def _with(sentences: list[Sentence], k: int, claim: Relation | Count) -> list[Sentence]:
    out = sentences[:]
    out[k] = replace(sentences[k], claim=claim)
    return out


def negatives(
    ctx: SplitContext, rng: random.Random, scene: Scene, sentences: list[Sentence]
) -> list[dict[str, Any]]:
    """One hard negative per kind the caption allows (see the module doc), in kind order."""
    allowed = ctx.vocab.allowed
    relations = [(k, s.claim) for k, s in enumerate(sentences) if isinstance(s.claim, Relation)]
    out: list[dict[str, Any]] = []

    def add(kind: str, edited: list[Sentence], edit: dict[str, Any]) -> None:
        out.append({"kind": kind, "caption": caption_text(edited), "edit": edit})

    swaps = [(k, a) for k, _ in relations for a in _ATTRIBUTES]
    rng.shuffle(swaps)
    for k, attribute in swaps:
        c = sentences[k].claim
        assert isinstance(c, Relation)
        s_val, o_val = getattr(c.subject, attribute), getattr(c.object, attribute)
        if s_val == o_val:
            continue
        subj = replace(c.subject, **{attribute: o_val})
        obj = replace(c.object, **{attribute: s_val})
        new = Relation(subj, c.relation, obj)
        combos = [(r.colour or "", r.shape) for r in (subj, obj)]
        if all(allowed(x, ctx.split) for x in combos) and not claim_holds(new, scene):
            add("attribute_swap", _with(sentences, k, new), {"sentence": k, "attribute": attribute})
            break
    order = relations[:]
    rng.shuffle(order)
    for k, c in order:
        new = Relation(c.subject, INVERSE[c.relation], c.object)
        if not claim_holds(new, scene):
            add(
                "relation_swap", _with(sentences, k, new), {"sentence": k, "relation": new.relation}
            )
            break
    for k, s in enumerate(sentences):
        if isinstance(s.claim, Count):
            n = s.claim.number
            number = rng.choice([m for m in (n - 1, n + 1) if 2 <= m < len(NUMBER_WORDS)])
            add(
                "wrong_count",
                _with(sentences, k, Count(number, s.claim.shape)),
                {"sentence": k, "number": number},
            )
    present = {o.colour for o in scene.objects}
    mentions = [(k, role) for k, _ in relations for role in ("subject", "object")]
    rng.shuffle(mentions)
    for k, role in mentions:
        c = sentences[k].claim
        assert isinstance(c, Relation)
        ref: Ref = getattr(c, role)
        colours = [
            x for x in ctx.vocab.colours if x not in present and allowed((x, ref.shape), ctx.split)
        ]
        if colours:
            colour = rng.choice(colours)
            recoloured = replace(ref, colour=colour)
            if role == "subject":
                new = Relation(recoloured, c.relation, c.object)
            else:
                new = Relation(c.subject, c.relation, recoloured)
            edit = {"sentence": k, "role": role, "colour": colour}
            add("wrong_colour", _with(sentences, k, new), edit)
            break
    return sorted(out, key=lambda neg: NEGATIVE_KINDS.index(neg["kind"]))


def build_captions(ctx: SplitContext, count: int, fraction_heldout: float) -> list[Sample]:
    """``count`` caption samples; fills ``ctx.pool``. Object counts cycle min..max."""
    rng = ctx.rng("caption")
    span = ctx.max_objects - ctx.min_objects + 1
    needed = {"attribute_swap", "relation_swap", "wrong_colour"}
    samples = []
    for i in range(count):
        n = ctx.min_objects + i % span
        for _ in range(100):
            required = []
            if ctx.split != "train" and ctx.vocab.heldout and rng.random() < fraction_heldout:
                required = [rng.choice(ctx.vocab.heldout)]
            scene = ctx.sampler.scene(rng, n, ctx.split, required)
            sentences = caption_sentences(scene)
            negs = negatives(ctx, rng, scene, sentences)
            if needed <= {neg["kind"] for neg in negs}:
                break
        else:
            raise ValueError(f"caption {i} ({ctx.split}): no scene takes every negative kind")
        caption = caption_text(sentences)
        path = ctx.images.write(ctx.image_path("caption", f"{i:06d}"), scene, rng)
        ctx.pool.add(scene, path, caption)
        meta = {
            "scene": scene.to_dict(),
            "split": ctx.split,
            "negatives": negs,
            "heldout_combo": any(ctx.vocab.is_heldout(c) for c in scene.combos),
        }
        segments = [Segment.image_(path), Segment.text_(caption, role="target")]
        samples.append(Sample(f"caption-{ctx.split}-{i:06d}", segments, "caption", meta))
    return samples


def _pair(ctx: SplitContext, rng: random.Random, swap: str) -> tuple[Scene, Scene] | None:
    s0 = ctx.sampler.scene(rng, 2, ctx.split)
    a, b = s0.objects
    if swap == "object":
        s1 = Scene((replace(a, x=b.x, y=b.y), replace(b, x=a.x, y=a.y)))
    elif getattr(a, swap) == getattr(b, swap):
        return None
    else:
        s1 = Scene((replace(a, **{swap: getattr(b, swap)}), replace(b, **{swap: getattr(a, swap)})))
    ok = all(ctx.sampler.inside(o) and ctx.vocab.allowed(o.combo, ctx.split) for o in s1.objects)
    return (s0, s1) if ok else None


def build_winoground(ctx: SplitContext, count: int) -> list[Sample]:
    """``count`` Winoground pairs; the swap kind cycles through :data:`WINOGROUND_SWAPS`."""
    rng = ctx.rng("winoground")
    samples = []
    for i in range(count):
        swap = WINOGROUND_SWAPS[i % len(WINOGROUND_SWAPS)]
        for _ in range(200):
            pair = _pair(ctx, rng, swap)
            if pair is None:
                continue
            s0, s1 = pair
            a0, b0 = s0.objects
            a1, b1 = s1.objects
            first = Relation(full_ref(a0), relation(a0, b0) or "", full_ref(b0))
            if swap == "object":
                second = Relation(full_ref(b1), relation(b1, a1) or "", full_ref(a1))
            else:
                second = Relation(full_ref(a1), relation(a1, b1) or "", full_ref(b1))
            c0, c1 = (sentence_text(Sentence("is", c)) for c in (first, second))
            if (
                caption_fits(c0, s0)
                and caption_fits(c1, s1)
                and not caption_fits(c0, s1)
                and not caption_fits(c1, s0)
            ):
                break
        else:
            raise ValueError(f"winoground {i} ({ctx.split}): no valid {swap} pair")
        paths = [
            ctx.images.write(ctx.image_path("winoground", f"{i:06d}_{k}"), s, rng)
            for k, s in enumerate((s0, s1))
        ]
        meta = {
            "images": paths,
            "captions": [c0, c1],
            "scenes": [s0.to_dict(), s1.to_dict()],
            "swap": swap,
            "split": ctx.split,
        }
        segments = [Segment.image_(paths[0]), Segment.text_(c0, role="target")]
        samples.append(Sample(f"winoground-{ctx.split}-{i:06d}", segments, "winoground", meta))
    return samples
