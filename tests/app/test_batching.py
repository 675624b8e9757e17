"""The batcher on plain functions: no models, no HTTP."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from app.batching import Batcher, BatcherClosed, BatchTimeout, Overloaded

pytestmark = pytest.mark.anyio


class Recorder:
    """A batch function that records every batch it was given."""

    def __init__(self, fail_on: object = None, gate: threading.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail_on = fail_on
        self.gate = gate

    def __call__(self, items: list[int]) -> list[int]:
        if self.gate is not None:
            self.gate.wait(timeout=10)
        self.batches.append(list(items))
        if self.fail_on in items:
            raise ValueError(f"bad item {self.fail_on}")
        return [x * 10 for x in items]


class Observed:
    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.waits: list[float] = []

    def batch_done(self, size: int, queue_waits_s: Sequence[float], run_s: float) -> None:
        self.sizes.append(size)
        self.waits.extend(queue_waits_s)


async def _started(fn: Callable[[list[int]], list[int]], **kwargs: Any) -> Batcher:
    batcher = Batcher(fn, **kwargs)
    batcher.start()
    return batcher


async def test_concurrent_calls_share_batches_and_get_their_own_results() -> None:
    fn, observer = Recorder(), Observed()
    b = await _started(fn, max_batch_size=4, max_wait_s=0.2, observer=observer)
    try:
        results = await asyncio.gather(*(b.submit(i) for i in range(10)))
    finally:
        await b.stop()
    assert results == [i * 10 for i in range(10)]
    assert sorted(x for batch in fn.batches for x in batch) == list(range(10))
    assert max(len(batch) for batch in fn.batches) == 4  # never above max_batch_size
    assert len(fn.batches) < 10
    assert observer.sizes == [len(batch) for batch in fn.batches]
    assert len(observer.waits) == 10 and min(observer.waits) >= 0


async def test_submit_many_keeps_order() -> None:
    fn = Recorder()
    b = await _started(fn, max_batch_size=3, max_wait_s=0.01)
    try:
        assert await b.submit_many([5, 6, 7, 8]) == [50, 60, 70, 80]
    finally:
        await b.stop()


async def test_exception_reaches_its_batch_only() -> None:
    gate = threading.Event()
    fn = Recorder(fail_on=2, gate=gate)
    b = await _started(fn, max_batch_size=2, max_wait_s=0.5)
    try:
        first = asyncio.ensure_future(b.submit_many([1, 2]))  # one batch: fails
        await asyncio.sleep(0.05)
        later = asyncio.ensure_future(b.submit_many([3, 4]))  # next batch: fine
        await asyncio.sleep(0.05)
        gate.set()
        with pytest.raises(ValueError, match="bad item 2"):
            await first
        assert await later == [30, 40]
    finally:
        await b.stop()
    assert fn.batches == [[1, 2], [3, 4]]


async def test_every_caller_in_a_failing_batch_gets_the_error() -> None:
    gate = threading.Event()
    b = await _started(Recorder(fail_on=3, gate=gate), max_batch_size=8, max_wait_s=0.2)
    try:
        calls = [asyncio.ensure_future(b.submit(i)) for i in (1, 2, 3)]
        await asyncio.sleep(0.05)
        gate.set()
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        await b.stop()
    assert all(isinstance(o, ValueError) for o in outcomes)


async def test_wrong_result_count_is_an_error_for_the_batch() -> None:
    b = await _started(lambda items: items[:-1], max_batch_size=4, max_wait_s=0.01)
    try:
        with pytest.raises(RuntimeError, match="returned 1 results for 2 items"):
            await b.submit_many([1, 2])
    finally:
        await b.stop()


async def test_cancelled_request_is_skipped() -> None:
    gate = threading.Event()
    fn = Recorder(gate=gate)
    b = await _started(fn, max_batch_size=1, max_wait_s=0)
    try:
        running = asyncio.ensure_future(b.submit(1))  # occupies the worker until the gate opens
        await asyncio.sleep(0.05)
        cancelled = asyncio.ensure_future(b.submit(2))
        kept = asyncio.ensure_future(b.submit(3))
        await asyncio.sleep(0.05)
        cancelled.cancel()
        gate.set()
        assert await running == 10
        assert await kept == 30
        with pytest.raises(asyncio.CancelledError):
            await cancelled
    finally:
        await b.stop()
    assert fn.batches == [[1], [3]]


async def test_full_queue_refuses_at_once() -> None:
    gate = threading.Event()
    b = await _started(Recorder(gate=gate), max_batch_size=1, max_wait_s=0, max_queue_size=2)
    try:
        running = asyncio.ensure_future(b.submit(1))
        await asyncio.sleep(0.05)  # taken by the worker: the queue is empty again
        queued = [asyncio.ensure_future(b.submit(i)) for i in (2, 3)]
        await asyncio.sleep(0)
        assert b.queue_depth == 2
        with pytest.raises(Overloaded) as info:
            await b.submit(4)
        assert info.value.retry_after_s == 1
        with pytest.raises(Overloaded):  # all-or-nothing: 2 items do not fit in 0 slots
            await b.submit_many([5, 6])
        gate.set()
        assert [await running, *[await q for q in queued]] == [10, 20, 30]
        assert await b.submit(7) == 70  # room again
    finally:
        gate.set()
        await b.stop()


async def test_timeout_raises_and_the_late_item_is_dropped() -> None:
    gate = threading.Event()
    fn = Recorder(gate=gate)
    b = await _started(fn, max_batch_size=1, max_wait_s=0, timeout_s=0.1)
    try:
        with pytest.raises(BatchTimeout, match=r"no result within 0\.1 s"):
            await b.submit(1)  # its batch is stuck behind the gate
        waiting = asyncio.ensure_future(b.submit(2))
        with pytest.raises(BatchTimeout):
            await waiting  # queued behind the stuck batch, times out too
        gate.set()
        b.timeout_s = 5
        assert await b.submit(3) == 30
    finally:
        gate.set()
        await b.stop()
    assert [2] not in fn.batches  # timed out before its batch formed: skipped


async def test_stop_fails_queued_callers_and_refuses_new_ones() -> None:
    gate = threading.Event()
    b = await _started(Recorder(gate=gate), max_batch_size=1, max_wait_s=0)
    running = asyncio.ensure_future(b.submit(1))
    await asyncio.sleep(0.05)
    queued = asyncio.ensure_future(b.submit(2))
    await asyncio.sleep(0)
    stopping = asyncio.ensure_future(b.stop())
    await asyncio.sleep(0.05)
    gate.set()
    await stopping
    for call in (running, queued):
        with pytest.raises(BatcherClosed):
            await call
    with pytest.raises(BatcherClosed):
        await b.submit(3)


async def test_a_failing_observer_does_not_stop_the_loop() -> None:
    class Broken:
        def batch_done(self, *args: object) -> None:
            raise RuntimeError("metrics bug")

    b = await _started(Recorder(), max_batch_size=2, max_wait_s=0, observer=Broken())
    try:
        assert await b.submit(1) == 10
        assert await b.submit(2) == 20
    finally:
        await b.stop()


async def _rounds(b: Batcher, rounds: list[list[int]], gap_s: float) -> None:
    """Each round's items submitted together; the next round ``gap_s`` after the previous one
    was submitted (not answered), like clients whose requests arrive a round trip apart."""
    tasks = []
    for items in rounds:
        tasks += [asyncio.ensure_future(b.submit(i)) for i in items]
        await asyncio.sleep(gap_s)
    await asyncio.gather(*tasks)


async def test_after_a_busy_batch_the_next_waits_for_stragglers() -> None:
    """Concurrent clients: once a batch had several items, the next one waits up to
    max_busy_wait_s, so requests a round trip apart share a batch instead of alternating."""
    gate = threading.Event()
    fn = Recorder(gate=gate)
    b = await _started(fn, max_batch_size=8, max_wait_s=0.001, max_busy_wait_s=2.0)
    try:
        first = asyncio.gather(*(b.submit(i) for i in (0, 1, 2)))
        await asyncio.sleep(0.05)
        gate.set()
        await first  # a batch of three: the batcher now expects company
        await _rounds(b, [[3], [4], [5]], gap_s=0.2)
    finally:
        await b.stop()
    assert fn.batches == [[0, 1, 2], [3, 4, 5]]


async def test_a_lone_client_is_not_kept_waiting() -> None:
    """The control: after batches of one, the same arrivals 0.2 s apart run one by one, even
    with a long busy wait configured."""
    fn = Recorder()
    b = await _started(fn, max_batch_size=8, max_wait_s=0.001, max_busy_wait_s=2.0)
    try:
        await b.submit(0)
        await _rounds(b, [[3], [4], [5]], gap_s=0.2)
    finally:
        await b.stop()
    assert fn.batches == [[0], [3], [4], [5]]


async def test_a_lone_client_sending_several_items_is_not_kept_waiting() -> None:
    """A batch of four items from one call is one caller: the next call from the same client
    must not wait max_busy_wait_s for company (it used to wait the full 2 s here)."""
    fn = Recorder()
    b = await _started(fn, max_batch_size=8, max_wait_s=0.001, max_busy_wait_s=2.0)
    try:
        await b.submit_many([0, 1, 2, 3])
        loop = asyncio.get_running_loop()
        start = loop.time()
        await b.submit_many([4, 5, 6, 7])
        elapsed = loop.time() - start
    finally:
        await b.stop()
    assert fn.batches == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert elapsed < 1.0  # a behaviour check (2 s busy wait or not), not a speed threshold


async def test_stop_fails_the_batch_being_formed_at_once() -> None:
    """Items taken off the queue into a forming batch get BatcherClosed from stop(), not a
    BatchTimeout after the request timeout."""
    b = await _started(Recorder(), max_batch_size=8, max_wait_s=30.0, timeout_s=60.0)
    forming = asyncio.ensure_future(b.submit_many([1, 2]))
    await asyncio.sleep(0.05)  # the loop holds both items, waiting 30 s for more
    assert b.queue_depth == 0
    await asyncio.wait_for(b.stop(), timeout=5)
    with pytest.raises(BatcherClosed):
        await asyncio.wait_for(forming, timeout=1)


async def test_timing_reports_queue_wait_and_run_time_per_call() -> None:
    gate = threading.Event()
    b = await _started(Recorder(gate=gate), max_batch_size=2, max_wait_s=0)
    timings: list = []
    try:
        call = asyncio.ensure_future(b.submit_many([1, 2, 3], timing=timings.append))
        await asyncio.sleep(0.1)  # the first batch (1, 2) runs behind the gate
        gate.set()
        assert await call == [10, 20, 30]
    finally:
        await b.stop()
    (timing,) = timings
    assert timing.run_s >= 0.1  # the gated pass counts, and the second pass adds to it
    assert timing.queue_wait_s >= 0.1  # item 3 waited for the first pass to finish
    assert b.busy_for_s == 0.0


async def test_busy_for_grows_while_a_pass_hangs() -> None:
    gate = threading.Event()
    b = await _started(Recorder(gate=gate), max_batch_size=1, max_wait_s=0)
    try:
        call = asyncio.ensure_future(b.submit(1))
        await asyncio.sleep(0.2)
        assert b.busy_for_s >= 0.15
        gate.set()
        assert await call == 10
        assert b.busy_for_s == 0.0
    finally:
        gate.set()
        await b.stop()


async def test_each_batch_logs_one_debug_line_with_its_figures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="dermafake.batch")
    gate = threading.Event()
    b = await _started(Recorder(gate=gate), name="npr", max_batch_size=8, max_wait_s=0)
    try:
        first = asyncio.ensure_future(b.submit(0))  # a batch of its own, held at the gate
        await asyncio.sleep(0.05)
        behind = asyncio.gather(b.submit_many([1, 2]), b.submit(3))  # queue behind it
        await asyncio.sleep(0.05)
        gate.set()
        await first
        await behind
    finally:
        await b.stop()
    records = [r for r in caplog.records if r.name == "dermafake.batch"]
    assert all(r.levelno == logging.DEBUG for r in records)
    lines = [r.fields for r in records]  # type: ignore[attr-defined]
    assert [(line["batch_size"], line["callers"]) for line in lines] == [(1, 1), (3, 2)]
    assert {line["model"] for line in lines} == {"npr"}
    assert lines[0]["run_s"] >= 0.05  # held at the gate at least this long
    assert lines[1]["max_queue_wait_s"] > 0  # queued behind the held batch


async def test_no_batch_line_above_debug_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dermafake.batch")
    b = await _started(Recorder(), max_batch_size=2, max_wait_s=0)
    try:
        assert await b.submit_many([1, 2]) == [10, 20]
    finally:
        await b.stop()
    assert not [r for r in caplog.records if r.name == "dermafake.batch"]
