"""Dynamic batching for any ``f(list[item]) -> list[result]``; it knows nothing about models.

The shape follows ray serve's original ``batching.py``: every caller gets its own future; the
batch loop waits for a first item, then up to ``max_wait_s`` or ``max_batch_size`` items, runs
``f`` off the event loop (in an executor, so a forward pass never blocks other requests), checks
that ``f`` returned one result per item and routes each result to its caller. An exception from
``f`` reaches every caller of that batch and no one else; callers that were cancelled (timed
out, or their task cancelled: the service cancels a request whose client disconnected, see
``app/api/disconnect.py``) are skipped before the batch is built. The queue is bounded: when it
is full a caller is refused at once (:class:`Overloaded`) rather than left to wait for a
timeout. :meth:`Batcher.stop` fails every caller not yet run, queued or in the batch being
formed, with :class:`BatcherClosed` at once.

How long a forming batch waits adapts to the traffic: ``max_wait_s`` after a batch that served
one caller (a lone client should not wait for company that is not coming, even when it sends
several items per call), ``max_busy_wait_s`` after a batch of several callers (concurrent
clients are sending; their next requests are one round trip away). Without the longer wait, 8
closed-loop clients split into two groups of ~4 that alternate (measured: docs/BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from app.threads import named_pool

T = TypeVar("T")
R = TypeVar("R")
logger = logging.getLogger(__name__)
batch_logger = logging.getLogger("dermafake.batch")  # one line per batch, at debug level


class Overloaded(RuntimeError):
    """The queue has no room for this request; retry after ``retry_after_s`` seconds."""

    def __init__(self, name: str, retry_after_s: int) -> None:
        super().__init__(f"{name} queue is full; retry in {retry_after_s} s")
        self.name = name
        self.retry_after_s = retry_after_s


class BatchTimeout(TimeoutError):
    """The request did not get its results within the batcher's per-request timeout."""

    def __init__(self, name: str, timeout_s: float) -> None:
        super().__init__(f"{name}: no result within {timeout_s:g} s")
        self.name = name


class BatcherClosed(RuntimeError):
    """The batcher was stopped (server shutting down) before this request ran."""


class BatchObserver(Protocol):
    """Receives what a batch did; metrics plug in here so the batcher stays model-agnostic."""

    def batch_done(self, size: int, queue_waits_s: Sequence[float], run_s: float) -> None: ...


@dataclass(frozen=True)
class CallTiming:
    """Where one call's time went: the longest any of its items waited for a forward pass, and
    the forward passes that ran them (each counted once). Request logs report these."""

    queue_wait_s: float
    run_s: float


@dataclass
class _Pending(Generic[T, R]):
    item: T
    future: asyncio.Future[R]
    call: int  # one id per submit_many: the adaptive wait counts callers, not items
    enqueued: float = field(default_factory=time.perf_counter)
    started: float | None = None  # when its forward pass started (one value per pass)
    run_s: float = 0.0


class Batcher(Generic[T, R]):
    """Collects concurrent calls into batches for ``fn``; start it inside a running loop."""

    def __init__(
        self,
        fn: Callable[[list[T]], list[R]],
        *,
        name: str = "batcher",
        max_batch_size: int = 16,
        max_wait_s: float = 0.0,
        max_busy_wait_s: float = 0.1,
        max_queue_size: int = 128,
        timeout_s: float = 30.0,
        retry_after_s: int = 1,
        executor: Executor | None = None,
        observer: BatchObserver | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue_size < 1:
            raise ValueError("max_batch_size and max_queue_size must be at least 1")
        self.fn = fn
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_busy_wait_s = max(max_busy_wait_s, max_wait_s)
        self._last_callers = 0
        self._calls = itertools.count()
        self._forming: list[_Pending[T, R]] = []  # taken off the queue, not yet running
        self._batch_started: float | None = None  # perf_counter start of the pass running
        self.max_queue_size = max_queue_size
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self.observer = observer
        self._own_executor = executor is None
        # One thread per model: forward passes of one model run one at a time, in order.
        self._executor = executor or named_pool(1, f"batch-{name}")
        self._queue: asyncio.Queue[_Pending[T, R]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    @property
    def queue_depth(self) -> int:
        """Items waiting for a batch (not counting the batch running now)."""
        return self._queue.qsize()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def busy_for_s(self) -> float:
        """How long the forward pass running now has run (0 when idle): liveness reads it, so
        a pass that hangs turns the process unhealthy instead of silently stalling."""
        started = self._batch_started
        return 0.0 if started is None else time.perf_counter() - started

    def has_room(self, n: int = 1) -> bool:
        """Whether ``n`` more items would be queued now; checked before a request does any work
        (reading and decoding an upload) that a full queue would waste."""
        return self._queue.qsize() + n <= self.max_queue_size

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name=f"{self.name}-batch-loop"
            )

    async def stop(self) -> None:
        """Stop the loop; callers not yet run (queued, or in the batch being formed) get
        :class:`BatcherClosed` at once. To finish queued work first, stop admitting requests
        and wait for them (the service's graceful shutdown does) before calling this."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        waiting = [*self._forming, *(self._queue.get_nowait() for _ in range(self._queue.qsize()))]
        self._forming = []
        for pending in waiting:
            if not pending.future.done():
                pending.future.set_exception(BatcherClosed(f"{self.name} is shutting down"))
        if self._own_executor:  # waits for a forward pass in flight, without blocking the loop
            await asyncio.to_thread(self._executor.shutdown, wait=True)

    async def submit(self, item: T) -> R:
        """Run one item in some batch and return its result."""
        return (await self.submit_many([item]))[0]

    async def submit_many(
        self, items: Sequence[T], timing: Callable[[CallTiming], None] | None = None
    ) -> list[R]:
        """Queue all items (all or none), then wait for all their results; ``timing`` (if
        given) hears where the call's time went once it has its results."""
        if not self.running:
            raise BatcherClosed(f"{self.name} is not running")
        if not self.has_room(len(items)):
            raise Overloaded(self.name, self.retry_after_s)
        loop = asyncio.get_running_loop()
        call = next(self._calls)
        pending = [_Pending(item, loop.create_future(), call) for item in items]
        for p in pending:
            self._queue.put_nowait(p)
        try:
            async with asyncio.timeout(self.timeout_s) as deadline:
                results = [await p.future for p in pending]
        except TimeoutError as exc:
            if deadline.expired():
                raise BatchTimeout(self.name, self.timeout_s) from exc
            raise
        finally:
            for p in pending:  # on timeout, error or cancellation: let the loop skip them
                if not p.future.done():
                    p.future.cancel()
                elif not p.future.cancelled():
                    p.future.exception()  # mark retrieved: a shared batch error is reported once
        if timing is not None:
            runs = {p.started: p.run_s for p in pending if p.started is not None}
            waits = [p.started - p.enqueued for p in pending if p.started is not None]
            timing(CallTiming(max(waits, default=0.0), sum(runs.values())))
        return results

    async def _collect(self) -> list[_Pending[T, R]]:
        """The next batch; kept on ``self._forming`` while it waits, so :meth:`stop` can fail
        its callers instead of leaving them to time out."""
        batch = self._forming = [await self._queue.get()]
        wait = self.max_busy_wait_s if self._last_callers > 1 else self.max_wait_s
        deadline = asyncio.get_running_loop().time() + wait
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    batch.append(await self._queue.get())
            except TimeoutError:
                break
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            collected = await self._collect()
            batch = [p for p in collected if not p.future.done()]
            self._forming = []
            self._last_callers = len({p.call for p in batch})
            if not batch:
                continue  # every caller in it was cancelled or timed out
            started = self._batch_started = time.perf_counter()
            for p in batch:
                p.started = started
            try:
                results = await loop.run_in_executor(
                    self._executor, self.fn, [p.item for p in batch]
                )
                if len(results) != len(batch):
                    raise RuntimeError(
                        f"{self.name}: batch function returned {len(results)} results "
                        f"for {len(batch)} items"
                    )
            except asyncio.CancelledError:
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(BatcherClosed(f"{self.name} stopped"))
                raise
            except Exception as exc:
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
            else:
                for pending, result in zip(batch, results, strict=True):
                    if not pending.future.done():
                        pending.future.set_result(result)
            finally:
                self._batch_started = None
            run_s = time.perf_counter() - started
            for p in batch:
                p.run_s = run_s
            waits = [started - p.enqueued for p in batch]
            if batch_logger.isEnabledFor(logging.DEBUG):
                self._log_batch(len(batch), self._last_callers, max(waits), run_s)
            if self.observer is not None:
                try:
                    self.observer.batch_done(len(batch), waits, run_s)
                except Exception:  # a metrics bug must not stop serving
                    logger.exception("%s: batch observer failed", self.name)

    def _log_batch(self, size: int, callers: int, max_wait_s: float, run_s: float) -> None:
        """One debug line per batch, its figures as JSON fields (``app/logs.py``): what an
        operator reads to see whether batches fill and where a request's wait came from."""
        fields = {
            "model": self.name,
            "batch_size": size,
            "callers": callers,
            "max_queue_wait_s": round(max_wait_s, 4),
            "run_s": round(run_s, 4),
        }
        batch_logger.debug(
            "batch %s: %d item(s) from %d caller(s), waited up to %.3fs, ran %.3fs",
            self.name,
            size,
            callers,
            max_wait_s,
            run_s,
            extra={"fields": fields},
        )
