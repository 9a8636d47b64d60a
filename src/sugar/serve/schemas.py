"""Request bodies of the server (pydantic). Unknown fields are errors that name the field.

The OpenAI-compatible bodies keep OpenAI's field names; multimodal ``input`` values and chat
``content`` parts are checked by :mod:`sugar.serve.inputs` for error messages that point at the
offending item (``input[2].image``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "EmbeddingRequest",
    "IndexAddRequest",
    "IndexDeleteRequest",
    "IndexItem",
    "SearchRequest",
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmbeddingRequest(_Body):
    input: Any
    """A string, a list of strings, ``{"text", "image"}`` objects or interleaved lists."""
    model: str | None = None
    """Checked against the loaded bundle when given."""
    encoding_format: Literal["float", "base64"] = "float"
    """``base64``: little-endian float32 bytes, as OpenAI encodes them."""
    dimensions: int | None = Field(None, ge=1)
    """Keep the first ``dimensions`` coordinates, then renormalise to unit length."""
    user: str | None = None
    instruction: str | None = None
    """Sugar extension: embed every input as a query steered by this instruction through the
    bundle's control branch (``sugar train-control``); a 400 error when it has none."""


class ChatMessage(_Body):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: Any
    """A string or a list of ``{"type": "text", "text"}`` / ``{"type": "image_url",
    "image_url": {"url": "data:image/...;base64,..."}}`` parts."""
    name: str | None = None


class ChatRequest(_Body):
    messages: list[ChatMessage] = Field(min_length=1)
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    """0 (the default here) is greedy decoding."""
    top_k: int | None = Field(None, ge=1)
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: Literal[1] = 1
    user: str | None = None
    retrieval_k: int | None = Field(None, ge=0)
    """Sugar extension: retrieve this many items from the index into the prompt first (0 or
    absent: no retrieval); the answer carries them as ``sources``."""
    instruction: str | None = None
    """Sugar extension: steer that retrieval through the bundle's control branch."""


class SearchRequest(_Body):
    query: str | None = None
    image: str | None = None
    """Base64 or a data URL; placed before the query text."""
    k: int = Field(10, ge=1)
    include_images: bool = False
    """Attach each hit's images as small PNG data URLs (``thumbnails``)."""
    model: str | None = None
    instruction: str | None = None
    """What to search for, through the bundle's control branch (a 400 error without one)."""


class IndexItem(_Body):
    id: str = Field(min_length=1)
    text: str | None = None
    image: str | None = None
    payload: str | None = None
    """What a chat with retrieval shows when this item is retrieved (defaults to its text)."""
    metadata: dict[str, Any] | None = None


class IndexAddRequest(_Body):
    items: list[IndexItem] = Field(min_length=1)


class IndexDeleteRequest(_Body):
    ids: list[str] = Field(min_length=1)
