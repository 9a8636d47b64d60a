"""The small test world's settings and a reader for its files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sugar.data.schema import Sample
from sugar.data.world import Scene

SMALL: dict[str, Any] = {
    "train_per_task": 180,
    "val_per_task": 12,
    "test_per_task": 180,
    "image_size": 48,
}
"""Big enough for the statistical checks (needle positions over 360 probes); 2-3 s on tmpfs,
most of it creating the ~3,000 image files."""
SEED = 7


@dataclass
class World:
    root: Path
    manifest: dict[str, Any]

    def samples(self, task: str, split: str) -> list[Sample]:
        text = (self.root / task / f"{split}.jsonl").read_text(encoding="utf-8")
        return [Sample.from_json(line) for line in text.splitlines()]

    def text(self, task: str, split: str) -> str:
        return (self.root / task / f"{split}.jsonl").read_text(encoding="utf-8")

    @property
    def heldout(self) -> list[tuple[str, str]]:
        return [tuple(n.split()) for n in self.manifest["world"]["heldout_combos"]]  # type: ignore[misc]

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest["config"]

    def pope_stats(self) -> dict[str, Any]:
        return json.loads((self.root / "pope" / "stats.json").read_text(encoding="utf-8"))


def scene(data: dict[str, Any]) -> Scene:
    return Scene.from_dict(data)


# --------------------------------------------------------------------------------------------
# Naive references, independent of sugar.data.world.language / questions
# --------------------------------------------------------------------------------------------

COLOURS = {"red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "white"}
COLOURS |= {"brown", "grey"}
SHAPES = {"circle", "square", "triangle", "diamond", "star", "hexagon", "cross"}
SIZES = {"small", "large"}
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
PHRASES = {"to the left of": "left", "to the right of": "right", "above": "above", "below": "below"}


def words(text: str) -> list[str]:
    """Lower-case words without punctuation."""
    return text.lower().replace(".", " ").replace("?", " ").split()


def naive_relation(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    dx, dy = a["x"] - b["x"], a["y"] - b["y"]
    if abs(dx) > abs(dy):
        return "left" if dx < 0 else "right"
    if abs(dy) > abs(dx):
        return "above" if dy < 0 else "below"
    return None


def _np(tokens: list[str]) -> dict[str, str]:
    """``[a|an|the] [size] [colour] shape`` -> the attributes it names."""
    out = {}
    for t in tokens[1:]:
        key = "size" if t in SIZES else "colour" if t in COLOURS else "shape"
        out[key] = t
    return out


def _matches(o: dict[str, Any], ref: dict[str, str]) -> bool:
    return all(o[k] == v for k, v in ref.items())


def naive_sentence_true(sentence: str, scene: dict[str, Any]) -> bool:
    """Truth of one world sentence in a scene dict, by brute force over the objects."""
    objs = scene["objects"]
    w = words(sentence)
    if w[0] == "there":
        if w[1] == "is" and w[2] in ("a", "an"):
            return any(_matches(o, _np(w[2:])) for o in objs)
        n = NUMBERS.index(w[2])
        noun = w[3]
        if noun in ("object", "objects"):
            return n == len(objs)
        shape = noun if noun in SHAPES else noun[:-2] if noun.endswith("ses") else noun[:-1]
        return n == sum(o["shape"] == shape for o in objs)
    if "turns" in w:
        return any(o["shape"] == w[2] and o["colour"] == w[4] for o in objs)
    verb = next(i for i, t in enumerate(w) if t in ("is", "appears", "moves"))
    rest = " ".join(w[verb + 1 :])
    phrase = next(p for p in PHRASES if rest.startswith(p + " "))
    subject = _np(w[:verb])
    obj = _np(rest[len(phrase) + 1 :].split())
    return any(
        i != j
        and _matches(a, subject)
        and _matches(b, obj)
        and naive_relation(a, b) == PHRASES[phrase]
        for i, a in enumerate(objs)
        for j, b in enumerate(objs)
    )


def naive_fits(caption: str, scene: dict[str, Any]) -> bool:
    """Whether every sentence of ``caption`` is true of ``scene`` (a scene dict)."""
    sentences = [s.strip() + "." for s in caption.split(".") if s.strip()]
    return all(naive_sentence_true(s, scene) for s in sentences)
