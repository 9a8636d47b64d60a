"""Micro-batching: concurrent embedding requests share forward passes.

Requests put their samples on a bounded queue; one worker takes the oldest job, then keeps
taking jobs until it holds ``max_batch_size`` samples or ``max_wait_ms`` has passed since it
took the first, and embeds them all in one call (in a thread, so the event loop keeps
accepting requests while the model runs -- which is what lets the next batch fill up). It
waits only while requests announced with :meth:`MicroBatcher.incoming` are still on their way
(parsed, not yet queued), so a lone client pays no wait. A batch that fails is retried job
by job, so one bad input fails only its own request.

>>> import asyncio, torch
>>> async def demo():
...     batcher = MicroBatcher(lambda samples: torch.ones(len(samples), 2), max_wait_ms=1)
...     await batcher.start()
...     vectors = await asyncio.gather(batcher.embed(["a"]), batcher.embed(["b", "c"]))
...     await batcher.stop()
...     return [tuple(v.shape) for v in vectors]
>>> asyncio.run(demo())
[(1, 2), (2, 2)]
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

__all__ = ["BatcherStats", "MicroBatcher", "QueueFullError"]


class QueueFullError(RuntimeError):
    """The queue holds ``max_queue`` jobs: the server is overloaded (answered with 503)."""


@dataclass
class BatcherStats:
    requests: int = 0
    batches: int = 0
    samples: int = 0
    largest_batch: int = 0

    def to_dict(self) -> dict[str, Any]:
        mean = self.samples / self.batches if self.batches else 0.0
        return {**self.__dict__, "mean_batch": round(mean, 2)}


@dataclass
class _Job:
    samples: Sequence[Any]
    future: asyncio.Future[Tensor]
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = len(self.samples)


class MicroBatcher:
    """Group concurrent ``embed(samples)`` calls into calls of ``embed_fn`` (see the module
    docstring). ``embed_fn(samples) -> (N, P)`` runs in a worker thread, one call at a time.
    ``enabled=False`` embeds each request alone (the one-by-one baseline)."""

    def __init__(
        self,
        embed_fn: Callable[[list[Any]], Tensor],
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        max_queue: int = 1024,
        enabled: bool = True,
    ) -> None:
        if max_batch_size < 1 or max_wait_ms < 0 or max_queue < 1:
            raise ValueError(
                f"max_batch_size={max_batch_size} (>= 1), max_wait_ms={max_wait_ms} (>= 0), "
                f"max_queue={max_queue} (>= 1)"
            )
        self.embed_fn = embed_fn
        self.max_batch_size = max_batch_size if enabled else 1
        self.max_wait = max_wait_ms / 1000 if enabled else 0.0
        self.max_queue = max_queue
        self.stats = BatcherStats()
        self._incoming = 0
        # its own thread: batches never wait behind other work queued on the default pool
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sugar-batch")
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue(self.max_queue)
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._worker = None
        self._executor.shutdown(wait=False)

    @contextlib.contextmanager
    def incoming(self) -> Iterator[None]:
        """Announce a request that will call :meth:`embed` soon (wrap its whole handler): a
        batch waits for it, up to ``max_wait_ms``, rather than leaving without it."""
        self._incoming += 1
        try:
            yield
        finally:
            self._incoming -= 1

    async def embed(self, samples: Sequence[Any]) -> Tensor:
        """The (N, P) vectors of ``samples`` once a batch holding them has run."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not awaited")
        future: asyncio.Future[Tensor] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Job(samples, future))
        except asyncio.QueueFull:
            raise QueueFullError(
                f"the embedding queue is full ({self.max_queue} requests)"
            ) from None
        self.stats.requests += 1
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            size = jobs[0].size
            deadline = loop.time() + self.max_wait
            while size < self.max_batch_size:
                if self._queue.empty():
                    timeout = deadline - loop.time()
                    if timeout <= 0 or self._incoming <= len(jobs):  # nobody else is coming
                        break
                    try:
                        job = await asyncio.wait_for(self._queue.get(), timeout)
                    except TimeoutError:
                        break
                else:
                    job = self._queue.get_nowait()
                jobs.append(job)
                size += job.size
            await self._flush(jobs)

    async def _flush(self, jobs: list[_Job]) -> None:
        jobs = [job for job in jobs if not job.future.done()]  # a client may have gone
        if not jobs:
            return
        samples = [s for job in jobs for s in job.samples]
        self.stats.batches += 1
        self.stats.samples += len(samples)
        self.stats.largest_batch = max(self.stats.largest_batch, len(samples))
        try:
            loop = asyncio.get_running_loop()
            vectors = await loop.run_in_executor(self._executor, self.embed_fn, samples)
        except Exception as exc:
            if len(jobs) == 1:
                _settle(jobs[0], exception=exc)
                return
            for job in jobs:  # isolate the bad input: each job alone
                await self._flush([job])
            return
        start = 0
        for job in jobs:
            _settle(job, vectors[start : start + job.size])
            start += job.size


def _settle(job: _Job, result: Tensor | None = None, exception: Exception | None = None) -> None:
    if job.future.done():
        return
    if exception is not None:
        job.future.set_exception(exception)
    else:
        assert result is not None
        job.future.set_result(result)
