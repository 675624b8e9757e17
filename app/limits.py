"""Request body size limits, enforced before and while the body is read.

A ``Content-Length`` above the limit is refused before a byte of the body is read; a body sent
without one (chunked) is counted as it arrives and refused as soon as it passes the limit, so
the server never buffers more than the limit plus one chunk.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def too_large(limit: int) -> str:
    return f"request body too large: limit is {limit} bytes"


class BodySizeLimitMiddleware:
    """Per-path body limits: ``limits[path]`` or ``default`` bytes."""

    def __init__(self, app: ASGIApp, *, default: int, limits: dict[str, int]) -> None:
        self.app = app
        self.default = default
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope["path"], self.default)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            if not declared.isdigit():
                await JSONResponse({"detail": "invalid Content-Length header"}, 400)(
                    scope, receive, send
                )
                return
            if int(declared) > limit:
                await JSONResponse({"detail": too_large(limit)}, 413)(scope, receive, send)
                return
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised inside whoever is reading the body; FastAPI and our upload reader
                    # let HTTPException through, and the exception handler answers 413.
                    raise HTTPException(413, too_large(limit))
            return message

        await self.app(scope, receive_limited, send)
