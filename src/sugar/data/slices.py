"""Slices: the images and sentences of a sample, from all segments (METHOD.md section 1).

A slice is one image or one sentence, taken from context and target segments alike; the
discriminative loss embeds every prefix that ends at a slice. Text is cut into sentences by
:func:`split_sentences` (``by="sentence"``, the default) or kept one slice per text segment
(``by="segment"``).

The splitter is hand-written on purpose: it must be deterministic, dependency-free and give
character spans (not strings), and nltk/spacy offer none of the three at once. Its rules, in
order:

1. A blank line (a newline, optional spaces or tabs, a newline) always ends a sentence.
2. A candidate end is a run of terminators (``.``, ``!``, ``?``, ``…``; so ``...`` and ``?!``
   are one end) followed by optional closing quotes or brackets (``" ' ” ’ ) ] } »``) and then
   whitespace or the end of the text. A period inside a token is never an end, which keeps
   decimals and numbers (``3.5``, ``1,000.25``), URLs and ``e.g.`` in one piece.
3. A candidate is not an end when the next word (after whitespace and opening quotes or
   brackets) starts with a lowercase letter: ``etc. and``, ``Wait... what``, ``"Stop!" he said``.
4. A single ``.`` is not an end after a known abbreviation that precedes a name or an example
   (:data:`ABBREVIATIONS`: Mr., Dr., St., vs., e.g., i.e., ...), after a single capital
   initial (``J. Smith``), or after ``No.`` followed by a digit (``No. 5``).
5. Each sentence is trimmed of surrounding whitespace; text after the last end (no terminal
   punctuation) is the last sentence; a piece with no visible character (a letter, digit,
   punctuation mark or symbol: Unicode categories L, N, P, S) is dropped, so the spans cover
   the text's visible characters, in order, and none is empty. (Without the last rule a
   zero-width space, soft hyphen or lone combining mark after a sentence's end became a
   sentence of its own, which tokenizers drop, leaving a slice with no token.)

Known limits, accepted for determinism: a sentence ending in an abbreviation or an initial
(``... on Main St. It``, ``vitamin C. It``) is not split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from sugar.data.schema import Sample, has_visible_character

__all__ = ["ABBREVIATIONS", "Slice", "slices", "split_sentences"]

ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "sr", "st", "vs", "e.g", "i.e", "cf", "fig", "approx"}
)
"""Lower-cased words whose trailing ``.`` never ends a sentence (rule 4)."""

_CLOSERS = "\"'”’)]}»"
_OPENERS = "\"'“‘([{«"
_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n")
_END = re.compile(rf"([.!?…]+)[{re.escape(_CLOSERS)}]*(?=\s|\Z)")
_NEXT_WORD = re.compile(rf"\s*[{re.escape(_OPENERS)}]*(\S)")


def _is_end(text: str, match: re.Match[str], stop: int) -> bool:
    """Rules 3 and 4 for the candidate end ``match`` within ``text[:stop]``."""
    following = _NEXT_WORD.match(text, match.end(), stop)
    next_char = following.group(1) if following else ""
    if next_char.islower():
        return False
    if match.group(1) != ".":
        return True
    start = match.start()
    word_start = start
    while word_start > 0 and not text[word_start - 1].isspace():
        word_start -= 1
    word = text[word_start:start].lstrip(_OPENERS)
    if word.lower() in ABBREVIATIONS:
        return False
    if len(word) == 1 and word.isupper():
        return False
    return not (word.lower() == "no" and next_char.isdigit())


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the sentences of ``text``, in order (rules above).

    >>> text = "Mr. Smith paid 3.5 dollars. Did he?! Yes... maybe"
    >>> [text[s:e] for s, e in split_sentences(text)]
    ['Mr. Smith paid 3.5 dollars.', 'Did he?!', 'Yes... maybe']
    >>> split_sentences("  ")
    []
    >>> split_sentences("A dog. \u200b")  # a zero-width space is no sentence
    [(0, 6)]
    """
    spans: list[tuple[int, int]] = []

    def emit(start: int, end: int) -> None:
        piece = text[start:end]
        stripped = piece.strip()
        if has_visible_character(stripped):
            left = start + len(piece) - len(piece.lstrip())
            spans.append((left, left + len(stripped)))

    paragraph_start = 0
    breaks = [m.start() for m in _BLANK_LINE.finditer(text)] + [len(text)]
    for paragraph_end in breaks:
        start = paragraph_start
        for match in _END.finditer(text, paragraph_start, paragraph_end):
            if _is_end(text, match, paragraph_end):
                emit(start, match.end())
                start = match.end()
        emit(start, paragraph_end)
        paragraph_start = paragraph_end
    return spans


@dataclass(frozen=True)
class Slice:
    """One image or one sentence of a sample, located in its segment."""

    kind: Literal["image", "text"]
    """``image`` or ``text``."""
    segment: int
    """Index of the segment in ``sample.segments``."""
    start: int
    """Start of the character span in the segment's text (0 for an image)."""
    end: int
    """End (exclusive) of the character span in the segment's text (0 for an image)."""
    role: Literal["context", "target"]
    """The segment's role."""
    text: str | None = None
    """The sentence, ``segment.text[start:end]`` (``None`` for an image)."""
    image: str | None = None
    """The image path, relative to the dataset root (``None`` for text)."""


def slices(sample: Sample, by: Literal["sentence", "segment"] = "sentence") -> list[Slice]:
    """The slices of ``sample`` in order: each image, and each sentence (or text segment).

    ``by="segment"`` gives one slice per text segment, spanning its whitespace-trimmed text.

    >>> from sugar.data.schema import Segment
    >>> s = Sample("s", [Segment.image_("a.png"), Segment.text_("Hi. Bye.", role="target")])
    >>> [(x.kind, x.segment, x.start, x.end, x.text or x.image) for x in slices(s)]
    [('image', 0, 0, 0, 'a.png'), ('text', 1, 0, 3, 'Hi.'), ('text', 1, 4, 8, 'Bye.')]
    """
    if by not in ("sentence", "segment"):
        raise ValueError(f"by={by!r}: must be 'sentence' or 'segment'")
    out: list[Slice] = []
    for index, segment in enumerate(sample.segments):
        if segment.image is not None:
            out.append(Slice("image", index, 0, 0, segment.role, image=segment.image))
            continue
        assert segment.text is not None  # the schema guarantees text segments have text
        text = segment.text
        if by == "sentence":
            spans = split_sentences(text)
        else:
            left = len(text) - len(text.lstrip())
            spans = [(left, len(text.rstrip()))]
        for start, end in spans:
            out.append(Slice("text", index, start, end, segment.role, text=text[start:end]))
    return out
