"""Stop working for a client that has gone: a request whose connection closes while its images
wait in a queue is cancelled, so its items leave the batch before it is built (the batcher skips
cancelled callers) instead of running for nobody, which under overload is what retries add."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client closed the connection before its answer was ready (logged as status 499)."""


async def _disconnected(request: Request) -> None:
    # The body has been read by now, so the next message the server has for us is the
    # disconnect (uvicorn and the test transports send it when the connection closes or, at the
    # latest, once the response is complete; by then this watcher has been cancelled).
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """``await work``, cancelled if the client disconnects first (:class:`ClientDisconnected`)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()  # its queued items are skipped when their batch forms
    with contextlib.suppress(asyncio.CancelledError):
        await task
    raise ClientDisconnected(f"client gone from {request.url.path}")
