"""Stories: five evolving scenes with captions; retrieve the fifth image from the story so far.

``story/<split>.jsonl`` samples are ``[c1, i1, c2, i2, c3, i3, c4, i4, c5]`` (all context) with
meta ``{"target_image", "images" (5), "captions" (5), "scenes" (5), "events", "group", "split",
"heldout_combo"}``. Caption 1 is :func:`~sugar.data.world.language.describe` of a two-object
scene; captions 2-5 each state one event, true of the scene after it:

- appear: ``A large green star appears above the red square.``
- move: ``The red square moves below the blue circle.``
- recolour: ``The blue circle turns yellow.``

The *pool* of a split is the set of its stories' fifth images. Criterion (checked from metadata):
caption 5 alone fits at least ``group_size`` (>= 3) pool images, while the whole story fits
exactly one, its own. A pool image *fits the whole story* when caption 5 is true of it and it
holds exactly the objects the story leads to: scene 4's objects (shown by i4, described by
c1-c4) changed by event 5, compared as the multiset of (size, colour, shape).

How it is guaranteed: stories come in groups of ``group_size`` that share event 5 (same kind,
objects, relation and so the same caption 5) and differ in their other objects (a member whose
fifth scene repeats a group-mate's multiset is redrawn); a group that would make another pool
story's criterion fail (same multiset and caption 5 true of it) is redrawn.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from typing import Any

from sugar.data.schema import Sample, Segment
from sugar.data.world.context import SplitContext
from sugar.data.world.language import (
    Exists,
    Ref,
    Relation,
    Sentence,
    caption_sentences,
    caption_text,
    claim_holds,
    full_ref,
    sentence_text,
)
from sugar.data.world.scene import Scene, SceneObject, relation
from sugar.data.world.vocab import SIZES, Combo

__all__ = ["build_stories", "story_key"]

Key = tuple[tuple[str, str, str], ...]


def story_key(scene: Scene) -> Key:
    """The multiset of (size, colour, shape) of a scene, as a sorted tuple."""
    return tuple(sorted(o.attributes for o in scene.objects))


@dataclass
class _Story:
    scenes: list[Scene] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    final: Relation | None = None


def _short(o: SceneObject) -> Ref:
    return Ref(o.shape, o.colour)


def _appear(
    ctx: SplitContext, rng: random.Random, scene: Scene, obj: SceneObject, anchor: int, rel: str
) -> tuple[Scene, Sentence] | None:
    placed = ctx.sampler.put(rng, scene, obj, anchor, rel)
    if placed is None:
        return None
    claim = Relation(full_ref(placed), rel, _short(scene.objects[anchor]))
    return Scene((*scene.objects, placed)), Sentence("appears", claim)


def _move(
    ctx: SplitContext, rng: random.Random, scene: Scene, mover: int, anchor: int, rel: str
) -> tuple[Scene, Sentence] | None:
    placed = ctx.sampler.put(rng, scene, scene.objects[mover], anchor, rel, skip=mover)
    if placed is None:
        return None
    objs = list(scene.objects)
    objs[mover] = placed
    claim = Relation(_short(placed), rel, _short(scene.objects[anchor]))
    return Scene(tuple(objs)), Sentence("moves", claim)


def _step(
    ctx: SplitContext, rng: random.Random, scene: Scene, reserved: list[Combo], room: int
) -> tuple[Scene, Sentence, dict[str, Any]] | None:
    """One random event of steps 2-4 (never touching the ``reserved`` combinations)."""
    n = len(scene.objects)
    free = [i for i, o in enumerate(scene.objects) if o.combo not in reserved]
    kinds = ["move"] + (["recolour"] if free else []) + (["appear"] if n < room else [])
    kind = rng.choice(kinds)
    if kind == "appear":
        combo = ctx.sampler.combos(rng, n + 1, ctx.split, scene.combos, reserved)[-1]
        obj = SceneObject(combo[1], combo[0], rng.choice(SIZES), 0.0, 0.0)
        anchor, rel = rng.randrange(n), rng.choice(ctx.vocab.relations)
        done = _appear(ctx, rng, scene, obj, anchor, rel)
        return None if done is None else (*done, {"event": kind, "anchor": anchor, "relation": rel})
    if kind == "move":
        mover, anchor = rng.sample(range(n), 2)
        now = relation(scene.objects[mover], scene.objects[anchor])
        rel = rng.choice([r for r in ctx.vocab.relations if r != now])
        done = _move(ctx, rng, scene, mover, anchor, rel)
        event = {"event": kind, "object": mover, "anchor": anchor, "relation": rel}
        return None if done is None else (*done, event)
    index = rng.choice(free)
    o = scene.objects[index]
    colours = [
        c
        for c in ctx.vocab.colours
        if (c, o.shape) not in scene.combos
        and (c, o.shape) not in reserved
        and ctx.vocab.allowed((c, o.shape), ctx.split)
    ]
    if not colours:
        return None
    colour = rng.choice(colours)
    objs = list(scene.objects)
    objs[index] = replace(o, colour=colour)
    sentence = Sentence("turns", Exists(Ref(o.shape, colour)), before=o.colour)
    return Scene(tuple(objs)), sentence, {"event": kind, "object": index, "colour": colour}


def _member(ctx: SplitContext, rng: random.Random, final: dict[str, Any]) -> _Story | None:
    """One story ending in the group's shared event ``final``; ``None`` if a step fails."""
    a, b = final["anchor"], final["subject"]
    if final["event"] == "appear":
        first = ctx.sampler.combos(rng, 2, ctx.split, [a], [b])
        room = ctx.max_objects - 1
    else:
        first, room = [a, b], ctx.max_objects
    scene = ctx.sampler.place(rng, first)
    story = _Story([scene], [caption_text(caption_sentences(scene))], [{"event": "start"}])
    for _ in range(3):
        step = None
        for _ in range(5):
            step = _step(ctx, rng, scene, [a, b], room)
            if step is not None:
                break
        if step is None:
            return None
        scene, sentence, event = step
        story.scenes.append(scene)
        story.captions.append(sentence_text(sentence))
        story.events.append(event)
    anchor = scene.find(a)
    assert anchor is not None
    if final["event"] == "appear":
        obj = SceneObject(b[1], b[0], final["size"], 0.0, 0.0)
        done = _appear(ctx, rng, scene, obj, anchor, final["relation"])
    else:
        mover = scene.find(b)
        assert mover is not None
        if relation(scene.objects[mover], scene.objects[anchor]) == final["relation"]:
            return None
        done = _move(ctx, rng, scene, mover, anchor, final["relation"])
    if done is None:
        return None
    scene, sentence = done
    assert isinstance(sentence.claim, Relation)
    story.scenes.append(scene)
    story.captions.append(sentence_text(sentence))
    story.events.append({"event": final["event"], "relation": final["relation"]})
    story.final = sentence.claim
    return story


def _group(ctx: SplitContext, rng: random.Random, size: int) -> list[_Story]:
    for _ in range(200):
        a, b = ctx.sampler.combos(rng, 2, ctx.split)
        final = {
            "event": rng.choice(("appear", "move")),
            "anchor": a,
            "subject": b,
            "relation": rng.choice(ctx.vocab.relations),
            "size": rng.choice(SIZES),
        }
        members: list[_Story] = []
        for _ in range(size * 20):
            story = _member(ctx, rng, final)
            keys = [story_key(m.scenes[-1]) for m in members]
            if story is not None and story_key(story.scenes[-1]) not in keys:
                members.append(story)
                if len(members) == size:
                    return members
    raise ValueError(f"stories ({ctx.split}): cannot build a group of {size}; add colours/shapes")


def build_stories(ctx: SplitContext, count: int, group_size: int) -> list[Sample]:
    """``ceil(count / group_size) * group_size`` stories (see the module doc)."""
    rng = ctx.rng("story")
    by_key: dict[Key, list[_Story]] = {}
    stories: list[tuple[int, _Story]] = []
    for g in range(math.ceil(count / group_size)):
        for _ in range(100):
            group = _group(ctx, rng, group_size)
            if not any(_clashes(m, by_key) for m in group):
                break
        else:
            raise ValueError(f"stories ({ctx.split}): group {g} keeps clashing with the pool")
        for m in group:
            by_key.setdefault(story_key(m.scenes[-1]), []).append(m)
            stories.append((g, m))
    samples = []
    for i, (g, m) in enumerate(stories):
        paths = [
            ctx.images.write(ctx.image_path("story", f"{i:06d}_{k}"), s, rng)
            for k, s in enumerate(m.scenes)
        ]
        segments: list[Segment] = []
        for k in range(4):
            segments += [Segment.text_(m.captions[k]), Segment.image_(paths[k])]
        segments.append(Segment.text_(m.captions[4]))
        combos = {c for s in m.scenes for c in s.combos}
        meta = {
            "target_image": paths[4],
            "images": paths,
            "captions": m.captions,
            "scenes": [s.to_dict() for s in m.scenes],
            "events": m.events,
            "group": g,
            "split": ctx.split,
            "heldout_combo": any(ctx.vocab.is_heldout(c) for c in sorted(combos)),
        }
        samples.append(Sample(f"story-{ctx.split}-{i:06d}", segments, "story", meta))
    return samples


def _clashes(story: _Story, by_key: dict[Key, list[_Story]]) -> bool:
    """Whether ``story`` and a pool story with the same fifth multiset fit each other's c5."""
    assert story.final is not None
    for other in by_key.get(story_key(story.scenes[-1]), []):
        assert other.final is not None
        if claim_holds(story.final, other.scenes[-1]) or claim_holds(other.final, story.scenes[-1]):
            return True
    return False
