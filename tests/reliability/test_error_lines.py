"""Issue 18 items 6-7: hostile and careless inputs end in one line ``sugar: error: FILE:LINE:
field: what`` (exit 2), never a traceback; oversized images are refused before decoding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from sugar.cli import app
from sugar.data.jsonl import DataError, load_image
from sugar.io import write_checksum
from sugar.train.run import truncate_log

TEXT = {"kind": "text", "text": "x", "role": "context"}


def _image(name: str) -> dict:
    return {"kind": "image", "image": name, "role": "context"}


def _one_error_line(args: list[str], *expected: str) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    output = result.output
    assert result.exit_code == 2, output
    assert "Traceback" not in output and output.count("\n") == 1, output
    assert output.startswith("sugar: error: "), output
    for part in expected:
        assert part in output, output
    return output


SAMPLES = {
    "deep_meta": '{"id": "a", "segments": [' + json.dumps(TEXT) + '], "meta": '
    + "[" * 200_000 + "]" * 200_000 + "}",
    "long_image_name": json.dumps({"id": "a", "segments": [_image("x" * 5000 + ".png")]}),
    "null_byte_path": json.dumps({"id": "a", "segments": [_image("a\x00.png")]}),
    "surrogate_path": '{"id": "a", "segments": [{"kind": "image", "image": "\\ud800.png", '
    '"role": "context"}]}',
    "surrogate_text": '{"id": "a", "segments": [{"kind": "text", "text": "caf\\udce9", '
    '"role": "context"}]}',
    "directory_as_image": json.dumps({"id": "a", "segments": [_image("sub")]}),
}  # fmt: skip
WHAT = {
    "deep_meta": "nested deeper than 64 levels",
    "long_image_name": "too long for a file name",
    "null_byte_path": "null byte",
    "surrogate_path": "lone surrogate",
    "surrogate_text": "segments[0].text: a lone surrogate",
    "directory_as_image": "image file not found",
}


@pytest.mark.parametrize("case", sorted(SAMPLES))
def test_hostile_samples_are_one_line_with_file_and_line(case: str, tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / f"{case}.jsonl"
    path.write_text(json.dumps({"id": "ok", "segments": [TEXT]}) + "\n" + SAMPLES[case] + "\n")
    _one_error_line(["data", "validate", path], f"{case}.jsonl:2: ", WHAT[case])


def test_a_directory_where_a_file_is_expected(tmp_path: Path) -> None:
    _one_error_line(["data", "validate", tmp_path], str(tmp_path), "is a directory")
    _one_error_line(["config", "show", "-c", tmp_path], str(tmp_path))


def test_manifests_of_the_wrong_shape(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for content in ("[]", '{"format": "sugar-bundle", "version": 1, "family": 3}'):
        (bundle / "model.json").write_text(content)
        _one_error_line(["embed", "--model", bundle, "--text", "hi"], "model.json")
    index = tmp_path / "index"
    index.mkdir()
    for content in ("[1]", '{"format": "sugar-index", "format_version": 1, "dim": "x"}'):
        (index / "manifest.json").write_text(content)
        write_checksum(index / "manifest.json")
        _one_error_line(["index", "info", index], "manifest.json")


def test_an_unterminated_csv_quote_is_refused(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    src = tmp_path / "pairs.csv"
    src.write_text('image,caption\na.png,"a red\na.png,b\na.png,c\n')
    _one_error_line(
        ["data", "convert", "image_caption_csv", src, tmp_path / "out.jsonl"],
        "pairs.csv:2: ", "malformed CSV",
    )  # fmt: skip
    assert not (tmp_path / "out.jsonl").exists()


def test_a_torn_last_log_line_is_dropped_and_a_torn_middle_one_named(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    truncate_log(log, 2)
    assert log.read_text() == '{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n'
    log.write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"log\.jsonl:2: not a log record"):
        truncate_log(log, 3)


def test_a_100_megapixel_png_is_refused_before_decoding(tmp_path: Path) -> None:
    Image.new("1", (10_000, 10_000)).save(tmp_path / "bomb.png")  # about 12 KB on disk
    assert (tmp_path / "bomb.png").stat().st_size < 100_000
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "a", "segments": [_image("bomb.png")]}) + "\n")
    _one_error_line(["data", "validate", data], "d.jsonl:1: ", "100,000,000 pixels is over")
    with pytest.raises(DataError, match="over the limit of 89,478,485; to decode it, set"):
        load_image(tmp_path, "bomb.png")


def test_the_pixel_limit_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.new("RGB", (20, 20)).save(tmp_path / "a.png")
    assert load_image(tmp_path, "a.png").size == (20, 20)
    monkeypatch.setenv("SUGAR_MAX_IMAGE_PIXELS", "399")
    with pytest.raises(DataError, match="20x20 = 400 pixels is over the limit of 399"):
        load_image(tmp_path, "a.png")
    monkeypatch.setenv("SUGAR_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ValueError, match="SUGAR_MAX_IMAGE_PIXELS='lots'"):
        load_image(tmp_path, "a.png")
