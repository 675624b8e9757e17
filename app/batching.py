"""Dynamic batching for any ``f(list[item]) -> list[result]``; it knows nothing about models.

The shape follows ray serve's original ``batching.py``: every caller gets its own future; the
batch loop waits for a first item, then up to ``max_wait_s`` or ``max_batch_size`` items, runs
``f`` off the event loop (in an executor, so a forward pass never blocks other requests), checks
that ``f`` returned one result per item and routes each result to its caller. An exception from
``f`` reaches every caller of that batch and no one else; callers that were cancelled (client
gone, timed out) are skipped before the batch is built. The queue is bounded: when it is full a
caller is refused at once (:class:`Overloaded`) rather than left to wait for a timeout.

How long a forming batch waits adapts to the traffic: ``max_wait_s`` after a batch of one (a
lone client should not wait for company that is not coming), ``max_busy_wait_s`` after a batch
of several (concurrent clients are sending; their next requests are one round trip away).
Without the longer wait, 8 closed-loop clients split into two groups of ~4 that alternate
(measured: docs/BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")
logger = logging.getLogger(__name__)


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


@dataclass
class _Pending(Generic[T, R]):
    item: T
    future: asyncio.Future[R]
    enqueued: float = field(default_factory=time.perf_counter)


class Batcher(Generic[T, R]):
    """Collects concurrent calls into batches for ``fn``; start it inside a running loop."""

    def __init__(
        self,
        fn: Callable[[list[T]], list[R]],
        *,
        name: str = "batcher",
        max_batch_size: int = 16,
        max_wait_s: float = 0.005,
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
        self._last_batch_size = 0
        self.max_queue_size = max_queue_size
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self.observer = observer
        self._own_executor = executor is None
        # One thread per model: forward passes of one model run one at a time, in order.
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix=f"{name}-batch")
        self._queue: asyncio.Queue[_Pending[T, R]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    @property
    def queue_depth(self) -> int:
        """Items waiting for a batch (not counting the batch running now)."""
        return self._queue.qsize()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name=f"{self.name}-batch-loop"
            )

    async def stop(self) -> None:
        """Stop the loop; callers still queued get :class:`BatcherClosed`."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(BatcherClosed(f"{self.name} is shutting down"))
        if self._own_executor:  # waits for a forward pass in flight, without blocking the loop
            await asyncio.to_thread(self._executor.shutdown, wait=True)

    async def submit(self, item: T) -> R:
        """Run one item in some batch and return its result."""
        return (await self.submit_many([item]))[0]

    async def submit_many(self, items: Sequence[T]) -> list[R]:
        """Queue all items (all or none), then wait for all their results."""
        if not self.running:
            raise BatcherClosed(f"{self.name} is not running")
        if self._queue.qsize() + len(items) > self.max_queue_size:
            raise Overloaded(self.name, self.retry_after_s)
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[R]] = []
        for item in items:
            future: asyncio.Future[R] = loop.create_future()
            futures.append(future)
            self._queue.put_nowait(_Pending(item, future))
        try:
            async with asyncio.timeout(self.timeout_s) as deadline:
                return [await future for future in futures]
        except TimeoutError as exc:
            if deadline.expired():
                raise BatchTimeout(self.name, self.timeout_s) from exc
            raise
        finally:
            for future in futures:  # on timeout, error or cancellation: let the loop skip them
                if not future.done():
                    future.cancel()
                elif not future.cancelled():
                    future.exception()  # mark retrieved: a shared batch error is reported once

    async def _collect(self) -> list[_Pending[T, R]]:
        batch = [await self._queue.get()]
        wait = self.max_busy_wait_s if self._last_batch_size > 1 else self.max_wait_s
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
            self._last_batch_size = len(collected)
            batch = [p for p in collected if not p.future.done()]
            if not batch:
                continue  # every caller in it was cancelled or timed out
            started = time.perf_counter()
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
            if self.observer is not None:
                waits = [started - p.enqueued for p in batch]
                try:
                    self.observer.batch_done(len(batch), waits, time.perf_counter() - started)
                except Exception:  # a metrics bug must not stop serving
                    logger.exception("%s: batch observer failed", self.name)
