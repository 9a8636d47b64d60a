"""The one timing rule every benchmark here uses: a warm-up call (numba compilation, caches,
the allocator) that is not timed, then the median of ``repeats`` timed calls; and
:class:`CpuTimer`, the CPU seconds a wrapped function spends inside a larger run."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Seconds: the median of ``repeats`` calls of ``fn`` after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class CpuTimer:
    """Accumulates the CPU time of calls of a wrapped function."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.process_time() - start

        return timed
