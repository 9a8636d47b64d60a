"""Instructed retrieval: one query, a different correct target per intent (issue 22).

Over one shared candidate corpus per split (``instructed_corpus/<split>.jsonl``: every caption
image of the split and every caption text), each query is a caption image with an instruction
that states a retrieval intent (``instructed/<split>.jsonl``). The same image is a query once
per intent, and each intent makes different candidates relevant:

=================  ==========================================================  ==========
intent             relevant candidates                                          target
=================  ==========================================================  ==========
``caption``        the image's own caption                                      text
``same_shapes``    other images whose set of shapes equals the query's          image
``same_colours``   other images whose set of colours equals the query's         image
``same_relation``  other images whose set of (shape, relation, shape) triples   image
                   equals the query's: the same kinds of shape in the same
                   spatial relations (:func:`relation_triples`)
``same_count``     other images with as many objects as the query               image
=================  ==========================================================  ==========

``same_count`` (:data:`HELDOUT_INTENTS`) never appears in the train split: it is reached by its
description alone (zero-shot). Instruction wordings come from :func:`synthesise_instructions`, a
deterministic template synthesiser (verb x object phrase, 32 paraphrases per intent);
:func:`wordings` splits them into train and test wordings that share no string (val and test
use the test wordings; every wording of a held-out intent is a test wording). With
``instruction_synthesiser: hf`` a local Hugging Face model writes them instead
(:func:`catalogue`, :mod:`sugar.data.world.synthesiser`); the world manifest records the
wordings used and their sources.

A query sample is ``[image (context)]`` with meta ``{"intent", "instruction", "positives",
"negatives", "exclude", "corpus", "heldout_intent", "split"}``: ``positives`` the corpus ids
of its relevant candidates, ``negatives`` up to three *stated* negatives (candidates relevant
under another intent but not this one: the query's caption for an image intent, images that
share the other attribute), ``exclude`` the candidates never ranked (the query's own image),
``corpus`` the corpus file relative to the world root. A query is written only for the intents
under which it has at least one relevant candidate. Corpus samples are ``[image]`` or
``[caption]`` with meta ``{"kind": "image" | "text", "source": caption sample id}``.

>>> wordings("same_shapes")["test"][0]
'Retrieve images with the same shapes as this one.'
>>> len(synthesise_instructions("caption")), set(wordings("same_count")["train"])
(32, set())
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sugar.data.schema import Sample, Segment
from sugar.data.world.scene import Scene, relation

__all__ = [
    "CORPUS_FOLDER",
    "FOLDER",
    "HELDOUT_INTENTS",
    "INTENTS",
    "build_instructed",
    "catalogue",
    "relation_triples",
    "synthesise_instructions",
    "wordings",
]

FOLDER = "instructed"
"""The world folder of the query files."""
CORPUS_FOLDER = "instructed_corpus"
"""The world folder of the candidate corpus files."""
INTENTS = ("caption", "same_shapes", "same_colours", "same_relation", "same_count")
"""Every intent, in report order."""
HELDOUT_INTENTS = ("same_count",)
"""Intents absent from the train split (reached by description alone)."""

_VERBS = ("Find", "Retrieve", "Show me", "Look for", "Search for", "Get me", "Return", "Bring up")
_PHRASES: dict[str, tuple[str, ...]] = {
    "caption": (
        "the caption of this image",
        "the sentence that describes this picture",
        "a description of this scene",
        "the text written about this image",
    ),
    "same_shapes": (
        "images with the same shapes as this one",
        "pictures made of the same kinds of shapes, whatever their colours",
        "scenes containing exactly these shapes",
        "images whose shapes match this picture's",
    ),
    "same_colours": (
        "images with the same colours as this one",
        "pictures that use exactly these colours, whatever the shapes",
        "scenes painted in the same colours",
        "images whose colours match this picture's",
    ),
    "same_relation": (
        "images where the same shapes stand in the same positions relative to each other",
        "pictures with these shapes in the same arrangement",
        "scenes laid out the same way, shape by shape",
        "images whose shapes are placed as in this one",
    ),
    "same_count": (
        "images with the same number of objects as this one",
        "pictures holding as many objects as this",
        "scenes with an equal count of things",
        "images whose object count matches this picture's",
    ),
}


def synthesise_instructions(intent: str) -> list[str]:
    """Every template paraphrase of ``intent``'s instruction (verb x phrase), in a fixed order.

    ``ValueError`` naming the intent when it is unknown."""
    if intent not in _PHRASES:
        raise ValueError(f"intent {intent!r}: unknown; known: {list(INTENTS)}")
    return [f"{verb} {phrase}." for phrase in _PHRASES[intent] for verb in _VERBS]


def wordings(intent: str) -> dict[str, list[str]]:
    """``{"train": [...], "test": [...]}``: disjoint sets of ``intent``'s paraphrases. A
    quarter of the (verb, phrase) pairs (``(verb + phrase) % 4 == 1``) are test wordings; a
    held-out intent has test wordings only."""
    out: dict[str, list[str]] = {"train": [], "test": []}
    for p, phrase in enumerate(_PHRASES.get(intent, ())):
        for v, verb in enumerate(_VERBS):
            test = intent in HELDOUT_INTENTS or (v + p) % 4 == 1
            out["test" if test else "train"].append(f"{verb} {phrase}.")
    if not out["test"]:
        raise ValueError(f"intent {intent!r}: unknown; known: {list(INTENTS)}")
    return out


def catalogue(
    synthesiser: str = "template", model: str = "", count: int = 32, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Every intent's wordings: ``{intent: {"train", "test", "generated", "sources": {"hf",
    "template"}, "rejected": {reason: n}}}``. ``template``: :func:`wordings` (``model`` and
    ``count`` unused); ``hf``: :func:`sugar.data.world.synthesiser.hf_catalogue` with the
    model directory ``model``, seeded by ``seed``, paraphrasing each intent's ``"Find
    <phrase>."`` seeds."""
    if synthesiser == "template":
        return {
            i: {**wordings(i), "generated": [],
                "sources": {"hf": 0, "template": len(_VERBS) * len(_PHRASES[i])}, "rejected": {}}
            for i in INTENTS
        }  # fmt: skip
    if synthesiser != "hf":
        raise ValueError(f"instruction_synthesiser={synthesiser!r}: must be 'template' or 'hf'")
    from sugar.data.world.synthesiser import hf_catalogue  # lazy: imports transformers

    seeds = {i: [f"{_VERBS[0]} {phrase}." for phrase in _PHRASES[i]] for i in INTENTS}
    templates = {i: synthesise_instructions(i) for i in INTENTS}
    return hf_catalogue(model, seeds, templates, HELDOUT_INTENTS, count, seed)


def relation_triples(objects: Sequence[Mapping[str, Any]]) -> frozenset[tuple[str, str, str]]:
    """``(shape of a, relation of a to b, shape of b)`` for every ordered pair of objects with
    a relation (:func:`sugar.data.world.scene.relation`; none on an exact diagonal)."""
    placed = Scene.from_dict({"objects": list(objects)}).objects
    out = set()
    for a in placed:
        for b in placed:
            where = relation(a, b) if a is not b else None
            if where is not None:
                out.add((a.shape, where, b.shape))
    return frozenset(out)


def _objects(sample: Sample) -> list[dict[str, Any]]:
    scene = sample.meta.get("scene")
    if not isinstance(scene, dict) or not isinstance(scene.get("objects"), list):
        raise ValueError(f"sample {sample.id!r}: instructed queries need meta.scene.objects")
    return list(scene["objects"])


_KEYS: dict[str, Callable[[list[dict[str, Any]]], object]] = {
    "same_shapes": lambda objects: frozenset(o["shape"] for o in objects),
    "same_colours": lambda objects: frozenset(o["colour"] for o in objects),
    "same_relation": relation_triples,
    "same_count": len,
}


def _parts(sample: Sample) -> tuple[str, str]:
    image = sample.segments[0].image
    caption = sample.segments[-1].text
    if image is None or caption is None:
        raise ValueError(f"sample {sample.id!r}: an instructed query needs [image, caption]")
    return image, caption


def build_instructed(
    captions: Sequence[Sample],
    split: str,
    seed: int,
    wordings_by_intent: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
) -> tuple[list[Sample], list[Sample]]:
    """``(queries, corpus)`` of one split from its caption samples (module docstring).

    Deterministic in ``seed`` and ``split``; instructions are drawn from the split's wordings
    (``wordings_by_intent``, by default the templates' :func:`wordings`: train wordings for
    ``train``, test wordings otherwise)."""
    chosen = wordings_by_intent or {i: wordings(i) for i in INTENTS}
    rng = random.Random(f"sugar-world/{seed}/instructed/{split}")
    corpus: list[Sample] = []
    for sample in captions:
        image, caption = _parts(sample)
        corpus.append(Sample(f"image/{sample.id}", [Segment.image_(image)], "instructed_corpus",
                             {"kind": "image", "source": sample.id}))  # fmt: skip
    for sample in captions:
        _, caption = _parts(sample)
        text = Segment.text_(caption)
        origin = {"kind": "text", "source": sample.id}
        corpus.append(Sample(f"caption/{sample.id}", [text], "instructed_corpus", origin))
    keys = {name: [key(_objects(s)) for s in captions] for name, key in _KEYS.items()}
    intents = [i for i in INTENTS if split != "train" or i not in HELDOUT_INTENTS]
    pools = {i: list(chosen[i]["train" if split == "train" else "test"]) for i in intents}
    queries: list[Sample] = []
    for q, sample in enumerate(captions):
        image, _ = _parts(sample)
        own_image, own_caption = f"image/{sample.id}", f"caption/{sample.id}"
        relevant: dict[str, list[str]] = {"caption": [own_caption]}
        for name, values in keys.items():
            relevant[name] = [
                f"image/{other.id}"
                for j, other in enumerate(captions)
                if j != q and values[q] and values[j] == values[q]
            ]
        for intent in intents:
            if not relevant[intent]:
                continue
            positives = set(relevant[intent])
            stated = [] if intent == "caption" else [own_caption]
            for other in INTENTS[1:]:
                stated += [c for c in relevant[other] if c not in positives and c not in stated]
            meta = {
                "intent": intent,
                "instruction": rng.choice(pools[intent]),
                "positives": relevant[intent],
                "negatives": stated[:3],
                "exclude": [own_image],
                "corpus": f"{CORPUS_FOLDER}/{split}.jsonl",
                "heldout_intent": intent in HELDOUT_INTENTS,
                "split": split,
            }
            queries.append(Sample(f"instructed-{split}-{q:06d}-{intent}",
                                  [Segment.image_(image)], FOLDER, meta))  # fmt: skip
    return queries, corpus
