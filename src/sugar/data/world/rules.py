"""The rules a world's settings obey (``WorldConfig``, validated when the config is built).

Kept next to the world they protect: each rule is ``(ok, field, value, why)``; the config turns
the first broken one into a ``ConfigError`` naming the field (rules are produced lazily, so a
later rule may assume the earlier ones hold).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["world_rules"]

Rule = tuple[bool, str, object, str]


def _rule(ok: bool, name: str, value: object, why: str = "must be >= 1") -> Rule:
    return ok, name, value, why


def world_rules(w: Any) -> Iterator[Rule]:
    """The rules of a ``WorldConfig`` ``w``, in order."""
    yield _rule(w.image_size >= 16, "image_size", w.image_size, "must be >= 16")
    yield _rule(w.min_objects >= 2, "min_objects", w.min_objects, "must be >= 2")
    yield _rule(
        w.min_objects <= w.max_objects <= 6 and w.max_objects >= 3,
        "max_objects",
        w.max_objects,
        f"must be in [max(3, min_objects={w.min_objects}), 6]",
    )
    for name in ("colours", "shapes", "relations"):
        values = getattr(w, name)
        yield _rule(len(set(values)) == len(values), name, values, "must not repeat a name")
    yield _rule(
        len(w.colours) > w.max_objects,
        "colours",
        w.colours,
        f"needs more than max_objects={w.max_objects} names",
    )
    yield _rule(len(w.shapes) >= 3, "shapes", w.shapes, "needs at least 3 names")
    inverse = {"left": "right", "right": "left", "above": "below", "below": "above"}
    yield _rule(
        bool(w.relations) and all(inverse.get(r) in w.relations for r in w.relations),
        "relations",
        w.relations,
        "must be non-empty keys of left/right/above/below, closed under inverse",
    )
    yield _rule(w.small_size > 0, "small_size", w.small_size, "must be > 0")
    yield _rule(
        w.small_size < w.large_size <= 0.25,
        "large_size",
        w.large_size,
        f"must be in (small_size={w.small_size}, 0.25]",
    )
    yield _rule(
        0 <= w.relation_margin < 0.5,
        "relation_margin",
        w.relation_margin,
        "must be in [0, 0.5)",
    )
    yield _rule(0 <= w.noise <= 1, "noise", w.noise, "must be in [0, 1]")
    yield _rule(w.popularity >= 0, "popularity", w.popularity, "must be >= 0")
    for name in ("cooccurrence", "heldout_scene_fraction"):
        yield _rule(0 <= getattr(w, name) <= 1, name, getattr(w, name), "must be in [0, 1]")
    yield _rule(
        0 <= w.heldout_fraction <= 0.5,
        "heldout_fraction",
        w.heldout_fraction,
        "must be in [0, 0.5]",
    )
    yield _rule(w.pope_top_k >= 1, "pope_top_k", w.pope_top_k)
    yield _rule(w.train_probes_per_image >= 1, "train_probes_per_image", w.train_probes_per_image)
    vqa = w.train_vqa_per_image
    yield _rule(vqa is None or vqa >= 1, "train_vqa_per_image", vqa, "must be >= 1 or null")
    yield _rule(w.story_group_size >= 3, "story_group_size", w.story_group_size, "must be >= 3")
    yield _rule(w.needle_pairs >= 2, "needle_pairs", w.needle_pairs, "must be >= 2")
    yield _rule(
        w.train_per_task >= 2 * w.needle_pairs,
        "train_per_task",
        w.train_per_task,
        f"must be >= 2 * needle_pairs = {2 * w.needle_pairs} (every needle variant)",
    )
    for name in ("val_per_task", "test_per_task"):
        yield _rule(getattr(w, name) >= 0, name, getattr(w, name), "must be >= 0")
    synthesiser = w.instruction_synthesiser
    yield _rule(
        synthesiser in ("template", "hf"),
        "instruction_synthesiser",
        synthesiser,
        "must be 'template' or 'hf'",
    )
    yield _rule(
        (synthesiser == "hf") == bool(w.instruction_model),
        "instruction_model",
        w.instruction_model,
        f"must name a local model directory exactly when instruction_synthesiser is 'hf' "
        f"(it is {synthesiser!r})",
    )
    yield _rule(
        4 <= w.instruction_paraphrases <= 32,
        "instruction_paraphrases",
        w.instruction_paraphrases,
        "must be in [4, 32] (the templates that top up an hf catalogue hold 32)",
    )
