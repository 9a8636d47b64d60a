"""The HTTP server of ``sugar serve``: OpenAI-compatible embeddings and chat with retrieval,
search, index mutation and a web page, over one loaded bundle.

Endpoints (JSON in, JSON out; ``/v1/*`` need ``Authorization: Bearer KEY`` when a key is set):

- ``GET /`` -- the web page (search with an optional image, chat with sources);
- ``GET /health``, ``GET /v1/models``;
- ``POST /v1/embeddings`` -- OpenAI's body; ``input`` may hold ``{"text", "image"}`` objects;
- ``POST /v1/chat/completions`` -- OpenAI's body (``image_url`` parts as data URLs, ``stream``
  as server-sent events); ``retrieval_k`` retrieves from the index first, ``sources`` answers;
- ``POST /v1/search`` -- ``{"query", "image", "k"}`` -> ``{"data": [{"id", "score",
  "metadata"}]}``;
- ``instruction`` (on embeddings, search and chat with retrieval): the query is steered by it
  through the bundle's control branch (:mod:`sugar.control`); 400 ``no_control_branch`` when the
  bundle has none;
- ``GET /v1/index``, ``POST /v1/index/add``, ``POST /v1/index/delete`` -- under
  :func:`sugar.index.lock.index_lock`, saved to disk before answering.

Every bad input is a 4xx answer ``{"error": {"message", "type", "param", "code"}}``. The model
runs in worker threads, one call at a time (a lock); embedding requests are micro-batched
(:class:`sugar.serve.batching.MicroBatcher`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sugar.api import SugarModel
from sugar.control.embed import instructed
from sugar.data.schema import Sample, SchemaError, Segment
from sugar.embed import embed_vectors
from sugar.index import Index, build_index
from sugar.index.lock import index_lock
from sugar.rag import PAYLOAD_FIELD, PromptTemplate, build_prompt
from sugar.serve import messages as parts_of
from sugar.serve.batching import MicroBatcher, QueueFullError
from sugar.serve.inputs import (
    Limits,
    MediaStore,
    RequestError,
    check_visible,
    parse_embedding_input,
)
from sugar.serve.schemas import (
    ChatRequest,
    EmbeddingRequest,
    IndexAddRequest,
    IndexDeleteRequest,
    SearchRequest,
)

__all__ = ["ServeSettings", "create_app"]


@dataclass(frozen=True)
class ServeSettings:
    """What ``sugar serve`` configures besides the model."""

    index: Path | None = None
    """An index directory built with this bundle (created by the first add when missing)."""
    media: Path | None = None
    """The root of the index entries' image paths (thumbnails; images added through the API
    are written to ``MEDIA/uploads``). Default: ``INDEX-media`` beside the index."""
    api_key: str | None = None
    limits: Limits = field(default_factory=Limits)
    batching: bool = True
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 1024
    default_max_tokens: int = 32


class _BodyLimit:
    """Answer 413 to bodies over ``limit`` bytes before the app reads them (pure ASGI, so a
    chunked body without ``Content-Length`` is counted too)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await _too_large(self.limit)(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.limit:
                await _too_large(self.limit)(scope, receive, send)
                return
        body, sent = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _too_large(limit: int) -> JSONResponse:
    error = RequestError(
        f"the request body is over {limit} bytes", status=413, code="request_too_large"
    )
    return JSONResponse(error.body(), status_code=413)


class _Service:
    """The loaded model, index and batcher behind the routes."""

    def __init__(self, model: SugarModel, settings: ServeSettings, work: Path) -> None:
        self.model, self.settings, self.limits = model, settings, settings.limits
        self.name = model.directory.name
        self.model_lock = threading.Lock()
        self.index_path = settings.index
        self.media = settings.media
        if self.media is None and self.index_path is not None:
            self.media = self.index_path.with_name(self.index_path.name + "-media")
        self.index: Index | None = None
        if self.index_path is not None and (self.index_path / "manifest.json").is_file():
            self.index = model.open_index(self.index_path)
        self.store = MediaStore(work, self.limits)
        self.embed_options = model.embed_options(batch_size=settings.max_batch_size)
        self.batcher = MicroBatcher(
            self._embed_now,
            max_batch_size=settings.max_batch_size,
            max_wait_ms=settings.max_wait_ms,
            max_queue=settings.max_queue,
            enabled=settings.batching,
        )

    # ---- the model, one call at a time, in worker threads --------------------------------------

    def _embed_now(self, samples: list[Sample]) -> torch.Tensor:
        with self.model_lock:
            return embed_vectors(
                self.model.backbone, self.model.projector, samples, self.store.root,
                **self.embed_options,
            )  # fmt: skip

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        def locked() -> Any:
            with self.model_lock:
                return fn(*args, **kwargs)

        return await asyncio.to_thread(locked)

    def token_counts(self, samples: list[Sample]) -> list[int]:
        """Tokens of each sample (text and image tokens), as the model will see it."""
        batch = self.model.backbone.collate(samples, self.store.root,
                                            slice_text_by=self.model.slice_text_by)  # fmt: skip
        return [int(n) for n in batch.lengths.tolist()]

    async def checked_tokens(self, samples: list[Sample], what: str) -> list[int]:
        try:  # tokenising only: no model lock, so it overlaps a running batch
            counts = await asyncio.to_thread(self.token_counts, samples)
        except ValueError as exc:  # the backbone's own limits (e.g. its context length)
            raise RequestError(
                f"{what}: {exc}", status=413, param=what, code="too_many_tokens"
            ) from None
        for i, count in enumerate(counts):
            if count > self.limits.max_tokens:
                raise RequestError(
                    f"{what}[{i}]: {count} tokens is over the limit of {self.limits.max_tokens}",
                    status=413,
                    param=what,
                    code="too_many_tokens",
                )
        return counts

    async def embed(self, samples: list[Sample]) -> torch.Tensor:
        try:
            return await self.batcher.embed(samples)
        except QueueFullError as exc:
            raise RequestError(
                str(exc), status=503, code="overloaded", type="server_error"
            ) from None
        except ValueError as exc:
            raise RequestError(f"input: {exc}", param="input") from None

    def steering(self, instruction: str | None) -> str | None:
        """A request's instruction, checked: a 400 error when it is empty or the bundle has no
        control branch to steer with."""
        if instruction is None:
            return None
        if not instruction.strip():
            raise RequestError("instruction: an empty text", param="instruction")
        if self.model.control is None:
            raise RequestError(
                f"instruction: the model {self.name!r} has no control branch (train one with "
                "sugar train-control), so an instruction cannot steer its queries; leave "
                "'instruction' out or put it in the query text",
                param="instruction", code="no_control_branch",
            )  # fmt: skip
        return instruction

    async def embed_queries(self, samples: list[Sample], instruction: str | None) -> torch.Tensor:
        """Query vectors: micro-batched plain ones, or steered by ``instruction`` (checked by
        :meth:`steering`) through the control branch. # (N, P)"""
        if instruction is None:
            return await self.embed(samples)
        try:
            return await self.run(
                self.model.steered_vectors, samples, instruction, self.store.root,
                self.settings.max_batch_size,
            )  # fmt: skip
        except ValueError as exc:
            raise RequestError(f"input: {exc}", param="input") from None

    async def checked_query_tokens(
        self, samples: list[Sample], instruction: str | None, what: str
    ) -> list[int]:
        """:meth:`checked_tokens` of what the model reads for each query: with an instruction,
        the branch reads ``[instruction, query]``."""
        if instruction is not None:
            samples = [instructed(sample, instruction) for sample in samples]
        return await self.checked_tokens(samples, what)

    def check_model(self, name: str | None) -> None:
        if name is not None and name not in (self.name, self.model.identity):
            raise RequestError(
                f"model {name!r} is not served here; this server serves {self.name!r}",
                status=404,
                param="model",
                code="model_not_found",
            )

    def need_index(self) -> Index:
        if self.index is None:
            raise RequestError(
                "no index is loaded: start the server with --index DIR (an index built with "
                "this model), or add items first",
                status=409,
                code="no_index",
            )
        return self.index


def create_app(model: SugarModel, settings: ServeSettings | None = None) -> FastAPI:
    """The app serving ``model`` (see the module docstring). Images of requests live in a
    temporary directory for the app's lifetime."""
    settings = settings or ServeSettings()
    work = Path(tempfile.mkdtemp(prefix="sugar-serve-"))
    service = _Service(model, settings, work)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.batcher.start()
        try:
            yield
        finally:
            await service.batcher.stop()
            shutil.rmtree(work, ignore_errors=True)

    app = FastAPI(title="sugar", version="1", lifespan=lifespan)
    app.state.service = service

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(SchemaError)  # a text or image of the request breaks the schema
    async def _schema_error(request: Request, exc: SchemaError) -> JSONResponse:
        return JSONResponse(RequestError(str(exc)).body(), status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid body"}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        param = ".".join(loc) or None
        message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
        if first.get("type") == "json_invalid":
            message, param = "the body is not valid JSON", None
        error = RequestError(message, param=param)
        return JSONResponse(error.body(), status_code=400)

    @app.exception_handler(404)
    async def _not_found(request: Request, exc: Exception) -> JSONResponse:
        error = RequestError(f"no route {request.url.path}", status=404, code="not_found")
        return JSONResponse(error.body(), status_code=404)

    @app.exception_handler(405)
    async def _bad_method(request: Request, exc: Exception) -> JSONResponse:
        error = RequestError(
            f"{request.method} is not allowed on {request.url.path}", status=405,
            code="method_not_allowed",
        )  # fmt: skip
        return JSONResponse(error.body(), status_code=405)

    async def authorised(request: Request) -> None:
        if settings.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(
            token.strip().encode(), settings.api_key.encode()
        ):
            raise RequestError(
                "missing or wrong API key: send 'Authorization: Bearer <key>'",
                status=401,
                code="invalid_api_key",
            )

    auth = [Depends(authorised)]

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        html = resources.files("sugar.serve").joinpath("static/index.html").read_text("utf-8")
        return HTMLResponse(html)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": service.name,
            "index": None if service.index is None else len(service.index),
            "auth": settings.api_key is not None,
            "batching": {"enabled": settings.batching, **service.batcher.stats.to_dict()},
        }

    @app.get("/v1/models", dependencies=auth)
    async def models() -> dict[str, Any]:
        entry = {
            "id": service.name,
            "object": "model",
            "created": int(model.directory.stat().st_mtime),
            "owned_by": "sugar",
            "identity": model.identity,
            "dimensions": model.projector.dim,
        }
        return {"object": "list", "data": [entry]}

    @app.post("/v1/embeddings", dependencies=auth)
    async def embeddings(body: EmbeddingRequest) -> dict[str, Any]:
        service.check_model(body.model)
        dim = model.projector.dim
        if body.dimensions is not None and body.dimensions > dim:
            raise RequestError(
                f"dimensions={body.dimensions}: this model's embeddings have {dim}",
                param="dimensions",
            )
        instruction = service.steering(body.instruction)
        with service.batcher.incoming(), service.store.request() as images:
            samples = parse_embedding_input(body.input, images, service.limits.max_inputs)
            counts = await service.checked_query_tokens(samples, instruction, "input")
            vectors = await service.embed_queries(samples, instruction)  # (N, P)
        if body.dimensions is not None:
            vectors = torch.nn.functional.normalize(vectors[:, : body.dimensions], dim=1)
        data = []
        for i, row in enumerate(vectors):
            values: Any = row.tolist()
            if body.encoding_format == "base64":
                raw = row.numpy().astype("<f4").tobytes()
                values = base64.b64encode(raw).decode()
            data.append({"object": "embedding", "index": i, "embedding": values})
        tokens = sum(counts)
        return {
            "object": "list",
            "data": data,
            "model": service.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    async def retrieve(
        question: Sample, k: int, instruction: str | None = None
    ) -> list[dict[str, Any]]:
        index = service.need_index()
        if k > service.limits.max_k:
            raise RequestError(f"k={k} is over the limit of {service.limits.max_k}", param="k")
        vectors = await service.embed_queries([question], instruction)
        hits = index.search(vectors.numpy(), k, with_metadata=True)[0]
        return hits

    @app.post("/v1/search", dependencies=auth)
    async def search(body: SearchRequest) -> dict[str, Any]:
        service.check_model(body.model)
        if body.query is None and body.image is None:
            raise RequestError("give a 'query' text, an 'image', or both", param="query")
        instruction = service.steering(body.instruction)
        with service.store.request() as images:
            segments = []
            if body.image is not None:
                segments.append(Segment.image_(images.add(body.image, "image")))
            if body.query is not None:
                if not body.query.strip():
                    raise RequestError("query: an empty text", param="query")
                check_visible(body.query, "query")
                segments.append(Segment.text_(body.query))
            question = Sample("query", segments, "question")
            await service.checked_query_tokens([question], instruction, "query")
            hits = await retrieve(question, body.k, instruction)
        for hit in hits:
            hit["text"] = parts_of.text_of(hit["metadata"])
            if body.include_images:
                hit["thumbnails"] = parts_of.hit_thumbnails(service.media, hit["metadata"])
        return {"object": "list", "model": service.name, "data": hits}

    @app.post("/v1/chat/completions", dependencies=auth, response_model=None)
    async def chat(body: ChatRequest) -> dict[str, Any] | StreamingResponse:
        service.check_model(body.model)
        max_new = body.max_completion_tokens or body.max_tokens or settings.default_max_tokens
        if max_new > service.limits.max_new_tokens:
            raise RequestError(
                f"max_tokens={max_new} is over the limit of {service.limits.max_new_tokens}",
                param="max_tokens",
            )
        instruction = service.steering(body.instruction)
        if instruction is not None and not body.retrieval_k:
            raise RequestError("instruction steers retrieval: set retrieval_k", param="instruction")
        with service.store.request() as images:
            question = parts_of.question(body.messages, images)
            await service.checked_query_tokens([question], instruction, "messages")
            hits = (
                await retrieve(question, body.retrieval_k, instruction) if body.retrieval_k else []
            )
            sources = [
                {"id": h["id"], "score": h["score"], "payload": parts_of.payload(h)} for h in hits
            ]
            prompt = build_prompt(
                question, [s["payload"] for s in sources], PromptTemplate(),
                [s["id"] for s in sources],
            )  # fmt: skip
            prompt_tokens = (await service.checked_tokens([prompt], "messages"))[0]
            texts = await service.run(
                model.backbone.generate, [prompt], service.store.root, max_new_tokens=max_new,
                temperature=body.temperature, top_k=body.top_k, seed=body.seed,
            )  # fmt: skip
        text = texts[0]
        completion_tokens = 0
        if text.strip():
            completion = Sample("answer", [Segment.text_(text)])
            completion_tokens = (await asyncio.to_thread(service.token_counts, [completion]))[0]
        id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if not body.stream:
            return {
                "id": id,
                "object": "chat.completion",
                "created": created,
                "model": service.name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
                "sources": sources,
            }
        include_usage = bool((body.stream_options or {}).get("include_usage"))

        def event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
            chunk = {
                "id": id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": service.name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
            return f"data: {json.dumps(chunk)}\n\n"

        async def events() -> AsyncIterator[str]:
            yield event({"role": "assistant", "content": ""}, sources=sources)
            for piece in parts_of.chunks(text):
                yield event({"content": piece})
            yield event({}, "stop")
            if include_usage:
                yield f"data: {json.dumps({'id': id, 'object': 'chat.completion.chunk', 'created': created, 'model': service.name, 'choices': [], 'usage': usage})}\n\n"  # noqa: E501
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/v1/index", dependencies=auth)
    async def index_info() -> dict[str, Any]:
        return service.need_index().info()

    async def mutate(change: Callable[[Index], None]) -> Index:
        """Apply ``change`` to the index on disk under its lock (picking up what others wrote),
        save it, and serve the result."""
        if service.index_path is None:
            raise RequestError("no --index directory was given", status=409, code="no_index")
        path = service.index_path

        def locked_load() -> tuple[Any, Index]:
            lock = index_lock(path)
            lock.acquire()
            if (path / "manifest.json").is_file():
                return lock, model.open_index(path)
            return lock, build_index("exact", model.projector.dim, model.identity)

        lock, index = await asyncio.to_thread(locked_load)
        try:
            change(index)
            await asyncio.to_thread(index.save, path)
        except (ValueError, FileExistsError) as exc:  # FileExistsError: not sugar's directory
            raise RequestError(str(exc)) from None
        finally:
            lock.release()
        service.index = index
        return index

    @app.post("/v1/index/add", dependencies=auth)
    async def index_add(body: IndexAddRequest) -> dict[str, Any]:
        if len(body.items) > service.limits.max_inputs:
            raise RequestError(
                f"items: {len(body.items)} is over the limit of {service.limits.max_inputs}",
                status=413,
                param="items",
                code="too_many_inputs",
            )
        with service.store.request() as images:
            samples, stored = [], []
            for i, item in enumerate(body.items):
                segments, kept = [], []
                if item.image is not None:
                    name = images.add(item.image, f"items[{i}].image")
                    segments.append(Segment.image_(name))
                    kept.append(Segment.image_(parts_of.keep(service.media, images.data[name])))
                if item.text is not None:
                    segments.append(Segment.text_(item.text))
                    kept.append(Segment.text_(item.text))
                if not segments:
                    raise RequestError(f"items[{i}]: a 'text' or an 'image'", param=f"items[{i}]")
                meta = dict(item.metadata or {})
                if item.payload is not None:
                    meta[PAYLOAD_FIELD] = item.payload
                samples.append(Sample(item.id, segments, "kb_item"))
                stored.append(Sample(item.id, kept, "kb_item", meta).to_dict())
            await service.checked_tokens(samples, "items")
            vectors = await service.embed(samples)

        def add(index: Index) -> None:
            index.add([s.id for s in samples], vectors.numpy(), stored)

        index = await mutate(add)
        return {"added": len(samples), "entries": len(index)}

    @app.post("/v1/index/delete", dependencies=auth)
    async def index_delete(body: IndexDeleteRequest) -> dict[str, Any]:
        index = await mutate(lambda index: index.delete(body.ids))
        return {"deleted": len(set(body.ids)), "entries": len(index)}

    app.add_middleware(_BodyLimit, limit=settings.limits.max_request_bytes)
    return app
