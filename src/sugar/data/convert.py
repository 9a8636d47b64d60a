"""Converters from common image-text formats to samples (bring-your-own data).

Each converter reads one source file and returns a list of :class:`~sugar.data.schema.Sample`;
:func:`convert_file` runs one by name and writes the JSONL atomically. Formats:

- ``image_caption_csv``: CSV with a header and ``image``/``caption`` columns (optional ``id``;
  other columns go to ``meta``) -> [image, caption (target)], task ``caption``.
- ``image_caption_jsonl``: one object per line with ``image``/``caption`` keys (configurable).
- ``coco_captions``: COCO captions JSON -> one sample per (image, caption) annotation, id
  ``coco-{annotation id}``, ``meta={"image_id": ...}``.
- ``llava_conversations``: LLaVA JSON list -> human turns as context text, gpt turns as target
  text, the image where the human turn's ``<image>`` placeholder was (first if there is none).
- ``interleaved_documents``: OBELICS-style (aligned ``texts``/``images`` lists) or MMC4-style
  (``text_list`` + ``image_info`` with ``matched_text_index``) documents, all context, task
  ``document``.
- ``instructed_retrieval`` (option ``split``, required): rows ``{"query", "instruction",
  "positive", "negatives"?, "intent"?}``, each of query, positive and negatives a text or
  ``{"text", "image"}`` -> the queries (task ``instructed``) in OUT and their shared corpus
  (every distinct positive and negative) in ``ROOT/instructed_corpus/<split>.jsonl``, the
  layout of :mod:`sugar.data.instructed` that ``sugar train-control`` and ``sugar eval --tasks
  instructed`` read (write OUT as ``ROOT/instructed/<split>.jsonl`` for those).

Conventions shared by every converter: image paths are copied as given, prefixed with
``image_dir`` when set, and must be relative to the dataset root the output will be read with;
when ``root`` is given each path is escape-checked against it (:func:`~sugar.data.jsonl.
resolve_image`), URLs are refused (download the images first). Captions and turns are stripped
of surrounding whitespace. Missing ids become ``{file stem}-{record index}``. JSON-list sources
may also be JSONL (one record per line). Any bad record raises
:class:`~sugar.data.jsonl.DataError` naming the file, the record (line or index) and the field.
"""

from __future__ import annotations

import csv
import inspect
import json
import posixpath
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sugar.data.instructed import instructed_rows
from sugar.data.jsonl import DataError, resolve_image, write_samples
from sugar.data.schema import Sample, SchemaError, Segment

__all__ = [
    "CONVERTERS",
    "Converted",
    "coco_captions",
    "convert_file",
    "image_caption_csv",
    "image_caption_jsonl",
    "instructed_retrieval",
    "interleaved_documents",
    "llava_conversations",
]

Where = dict[str, int]  # {"line": n} or {"record": i}: where a record sits in its source file
_PLACEHOLDER = "<image>"
_SCALARS = (str, int, float, bool, type(None))
_LLAVA_ROLES: dict[str, Literal["context", "target"]] = {
    "human": "context",
    "user": "context",
    "gpt": "target",
    "assistant": "target",
}


class _Builder:
    """Collects samples from one source, naming ``src`` and the record in every error."""

    def __init__(self, src: Path, root: str | Path | None, image_dir: str) -> None:
        self.src, self.root, self.image_dir = src, root, image_dir
        self.samples: list[Sample] = []
        self.seen: dict[str, Where] = {}

    def error(self, where: Where, detail: str) -> DataError:
        return DataError(detail, self.src, **where)

    def text(self, where: Where, name: str, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.error(where, f"{name}={value!r}: must be non-empty text")
        return value.strip()

    def image(self, where: Where, name: str, value: Any) -> Segment:
        if not isinstance(value, str) or not value.strip():
            raise self.error(where, f"{name}={value!r}: must be a non-empty image path")
        if "://" in value:
            raise self.error(where, f"{name}={value!r}: a URL; download it, give a local path")
        path = posixpath.join(self.image_dir, value) if self.image_dir else value
        if self.root is not None:
            try:
                resolve_image(self.root, path, name)
            except DataError as exc:
                raise self.error(where, exc.detail) from None
        return Segment.image_(path)

    def sample_id(self, where: Where, name: str, value: Any, index: int) -> str:
        if value is None:
            return f"{self.src.stem}-{index}"
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return self.text(where, name, value)

    def add(self, where: Where, id: str, segments: list[Segment], task: str, meta: dict) -> None:
        if id in self.seen:
            first = self.seen[id]
            label = f"line {first['line']}" if "line" in first else f"record {first['record']}"
            raise self.error(where, f"id={id!r}: duplicates the sample of {label}")
        try:
            self.samples.append(Sample(id, segments, task=task, meta=meta))
        except SchemaError as exc:
            raise self.error(where, str(exc)) from None
        self.seen[id] = where


def _json_records(src: Path) -> Iterator[tuple[Where, int, Any]]:
    """``(where, index, record)`` of a JSON list file or of a JSONL file (blank lines skipped)."""
    text = src.read_text(encoding="utf-8-sig")
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            detail = f"malformed JSON at column {exc.colno}: {exc.msg}"
            raise DataError(detail, src, line=exc.lineno) from None
        for index, record in enumerate(records):
            yield {"record": index}, index, record
        return
    index = 0
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            detail = f"malformed JSON at column {exc.colno}: {exc.msg}"
            raise DataError(detail, src, line=lineno) from None
        yield {"line": lineno}, index, record
        index += 1


def _object(build: _Builder, where: Where, record: Any) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise build.error(where, f"must be a JSON object, got {type(record).__name__}")
    return record


def _csv_rows(build: _Builder, reader: csv.DictReader) -> Iterator[tuple[dict, int]]:
    """(row, its last line) of ``reader``; a malformed row (an unterminated quote) is a
    :class:`DataError` naming the line."""
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            detail = f"malformed CSV in the row starting here: {exc} (an unterminated quote?)"
            raise build.error({"line": start}, detail) from None
        yield row, reader.line_num


def _add_caption_pair(
    build: _Builder,
    where: Where,
    index: int,
    record: dict[str, Any],
    keys: tuple[str, str, str],
    task: str,
) -> None:
    """Add the sample [image, caption (target)] of one CSV row or JSON record; ``keys``: its
    image, caption and id fields; the other fields go to ``meta``."""
    image_key, caption_key, id_key = keys
    segments = [
        build.image(where, image_key, record.get(image_key)),
        Segment.text_(build.text(where, caption_key, record.get(caption_key)), "target"),
    ]
    sample_id = build.sample_id(where, id_key, record.get(id_key), index)
    meta = {key: value for key, value in record.items() if key not in keys}
    build.add(where, sample_id, segments, task, meta)


def image_caption_csv(
    src: str | Path,
    *,
    image_column: str = "image",
    caption_column: str = "caption",
    id_column: str = "id",
    image_dir: str = "",
    root: str | Path | None = None,
    task: str = "caption",
    delimiter: str = ",",
) -> list[Sample]:
    """Samples [image, caption (target)] from a CSV file with a header row.

    The id comes from ``id_column`` when the header has it; other columns go to ``meta`` as
    strings. Errors name the file and the CSV line.
    """
    build = _Builder(Path(src), root, image_dir)
    with open(build.src, encoding="utf-8-sig", newline="") as handle:
        # strict: an unterminated quote is an error, not a field that swallows the next rows
        reader = csv.DictReader(handle, delimiter=delimiter, strict=True)
        try:
            header = reader.fieldnames
        except csv.Error as exc:
            raise build.error({"line": 1}, f"malformed CSV: {exc}") from None
        if not header:
            raise build.error({"line": 1}, "empty file: a header row is required")
        for column in (image_column, caption_column):
            if column not in header:
                raise build.error({"line": 1}, f"header {header}: no column {column!r}")
        for index, (row, line) in enumerate(_csv_rows(build, reader)):
            where = {"line": line}
            if None in row:
                raise build.error(where, f"{len(row[None])} more field(s) than the header")
            missing = [key for key, value in row.items() if value is None]
            if missing:
                raise build.error(where, f"missing field(s) {missing}: fewer than the header")
            _add_caption_pair(
                build, where, index, row, (image_column, caption_column, id_column), task
            )
    return build.samples


def image_caption_jsonl(
    src: str | Path,
    *,
    image_key: str = "image",
    caption_key: str = "caption",
    id_key: str = "id",
    image_dir: str = "",
    root: str | Path | None = None,
    task: str = "caption",
) -> list[Sample]:
    """Samples [image, caption (target)] from JSONL objects; other keys go to ``meta``."""
    build = _Builder(Path(src), root, image_dir)
    for where, index, record in _json_records(build.src):
        record = _object(build, where, record)
        _add_caption_pair(build, where, index, record, (image_key, caption_key, id_key), task)
    return build.samples


def coco_captions(
    src: str | Path, *, image_dir: str = "", root: str | Path | None = None, task: str = "caption"
) -> list[Sample]:
    """One sample [image, caption (target)] per COCO caption annotation, in annotation order.

    ``src`` holds ``images: [{id, file_name}]`` and ``annotations: [{id, image_id, caption}]``;
    errors name ``images[i]`` or ``annotations[j]`` and the field.
    """
    build = _Builder(Path(src), root, image_dir)
    try:
        data = json.loads(build.src.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        detail = f"malformed JSON at column {exc.colno}: {exc.msg}"
        raise DataError(detail, build.src, line=exc.lineno) from None
    for key in ("images", "annotations"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise DataError(f"{key!r}: a COCO captions file needs a list of {key}", build.src)
    files: dict[Any, Any] = {}
    for i, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image:
            raise DataError(f"images[{i}].id: missing", build.src)
        if image["id"] in files:
            raise DataError(f"images[{i}].id={image['id']!r}: duplicate image id", build.src)
        files[image["id"]] = image.get("file_name")
    for j, ann in enumerate(data["annotations"]):
        where, name = {"record": j}, f"annotations[{j}]"
        ann = _object(build, where, ann)
        for key in ("id", "image_id", "caption"):
            if key not in ann:
                raise build.error(where, f"{name}.{key}: missing")
        if ann["image_id"] not in files:
            raise build.error(where, f"{name}.image_id={ann['image_id']!r}: no such image")
        image_id = ann["image_id"]
        segments = [
            build.image(where, f"file_name of image {image_id!r}", files[image_id]),
            Segment.text_(build.text(where, f"{name}.caption", ann["caption"]), "target"),
        ]
        build.add(where, f"coco-{ann['id']}", segments, task, {"image_id": image_id})
    return build.samples


def llava_conversations(
    src: str | Path, *, image_dir: str = "", root: str | Path | None = None, task: str = "chat"
) -> list[Sample]:
    """Samples from LLaVA records ``{id, image, conversations: [{from, value}]}``.

    ``from`` is ``human``/``user`` (context text) or ``gpt``/``assistant`` (target text); turns
    stay in order. ``image`` is a path, a list of paths or absent. The ``<image>`` placeholders
    of the human turns are removed and mark where the images go, in order; with no placeholder
    the images go first. A count of placeholders other than 0 or the number of images, or a
    placeholder in a gpt turn, raises :class:`DataError` naming the record.
    """
    build = _Builder(Path(src), root, image_dir)
    roles = _LLAVA_ROLES
    for where, index, record in _json_records(build.src):
        record = _object(build, where, record)
        raw = record.get("image")
        paths = raw if isinstance(raw, list) else [] if raw is None else [raw]
        images = [build.image(where, "image", path) for path in paths]
        turns = record.get("conversations")
        if not isinstance(turns, list) or not turns:
            raise build.error(where, f"conversations={turns!r}: must be a non-empty list")
        n_placeholders = 0
        for j, turn in enumerate(turns):
            if not isinstance(turn, dict) or str(turn.get("from")) not in roles:
                got = turn.get("from") if isinstance(turn, dict) else turn
                raise build.error(where, f"conversations[{j}].from={got!r}: must be {list(roles)}")
            if not isinstance(turn.get("value"), str):
                raise build.error(where, f"conversations[{j}].value: must be a string")
            count = turn["value"].count(_PLACEHOLDER)
            if count and roles[turn["from"]] == "target":
                raise build.error(where, f"conversations[{j}].value: {_PLACEHOLDER} in a gpt turn")
            n_placeholders += count
        if n_placeholders not in (0, len(images)):
            raise build.error(
                where, f"{len(images)} image(s) but {n_placeholders} {_PLACEHOLDER} placeholder(s)"
            )
        segments = [] if n_placeholders else list(images)
        pending = iter(images)
        for j, turn in enumerate(turns):
            role = roles[turn["from"]]
            if role == "target":
                text = build.text(where, f"conversations[{j}].value", turn["value"])
                segments.append(Segment.text_(text, "target"))
                continue
            for k, piece in enumerate(turn["value"].split(_PLACEHOLDER)):
                if k:
                    segments.append(next(pending))
                if piece.strip():
                    segments.append(Segment.text_(piece.strip(), "context"))
        sample_id = build.sample_id(where, "id", record.get("id"), index)
        meta = {k: v for k, v in record.items() if k not in ("id", "image", "conversations")}
        build.add(where, sample_id, segments, task, meta)
    return build.samples


def _obelics(build: _Builder, where: Where, record: dict[str, Any]) -> list[Segment]:
    texts, images = record["texts"], record.get("images")
    if not isinstance(texts, list) or not isinstance(images, list) or len(texts) != len(images):
        raise build.error(where, "'texts' and 'images' must be lists of the same length")
    segments = []
    for i, (text, image) in enumerate(zip(texts, images, strict=True)):
        if (text is None) == (image is None):
            raise build.error(where, f"position {i}: exactly one of texts[{i}], images[{i}] is set")
        if image is not None:
            segments.append(build.image(where, f"images[{i}]", image))
        elif not isinstance(text, str):
            raise build.error(where, f"texts[{i}]={text!r}: must be a string")
        elif text.strip():
            segments.append(Segment.text_(text.strip()))
    return segments


def _mmc4(
    build: _Builder, where: Where, record: dict[str, Any], image_key: str | None
) -> list[Segment]:
    texts, infos = record["text_list"], record.get("image_info", [])
    if not isinstance(texts, list) or not isinstance(infos, list):
        raise build.error(where, "'text_list' and 'image_info' must be lists")
    before: dict[int, list[Segment]] = {}
    for k, info in enumerate(infos):
        name = f"image_info[{k}]"
        if not isinstance(info, dict):
            raise build.error(where, f"{name}: must be an object")
        keys = [image_key] if image_key else ["file", "image_name", "raw_url"]
        key = next((key for key in keys if key in info), None)
        if key is None:
            raise build.error(where, f"{name}: no image key (one of {keys})")
        at = info.get("matched_text_index")
        if not isinstance(at, int) or isinstance(at, bool) or not 0 <= at < len(texts):
            raise build.error(where, f"{name}.matched_text_index={at!r}: not in text_list")
        before.setdefault(at, []).append(build.image(where, f"{name}.{key}", info[key]))
    segments = []
    for i, text in enumerate(texts):
        segments.extend(before.get(i, []))
        if not isinstance(text, str):
            raise build.error(where, f"text_list[{i}]={text!r}: must be a string")
        if text.strip():
            segments.append(Segment.text_(text.strip()))
    return segments


def interleaved_documents(
    src: str | Path,
    *,
    image_dir: str = "",
    root: str | Path | None = None,
    task: str = "document",
    image_key: str | None = None,
) -> list[Sample]:
    """Interleaved documents (all context) from OBELICS-style or MMC4-style records.

    OBELICS: ``texts`` and ``images``, aligned lists where each position has exactly one
    non-null entry. MMC4: ``text_list`` and ``image_info`` (``[{file|image_name|raw_url,
    matched_text_index}]``, the key chosen by ``image_key`` or the first present); each image is
    placed before its matched text, images matched to one text in ``image_info`` order. Blank
    texts are dropped; other scalar fields go to ``meta``.
    """
    build = _Builder(Path(src), root, image_dir)
    for where, index, record in _json_records(build.src):
        record = _object(build, where, record)
        if "texts" in record:
            segments, used = _obelics(build, where, record), ("texts", "images")
        elif "text_list" in record:
            segments, used = _mmc4(build, where, record, image_key), ("text_list", "image_info")
        else:
            raise build.error(where, "needs 'texts'+'images' (OBELICS) or 'text_list' (MMC4)")
        sample_id = build.sample_id(where, "id", record.get("id"), index)
        meta = {
            k: v for k, v in record.items() if k not in (*used, "id") and isinstance(v, _SCALARS)
        }
        build.add(where, sample_id, segments, task, meta)
    return build.samples


@dataclass
class Converted:
    """What a converter that writes more than one file returns: the samples of OUT and the
    other files, by path relative to the dataset root."""

    samples: list[Sample]
    files: dict[str, list[Sample]]


def instructed_retrieval(
    src: str | Path, *, split: str, image_dir: str = "", root: str | Path | None = None
) -> Converted:
    """Instructed-retrieval rows (JSONL or a JSON list) -> queries and their corpus
    (:func:`sugar.data.instructed.instructed_rows`); errors name the file and line."""
    if not isinstance(split, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", split):
        raise ValueError(f"split={split!r}: a name such as train, val or test")
    build = _Builder(Path(src), root, image_dir)
    records = ((where, record) for where, _, record in _json_records(build.src))
    corpus = f"instructed_corpus/{split}.jsonl"
    queries, documents = instructed_rows(
        records, split, build.error, lambda field, v: build.image({}, f"{field}.image", v), corpus
    )
    if not queries:
        raise build.error({}, "no rows")
    return Converted(queries, {corpus: documents})


CONVERTERS: dict[str, Callable[..., list[Sample] | Converted]] = {
    "image_caption_csv": image_caption_csv,
    "image_caption_jsonl": image_caption_jsonl,
    "coco_captions": coco_captions,
    "llava_conversations": llava_conversations,
    "interleaved_documents": interleaved_documents,
    "instructed_retrieval": instructed_retrieval,
}
"""Converter name -> function (the names :func:`convert_file` accepts)."""


def convert_file(
    fmt: str, src: str | Path, out: str | Path, root: str | Path | None = None, **options: Any
) -> int:
    """Convert ``src`` with converter ``fmt``, write JSONL ``out`` atomically (and the other
    files of a :class:`Converted`, under ``root``), return the count of ``out``'s samples.

    ``root`` (default: ``out``'s directory) is the dataset root the output will be read with;
    every image path is escape-checked against it. ``options`` are the converter's keyword
    arguments; an unknown format or option raises ``ValueError`` naming it. Image files are not
    opened here: run :func:`~sugar.data.jsonl.validate_file` on the output for that.
    """
    if fmt not in CONVERTERS:
        raise ValueError(f"format={fmt!r}: must be one of {sorted(CONVERTERS)}")
    converter = CONVERTERS[fmt]
    root = Path(out).parent if root is None else Path(root)
    try:
        inspect.signature(converter).bind(src, root=root, **options)
    except TypeError as exc:
        raise ValueError(f"format {fmt!r}: {exc}; options {sorted(options)}") from None
    result = converter(src, root=root, **options)
    samples = result.samples if isinstance(result, Converted) else result
    for relative, others in (result.files if isinstance(result, Converted) else {}).items():
        if (root / relative).resolve() == Path(out).resolve():
            raise ValueError(f"{out}: is also where the converter writes {relative}")
        write_samples(root / relative, others)
    write_samples(out, samples)
    return len(samples)
