"""Request body size limits, enforced before and while the body is read.

The check sits in ``receive``: the first time anyone reads the body, a ``Content-Length`` above
the limit is refused before a single body chunk is pulled from the socket; a body sent without
one (chunked) is counted as it arrives and refused as soon as it passes the limit. The server
never holds more than the limit plus one chunk. Raising from ``receive`` (instead of answering
before routing) keeps the route known, so metrics and the API key check see the request as
usual: FastAPI and the upload reader let ``HTTPException`` through to the handler (413).

Limits are keyed by route template (``/detect``), read from the matched route when the body is
first read, never by the raw path: behind a proxy prefix (``root_path``) the path is
``/prefix/detect`` and would otherwise fall back to the small default.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.metrics import endpoint


def too_large(limit: int) -> str:
    return f"request body too large: limit is {limit} bytes"


class BodySizeLimitMiddleware:
    """Per-route body limits: ``limits[route template]`` or ``default`` bytes."""

    def __init__(self, app: ASGIApp, *, default: int, limits: dict[str, int]) -> None:
        self.app = app
        self.default = default
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            # Routing has run by the time anyone reads the body: the route says which limit.
            limit = self.limits.get(endpoint(scope), self.default)
            if declared is not None:
                if not declared.isdigit():
                    raise HTTPException(400, "invalid Content-Length header")
                if int(declared) > limit:
                    raise HTTPException(413, too_large(limit))
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, too_large(limit))
            return message

        await self.app(scope, receive_limited, send)
