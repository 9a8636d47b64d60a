"""Samples: ordered image and text segments with roles (METHOD.md section 1), and their JSONL form.

A caption pair, a VQA example, a web document and a multi-image story are all one type:

>>> s = Sample("s1", [Segment.image_("img/1.png"), Segment.text_("A red square.", role="target")])
>>> Sample.from_json(s.to_json()) == s
True

One JSON object per line::

    {"id": "s1", "task": "caption",
     "segments": [{"kind": "image", "image": "img/1.png", "role": "context"},
                  {"kind": "text", "text": "A red square.", "role": "target"}],
     "meta": {...}}

``image`` paths are relative to the dataset root (the JSONL file's directory unless given).
``role``: ``context`` (conditioning input) or ``target`` (text the generative loss supervises).
``meta`` holds task metadata (answers, negative kinds, world facts); it never feeds the model.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["KINDS", "ROLES", "Sample", "SchemaError", "Segment", "has_visible_character"]

KINDS = ("image", "text")
ROLES = ("context", "target")


class SchemaError(ValueError):
    """A sample or segment does not follow the schema; the message names the field."""


def _check_fields(data: Any, what: str, fields: tuple[str, ...]) -> None:
    """``SchemaError`` unless ``data`` is a JSON object whose keys are all among ``fields``."""
    if not isinstance(data, dict):
        raise SchemaError(f"a {what} must be a JSON object, got {type(data).__name__}")
    unknown = set(data) - set(fields)
    if unknown:
        raise SchemaError(f"unknown {what} field(s) {sorted(unknown)}")


def has_visible_character(text: str) -> bool:
    """Whether ``text`` holds a letter, digit, punctuation mark or symbol (Unicode categories
    L, N, P, S): what a tokenizer keeps. Whitespace, format characters (a zero-width space, a
    soft hyphen) and lone combining marks alone are not text.

    >>> has_visible_character("\u200b\xad "), has_visible_character("\u200bok")
    (False, True)
    """
    return any(unicodedata.category(char)[0] in "LNPS" for char in text)


def _is_unicode(text: str) -> bool:
    """Whether ``text`` encodes to UTF-8: no lone surrogate, which Python makes of undecodable
    bytes in ``sys.argv`` or file names, and which tokenizers refuse with a ``TypeError``."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class Segment:
    """One image or one text, with its role."""

    kind: Literal["image", "text"]
    """``image`` or ``text``."""
    role: Literal["context", "target"] = "context"
    """``target`` text is supervised by the next-token loss; ``context`` is input only."""
    text: str | None = None
    """The text of a text segment (non-empty)."""
    image: str | None = None
    """The path of an image segment, relative to the dataset root."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SchemaError(f"kind={self.kind!r}: must be one of {list(KINDS)}")
        if self.role not in ROLES:
            raise SchemaError(f"role={self.role!r}: must be one of {list(ROLES)}")
        if self.kind == "text":
            if not isinstance(self.text, str) or not self.text.strip():
                raise SchemaError(f"text={self.text!r}: a text segment needs non-empty text")
            if not _is_unicode(self.text):  # e.g. undecodable bytes of a command-line argument
                raise SchemaError(
                    f"text={self.text[:80]!r}: contains a lone surrogate (not valid Unicode text)"
                )
            if self.image is not None:
                raise SchemaError("a text segment has no 'image' field")
        else:
            if not isinstance(self.image, str) or not self.image:
                raise SchemaError(f"image={self.image!r}: an image segment needs a path")
            if self.text is not None:
                raise SchemaError("an image segment has no 'text' field")
            if self.role == "target":
                raise SchemaError("role='target' is for text: images are never generated")

    @classmethod
    def text_(cls, text: str, role: Literal["context", "target"] = "context") -> Segment:
        """A text segment."""
        return cls("text", role, text=text)

    @classmethod
    def image_(cls, path: str) -> Segment:
        """An image segment (always context)."""
        return cls("image", "context", image=path)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        out["image" if self.kind == "image" else "text"] = (
            self.image if self.kind == "image" else self.text
        )
        out["role"] = self.role
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Segment:
        _check_fields(data, "segment", ("kind", "role", "text", "image"))
        if "kind" not in data:
            raise SchemaError("a segment needs a 'kind' ('image' or 'text')")
        text = data.get("text")
        # a text of only invisible characters would make no slice (sugar.data.slices); a
        # model's generated text may be one, so only data read from files is refused here
        if isinstance(text, str) and text.strip() and not has_visible_character(text):
            raise SchemaError(
                f"text={text[:80]!r}: has no visible character (a letter, digit, punctuation "
                "mark or symbol)"
            )
        return cls(
            kind=data["kind"],
            role=data.get("role", "context"),
            text=data.get("text"),
            image=data.get("image"),
        )


@dataclass
class Sample:
    """An ordered list of segments with an id, a task name and metadata."""

    id: str
    """Unique within a dataset."""
    segments: list[Segment]
    """At least one segment."""
    task: str = "generic"
    """Task family (``caption``, ``vqa``, ``story``, ...); free text for user data."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Task metadata (JSON-serialisable); never shown to the model."""

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise SchemaError(f"id={self.id!r}: a sample needs a non-empty string id")
        if not self.segments:
            raise SchemaError(f"sample {self.id!r} has no segments")

    @property
    def images(self) -> list[str]:
        """The image paths, in order."""
        return [s.image for s in self.segments if s.image is not None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task": self.task,
            "segments": [s.to_dict() for s in self.segments],
            "meta": self.meta,
        }

    def to_json(self) -> str:
        """One line of JSON (UTF-8 characters kept, keys in schema order)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Any) -> Sample:
        _check_fields(data, "sample", ("id", "task", "segments", "meta"))
        for key in ("id", "segments"):
            if key not in data:
                raise SchemaError(f"a sample needs {key!r}")
        if not isinstance(data["segments"], list):
            raise SchemaError("'segments' must be a list")
        segments = []
        for i, seg in enumerate(data["segments"]):
            try:
                segments.append(Segment.from_dict(seg))
            except SchemaError as exc:
                raise SchemaError(f"segments[{i}]: {exc}") from None
        meta = data.get("meta", {})
        if not isinstance(meta, dict):
            raise SchemaError("'meta' must be an object")
        task = data.get("task", "generic")
        if not isinstance(task, str):
            raise SchemaError(f"task={task!r}: must be a string")
        return cls(id=data["id"], segments=segments, task=task, meta=meta)

    @classmethod
    def from_json(cls, line: str) -> Sample:
        return cls.from_dict(json.loads(line))
