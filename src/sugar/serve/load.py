"""A bounded load generator for a running server (the load test and the serving benchmark),
and a helper that runs ``sugar serve`` in a child process on a free loopback port.

>>> stats = run_load("http://127.0.0.1:8000", bodies, clients=16)   # doctest: +SKIP
>>> stats["p95_ms"], stats["requests_per_s"]                        # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

__all__ = ["free_port", "run_load", "server_process"]


def run_load(
    url: str,
    bodies: Sequence[dict[str, Any]],
    *,
    clients: int,
    path: str = "/v1/embeddings",
    headers: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> dict[str, Any]:
    """POST every body once to ``url + path`` from ``clients`` concurrent connections (each
    client sends its next request when its previous one is answered).

    Returns ``{"requests", "ok", "errors", "statuses", "seconds", "requests_per_s", "p50_ms",
    "p95_ms", "max_ms", "responses"}``; ``responses`` are the JSON answers in body order, so a
    caller can check that none was lost or mixed up.
    """
    import httpx

    async def main() -> dict[str, Any]:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(len(bodies)):
            queue.put_nowait(i)
        latencies = [0.0] * len(bodies)
        statuses = [0] * len(bodies)
        responses: list[Any] = [None] * len(bodies)
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

        async def client(session: httpx.AsyncClient) -> None:
            while not queue.empty():
                i = queue.get_nowait()
                start = time.perf_counter()
                try:
                    response = await session.post(path, json=bodies[i])
                    statuses[i] = response.status_code
                    responses[i] = response.json()
                except httpx.HTTPError as exc:
                    statuses[i], responses[i] = -1, repr(exc)
                latencies[i] = time.perf_counter() - start

        async with httpx.AsyncClient(
            base_url=url, headers=headers, limits=limits, timeout=timeout
        ) as session:
            start = time.perf_counter()
            await asyncio.gather(*(client(session) for _ in range(clients)))
            seconds = time.perf_counter() - start
        ms = np.array(latencies) * 1000
        ok = sum(status == 200 for status in statuses)
        return {
            "requests": len(bodies),
            "clients": clients,
            "ok": ok,
            "errors": len(bodies) - ok,
            "statuses": sorted(set(statuses)),
            "seconds": round(seconds, 3),
            "requests_per_s": round(len(bodies) / seconds, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "max_ms": round(float(ms.max()), 1),
            "responses": responses,
        }

    return asyncio.run(main())


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server_process(
    args: Sequence[str], *, env: dict[str, str] | None = None, startup_s: float = 120.0
) -> Iterator[str]:
    """Run ``sugar serve ARGS --port FREE`` (127.0.0.1) in a child process, yield its base URL
    once ``/health`` answers, and stop it after. Raises ``RuntimeError`` with the child's
    output when it exits or does not answer within ``startup_s`` seconds."""
    import httpx

    port = free_port()
    command = [sys.executable, "-c", "from sugar.cli import main; main()", "serve", *args,
               "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    # a file, not a pipe: a pipe nobody reads would fill up and block the server
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115  (closed in the finally below)
    process = subprocess.Popen(
        command, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if process.poll() is not None:
                log.seek(0)
                output = log.read()
                raise RuntimeError(f"sugar serve exited with {process.returncode}:\n{output}")
            try:
                if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"sugar serve did not answer on {url} in {startup_s} s")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
