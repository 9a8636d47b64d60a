from __future__ import annotations

import itertools
import re

import pytest

from sugar.data.schema import Sample, Segment
from sugar.data.slices import Slice, slices, split_sentences


def _sentences(text: str) -> list[str]:
    return [text[start:end] for start, end in split_sentences(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("One. Two.", ["One.", "Two."]),
        ("Mr. Smith met Dr. Jones. They talked.", ["Mr. Smith met Dr. Jones.", "They talked."]),
        ("Fruit, e.g. apples, i.e. food. Done.", ["Fruit, e.g. apples, i.e. food.", "Done."]),
        ("Apples, pears, etc. are fruit.", ["Apples, pears, etc. are fruit."]),
        ("I bought pears, etc. Then I left.", ["I bought pears, etc.", "Then I left."]),
        ("Cats vs. dogs. St. Paul is here.", ["Cats vs. dogs.", "St. Paul is here."]),
        ("See No. 5 now. No. I refuse.", ["See No. 5 now.", "No.", "I refuse."]),
        ("J. Smith and A. B. Jones came. Good.", ["J. Smith and A. B. Jones came.", "Good."]),
        (
            "It costs 3.5 dollars. Or 1,000.25 euros.",
            ["It costs 3.5 dollars.", "Or 1,000.25 euros."],
        ),
        ("Pi is 3.14.", ["Pi is 3.14."]),
        ("Wait... what? I see… Then go.", ["Wait... what?", "I see…", "Then go."]),
        ("Really?! Yes! No?", ["Really?!", "Yes!", "No?"]),
        ('He said "Stop!" Then he left.', ['He said "Stop!"', "Then he left."]),
        ('"Stop!" he said. (It worked.) Fine.', ['"Stop!" he said.', "(It worked.)", "Fine."]),
        ("Why (really?) not.", ["Why (really?) not."]),
        ("  One.   Two.\n\n\nThree.  ", ["One.", "Two.", "Three."]),
        ("Line one\ncontinues. Next.", ["Line one\ncontinues.", "Next."]),
        ("Title\n\nBody text here", ["Title", "Body text here"]),
        ("no terminal punctuation", ["no terminal punctuation"]),
        ("Ends with space.   ", ["Ends with space."]),
        ("Visit example.com today. Ok.", ["Visit example.com today.", "Ok."]),
        ("", []),
        (" \n\t ", []),
        (".", ["."]),
        # a piece with no letter, digit, punctuation or symbol is no sentence
        ("A dog. \u200b", ["A dog."]),
        ("A dog. \u0301", ["A dog."]),
        ("A dog.\xa0\xad", ["A dog."]),
        ("\u200b\ufeff", []),
        ("A dog. \u200bA cat.", ["A dog.", "\u200bA cat."]),
        ("Café. 🙂", ["Café.", "🙂"]),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert _sentences(text) == expected


def test_split_sentences_exact_spans() -> None:
    text = "  Hi there.  Mr. X left!\n\nEnd"
    assert split_sentences(text) == [(2, 11), (13, 24), (26, 29)]


@pytest.mark.parametrize(
    "text",
    [
        'A. B. C. d e f... G?! "h." (I.) J\n\n\nk.',
        "Mr. Dr. St. vs. e.g. i.e. No. 3. 4. x",
        "...!?. . .",
        "word " * 20,
    ],
)
def test_spans_cover_non_space_content_in_order(text: str) -> None:
    spans = split_sentences(text)
    assert all(start < end for start, end in spans)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
    pieces = [text[start:end] for start, end in spans]
    assert all(piece == piece.strip() for piece in pieces)
    assert re.sub(r"\s", "", "".join(pieces)) == re.sub(r"\s", "", text)


def test_slices_over_a_multi_segment_sample() -> None:
    sample = Sample(
        "doc",
        [
            Segment.text_("  Intro. Mr. Smith arrived.  "),
            Segment.image_("img/a.png"),
            Segment.text_("Q: what? A: 3.5 kg.", role="context"),
            Segment.image_("img/b.png"),
            Segment.text_("He left. Done", role="target"),
        ],
    )
    got = slices(sample)
    assert [(s.kind, s.segment, s.role) for s in got] == [
        ("text", 0, "context"),
        ("text", 0, "context"),
        ("image", 1, "context"),
        ("text", 2, "context"),
        ("text", 2, "context"),
        ("image", 3, "context"),
        ("text", 4, "target"),
        ("text", 4, "target"),
    ]
    for piece in got:
        segment = sample.segments[piece.segment]
        if piece.kind == "image":
            assert (piece.start, piece.end, piece.image, piece.text) == (0, 0, segment.image, None)
        else:
            assert segment.text is not None and piece.image is None
            assert piece.text == segment.text[piece.start : piece.end]
    texts = [s.text for s in got if s.kind == "text"]
    assert texts == ["Intro.", "Mr. Smith arrived.", "Q: what?", "A: 3.5 kg.", "He left.", "Done"]
    assert got[0] == Slice("text", 0, 2, 8, "context", text="Intro.")


def test_slices_by_segment() -> None:
    sample = Sample(
        "s",
        [Segment.image_("a.png"), Segment.text_(" One. Two. "), Segment.text_("Three.", "target")],
    )
    assert slices(sample, by="segment") == [
        Slice("image", 0, 0, 0, "context", image="a.png"),
        Slice("text", 1, 1, 10, "context", text="One. Two."),
        Slice("text", 2, 0, 6, "target", text="Three."),
    ]


def test_slices_unknown_by() -> None:
    sample = Sample("s", [Segment.text_("x")])
    with pytest.raises(ValueError, match="by='word'"):
        slices(sample, by="word")  # type: ignore[arg-type]


def test_a_segment_without_a_visible_character_has_no_slice() -> None:
    sample = Sample("s", [Segment.image_("a.png"), Segment.text_("\u200b\xad", "target")])
    assert [piece.kind for piece in slices(sample)] == ["image"]
