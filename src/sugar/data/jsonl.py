"""Reading, writing and validating sample JSONL files, and resolving their images safely.

A dataset is one JSONL file of :class:`~sugar.data.schema.Sample` objects (one per line) plus the
images it names, relative to a *root* directory (the JSONL file's directory unless given). Every
problem a user can fix raises :class:`DataError`, whose message names the file, the 1-based line
and the offending field or value, e.g.
``data/train.jsonl:17: segments[2].kind='video': must be one of ['image', 'text']``.

Reading rules:

- Empty (whitespace-only) lines are skipped, so a hand-edited file may end in blank lines.
- Malformed JSON, schema errors and duplicate ids always raise.
- An image path must stay inside the root: absolute paths, ``..`` that leaves the root and
  symlinks that resolve outside it are refused (:func:`resolve_image`), always, whatever the
  policy, since they mean a wrong root or a hostile file rather than a bad download.
- With ``check_images`` each distinct image file is checked once with Pillow's ``verify()``
  and decoded whole (after its header passed the pixel limit). A missing or corrupt image
  raises (``on_bad_image="fail"``) or drops the sample and counts it in a :class:`ReadReport`
  and a logged warning (``on_bad_image="skip"``).
- :func:`load_image` returns an image upright: a photo's EXIF Orientation tag (2-8) is applied
  (``PIL.ImageOps.exif_transpose``), as a viewer shows it; an image without one is unchanged.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image, ImageOps

from sugar.data.schema import Sample, SchemaError
from sugar.io import atomic_write

__all__ = [
    "DataError",
    "ReadReport",
    "iter_samples",
    "load_image",
    "read_samples",
    "read_samples_report",
    "resolve_image",
    "validate_file",
    "write_samples",
]

log = logging.getLogger(__name__)

MAX_REASONS = 100
"""How many skip reasons a :class:`ReadReport` keeps (its counts are always exact)."""


class DataError(ValueError):
    """A data file breaks a rule; the message says where (file, line or record) and what.

    >>> str(DataError("id='': a sample needs a non-empty string id", "train.jsonl", line=3))
    "train.jsonl:3: id='': a sample needs a non-empty string id"
    >>> str(DataError("'caption': missing", "coco.json", record=4))
    "coco.json: record 4: 'caption': missing"
    """

    def __init__(
        self,
        detail: str,
        path: str | Path | None = None,
        line: int | None = None,
        record: int | None = None,
    ) -> None:
        self.detail = detail
        self.path = None if path is None else str(path)
        self.line = line
        self.record = record
        where = self.path or ""
        if line is not None:
            where += f":{line}"
        if record is not None:
            where += f": record {record}"
        super().__init__(f"{where}: {detail}" if where else detail)

    def __reduce__(self) -> tuple[Any, ...]:
        return (DataError, (self.detail, self.path, self.line, self.record))


@dataclass
class ReadReport:
    """What a read kept and what it skipped under ``on_bad_image="skip"``."""

    n_read: int = 0
    """Samples returned."""
    n_skipped: int = 0
    """Samples dropped because of a missing or corrupt image (exact)."""
    skipped: list[tuple[int, str]] = field(default_factory=list)
    """``(line, reason)`` of the first :data:`MAX_REASONS` skipped samples."""


def resolve_image(root: str | Path, rel: str, field: str = "image") -> Path:
    """The resolved path of image ``rel`` under ``root``; :class:`DataError` if it escapes.

    Refuses absolute paths and paths that, after ``..`` and symlinks are resolved, lie outside
    ``root`` (itself resolved). It does not require the file to exist: :func:`load_image` and
    the readers check that. ``field`` names the value in the error message.

    >>> resolve_image("/sugar-doc-root", "img/../img/1.png").as_posix()
    '/sugar-doc-root/img/1.png'
    >>> resolve_image("/root-dir", "../etc/passwd")
    Traceback (most recent call last):
    ...
    sugar.data.jsonl.DataError: image='../etc/passwd': resolves outside the dataset root /root-dir
    """
    if not isinstance(rel, str) or not rel:
        raise DataError(f"{field}={rel!r}: must be a non-empty relative path")
    bad = _path_problem(rel)
    if bad:
        raise DataError(f"{field}={rel[:80]!r}{'...' if len(rel) > 80 else ''}: {bad}")
    if Path(rel).is_absolute():
        raise DataError(
            f"{field}={rel!r}: absolute paths are refused; give it relative to the root"
        )
    base = Path(root).resolve()
    resolved = (base / rel).resolve()
    if not resolved.is_relative_to(base):
        raise DataError(f"{field}={rel!r}: resolves outside the dataset root {base}")
    return resolved


MAX_DEPTH = 64
"""Deepest nesting of lists and objects a sample line may hold (``meta`` included)."""


def _path_problem(rel: str) -> str | None:
    """Why ``rel`` can never name a file (checked before the file system is asked)."""
    if "\x00" in rel:
        return "contains a null byte"
    try:
        encoded = rel.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (not valid Unicode text)"
    if len(encoded) > 4096 or any(len(part) > 255 for part in encoded.split(b"/")):
        return "too long for a file name (a part over 255 bytes or the path over 4096)"
    return None


def _plain_data_problem(data: Any) -> str | None:
    """Why a parsed line cannot be a sample's plain data: nesting deeper than
    :data:`MAX_DEPTH`, or a string that is not valid Unicode (a lone surrogate escape);
    iterative, so a hostile depth cannot exhaust the stack."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"{where or 'the line'}: nested deeper than {MAX_DEPTH} levels"
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return f"{where or 'the line'}: a lone surrogate (not valid Unicode text)"
        elif isinstance(value, dict):
            for key, item in value.items():
                stack.append((key, f"{where}{'.' if where else ''}<key>", depth + 1))
                stack.append((item, f"{where}{'.' if where else ''}{key}", depth + 1))
        elif isinstance(value, list):
            stack.extend((item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value))
    return None


DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
"""Largest image (width x height) sugar decodes unless ``SUGAR_MAX_IMAGE_PIXELS`` says
otherwise: Pillow's own decompression-bomb threshold (``PIL.Image.MAX_IMAGE_PIXELS``), about
256 MB decoded in RGB. Camera and phone photos pass (50 megapixels is 8688 x 5792); a 97 KB PNG
that declares 100 megapixels does not. Above twice this, Pillow refuses the file itself
whatever ``SUGAR_MAX_IMAGE_PIXELS`` says (``DecompressionBombError``)."""


def max_image_pixels() -> int:
    """The pixel limit in force: ``SUGAR_MAX_IMAGE_PIXELS`` (a positive integer) or
    :data:`DEFAULT_MAX_IMAGE_PIXELS`."""
    text = os.environ.get("SUGAR_MAX_IMAGE_PIXELS", "").strip()
    if not text:
        return DEFAULT_MAX_IMAGE_PIXELS
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"SUGAR_MAX_IMAGE_PIXELS={text!r}: must be a positive integer")
    return int(text)


def pixel_problem(image: Image.Image) -> str | None:
    """Why an opened (not yet decoded) image is too large to decode, or ``None``; the reason
    says how to raise the limit.

    >>> pixel_problem(Image.new("1", (10_000, 10_000)))  # doctest: +ELLIPSIS
    '10000x10000 = 100,000,000 pixels is over the limit of 89,478,485; to decode it, set ...'
    """
    width, height = image.size
    limit = max_image_pixels()
    if width * height > limit:
        return (
            f"{width}x{height} = {width * height:,} pixels is over the limit of {limit:,}; "
            f"to decode it, set the environment variable SUGAR_MAX_IMAGE_PIXELS={width * height} "
            "(or more)"
        )
    return None


def upright_rgb(image: Image.Image) -> Image.Image:
    """An opened image decoded, turned upright by its EXIF Orientation tag and in RGB.

    Orientations 2-8 are undone with ``PIL.ImageOps.exif_transpose`` (a phone photo taken in
    portrait is stored landscape with orientation 6); an image without the tag, or with 1, is
    decoded and converted exactly as ``image.convert("RGB")`` does. Pillow reads a damaged EXIF
    block as having no tag (with a warning) rather than failing.
    """
    ImageOps.exif_transpose(image, in_place=True)
    return image.convert("RGB")


def _image_problem(path: Path) -> str | None:
    """Why the image file at ``path`` cannot be used, or ``None`` when Pillow verifies it and
    decodes it whole (the pixel limit is read from its header, before anything is decoded).
    ``verify`` alone passes a PNG whose chunks are intact but whose compressed pixels are not;
    the model would then fail while embedding, far from the file and line that named it."""
    if not path.is_file():
        return f"image file not found: {path}"
    try:
        with Image.open(path) as image:
            too_large = pixel_problem(image)
            if too_large is not None:
                return f"{path}: {too_large}"
            image.verify()
        with Image.open(path) as image:  # verify leaves the image unusable: open it again
            image.load()
    # Pillow raises many types for corrupt data (OSError, SyntaxError, struct.error, ...).
    except Exception as exc:
        return f"unreadable image {path}: {type(exc).__name__}: {exc}"
    return None


def load_image(root: str | Path, rel: str) -> Image.Image:
    """Open image ``rel`` under ``root`` (escape-checked) and return it decoded, upright and in
    RGB (:func:`upright_rgb`).

    Nothing is read until this is called; the file is closed before it returns. Raises
    :class:`DataError` naming the path when the file is missing, unreadable, corrupt or over
    the pixel limit (:func:`max_image_pixels`).
    """
    path = resolve_image(root, rel)
    if not path.is_file():
        raise DataError(f"image={rel!r}: file not found: {path}")
    try:
        with Image.open(path) as image:
            too_large = pixel_problem(image)
            if too_large is None:
                return upright_rgb(image)
    except Exception as exc:
        raise DataError(f"image={rel!r}: unreadable {path}: {type(exc).__name__}: {exc}") from exc
    raise DataError(f"image={rel!r}: {path}: {too_large}")


_SEGMENT_FIELD = re.compile(r"^(segments\[\d+\]): (\w+)=")


def _schema_detail(exc: SchemaError) -> str:
    # "segments[2]: kind='video': ..." reads better as "segments[2].kind='video': ...".
    return _SEGMENT_FIELD.sub(r"\1.\2=", str(exc))


def iter_samples(
    path: str | Path,
    root: str | Path | None = None,
    check_images: bool = True,
    on_bad_image: Literal["fail", "skip"] = "fail",
    report: ReadReport | None = None,
) -> Iterator[Sample]:
    """Yield the samples of JSONL file ``path`` in order, checking them as it goes.

    ``root`` (default: the file's directory) is where image paths are resolved. With
    ``check_images`` every distinct image is verified and decoded (once per file); without it
    only the escape check runs. ``on_bad_image`` is ``"fail"`` (raise :class:`DataError`) or
    ``"skip"`` (drop the sample, count it in ``report`` if given and log a warning at the end).
    Every other problem raises :class:`DataError` naming file, line and field.
    """
    if on_bad_image not in ("fail", "skip"):
        raise ValueError(f"on_bad_image={on_bad_image!r}: must be 'fail' or 'skip'")
    path = Path(path)
    root = path.parent if root is None else Path(root)
    report = ReadReport() if report is None else report
    if path.is_dir():
        raise DataError("is a directory, not a JSONL file", path)
    first_line: dict[str, int] = {}
    verified: dict[Path, str | None] = {}
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"not UTF-8 at byte {exc.start}: {exc.reason}", path, lineno
                ) from None
            if not text.strip():
                continue
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"malformed JSON at column {exc.colno}: {exc.msg}", path, lineno
                ) from None
            except RecursionError:
                raise DataError(f"nested deeper than {MAX_DEPTH} levels", path, lineno) from None
            problem = _plain_data_problem(data)
            if problem is not None:
                raise DataError(problem, path, lineno)
            try:
                sample = Sample.from_dict(data)
            except SchemaError as exc:
                raise DataError(_schema_detail(exc), path, lineno) from None
            if sample.id in first_line:
                raise DataError(
                    f"id={sample.id!r}: duplicates the sample on line {first_line[sample.id]}",
                    path,
                    lineno,
                )
            first_line[sample.id] = lineno
            problem = None
            for index, segment in enumerate(sample.segments):
                if segment.image is None:
                    continue
                where = f"segments[{index}].image"
                try:
                    resolved = resolve_image(root, segment.image, where)
                except DataError as exc:
                    raise DataError(exc.detail, path, lineno) from None
                if check_images:
                    if resolved not in verified:
                        verified[resolved] = _image_problem(resolved)
                    if verified[resolved] is not None:
                        problem = f"{where}={segment.image!r}: {verified[resolved]}"
                        break
            if problem is not None:
                if on_bad_image == "fail":
                    raise DataError(problem, path, lineno)
                report.n_skipped += 1
                if len(report.skipped) < MAX_REASONS:
                    report.skipped.append((lineno, problem))
                continue
            report.n_read += 1
            yield sample
    if report.n_skipped:
        log.warning(
            "%s: skipped %d sample(s) with a bad image (first: line %d: %s)",
            path,
            report.n_skipped,
            *report.skipped[0],
        )


def read_samples(
    path: str | Path,
    root: str | Path | None = None,
    check_images: bool = True,
    on_bad_image: Literal["fail", "skip"] = "fail",
) -> list[Sample]:
    """All samples of ``path`` as a list; same rules as :func:`iter_samples`."""
    return list(iter_samples(path, root, check_images, on_bad_image))


def read_samples_report(
    path: str | Path,
    root: str | Path | None = None,
    check_images: bool = True,
    on_bad_image: Literal["fail", "skip"] = "fail",
) -> tuple[list[Sample], ReadReport]:
    """All samples of ``path`` and a :class:`ReadReport` of what was kept and skipped."""
    report = ReadReport()
    samples = list(iter_samples(path, root, check_images, on_bad_image, report))
    return samples, report


def write_samples(path: str | Path, samples: Iterable[Sample]) -> Path:
    """Write ``samples`` to ``path`` atomically as UTF-8 JSONL (one ``to_json()`` per line).

    Raises :class:`DataError` (and leaves any existing file untouched) on a duplicate id or a
    ``meta`` that is not JSON-serialisable. Returns the path.
    """
    path = Path(path)
    first_index: dict[str, int] = {}
    with atomic_write(path, "w", encoding="utf-8") as handle:
        for index, sample in enumerate(samples):
            if sample.id in first_index:
                first = first_index[sample.id]
                detail = f"samples[{index}] id={sample.id!r}: duplicates samples[{first}]"
                raise DataError(detail, path)
            first_index[sample.id] = index
            try:
                line = sample.to_json()
            except (TypeError, ValueError) as exc:
                raise DataError(f"samples[{index}] id={sample.id!r}: meta: {exc}", path) from None
            handle.write(line + "\n")
    return path


def validate_file(path: str | Path, root: str | Path | None = None) -> dict[str, Any]:
    """Check every sample and image of ``path``; raise :class:`DataError` on the first problem.

    Returns counts: ``samples``, ``segments`` (per kind), ``roles``, ``tasks``, ``images`` (image
    segments) and ``images_checked`` (distinct image files verified with Pillow).
    """
    kinds: Counter[str] = Counter()
    roles: Counter[str] = Counter()
    tasks: Counter[str] = Counter()
    files: set[Path] = set()
    n_samples = 0
    base = Path(path).parent if root is None else Path(root)
    for sample in iter_samples(path, root, check_images=True, on_bad_image="fail"):
        n_samples += 1
        tasks[sample.task] += 1
        for segment in sample.segments:
            kinds[segment.kind] += 1
            roles[segment.role] += 1
            if segment.image is not None:
                files.add(resolve_image(base, segment.image))
    return {
        "samples": n_samples,
        "segments": {kind: kinds[kind] for kind in ("image", "text")},
        "roles": {role: roles[role] for role in ("context", "target")},
        "tasks": dict(sorted(tasks.items())),
        "images": kinds["image"],
        "images_checked": len(files),
    }
