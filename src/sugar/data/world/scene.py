"""Scenes: objects with shape, colour, size and position; spatial relations; scene sampling.

Coordinates are fractions of the image side, ``x`` from the left and ``y`` from the top, rounded
to 3 decimals when sampled (so metadata, relations and pixels agree exactly). The relation of
``a`` to ``b`` is read off the dominant axis of ``a - b``::

    |dx| > |dy|: "left" if dx < 0 else "right";  |dy| > |dx|: "above" if dy < 0 else "below"

(``None`` on an exact diagonal). The sampler places objects so that every pair of a scene
relates along an allowed axis with ``|dx|`` and ``|dy|`` at least ``margin`` apart, so every
relation a caption states is also visible.

>>> a = SceneObject("square", "red", "small", 0.2, 0.5)
>>> b = SceneObject("circle", "blue", "large", 0.7, 0.4)
>>> relation(a, b), relation(b, a)
('left', 'right')
>>> Scene.from_dict(Scene((a, b)).to_dict()) == Scene((a, b))
True
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sugar.data.world.vocab import SIZES, Combo, Vocabulary

__all__ = ["Scene", "SceneObject", "SceneSampler", "relation"]


@dataclass(frozen=True)
class SceneObject:
    """One object of a scene."""

    shape: str
    """A name from :data:`~sugar.data.world.vocab.SHAPES`."""
    colour: str
    """A name from :data:`~sugar.data.world.vocab.PALETTE`."""
    size: str
    """``small`` or ``large``."""
    x: float
    """Centre, fraction of the width from the left edge."""
    y: float
    """Centre, fraction of the height from the top edge."""

    @property
    def combo(self) -> Combo:
        """``(colour, shape)``."""
        return (self.colour, self.shape)

    @property
    def attributes(self) -> tuple[str, str, str]:
        """``(size, colour, shape)``: what a full noun phrase names."""
        return (self.size, self.colour, self.shape)


@dataclass(frozen=True)
class Scene:
    """An ordered tuple of objects (the order fixes how captions mention them)."""

    objects: tuple[SceneObject, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data: ``{"objects": [{"shape", "colour", "size", "x", "y"}, ...]}``."""
        return {
            "objects": [
                {"shape": o.shape, "colour": o.colour, "size": o.size, "x": o.x, "y": o.y}
                for o in self.objects
            ]
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scene:
        """The inverse of :meth:`to_dict`."""
        return cls(tuple(SceneObject(**o) for o in data["objects"]))

    @property
    def combos(self) -> list[Combo]:
        """The objects' ``(colour, shape)`` pairs, in order."""
        return [o.combo for o in self.objects]

    def find(self, combo: Combo) -> int | None:
        """Index of the first object with ``combo``, or ``None``."""
        for i, o in enumerate(self.objects):
            if o.combo == combo:
                return i
        return None


def relation(a: SceneObject, b: SceneObject) -> str | None:
    """Where ``a`` is relative to ``b`` along the dominant axis; ``None`` on a diagonal."""
    dx, dy = a.x - b.x, a.y - b.y
    if abs(dx) > abs(dy):
        return "left" if dx < 0 else "right"
    if abs(dy) > abs(dx):
        return "above" if dy < 0 else "below"
    return None


class SceneSampler:
    """Draws combinations (popularity + companions) and places objects without overlap.

    ``small_size``/``large_size`` are radii as fractions of the image side; ``margin`` is the
    least ``||dx| - |dy||`` for a placed pair; ``relations`` are the allowed relation keys.
    Placement is rejection sampling (at most ``tries`` positions per object, ``restarts``
    scenes); ``ValueError`` names the knobs when a scene cannot be placed.
    """

    def __init__(
        self,
        vocab: Vocabulary,
        small_size: float,
        large_size: float,
        margin: float,
        cooccurrence: float,
        tries: int = 200,
        restarts: int = 50,
    ) -> None:
        self.vocab = vocab
        self.radius = {"small": small_size, "large": large_size}
        self.margin = margin
        self.cooccurrence = cooccurrence
        self.axes = set(vocab.relations)
        self.tries, self.restarts = tries, restarts
        self._population: dict[str, tuple[list[Combo], list[float]]] = {}
        for split in ("train", "val", "test"):
            combos = vocab.split_combos(split)
            cum = list(itertools.accumulate(vocab.weight[c] for c in combos))
            self._population[split] = (combos, cum)

    # ---- combinations ---------------------------------------------------------------------

    def combos(
        self,
        rng: random.Random,
        n: int,
        split: str,
        required: Sequence[Combo] = (),
        forbidden: Collection[Combo] = (),
    ) -> list[Combo]:
        """``n`` distinct combinations for ``split``: ``required`` first, then drawn."""
        chosen = list(required)
        population, cum = self._population[split]

        def ok(c: Combo) -> bool:
            return c not in chosen and c not in forbidden and self.vocab.allowed(c, split)

        for _ in range(50 * n):
            if len(chosen) >= n:
                return chosen
            if chosen and rng.random() < self.cooccurrence:
                options = [c for c in self.vocab.companions[rng.choice(chosen)] if ok(c)]
                if options:
                    chosen.append(rng.choice(options))
                    continue
            (c,) = rng.choices(population, cum_weights=cum)
            if ok(c):
                chosen.append(c)
        raise ValueError(f"cannot draw {n} distinct combinations for {split} (too few colours?)")

    # ---- placement ------------------------------------------------------------------------

    def _fits(self, cand: SceneObject, others: Sequence[SceneObject], strict: bool) -> bool:
        r = self.radius[cand.size]
        for o in others:
            dx, dy = abs(cand.x - o.x), abs(cand.y - o.y)
            gap = r + self.radius[o.size] + 0.02
            if dx * dx + dy * dy < gap * gap:
                return False
            if strict and (abs(dx - dy) < self.margin or relation(cand, o) not in self.axes):
                return False
        return True

    def _position(self, rng: random.Random, size: str) -> tuple[float, float]:
        lo = self.radius[size] + 0.01
        return round(rng.uniform(lo, 1 - lo), 3), round(rng.uniform(lo, 1 - lo), 3)

    def inside(self, o: SceneObject) -> bool:
        """Whether ``o`` lies inside the image with the sampler's border."""
        lo = self.radius[o.size] + 0.01
        return lo <= o.x <= 1 - lo and lo <= o.y <= 1 - lo

    def place(self, rng: random.Random, combos: Sequence[Combo]) -> Scene:
        """A scene of ``combos`` (random sizes), every pair clearly related, order shuffled."""
        for _ in range(self.restarts):
            placed: list[SceneObject] = []
            for colour, shape in combos:
                size = rng.choice(SIZES)
                for _ in range(self.tries):
                    x, y = self._position(rng, size)
                    cand = SceneObject(shape, colour, size, x, y)
                    if self._fits(cand, placed, strict=True):
                        placed.append(cand)
                        break
                else:
                    break
            if len(placed) == len(combos):
                rng.shuffle(placed)
                return Scene(tuple(placed))
        raise ValueError(
            f"cannot place {len(combos)} objects with relations {sorted(self.axes)}, "
            f"small_size={self.radius['small']}, large_size={self.radius['large']}, "
            f"relation_margin={self.margin}: lower max_objects, the sizes or the margin"
        )

    def scene(
        self,
        rng: random.Random,
        n: int,
        split: str,
        required: Sequence[Combo] = (),
        forbidden: Collection[Combo] = (),
    ) -> Scene:
        """:meth:`combos` then :meth:`place`."""
        return self.place(rng, self.combos(rng, n, split, required, forbidden))

    def put(
        self,
        rng: random.Random,
        scene: Scene,
        obj: SceneObject,
        anchor: int,
        rel: str,
        skip: int | None = None,
    ) -> SceneObject | None:
        """``obj`` moved to a free spot where ``relation(obj, anchor) == rel``, or ``None``.

        ``skip`` is the index of ``obj``'s old self (a move), ignored for overlap.
        """
        others = [o for i, o in enumerate(scene.objects) if i != skip]
        target = scene.objects[anchor]
        lo = self.radius[obj.size] + 0.01
        hi = 1 - lo
        horizontal = rel in ("left", "right")
        main, cross = (target.x, target.y) if horizontal else (target.y, target.x)
        sign = -1.0 if rel in ("left", "above") else 1.0
        # Sample the main-axis offset d first, then the cross axis within d - margin, so every
        # draw is on the right side with a clear margin; only overlap is left to rejection.
        reach = (main - lo) if sign < 0 else (hi - main)
        # Non-overlap with the anchor needs d * sqrt(2) > the gap, a cheap early refusal.
        gap = self.radius[obj.size] + self.radius[target.size] + 0.02
        nearest = max(self.margin, gap / math.sqrt(2))
        if reach < nearest:
            return None
        for _ in range(self.tries // 8):
            d = rng.uniform(nearest, reach)
            span = d - self.margin
            c_lo, c_hi = max(lo, cross - span), min(hi, cross + span)
            if c_lo > c_hi:
                continue
            m, c = round(main + sign * d, 3), round(rng.uniform(c_lo, c_hi), 3)
            x, y = (m, c) if horizontal else (c, m)
            cand = SceneObject(obj.shape, obj.colour, obj.size, x, y)
            dx, dy = abs(x - target.x), abs(y - target.y)
            clear = relation(cand, target) == rel and abs(dx - dy) >= self.margin
            if clear and self.inside(cand) and self._fits(cand, others, strict=False):
                return cand
        return None
