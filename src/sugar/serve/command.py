"""The body of ``sugar serve``: load a bundle, build the app, run uvicorn.

Binds to 127.0.0.1 unless told otherwise; a non-loopback host without an API key is allowed
but warned about, since every endpoint (index mutation included) is then open to the network.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from sugar.serve.inputs import Limits

__all__ = ["API_KEY_ENV", "serve", "serve_command"]

API_KEY_ENV = "SUGAR_API_KEY"
"""The environment variable read when ``--api-key`` is not given."""

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def serve(
    model: Path,
    *,
    index: Path | None = None,
    media: Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    batching: bool = True,
    max_batch_size: int = 32,
    max_wait_ms: float = 5.0,
    max_queue: int = 1024,
    limits: Limits | None = None,
    log_level: str = "info",
) -> None:
    """Serve the bundle at ``model`` (and the index at ``index``) until interrupted."""
    try:
        import uvicorn

        from sugar.serve.app import ServeSettings, create_app
    except ImportError as exc:
        raise ValueError(
            f"sugar serve needs the serve extra ({exc.name} is missing): "
            "pip install 'sugar-mllm[serve]'"
        ) from None
    from sugar.api import load

    if not (model / "model.json").is_file():
        raise FileNotFoundError(f"--model: no bundle at {model} (no model.json)")
    if index is not None and index.exists() and not (index / "manifest.json").is_file():
        raise FileNotFoundError(f"--index: {index} exists but is not a sugar index")
    api_key = api_key or os.environ.get(API_KEY_ENV) or None
    if host not in LOOPBACK and api_key is None:
        print(
            f"sugar serve: warning: listening on {host} without an API key (--api-key or "
            f"${API_KEY_ENV}): anyone who can reach it can read and change the index",
            file=sys.stderr,
        )
    loaded = load(model)
    loaded.projector  # noqa: B018  (fail now, not at the first request, without a projector)
    settings = ServeSettings(
        index=index, media=media, api_key=api_key, limits=limits or Limits(),
        batching=batching, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
        max_queue=max_queue,
    )  # fmt: skip
    app = create_app(loaded, settings)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def serve_command(
    model: Annotated[
        Path, typer.Option("--model", "-m", help="Model bundle directory (with a projector).")
    ],
    index: Annotated[
        Path | None,
        typer.Option(help="Index directory built with this model (created by the first add)."),
    ] = None,
    media: Annotated[
        Path | None,
        typer.Option(help="Root of the index entries' image paths (default: INDEX-media)."),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to bind (loopback by default).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(help=f"Require 'Authorization: Bearer KEY' on /v1/* (or ${API_KEY_ENV})."),
    ] = None,
    batching: Annotated[
        bool, typer.Option(help="Micro-batch concurrent embedding requests.")
    ] = True,
    max_batch_size: Annotated[int, typer.Option(help="Samples per micro-batch.", min=1)] = 32,
    max_wait_ms: Annotated[
        float, typer.Option(help="How long a micro-batch waits to fill, in ms.", min=0)
    ] = 5.0,
    max_queue: Annotated[
        int, typer.Option(help="Queued embedding requests before 503.", min=1)
    ] = 1024,
) -> None:
    """Serve a bundle over HTTP: OpenAI-compatible /v1/embeddings and /v1/chat/completions
    (with retrieval), /v1/search, index add/delete and a web page at /."""
    serve(
        model, index=index, media=media, host=host, port=port, api_key=api_key,
        batching=batching, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
        max_queue=max_queue,
    )  # fmt: skip
