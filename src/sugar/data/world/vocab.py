"""The world's words and their statistics: colours, shapes, sizes, relations, combinations.

Fixed tables (:data:`PALETTE`, :data:`SHAPES`, :data:`RELATION_PHRASES`, ...) list every name the
renderer and the caption parser know; a world uses a subset (``WorldConfig.colours`` etc.).

:class:`Vocabulary` adds what a seed decides once per world:

- a *popularity* rank over colour+shape combinations, weight ``1 / (rank + 1) ** popularity``
  (Zipf; ``popularity = 0`` is uniform), so POPE's "popular" negatives are meaningful;
- two *companions* per combination: a scene's next object is, with probability
  ``cooccurrence``, a companion of an object already placed, so co-occurrence differs from
  frequency and POPE's "adversarial" negatives differ from its "popular" ones;
- the *held-out* combinations, which never occur in the training split (no scene, caption,
  negative or question of ``train`` names them); every colour and every shape keeps at least two
  training combinations.

>>> v = Vocabulary(["red", "green", "blue"], ["circle", "square", "star"], ["left", "right"],
...                heldout_fraction=0.2, popularity=1.0, seed=0)
>>> len(v.combos), len(v.heldout)
(9, 2)
>>> all(v.allowed(c, "val") for c in v.combos)
True
"""

from __future__ import annotations

import random
from collections.abc import Sequence

__all__ = [
    "BACKGROUND",
    "INVERSE",
    "NUMBER_WORDS",
    "PALETTE",
    "RELATION_PHRASES",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "Combo",
    "Vocabulary",
    "plural",
]

Combo = tuple[str, str]
"""A (colour, shape) pair: the unit of POPE objects and of held-out combinations."""

SPLITS = ("train", "val", "test")

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 40),
    "green": (40, 170, 60),
    "cyan": (40, 200, 210),
    "blue": (40, 80, 230),
    "purple": (140, 60, 200),
    "pink": (245, 130, 190),
    "white": (240, 240, 240),
    "brown": (140, 90, 40),
    "grey": (140, 140, 140),
}
"""Every colour name the renderer knows, with its RGB fill."""

BACKGROUND = (24, 24, 24)
"""The canvas colour (dark, so every palette colour stands out)."""

SHAPES = ("circle", "square", "triangle", "diamond", "star", "hexagon", "cross")
"""Every shape name the renderer knows."""

SIZES = ("small", "large")

RELATION_PHRASES = {
    "left": "to the left of",
    "right": "to the right of",
    "above": "above",
    "below": "below",
}
"""Relation key -> its English phrase; ``A <phrase> B`` is read with A as the subject."""

INVERSE = {"left": "right", "right": "left", "above": "below", "below": "above"}

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

_PLURALS = {"cross": "crosses"}


def plural(shape: str) -> str:
    """The plural of a shape name (``cross`` -> ``crosses``, else ``+s``).

    >>> plural("circle"), plural("cross")
    ('circles', 'crosses')
    """
    return _PLURALS.get(shape, shape + "s")


class Vocabulary:
    """A world's names, combination weights, companions and held-out set, fixed by ``seed``."""

    def __init__(
        self,
        colours: Sequence[str],
        shapes: Sequence[str],
        relations: Sequence[str],
        heldout_fraction: float,
        popularity: float,
        seed: int,
    ) -> None:
        for name, given, known in (
            ("colours", colours, PALETTE),
            ("shapes", shapes, SHAPES),
            ("relations", relations, INVERSE),
        ):
            unknown = [v for v in given if v not in known]
            if unknown:
                raise ValueError(f"{name}={list(given)!r}: unknown {unknown}; known: {list(known)}")
        self.colours = list(colours)
        self.shapes = list(shapes)
        self.relations = list(relations)
        self.combos: list[Combo] = [(c, s) for c in self.colours for s in self.shapes]
        rng = random.Random(f"sugar-world/{seed}/vocabulary")
        ranked = self.combos[:]
        rng.shuffle(ranked)
        self.weight = {c: 1.0 / (rank + 1) ** popularity for rank, c in enumerate(ranked)}
        self.companions = {
            c: rng.sample([o for o in self.combos if o != c], 2) for c in self.combos
        }
        self.heldout = self._choose_heldout(rng, heldout_fraction)
        self._heldout_set = frozenset(self.heldout)

    def _choose_heldout(self, rng: random.Random, fraction: float) -> list[Combo]:
        wanted = max(1, round(fraction * len(self.combos))) if fraction > 0 else 0
        left_colour = {c: len(self.shapes) for c in self.colours}
        left_shape = {s: len(self.colours) for s in self.shapes}
        order = self.combos[:]
        rng.shuffle(order)
        chosen: list[Combo] = []
        for colour, shape in order:
            if len(chosen) == wanted:
                break
            if left_colour[colour] > 2 and left_shape[shape] > 2:
                chosen.append((colour, shape))
                left_colour[colour] -= 1
                left_shape[shape] -= 1
        if len(chosen) < wanted:
            raise ValueError(
                f"heldout_fraction={fraction}: cannot hold out {wanted} of {len(self.combos)} "
                "combinations and keep two training shapes per colour and colours per shape"
            )
        return sorted(chosen, key=self.combos.index)

    def allowed(self, combo: Combo, split: str) -> bool:
        """Whether ``combo`` may occur in ``split`` (held-out combinations never in train)."""
        return split != "train" or combo not in self._heldout_set

    def is_heldout(self, combo: Combo) -> bool:
        """Whether ``combo`` is one of the combinations held out of training."""
        return combo in self._heldout_set

    def split_combos(self, split: str) -> list[Combo]:
        """The combinations ``split`` may use, in vocabulary order."""
        return [c for c in self.combos if self.allowed(c, split)]
