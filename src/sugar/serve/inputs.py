"""Request inputs -> samples: the OpenAI-style input shapes, image decoding and size limits.

Every bad input raises :class:`RequestError` with an HTTP status (4xx), an OpenAI-style error
``type``/``code`` and the ``param`` it is about (``input[2].image``), so the app answers with
one clear JSON error and keeps serving.

Input shapes (``POST /v1/embeddings``; search and chat build the same parts):

- ``"text"`` -- one text;
- ``{"text": ..., "image": ...}`` -- one sample, image first (either key may be missing);
- ``[part, part, ...]`` inside the ``input`` list -- one interleaved sample, each part a text or
  a ``{"text"}`` / ``{"image"}`` object, in order.

Images are base64 or ``data:image/...;base64,...`` URLs; remote URLs are never fetched.
"""

from __future__ import annotations

import base64
import binascii
import io
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from sugar.data.schema import Sample, Segment, has_visible_character

__all__ = [
    "Limits",
    "MediaStore",
    "RequestError",
    "check_visible",
    "decode_image",
    "parse_embedding_input",
]


@dataclass(frozen=True)
class Limits:
    """Per-request size limits (``sugar serve`` options)."""

    max_request_bytes: int = 16 * 2**20
    """Request body bytes."""
    max_inputs: int = 256
    """Samples per embeddings request (items per index add)."""
    max_images: int = 16
    """Images per request."""
    max_image_bytes: int = 8 * 2**20
    """Decoded bytes of one image."""
    max_pixels: int = 4096 * 4096
    """width x height of one image."""
    max_tokens: int = 512
    """Tokens of one input sample (text and image tokens), and of a chat prompt."""
    max_new_tokens: int = 256
    """Largest ``max_tokens`` a chat request may ask for."""
    max_k: int = 100
    """Largest ``k`` of a search or a retrieval."""


class RequestError(Exception):
    """A bad request: answered with ``status`` and an OpenAI-style error body."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        param: str | None = None,
        code: str = "invalid_value",
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.message, self.status, self.param, self.code, self.type = (
            message, status, param, code, type,
        )  # fmt: skip

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def decode_image(value: Any, limits: Limits, param: str) -> bytes:
    """The bytes of one image given as base64 or a ``data:`` URL, checked to decode as an
    image within ``limits`` (bytes, pixels). Raises :class:`RequestError` naming ``param``."""
    if not isinstance(value, str) or not value:
        raise RequestError(f"{param}: an image is a base64 string or a data URL", param=param)
    if value.startswith(("http://", "https://", "file:")):
        raise RequestError(
            f"{param}: remote or file URLs are not fetched; send the image as a data URL "
            "(data:image/png;base64,...)",
            param=param,
            code="unsupported_image_url",
        )
    if value.startswith("data:"):
        header, sep, value = value.partition(",")
        if not sep or not header.endswith(";base64") or not header[5:].startswith("image/"):
            raise RequestError(
                f"{param}: a data URL must read data:image/<type>;base64,<data>", param=param
            )
    if len(value) > (limits.max_image_bytes * 4) // 3 + 4:
        raise RequestError(
            f"{param}: the image is over {limits.max_image_bytes} bytes",
            status=413,
            param=param,
            code="image_too_large",
        )
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{param}: not valid base64", param=param) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > limits.max_pixels:
                    raise RequestError(
                        f"{param}: {width}x{height} pixels is over the limit of "
                        f"{limits.max_pixels}",
                        status=413,
                        param=param,
                        code="image_too_large",
                    )
                image.load()
    except RequestError:
        raise
    except Exception as exc:  # Pillow raises many types for data that is not an image
        raise RequestError(
            f"{param}: not a decodable image ({type(exc).__name__})",
            param=param,
            code="invalid_image",
        ) from None
    return data


class MediaStore:
    """Decoded request images as files under one directory (the root their samples' image
    paths are relative to), removed when the request is done."""

    def __init__(self, root: Path, limits: Limits) -> None:
        self.root = root
        """The root of the samples' image paths (``requests/NAME`` below it)."""
        self.limits = limits
        (root / "requests").mkdir(parents=True, exist_ok=True)

    @contextmanager
    def request(self) -> Iterator[RequestImages]:
        images = RequestImages(self)
        try:
            yield images
        finally:
            for path in images.paths:
                path.unlink(missing_ok=True)


class RequestImages:
    """The images of one request (see :meth:`MediaStore.request`)."""

    def __init__(self, store: MediaStore) -> None:
        self.store = store
        self.paths: list[Path] = []
        self.data: dict[str, bytes] = {}
        """The bytes of each image by its path relative to the store's root."""

    def add(self, value: Any, param: str) -> str:
        """Decode ``value`` and write it; returns its path relative to the store."""
        if len(self.paths) >= self.store.limits.max_images:
            raise RequestError(
                f"{param}: more than {self.store.limits.max_images} images in one request",
                status=413,
                param=param,
                code="too_many_images",
            )
        data = decode_image(value, self.store.limits, param)
        name = f"requests/{uuid.uuid4().hex}.img"
        path = self.store.root / name
        path.write_bytes(data)
        self.paths.append(path)
        self.data[name] = data
        return name


def check_visible(text: str, param: str) -> None:
    """Refuse a text of only whitespace, format characters or lone marks: it has no slice to
    embed (:func:`~sugar.data.schema.has_visible_character`). A lone surrogate is left to the
    segment, whose error names it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return
    if not has_visible_character(text):
        raise RequestError(
            f"{param}: {text[:40]!r} has no visible character (a letter, digit, punctuation "
            "mark or symbol)",
            param=param,
        )


def _parts(item: Any, images: RequestImages, param: str) -> list[Segment]:
    """The segments of one part: a text, or a ``{"text", "image"}`` object (image first)."""
    if isinstance(item, str):
        if not item:
            raise RequestError(f"{param}: an empty text", param=param)
        check_visible(item, param)
        return [Segment.text_(item)]
    if isinstance(item, dict):
        unknown = sorted(set(item) - {"text", "image", "type", "image_url"})
        if unknown:
            raise RequestError(
                f"{param}: unknown field(s) {unknown}; an item has 'text' and/or 'image'",
                param=param,
            )
        segments = []
        if item.get("image") is not None:
            segments.append(Segment.image_(images.add(item["image"], f"{param}.image")))
        text = item.get("text")
        if text is not None:
            if not isinstance(text, str) or not text:
                raise RequestError(f"{param}.text: a non-empty string", param=f"{param}.text")
            check_visible(text, f"{param}.text")
            segments.append(Segment.text_(text))
        if not segments:
            raise RequestError(f"{param}: an item needs a 'text' or an 'image'", param=param)
        return segments
    if isinstance(item, int) and not isinstance(item, bool):
        raise RequestError(
            f"{param}: token-id input is not supported; send text", param=param,
            code="unsupported_input",
        )  # fmt: skip
    raise RequestError(
        f"{param}: expected a string or a {{'text', 'image'}} object, got {type(item).__name__}",
        param=param,
    )


def parse_embedding_input(value: Any, images: RequestImages, max_inputs: int) -> list[Sample]:
    """The samples of an embeddings ``input`` (see the module docstring for the shapes)."""
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, list) or not value:
        raise RequestError(
            "input: a string, a non-empty list, or {'text', 'image'} objects", param="input"
        )
    if len(value) > max_inputs:
        raise RequestError(
            f"input: {len(value)} inputs is over the limit of {max_inputs} per request",
            status=413,
            param="input",
            code="too_many_inputs",
        )
    if all(isinstance(x, int) and not isinstance(x, bool) for x in value):
        raise RequestError(
            "input: token-id input is not supported; send text", param="input",
            code="unsupported_input",
        )  # fmt: skip
    samples = []
    for i, item in enumerate(value):
        param = f"input[{i}]"
        if isinstance(item, list):
            if not item:
                raise RequestError(f"{param}: an empty interleaved list", param=param)
            segments = [
                segment
                for j, part in enumerate(item)
                for segment in _parts(part, images, f"{param}[{j}]")
            ]
        else:
            segments = _parts(item, images, param)
        samples.append(Sample(f"input-{i}", segments))
    return samples
