"""Throughput of a repeated call, timed the same way by every benchmark."""

from __future__ import annotations

import time
from collections.abc import Callable


def timed(
    fn: Callable[[], object],
    seconds: float,
    items: int,
    *,
    warmup: int = 1,
    sync: Callable[[], object] | None = None,
) -> float:
    """Items/s of ``fn`` over at least ``seconds`` and 2 calls, after ``warmup`` untimed calls
    (the first one compiles). ``sync`` (e.g. ``torch.cuda.synchronize``) runs before the clock
    starts and before it stops, so queued GPU work is counted."""
    for _ in range(warmup):
        fn()
    if sync is not None:
        sync()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or n < 2:
        fn()
        n += 1
    if sync is not None:
        sync()
    return n * items / (time.perf_counter() - start)
