from __future__ import annotations

import json
import logging
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from sugar.data.jsonl import (
    MAX_REASONS,
    DataError,
    iter_samples,
    load_image,
    read_samples,
    read_samples_report,
    resolve_image,
    validate_file,
    write_samples,
)
from sugar.data.schema import Sample, Segment

MakePng = Callable[[Path], Path]


def _line(image: str = "img/a.png", id: str = "s1", **extra: object) -> str:
    """A caption sample as one JSON line."""
    sample = {
        "id": id,
        "task": "caption",
        "segments": [
            {"kind": "image", "image": image, "role": "context"},
            {"kind": "text", "text": "A red square.", "role": "target"},
        ],
        **extra,
    }
    return json.dumps(sample)


def _write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def dataset(tmp_path: Path, make_png: MakePng) -> Path:
    root = tmp_path / "ds"
    make_png(root / "img" / "a.png")
    make_png(root / "img" / "b.png")
    return root


def test_round_trip(tmp_path: Path, dataset: Path) -> None:
    samples = [
        Sample("a", [Segment.image_("img/a.png"), Segment.text_("Un carré rouge.", "target")]),
        Sample(
            "b",
            [Segment.text_("Line\u2028sep and\nnewline."), Segment.image_("img/b.png")],
            task="story",
            meta={"answer": ["x", 1], "é": None},
        ),
    ]
    path = write_samples(dataset / "train.jsonl", samples)
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and text.count("\n") == 2
    assert "carré" in text  # UTF-8 kept, not escaped
    assert read_samples(path) == samples
    assert [p.name for p in dataset.iterdir() if p.name.startswith(".")] == []


def test_write_refuses_duplicate_ids_and_keeps_old_file(tmp_path: Path) -> None:
    path = write_samples(tmp_path / "d.jsonl", [Sample("x", [Segment.text_("Old.")])])
    dup = [Sample("x", [Segment.text_("A.")]), Sample("y", [Segment.text_("B.")])]
    with pytest.raises(DataError, match=r"d\.jsonl: samples\[2\] id='x': duplicates samples\[0\]"):
        write_samples(path, [*dup, Sample("x", [Segment.text_("C.")])])
    assert read_samples(path) == [Sample("x", [Segment.text_("Old.")])]


def test_empty_lines_are_skipped(dataset: Path) -> None:
    path = _write(dataset / "d.jsonl", "", _line(id="a"), "   ", _line(id="b"), "")
    assert [s.id for s in read_samples(path)] == ["a", "b"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "x", "segments": [', r"d\.jsonl:2: malformed JSON at column \d+"),
        (
            _line().replace('"kind": "text"', '"kind": "video"'),
            r"d\.jsonl:2: segments\[1\]\.kind='video': must be one of \['image', 'text'\]",
        ),
        (
            _line().replace('"role": "target"', '"role": "answer"'),
            r"d\.jsonl:2: segments\[1\]\.role='answer'",
        ),
        ('{"id": "x", "segments": []}', r"d\.jsonl:2: sample 'x' has no segments"),
        ('{"id": "x"}', r"d\.jsonl:2: a sample needs 'segments'"),
        ("[1, 2]", r"d\.jsonl:2: a sample must be a JSON object"),
        (_line(id="s0"), r"d\.jsonl:2: id='s0': duplicates the sample on line 1"),
        (_line(image="img/missing.png"), r"d\.jsonl:2: segments\[0\]\.image='img/missing\.png'"),
        (_line(image="../outside.png"), r"d\.jsonl:2: .*outside the dataset root"),
        (_line(image="/etc/passwd"), r"d\.jsonl:2: .*absolute paths are refused"),
    ],
)
def test_errors_name_file_line_and_field(dataset: Path, line: str, message: str) -> None:
    (dataset.parent / "outside.png").write_bytes(b"")  # it exists, yet is refused
    path = _write(dataset / "d.jsonl", _line(id="s0"), line)
    with pytest.raises(DataError, match=message):
        read_samples(path)


def test_missing_and_corrupt_images(dataset: Path) -> None:
    (dataset / "img" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png at all")
    path = _write(dataset / "d.jsonl", _line(id="ok"), _line(image="img/bad.png", id="bad"))
    with pytest.raises(DataError, match=r"d\.jsonl:2: segments\[0\]\.image='img/bad\.png': unread"):
        read_samples(path)
    assert len(read_samples(path, check_images=False)) == 2
    missing = _write(dataset / "m.jsonl", _line(image="img/nope.png"))
    with pytest.raises(DataError, match=r"m\.jsonl:1: .*image file not found"):
        read_samples(missing)


def test_truncated_png_is_corrupt(dataset: Path) -> None:
    data = (dataset / "img" / "a.png").read_bytes()
    (dataset / "img" / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"d\.jsonl:1: .*unreadable image"):
        read_samples(_write(dataset / "d.jsonl", _line(image="img/cut.png")))


def test_escape_is_refused_even_without_image_checks(dataset: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.png"
    Image.new("RGB", (2, 2)).save(outside)
    os.symlink(outside, dataset / "img" / "link.png")
    os.symlink(dataset / "img" / "a.png", dataset / "img" / "inner.png")
    for image in ("img/link.png", "img/../../x.png", str(dataset / "img" / "a.png")):
        path = _write(dataset / "d.jsonl", _line(image=image))
        with pytest.raises(DataError, match=r"d\.jsonl:1: segments\[0\]\.image="):
            read_samples(path, check_images=False)
        with pytest.raises(DataError):
            read_samples(path, on_bad_image="skip")
    inside = _write(
        dataset / "d.jsonl", _line(image="img/inner.png"), _line("img/../img/b.png", "2")
    )
    assert len(read_samples(inside)) == 2


def test_root_defaults_to_file_directory_and_can_be_given(dataset: Path, make_png: MakePng) -> None:
    (dataset / "sub").mkdir()
    path = _write(dataset / "sub" / "d.jsonl", _line())
    with pytest.raises(DataError, match="not found"):
        read_samples(path)
    assert len(read_samples(path, root=dataset)) == 1


def test_skip_policy_counts_every_skipped_sample(
    dataset: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (dataset / "img" / "bad.png").write_bytes(b"garbage")
    lines = [_line(id="ok0"), _line(image="img/bad.png", id="bad0")]
    lines += [_line(image=f"img/missing{i}.png", id=f"m{i}") for i in range(MAX_REASONS + 5)]
    lines.append(_line(image="img/b.png", id="ok1"))
    path = _write(dataset / "d.jsonl", *lines)
    with caplog.at_level(logging.WARNING, logger="sugar.data.jsonl"):
        samples, report = read_samples_report(path, on_bad_image="skip")
    assert [s.id for s in samples] == ["ok0", "ok1"]
    assert (report.n_read, report.n_skipped) == (2, MAX_REASONS + 6)
    assert len(report.skipped) == MAX_REASONS
    assert report.skipped[0][0] == 2 and "unreadable image" in report.skipped[0][1]
    assert report.skipped[1][0] == 3 and "not found" in report.skipped[1][1]
    assert f"skipped {MAX_REASONS + 6} sample(s)" in caplog.text
    with pytest.raises(DataError, match=r"d\.jsonl:2:"):
        read_samples_report(path)


def test_skip_policy_never_skips_schema_or_json_errors(dataset: Path) -> None:
    path = _write(dataset / "d.jsonl", _line(image="img/missing.png"), "{not json")
    with pytest.raises(DataError, match=r"d\.jsonl:2: malformed JSON"):
        read_samples(path, on_bad_image="skip")
    with pytest.raises(ValueError, match="on_bad_image='drop'"):
        read_samples(path, on_bad_image="drop")  # type: ignore[arg-type]


def test_iter_samples_is_lazy(dataset: Path) -> None:
    path = _write(dataset / "d.jsonl", _line(id="a"), "{broken")
    iterator = iter_samples(path)
    assert next(iterator).id == "a"
    with pytest.raises(DataError, match=":2:"):
        next(iterator)


def test_non_utf8_line(dataset: Path) -> None:
    path = dataset / "d.jsonl"
    path.write_bytes(_line().encode() + b"\n\xff\xfe\n")
    with pytest.raises(DataError, match=r"d\.jsonl:2: not UTF-8"):
        read_samples(path)


def test_validate_file_counts(dataset: Path) -> None:
    story = Sample(
        "st",
        [Segment.image_("img/a.png"), Segment.text_("One."), Segment.image_("img/b.png")],
        task="story",
    )
    caption = Sample("c", [Segment.image_("img/a.png"), Segment.text_("Two.", "target")], "caption")
    path = write_samples(dataset / "d.jsonl", [story, caption])
    assert validate_file(path) == {
        "samples": 2,
        "segments": {"image": 3, "text": 2},
        "roles": {"context": 4, "target": 1},
        "tasks": {"caption": 1, "story": 1},
        "images": 3,
        "images_checked": 2,
    }
    _write(path, _line(image="img/none.png"))
    with pytest.raises(DataError, match=r"d\.jsonl:1"):
        validate_file(path)


def test_resolve_and_load_image(dataset: Path) -> None:
    assert resolve_image(dataset, "img/./a.png") == (dataset / "img" / "a.png").resolve()
    Image.new("L", (3, 2)).save(dataset / "img" / "grey.png")
    image = load_image(dataset, "img/grey.png")
    assert image.mode == "RGB" and image.size == (3, 2)
    with pytest.raises(DataError, match=r"img/nope\.png.*not found"):
        load_image(dataset, "img/nope.png")
    (dataset / "img" / "bad.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"img/bad\.png.*unreadable"):
        load_image(dataset, "img/bad.png")
    with pytest.raises(DataError, match="outside"):
        load_image(dataset, "../x.png")


def test_data_error_is_a_value_error_and_pickles() -> None:
    error = DataError("field: bad", "f.jsonl", line=3)
    assert isinstance(error, ValueError) and str(error) == "f.jsonl:3: field: bad"
    assert str(pickle.loads(pickle.dumps(error))) == str(error)


def test_a_text_without_a_visible_character_is_refused_with_its_line(tmp_path: Path) -> None:
    """A zero-width space or a lone combining mark alone would make no slice, and training
    would stop at the step that drew the sample: reading names the file, line and field."""
    path = tmp_path / "d.jsonl"
    good = {"id": "a", "segments": [{"kind": "text", "text": "A dog.\u200b"}]}
    bad = {"id": "b", "segments": [{"kind": "text", "text": "\u200b\u0301", "role": "target"}]}
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError, match=r"d\.jsonl:2: segments\[0\]\.text=.*no visible character"):
        read_samples(path, tmp_path)
