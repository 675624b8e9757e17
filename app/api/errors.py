"""Every error as JSON ``{"detail": ..., "request_id": ...}`` with the right status, and the
request id (``X-Request-ID``) on the response too, so a user's report can be matched to the log."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from app.api.disconnect import ClientDisconnected
from app.batching import BatcherClosed, BatchTimeout, Overloaded
from app.metrics import endpoint
from app.request_context import HEADER, current_request_id
from models.preprocessing import InvalidImageError, UnsupportedFormatError

logger = logging.getLogger(__name__)
CLIENT_CLOSED = 499  # nginx's "client closed request": nobody reads it, the log line does


def error_response(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    request_id = current_request_id()
    body = {"detail": detail, "request_id": request_id}
    headers = dict(headers or {})
    if request_id:
        headers[HEADER] = request_id
    return JSONResponse(body, status_code=status, headers=headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # Starlette lists one route's methods; a path may have several
        headers["Allow"] = ", ".join(allowed_methods(request))
    return error_response(exc.status_code, exc.detail, headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method the schema documents for this path (GET and POST /generate are two routes)."""
    root = request.scope.get("root_path", "")
    path = request.url.path
    path = path[len(root) :] if root and path.startswith(root) else path
    operations = request.app.openapi().get("paths", {}).get(path, {})
    return sorted(method.upper() for method in operations)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, jsonable_errors(exc))


def jsonable_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """FastAPI's error list, without the raw input bytes it may carry."""
    out = []
    for error in exc.errors():
        error = {k: v for k, v in error.items() if k not in ("url",)}
        if "ctx" in error:
            error["ctx"] = {k: str(v) for k, v in error["ctx"].items()}
        if isinstance(error.get("input"), bytes):
            error["input"] = f"<{len(error['input'])} bytes>"
        out.append(error)
    return out


async def _overloaded(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Overloaded)
    request.app.state.metrics.rejections.labels(exc.name, "overloaded").inc()
    return error_response(
        503, f"server busy: {exc}", headers={"Retry-After": str(exc.retry_after_s)}
    )


async def _timeout(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BatchTimeout)
    request.app.state.metrics.rejections.labels(exc.name, "timeout").inc()
    return error_response(504, f"request timed out: {exc}")


async def _closed(request: Request, exc: Exception) -> JSONResponse:
    retry = str(request.app.state.settings.retry_after_s)
    return error_response(503, f"service unavailable: {exc}", headers={"Retry-After": retry})


async def _invalid_image(request: Request, exc: Exception) -> JSONResponse:
    status = 415 if isinstance(exc, UnsupportedFormatError) else 422
    return error_response(status, str(exc))


async def _disconnected(request: Request, exc: Exception) -> JSONResponse:
    request.app.state.metrics.client_disconnects.labels(endpoint(request.scope)).inc()
    return error_response(CLIENT_CLOSED, str(exc) or "client closed the connection")


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Overloaded, _overloaded)
    app.add_exception_handler(BatchTimeout, _timeout)
    app.add_exception_handler(BatcherClosed, _closed)
    app.add_exception_handler(InvalidImageError, _invalid_image)
    app.add_exception_handler(ClientDisconnected, _disconnected)
    app.add_exception_handler(ClientDisconnect, _disconnected)  # gone while sending the body
    app.add_exception_handler(Exception, _internal)
