"""``sugar data convert instructed_retrieval``: user rows (query, instruction, positive,
negatives?, intent?) -> the instructed layout that train-control and ``--tasks instructed`` read,
with errors that name the file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from sugar.cli import app
from sugar.data.convert import convert_file
from sugar.data.instructed import read_instructed
from sugar.data.jsonl import DataError

ROWS = [
    {"query": {"image": "img/a.png"}, "instruction": "find its caption",
     "positive": "A red square.", "negatives": ["A blue circle.", {"image": "img/b.png"}],
     "intent": "caption"},
    {"query": "a red square", "instruction": "find a picture of it",
     "positive": {"image": "img/a.png", "text": "red"}},
    {"query": "a blue circle", "instruction": "find its caption", "positive": "A blue circle."},
]  # fmt: skip


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    (tmp_path / "img").mkdir()
    for name, colour in (("a", "red"), ("b", "blue")):
        Image.new("RGB", (8, 8), colour).save(tmp_path / "img" / f"{name}.png")
    return tmp_path


def test_rows_convert_to_the_layout_the_readers_use(root: Path) -> None:
    src = _write(root / "rows.jsonl", ROWS)
    out = root / "instructed" / "test.jsonl"
    result = CliRunner().invoke(
        app, ["data", "convert", "instructed_retrieval", str(src), str(out), "--root", str(root),
              "-o", "split=test"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "wrote 3 samples" in result.output
    data = read_instructed(out, root)  # checks every id; images are verified too
    corpus = [[s.text or s.image for s in doc.segments] for doc in data.corpus]
    assert corpus == [["A red square."], ["A blue circle."], ["img/b.png"], ["img/a.png", "red"]]
    assert [q.meta["intent"] for q in data.queries] == ["caption", "user", "user"]
    assert data.instructions == ["find its caption", "find a picture of it", "find its caption"]
    # a document named twice is one candidate: row 3's positive is row 1's stated negative
    assert data.relevance.int().tolist() == [[1, 0, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0]]
    assert [q.meta["negatives"] for q in data.queries] == [["doc-1", "doc-2"], [], []]
    assert data.queries[0].segments[0].image == "img/a.png"
    assert (root / "instructed_corpus" / "test.jsonl").is_file()


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"query": "q", "instruction": "i"}, r"rows\.jsonl:2: missing \['positive'\]"),
        ({"query": "q", "instruction": " ", "positive": "p"}, r":2: instruction=' ': must be"),
        ({"query": "q", "instruction": "i", "positive": "p", "negatives": "n"},
         r":2: negatives='n': must be a list"),
        ({"query": "q", "instruction": "i", "positive": {"image": "../x.png"}},
         r":2: positive\.image='\.\./x\.png': resolves outside the dataset root"),
        ({"query": {"video": "v.mp4"}, "instruction": "i", "positive": "p"},
         r":2: query=\{'video': 'v\.mp4'\}: must be a text or"),
        ({"query": "q", "instruction": "i", "positive": "p", "label": 1},
         r":2: missing \[\], unknown \['label'\]"),
        (["q", "i", "p"], r":2: must be a JSON object, got list"),
        ({"query": "q\udcff", "instruction": "i", "positive": "p"}, r":2: .*lone surrogate"),
    ],
)  # fmt: skip
def test_a_bad_row_is_named_by_file_and_line(root: Path, row: object, message: str) -> None:
    src = _write(root / "rows.jsonl", [ROWS[2], row])
    with pytest.raises(DataError, match=message):
        convert_file("instructed_retrieval", src, root / "out.jsonl", root, split="test")
    assert not (root / "out.jsonl").exists() and not (root / "instructed_corpus").exists()


def test_the_split_is_required_and_checked(root: Path) -> None:
    src = _write(root / "rows.jsonl", ROWS)
    base = ["data", "convert", "instructed_retrieval", str(src), str(root / "o.jsonl")]
    missing = CliRunner().invoke(app, base)
    assert missing.exit_code == 2 and "missing a required argument: 'split'" in missing.output
    bad = CliRunner().invoke(app, [*base, "-o", "split=../x"])
    assert bad.exit_code == 2 and "split='../x': a name such as" in bad.output
    assert sorted(p.name for p in root.iterdir()) == ["img", "rows.jsonl"]  # nothing written
