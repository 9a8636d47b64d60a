"""Questions about a scene and the one function that answers them from the scene's metadata.

Question forms (answers in brackets):

- colour: ``What colour is the [small] square?`` (a colour name)
- shape: ``What shape is the [large] red object?`` (a shape name)
- count: ``How many squares are there?`` / ``How many red objects are there?`` /
  ``How many objects are there?`` (a number word)
- relation: ``Where is the red square relative to the blue circle?``
  (``left``, ``right``, ``above`` or ``below``: where the first is, seen from the second)
- presence (POPE): ``Is there a red square in the image?`` (``yes``/``no``)
- relation check (needle): ``Is the red square to the left of the blue circle?``
  (``yes``/``no``)

:func:`answer_question` parses any of them and answers from the scene; it returns ``None`` when
the scene lacks an object the question names (the question is unanswerable from that scene,
which is how needle probes tell the useful pair) and raises ``ValueError`` for a question outside
the grammar or an ambiguous reference.

>>> from sugar.data.world.scene import Scene, SceneObject
>>> scene = Scene((SceneObject("square", "red", "small", 0.2, 0.5),
...                SceneObject("circle", "blue", "large", 0.7, 0.4)))
>>> answer_question(scene, "Where is the red square relative to the blue circle?")
'left'
>>> answer_question(scene, "Is there a green star in the image?")
'no'
>>> answer_question(scene, "Is the red square above the green star?") is None
True
"""

from __future__ import annotations

import re

from sugar.data.world.language import Ref
from sugar.data.world.scene import Scene, relation
from sugar.data.world.vocab import (
    NUMBER_WORDS,
    PALETTE,
    RELATION_PHRASES,
    SHAPES,
    SIZES,
    Combo,
    plural,
)

__all__ = [
    "answer_question",
    "colour_question",
    "count_question",
    "presence_question",
    "relation_check_question",
    "relation_question",
    "shape_question",
]


def _unique(scene: Scene, ref: Ref) -> bool:
    return sum(ref.matches(o) for o in scene.objects) == 1


def colour_question(scene: Scene, index: int) -> str | None:
    """Ask the colour of object ``index`` by the shortest unique phrase, or ``None``."""
    o = scene.objects[index]
    for ref in (Ref(o.shape), Ref(o.shape, size=o.size)):
        if _unique(scene, ref):
            return f"What colour is {ref.phrase('the')}?"
    return None


def shape_question(scene: Scene, index: int) -> str | None:
    """Ask the shape of object ``index`` by its colour (and size if needed), or ``None``."""
    o = scene.objects[index]
    for size in (None, o.size):
        if sum(p.colour == o.colour and size in (None, p.size) for p in scene.objects) == 1:
            words = f"{size} {o.colour}" if size else o.colour
            return f"What shape is the {words} object?"
    return None


def count_question(shape: str | None = None, colour: str | None = None) -> str:
    """How many objects (of a shape, or of a colour) there are."""
    if shape:
        return f"How many {plural(shape)} are there?"
    if colour:
        return f"How many {colour} objects are there?"
    return "How many objects are there?"


def _the(combo: Combo) -> str:
    return f"the {combo[0]} {combo[1]}"


def relation_question(a: Combo, b: Combo) -> str:
    """Where ``a`` is relative to ``b``."""
    return f"Where is {_the(a)} relative to {_the(b)}?"


def presence_question(combo: Combo) -> str:
    """Whether an object of ``combo`` is in the image (POPE)."""
    return f"Is there {Ref(combo[1], combo[0]).phrase('a')} in the image?"


def relation_check_question(a: Combo, rel: str, b: Combo) -> str:
    """Whether ``a`` is ``rel`` of ``b`` (needle probes)."""
    return f"Is {_the(a)} {RELATION_PHRASES[rel]} {_the(b)}?"


_C = "|".join(PALETTE)
_S = "|".join(SHAPES)
_Z = "|".join(SIZES)
_R = "|".join(RELATION_PHRASES.values())
_KEY = {v: k for k, v in RELATION_PHRASES.items()}
_PLURAL = {plural(s): s for s in SHAPES}
_Q = {
    "colour": re.compile(rf"What colour is the (?:({_Z}) )?({_S})\?"),
    "shape": re.compile(rf"What shape is the (?:({_Z}) )?({_C}) object\?"),
    "count_shape": re.compile(r"How many (\w+) are there\?"),
    "count_colour": re.compile(rf"How many ({_C}) objects are there\?"),
    "relation": re.compile(rf"Where is the ({_C}) ({_S}) relative to the ({_C}) ({_S})\?"),
    "presence": re.compile(rf"Is there an? ({_C}) ({_S}) in the image\?"),
    "check": re.compile(rf"Is the ({_C}) ({_S}) ({_R}) the ({_C}) ({_S})\?"),
}


def _resolve(scene: Scene, ref: Ref, question: str) -> int | None:
    found = [i for i, o in enumerate(scene.objects) if ref.matches(o)]
    if len(found) > 1:
        raise ValueError(f"question {question!r}: {ref.phrase('the')!r} is ambiguous")
    return found[0] if found else None


def answer_question(scene: Scene, question: str) -> str | None:
    """The answer to ``question`` in ``scene`` (see the module doc); ``None`` if unanswerable."""
    objs = scene.objects
    if m := _Q["colour"].fullmatch(question):
        i = _resolve(scene, Ref(m[2], size=m[1]), question)
        return None if i is None else objs[i].colour
    if m := _Q["shape"].fullmatch(question):
        found = [o for o in objs if o.colour == m[2] and m[1] in (None, o.size)]
        if len(found) > 1:
            raise ValueError(f"question {question!r}: the object is ambiguous")
        return found[0].shape if found else None
    if m := _Q["count_colour"].fullmatch(question):
        return NUMBER_WORDS[sum(o.colour == m[1] for o in objs)]
    if m := _Q["count_shape"].fullmatch(question):
        if m[1] == "objects":
            return NUMBER_WORDS[len(objs)]
        if m[1] in _PLURAL:
            return NUMBER_WORDS[sum(o.shape == _PLURAL[m[1]] for o in objs)]
    if m := _Q["presence"].fullmatch(question):
        return "yes" if scene.find((m[1], m[2])) is not None else "no"
    for kind in ("relation", "check"):
        if m := _Q[kind].fullmatch(question):
            g = m.groups()
            a = _resolve(scene, Ref(g[1], g[0]), question)
            b = _resolve(scene, Ref(g[-1], g[-2]), question)
            if a is None or b is None:
                return None
            rel = relation(objs[a], objs[b])
            if kind == "relation":
                return rel
            return "yes" if rel == _KEY[g[2]] else "no"
    raise ValueError(f"question {question!r} is outside the world's grammar")
