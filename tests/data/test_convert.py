from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sugar.data.convert import (
    coco_captions,
    convert_file,
    image_caption_csv,
    image_caption_jsonl,
    interleaved_documents,
    llava_conversations,
)
from sugar.data.jsonl import DataError, read_samples
from sugar.data.schema import Sample, Segment

MakePng = Callable[[Path], Path]
IMG, CTX, TGT = Segment.image_, "context", "target"


def _json(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def _jsonl(path: Path, *objs: Any) -> Path:
    path.write_text("".join(json.dumps(o) + "\n" for o in objs), encoding="utf-8")
    return path


# --- image-caption CSV / JSONL -----------------------------------------------------------------


def test_image_caption_csv(tmp_path: Path) -> None:
    src = tmp_path / "caps.csv"
    src.write_text(
        "\ufeffimage,caption,source\nimg/1.png, A red square. ,web\n"
        'img/2.png,"A blue, round\nthing.",book\n',
        encoding="utf-8",
    )
    assert image_caption_csv(src, image_dir="data") == [
        Sample(
            "caps-0",
            [IMG("data/img/1.png"), Segment.text_("A red square.", TGT)],
            "caption",
            {"source": "web"},
        ),
        Sample(
            "caps-1",
            [IMG("data/img/2.png"), Segment.text_("A blue, round\nthing.", TGT)],
            "caption",
            {"source": "book"},
        ),
    ]


def test_image_caption_csv_id_column(tmp_path: Path) -> None:
    src = tmp_path / "c.csv"
    src.write_text("id,caption,image\nk1,Hi.,a.png\n", encoding="utf-8")
    assert [s.id for s in image_caption_csv(src)] == ["k1"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", r"c\.csv:1: empty file: a header row is required"),
        ("image,text\na.png,x\n", r"c\.csv:1: .*no column 'caption'"),
        ("image,caption\na.png,Hi.\nb.png,  \n", r"c\.csv:3: caption='  ': must be non-empty"),
        ("image,caption\n,Hi.\n", r"c\.csv:2: image='': must be a non-empty image path"),
        ("image,caption\na.png,Hi.,extra\n", r"c\.csv:2: 1 more field\(s\) than the header"),
        ("image,caption,x\na.png,Hi.\n", r"c\.csv:2: missing field\(s\) \['x'\]"),
        ("id,image,caption\nk,a.png,A.\nk,b.png,B.\n", r"c\.csv:3: id='k': duplicates .*line 2"),
        (
            "image,caption\n../a.png,Hi.\n",
            r"c\.csv:2: image='\.\./a\.png': resolves outside the dataset root",
        ),
        ("image,caption\nhttp://x/a.png,Hi.\n", r"c\.csv:2: image='http://x/a\.png': a URL"),
    ],
)
def test_image_caption_csv_errors(tmp_path: Path, content: str, message: str) -> None:
    src = tmp_path / "c.csv"
    src.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        image_caption_csv(src, root=tmp_path)


def test_image_caption_jsonl(tmp_path: Path) -> None:
    src = _jsonl(
        tmp_path / "c.jsonl",
        {"file": "a.png", "text": "A cat.", "uid": 7, "lang": "en"},
        {"file": "b.png", "text": "A dog.", "uid": "x"},
    )
    got = image_caption_jsonl(src, image_key="file", caption_key="text", id_key="uid")
    assert got == [
        Sample("7", [IMG("a.png"), Segment.text_("A cat.", TGT)], "caption", {"lang": "en"}),
        Sample("x", [IMG("b.png"), Segment.text_("A dog.", TGT)], "caption", {}),
    ]
    src.write_text('{"image": "a.png", "caption": "A."}\n\n{"image": "b.png"}\n')
    with pytest.raises(DataError, match=r"c\.jsonl:3: caption=None"):
        image_caption_jsonl(src)
    src.write_text('{"image": "a.png", "caption": "A."}\n[1]\n')
    with pytest.raises(DataError, match=r"c\.jsonl:2: must be a JSON object, got list"):
        image_caption_jsonl(src)
    src.write_text('{"image": "a.png", "caption": "A."}\n{"image": \n')
    with pytest.raises(DataError, match=r"c\.jsonl:2: malformed JSON at column"):
        image_caption_jsonl(src)


# --- COCO --------------------------------------------------------------------------------------


def _coco(**change: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "images": [{"id": 1, "file_name": "1.jpg"}, {"id": 2, "file_name": "2.jpg"}],
        "annotations": [
            {"id": 10, "image_id": 2, "caption": "Two dogs.\n"},
            {"id": 11, "image_id": 1, "caption": "A cat."},
            {"id": 12, "image_id": 2, "caption": "Dogs play."},
        ],
    }
    data.update(change)
    return data


def test_coco_captions(tmp_path: Path) -> None:
    got = coco_captions(_json(tmp_path / "coco.json", _coco()), image_dir="val2014")
    assert [s.id for s in got] == ["coco-10", "coco-11", "coco-12"]
    assert got[0] == Sample(
        "coco-10",
        [IMG("val2014/2.jpg"), Segment.text_("Two dogs.", TGT)],
        "caption",
        {"image_id": 2},
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"annotations": [{"id": 1, "image_id": 9, "caption": "x"}]},
            r"record 0: annotations\[0\]\.image_id=9",
        ),
        ({"annotations": [{"id": 1, "image_id": 1}]}, r"record 0: annotations\[0\]\.caption: miss"),
        (
            {"annotations": [{"id": 1, "image_id": 1, "caption": ""}]},
            r"record 0: annotations\[0\]\.caption=''",
        ),
        ({"images": [{"id": 1}]}, r"record 0: file_name of image 1=None"),
        ({"images": [{"id": 1, "file_name": "a"}, {"id": 1}]}, r"images\[1\]\.id=1: duplicate"),
        ({"images": None}, r"'images': a COCO captions file needs a list"),
    ],
)
def test_coco_errors(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    data = _coco(**change)
    if "images" in change and "annotations" not in change:
        data["annotations"] = [{"id": 1, "image_id": 1, "caption": "x"}]
    with pytest.raises(DataError, match=r"coco\.json: " + message):
        coco_captions(_json(tmp_path / "coco.json", data))


def test_coco_duplicate_annotation_ids(tmp_path: Path) -> None:
    data = _coco(annotations=[{"id": 5, "image_id": 1, "caption": "A."}] * 2)
    with pytest.raises(DataError, match=r"record 1: id='coco-5': duplicates .* record 0"):
        coco_captions(_json(tmp_path / "coco.json", data))


# --- LLaVA -------------------------------------------------------------------------------------


def _turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"from": who, "value": value} for who, value in pairs]


def test_llava_conversations(tmp_path: Path) -> None:
    records = [
        {
            "id": "a",
            "image": "coco/1.jpg",
            "conversations": _turns(
                ("human", "What is this?\n<image>"),
                ("gpt", "A cat."),
                ("human", "Color?"),
                ("gpt", "Black."),
            ),
        },
        {"id": 7, "image": "2.jpg", "conversations": _turns(("human", "Hi"), ("gpt", "Hello"))},
        {"conversations": _turns(("human", "Text only?"), ("gpt", "Yes.")), "source": "x"},
        {
            "id": "m",
            "image": ["p.jpg", "q.jpg"],
            "conversations": _turns(("human", "<image> vs <image>"), ("gpt", "Same.")),
        },
    ]
    got = llava_conversations(_json(tmp_path / "llava.json", records), image_dir="imgs")
    assert got == [
        Sample(
            "a",
            [
                Segment.text_("What is this?"),
                IMG("imgs/coco/1.jpg"),
                Segment.text_("A cat.", TGT),
                Segment.text_("Color?"),
                Segment.text_("Black.", TGT),
            ],
            "chat",
        ),
        Sample(
            "7",
            [IMG("imgs/2.jpg"), Segment.text_("Hi"), Segment.text_("Hello", TGT)],
            "chat",
        ),
        Sample(
            "llava-2",
            [Segment.text_("Text only?"), Segment.text_("Yes.", TGT)],
            "chat",
            {"source": "x"},
        ),
        Sample(
            "m",
            [
                IMG("imgs/p.jpg"),
                Segment.text_("vs"),
                IMG("imgs/q.jpg"),
                Segment.text_("Same.", TGT),
            ],
            "chat",
        ),
    ]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            {"image": "a.jpg", "conversations": _turns(("human", "<image><image>"), ("gpt", "x"))},
            r"record 1: 1 image\(s\) but 2 <image> placeholder\(s\)",
        ),
        (
            {"conversations": _turns(("human", "<image> hi"), ("gpt", "x"))},
            r"record 1: 0 image\(s\) but 1 <image>",
        ),
        (
            {"image": "a.jpg", "conversations": _turns(("human", "hi"), ("gpt", "<image>"))},
            r"record 1: conversations\[1\]\.value: <image> in a gpt turn",
        ),
        (
            {"conversations": _turns(("human", "hi"), ("bot", "x"))},
            r"record 1: conversations\[1\]\.from='bot'",
        ),
        ({"conversations": []}, r"record 1: conversations=\[\]: must be a non-empty list"),
        (
            {"conversations": _turns(("human", "hi"), ("gpt", "  "))},
            r"record 1: conversations\[1\]\.value='  ': must be non-empty",
        ),
        ({"image": 3, "conversations": _turns(("gpt", "x"))}, r"record 1: image=3"),
    ],
)
def test_llava_errors(tmp_path: Path, record: dict[str, Any], message: str) -> None:
    ok = {"id": "ok", "conversations": _turns(("human", "hi"), ("gpt", "yo"))}
    with pytest.raises(DataError, match=r"l\.json: " + message):
        llava_conversations(_json(tmp_path / "l.json", [ok, record]))


# --- interleaved documents ---------------------------------------------------------------------


def test_interleaved_obelics_and_mmc4(tmp_path: Path) -> None:
    obelics = {
        "texts": ["Intro text.", None, "  ", "After image."],
        "images": [None, "img/a.jpg", None, None],
        "url": "http://page",
        "metadata": [{"big": 1}],
    }
    mmc4 = {
        "id": "doc2",
        "text_list": ["First sentence.", "Second sentence."],
        "image_info": [
            {"image_name": "b.jpg", "matched_text_index": 1, "matched_sim": 0.3},
            {"image_name": "c.jpg", "matched_text_index": 1},
            {"image_name": "d.jpg", "matched_text_index": 0},
        ],
    }
    got = interleaved_documents(_jsonl(tmp_path / "docs.jsonl", obelics, mmc4))
    assert got == [
        Sample(
            "docs-0",
            [Segment.text_("Intro text."), IMG("img/a.jpg"), Segment.text_("After image.")],
            "document",
            {"url": "http://page"},
        ),
        Sample(
            "doc2",
            [
                IMG("d.jpg"),
                Segment.text_("First sentence."),
                IMG("b.jpg"),
                IMG("c.jpg"),
                Segment.text_("Second sentence."),
            ],
            "document",
        ),
    ]
    assert all(seg.role == CTX for sample in got for seg in sample.segments)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"texts": ["a"], "images": [None, "x.jpg"]}, r"'texts' and 'images' must be lists of"),
        ({"texts": ["a", None], "images": ["x.jpg", None]}, r"position 0: exactly one of"),
        ({"texts": [None], "images": ["http://x/a.jpg"]}, r"images\[0\]='http://x/a\.jpg': a URL"),
        ({"texts": [None], "images": [None]}, r"position 0: exactly one"),
        ({"texts": [], "images": []}, r"sample 'd-1' has no segments"),
        (
            {"text_list": ["a"], "image_info": [{"image_name": "x", "matched_text_index": 1}]},
            r"image_info\[0\]\.matched_text_index=1: not in text_list",
        ),
        ({"text_list": ["a"], "image_info": [{"matched_text_index": 0}]}, r"image_info\[0\]: no"),
        ({"text_list": [3]}, r"text_list\[0\]=3: must be a string"),
        ({"other": 1}, r"needs 'texts'\+'images' \(OBELICS\) or 'text_list' \(MMC4\)"),
    ],
)
def test_interleaved_errors(tmp_path: Path, record: dict[str, Any], message: str) -> None:
    src = _jsonl(tmp_path / "d.jsonl", {"texts": ["ok"], "images": [None]}, record)
    with pytest.raises(DataError, match=r"d\.jsonl:2: " + message):
        interleaved_documents(src)


def test_interleaved_json_list_names_record_index(tmp_path: Path) -> None:
    src = _json(tmp_path / "d.json", [{"texts": ["ok"], "images": [None]}, {"texts": 1}])
    with pytest.raises(DataError, match=r"d\.json: record 1: 'texts' and 'images'"):
        interleaved_documents(src)


# --- convert_file ------------------------------------------------------------------------------


def test_convert_file_writes_readable_jsonl(tmp_path: Path, make_png: MakePng) -> None:
    make_png(tmp_path / "out" / "images" / "1.png")
    make_png(tmp_path / "out" / "images" / "2.png")
    src = _json(
        tmp_path / "coco.json",
        _coco(images=[{"id": 1, "file_name": "1.png"}, {"id": 2, "file_name": "2.png"}]),
    )
    out = tmp_path / "out" / "train.jsonl"
    assert convert_file("coco_captions", src, out, image_dir="images") == 3
    samples = read_samples(out)
    assert samples == coco_captions(src, image_dir="images")
    assert samples[1].images == ["images/1.png"]


def test_convert_file_checks_root_and_options(tmp_path: Path) -> None:
    src = tmp_path / "c.csv"
    src.write_text("image,caption\n../up.png,Hi.\n", encoding="utf-8")
    out = tmp_path / "out" / "c.jsonl"
    with pytest.raises(DataError, match=r"c\.csv:2: image='\.\./up\.png': resolves outside"):
        convert_file("image_caption_csv", src, out)
    assert not out.exists()
    assert convert_file("image_caption_csv", src, out, root=tmp_path, image_dir="out") == 1
    assert read_samples(out, root=tmp_path, check_images=False)[0].images == ["out/../up.png"]
    with pytest.raises(ValueError, match="format='parquet': must be one of"):
        convert_file("parquet", src, out)
    with pytest.raises(ValueError, match="image_col"):
        convert_file("image_caption_csv", src, out, image_col="x")
