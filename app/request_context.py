"""Request IDs and one log line per request.

:class:`RequestContextMiddleware` (the outermost layer) takes the client's ``X-Request-ID`` when
it is a sane token, or makes one; echoes it on the response; makes it available to error bodies
(:func:`current_request_id`); and when the response is done writes one line to the
``dermafake.request`` logger: time, request id, method, route template, status, duration, images,
and for model routes the queue wait, inference time and model versions that the batchers
reported for this request (:func:`record_call`). With ``log_format=json`` (``app/logs.py``)
that line is one JSON object.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.batching import CallTiming
from app.metrics import endpoint

HEADER = "X-Request-ID"
_VALID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")  # no spaces or control bytes: safe in logs
logger = logging.getLogger("dermafake.request")


@dataclass
class RequestRecord:
    request_id: str
    images: int = 0
    queue_wait_s: float = 0.0
    inference_s: float = 0.0
    models: dict[str, str] = field(default_factory=dict)  # name -> version


_current: ContextVar[RequestRecord | None] = ContextVar("dermafake_request", default=None)


def current_request_id() -> str | None:
    record = _current.get()
    return record.request_id if record is not None else None


def record_images(n: int) -> None:
    """How many images this request carries (uploads, or images asked of /generate)."""
    record = _current.get()
    if record is not None:
        record.images = n


def record_call(model: str, version: str, timing: CallTiming) -> None:
    """A batcher call made for this request: the longest wait and the forward passes it took.
    Models asked concurrently overlap, so the request's figures are the maxima, not sums."""
    record = _current.get()
    if record is None:
        return
    record.models[model] = version
    record.queue_wait_s = max(record.queue_wait_s, timing.queue_wait_s)
    record.inference_s = max(record.inference_s, timing.run_s)


def request_id_from(scope: Scope) -> str:
    for key, value in scope.get("headers", []):
        if key == b"x-request-id":
            text = value.decode("latin-1")
            if _VALID.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = RequestRecord(request_id_from(scope))
        token = _current.set(record)
        start = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[HEADER] = record.request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            raise  # context kept: the 500 handler outside this middleware still reads the id
        else:
            _current.reset(token)
        finally:
            fields = {
                "request_id": record.request_id,
                "method": scope.get("method", ""),
                "route": endpoint(scope),
                "status": status,
                "duration_s": round(time.perf_counter() - start, 4),
            }
            if record.models:
                fields |= {
                    "images": record.images,
                    "queue_wait_s": round(record.queue_wait_s, 4),
                    "inference_s": round(record.inference_s, 4),
                    "models": record.models,
                }
            logger.info(
                "%s %s %s %.3fs",
                fields["method"],
                fields["route"],
                status,
                fields["duration_s"],
                extra={"fields": fields},
            )
