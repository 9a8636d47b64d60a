"""A small tokenizer for tests, trained on synthetic sentences (about 10 ms)."""

from __future__ import annotations

import random

from sugar.models.tokenizer import Tokenizer

_SUBJECTS = ["A red cat", "The blue square", "Two green dogs", "Zoë", "Le café", "A tiny 🐱"]
_VERBS = ["sits", "naps", "runs", "is left of", "looks at", "goes near"]
_OBJECTS = ["the mat", "a circle", "the old tree", "Zürich", "the crème brûlée", "42 boxes"]
_ENDS = [".", "!", "?", "...", ". Then it stops.", "!\n\nNew paragraph."]


def synthetic_corpus(count: int = 400, seed: int = 0) -> list[str]:
    """``count`` short sentences (accents, emoji, digits, newlines), the same for a seed."""
    rng = random.Random(seed)
    return [
        f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}{rng.choice(_ENDS)}"
        for _ in range(count)
    ]


def small_tokenizer(seed: int = 0) -> Tokenizer:
    """A 512-id byte-level BPE trained on :func:`synthetic_corpus`."""
    return Tokenizer.train(synthetic_corpus(seed=seed), vocab_size=512, min_frequency=2)
