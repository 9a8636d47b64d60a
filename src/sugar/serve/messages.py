"""What the server reads from chat messages and shows of index hits: OpenAI content parts ->
segments, the prompt sample, a hit's payload and text, image thumbnails, uploaded images kept
by content (:mod:`sugar.serve.app` wires them to the endpoints)."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from typing import Any

from PIL import Image

from sugar.data.jsonl import upright_rgb
from sugar.data.schema import Sample, Segment
from sugar.rag import PAYLOAD_FIELD
from sugar.serve.inputs import RequestError, RequestImages, check_visible
from sugar.serve.schemas import ChatMessage

__all__ = [
    "chunks",
    "hit_thumbnails",
    "keep",
    "payload",
    "question",
    "segments_of_content",
    "text_of",
    "thumbnail",
]


def segments_of_content(content: Any, images: RequestImages, param: str) -> list[Segment]:
    """The segments of one chat message's content (a string or OpenAI content parts)."""
    if isinstance(content, str):
        if not content:
            raise RequestError(f"{param}: an empty message", param=param)
        check_visible(content, param)
        return [Segment.text_(content)]
    if not isinstance(content, list) or not content:
        raise RequestError(f"{param}: a string or a non-empty list of parts", param=param)
    segments = []
    for i, part in enumerate(content):
        where = f"{param}[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str) and part["text"]:
            check_visible(part["text"], f"{where}.text")
            segments.append(Segment.text_(part["text"]))
        elif kind == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            segments.append(Segment.image_(images.add(url, f"{where}.image_url.url")))
        else:
            raise RequestError(
                f"{where}: a part is {{'type': 'text', 'text': ...}} or {{'type': 'image_url', "
                "'image_url': {'url': 'data:image/...;base64,...'}}",
                param=where,
            )
    return segments


def question(messages: list[ChatMessage], images: RequestImages) -> Sample:
    """The prompt sample: the last user message's parts in order (earlier turns and system
    messages are not shown to the model: sugar's models are trained on single questions)."""
    last = len(messages) - 1
    if messages[last].role != "user":
        raise RequestError(
            f"messages[{last}]: the last message must be the user's", param=f"messages[{last}]"
        )
    segments = segments_of_content(messages[last].content, images, f"messages[{last}].content")
    return Sample("question", segments, "question")


def payload(hit: dict[str, Any]) -> str:
    """A hit's payload (``meta.payload``), else its texts joined."""
    metadata = hit.get("metadata") or {}
    meta = metadata.get("meta") if isinstance(metadata, dict) else None
    if isinstance(meta, dict) and isinstance(meta.get(PAYLOAD_FIELD), str):
        return str(meta[PAYLOAD_FIELD])
    return text_of(metadata)


def text_of(metadata: Any) -> str:
    segments = metadata.get("segments") if isinstance(metadata, dict) else None
    if not isinstance(segments, list):
        return ""
    return " ".join(s["text"] for s in segments if isinstance(s, dict) and s.get("text"))


def thumbnail(path: Path, size: int = 96) -> str | None:
    """A PNG data URL of the image at ``path``, upright (its EXIF orientation applied, as the
    model reads it) and at most ``size`` px a side; ``None`` when it cannot be read."""
    try:
        with Image.open(path) as opened:
            image = upright_rgb(opened)
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
    except (OSError, ValueError):
        return None
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def chunks(text: str) -> list[str]:
    """Word-sized stream chunks (each word with its trailing spaces)."""
    return re.findall(r"\S+\s*|\s+", text) or [""]


def keep(media: Path | None, data: bytes) -> str:
    """Write an added image under ``MEDIA/uploads`` (named by its content); its path relative
    to ``media``."""
    if media is None:
        raise RequestError("images in index items need an --index directory", code="no_index")
    from sugar.io import sha256_bytes

    with Image.open(io.BytesIO(data)) as image:
        extension = (image.format or "img").lower()
    name = f"uploads/{sha256_bytes(data)[:32]}.{extension}"
    path = media / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return name


def hit_thumbnails(media: Path | None, metadata: Any) -> list[str]:
    """Small PNG data URLs of a hit's images (resolved under ``media``; missing ones left
    out)."""
    from sugar.data.jsonl import DataError, resolve_image

    segments = metadata.get("segments") if isinstance(metadata, dict) else None
    if media is None or not isinstance(segments, list):
        return []
    out = []
    for segment in segments:
        image = segment.get("image") if isinstance(segment, dict) else None
        if not isinstance(image, str):
            continue
        try:
            url = thumbnail(resolve_image(media, image))
        except DataError:
            continue
        if url is not None:
            out.append(url)
    return out
