"""Captions: claims about a scene, their English sentences, a parser back, and truth in a scene.

A caption is a list of :class:`Sentence`, each one claim in one surface form:

======================  ==============================================  =================
form                    text                                            claim
======================  ==============================================  =================
``is``                  A small red square is to the left of a large    Relation
                        blue circle.
``appears``             A large green star appears above the red        Relation
                        square.
``moves``               The red square moves below the blue circle.     Relation
``turns``               The blue circle turns yellow.                   Exists (yellow
                                                                        circle)
``count``               There are three objects. / There are two        Count
                        squares.
``exists``              There is a small red square.                    Exists
======================  ==============================================  =================

Claims are existential: ``Relation(s, r, o)`` holds when two distinct objects match ``s`` and
``o`` and the first is ``r`` of the second (:func:`~sugar.data.world.scene.relation`);
``Count(n, shape)`` holds when exactly ``n`` objects have that shape (``None``: any); ``Exists``
when one object matches. A :class:`Ref` matches an object when every attribute it names agrees.

:func:`describe` is *the* caption of a scene: relation sentences over consecutive object pairs,
then a count sentence when a shape repeats or there are three or more objects. Every caption in
the world is built from claims, rendered by :func:`sentence_text`, and can be read back with
:func:`parse_caption`; :func:`caption_fits` tells whether a caption is true of a scene.

>>> from sugar.data.world.scene import Scene, SceneObject
>>> scene = Scene((SceneObject("square", "red", "small", 0.2, 0.5),
...                SceneObject("circle", "blue", "large", 0.7, 0.4)))
>>> describe(scene)
'A small red square is to the left of a large blue circle.'
>>> caption_fits("A large blue circle is to the right of a red square.", scene)
True
>>> caption_fits("A small blue square is to the left of a large red circle.", scene)
False
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from sugar.data.world.scene import Scene, SceneObject, relation
from sugar.data.world.vocab import NUMBER_WORDS, PALETTE, RELATION_PHRASES, SHAPES, SIZES, plural

__all__ = [
    "Count",
    "Exists",
    "Ref",
    "Relation",
    "Sentence",
    "caption_fits",
    "caption_sentences",
    "claim_holds",
    "describe",
    "full_ref",
    "parse_caption",
    "sentence_text",
]


@dataclass(frozen=True)
class Ref:
    """A noun phrase: a shape, optionally a colour and a size."""

    shape: str
    colour: str | None = None
    size: str | None = None

    def matches(self, o: SceneObject) -> bool:
        """Whether object ``o`` has every attribute this phrase names."""
        return (
            o.shape == self.shape
            and (self.colour is None or o.colour == self.colour)
            and (self.size is None or o.size == self.size)
        )

    def phrase(self, article: Literal["a", "the"]) -> str:
        """``a small red square``, ``an orange circle``, ``the blue star``."""
        words = " ".join(w for w in (self.size, self.colour, self.shape) if w)
        if article == "a" and words[0] in "aeiou":
            return "an " + words
        return f"{article} {words}"


def full_ref(o: SceneObject) -> Ref:
    """The phrase naming all of ``o``'s attributes."""
    return Ref(o.shape, o.colour, o.size)


@dataclass(frozen=True)
class Relation:
    subject: Ref
    relation: str
    object: Ref


@dataclass(frozen=True)
class Count:
    number: int
    shape: str | None = None


@dataclass(frozen=True)
class Exists:
    ref: Ref


Claim = Relation | Count | Exists
Form = Literal["is", "appears", "moves", "turns", "count", "exists"]


@dataclass(frozen=True)
class Sentence:
    """One claim in one surface form (see the module table)."""

    form: Form
    claim: Claim
    before: str | None = None
    """``turns`` only: the colour the object had (the claim holds the new one)."""
    definite: bool = False
    """``is`` only: the object was mentioned before, so it reads "the ...", not "a ..."."""


def claim_holds(claim: Claim, scene: Scene) -> bool:
    """Whether ``claim`` is true of ``scene`` (existential reading, see the module doc)."""
    objs = scene.objects
    if isinstance(claim, Relation):
        return any(
            i != j
            and claim.subject.matches(a)
            and claim.object.matches(b)
            and relation(a, b) == claim.relation
            for i, a in enumerate(objs)
            for j, b in enumerate(objs)
        )
    if isinstance(claim, Count):
        return claim.number == sum(claim.shape in (None, o.shape) for o in objs)
    return any(claim.ref.matches(o) for o in objs)


def _capital(text: str) -> str:
    return text[0].upper() + text[1:]


def sentence_text(s: Sentence) -> str:
    """The English of one sentence, capitalised, with its full stop."""
    c = s.claim
    if isinstance(c, Relation):
        phrase = RELATION_PHRASES[c.relation]
        if s.form == "is":
            article: Literal["a", "the"] = "the" if s.definite else "a"
            return _capital(f"{c.subject.phrase('a')} is {phrase} {c.object.phrase(article)}.")
        if s.form == "appears":
            return _capital(f"{c.subject.phrase('a')} appears {phrase} {c.object.phrase('the')}.")
        return _capital(f"{c.subject.phrase('the')} moves {phrase} {c.object.phrase('the')}.")
    if isinstance(c, Count):
        noun = (plural(c.shape) if c.shape else "objects") if c.number != 1 else c.shape or "object"
        verb = "is" if c.number == 1 else "are"
        return f"There {verb} {NUMBER_WORDS[c.number]} {noun}."
    if s.form == "turns":
        return f"The {s.before} {c.ref.shape} turns {c.ref.colour}."
    return f"There is {c.ref.phrase('a')}."


def caption_text(sentences: list[Sentence]) -> str:
    """Sentences joined by single spaces."""
    return " ".join(sentence_text(s) for s in sentences)


def caption_sentences(scene: Scene) -> list[Sentence]:
    """The claims of :func:`describe`: pairs (0, 1), (2, 3), ... (odd last: (n-1, n-2)), count.

    An object mentioned before is "the" object of its next sentence. Every pair must have a
    relation (the sampler guarantees it); the count sentence names the
    most frequent repeated shape (first seen wins ties), else all objects when there are >= 3.
    """
    objs = scene.objects
    n = len(objs)
    pairs = [(i, i + 1) for i in range(0, n - 1, 2)]
    if n % 2 == 1 and n >= 3:
        pairs.append((n - 1, n - 2))
    out = []
    mentioned: set[int] = set()
    for i, j in pairs:
        rel = relation(objs[i], objs[j])
        if rel is None:
            raise ValueError(f"objects {i} and {j} of the scene lie on a diagonal: no relation")
        claim = Relation(full_ref(objs[i]), rel, full_ref(objs[j]))
        out.append(Sentence("is", claim, definite=j in mentioned))
        mentioned |= {i, j}
    shape, most = Counter(o.shape for o in objs).most_common(1)[0] if objs else ("", 0)
    if most >= 2:
        out.append(Sentence("count", Count(most, shape)))
    elif n >= 3:
        out.append(Sentence("count", Count(n)))
    return out


def describe(scene: Scene) -> str:
    """The caption of ``scene`` (deterministic in the scene alone)."""
    return caption_text(caption_sentences(scene))


# --------------------------------------------------------------------------------------------
# Parsing: the inverse of sentence_text over the known vocabulary
# --------------------------------------------------------------------------------------------

_COLOURS = "|".join(PALETTE)
_SHAPE_WORDS = "|".join(SHAPES)
_NP = rf"(a|an|the) (?:({'|'.join(SIZES)}) )?(?:({_COLOURS}) )?({_SHAPE_WORDS})"
_REL = "|".join(RELATION_PHRASES.values())
_PHRASE_KEY = {v: k for k, v in RELATION_PHRASES.items()}
_NOUNS = {plural(s): s for s in SHAPES} | {s: s for s in SHAPES}
_PATTERNS: list[tuple[Form, re.Pattern[str]]] = [
    ("is", re.compile(rf"{_NP} is ({_REL}) {_NP}\.")),
    ("appears", re.compile(rf"{_NP} appears ({_REL}) {_NP}\.")),
    ("moves", re.compile(rf"{_NP} moves ({_REL}) {_NP}\.")),
    ("turns", re.compile(rf"the ({_COLOURS}) ({_SHAPE_WORDS}) turns ({_COLOURS})\.")),
    ("count", re.compile(r"there (?:is|are) (\w+) (\w+)\.")),
    ("exists", re.compile(rf"there is {_NP}\.")),
]


def _parse_sentence(text: str) -> Sentence:
    low = text[0].lower() + text[1:]
    for form, pattern in _PATTERNS:
        m = pattern.fullmatch(low)
        if m is None:
            continue
        g = m.groups()
        if form in ("is", "appears", "moves"):
            claim = Relation(Ref(g[3], g[2], g[1]), _PHRASE_KEY[g[4]], Ref(g[8], g[7], g[6]))
            return Sentence(form, claim, definite=form == "is" and g[5] == "the")
        if form == "turns":
            return Sentence(form, Exists(Ref(g[1], g[2])), before=g[0])
        if form == "count" and g[0] in NUMBER_WORDS:
            noun = g[1]
            if noun in ("object", "objects"):
                return Sentence(form, Count(NUMBER_WORDS.index(g[0])))
            if noun in _NOUNS:
                return Sentence(form, Count(NUMBER_WORDS.index(g[0]), _NOUNS[noun]))
        if form == "exists":
            return Sentence(form, Exists(Ref(g[3], g[2], g[1])))
    raise ValueError(f"cannot parse sentence {text!r}")


def parse_caption(text: str) -> list[Sentence]:
    """The sentences of a world caption; ``ValueError`` names a sentence outside the grammar.

    >>> parse_caption("There are two squares.")
    [Sentence(form='count', claim=Count(number=2, shape='square'), before=None, definite=False)]
    """
    parts = [p.strip() for p in re.split(r"(?<=\.)\s+", text.strip()) if p.strip()]
    return [_parse_sentence(p) for p in parts]


def caption_fits(text: str, scene: Scene) -> bool:
    """Whether every claim of caption ``text`` holds in ``scene``."""
    return all(claim_holds(s.claim, scene) for s in parse_caption(text))
