"""Exceptions from batching and preprocessing -> JSON ``{"detail": ...}`` with the right status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app.batching import BatcherClosed, BatchTimeout, Overloaded
from models.preprocessing import InvalidImageError

logger = logging.getLogger(__name__)


async def _overloaded(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Overloaded)
    request.app.state.metrics.rejections.labels(exc.name, "overloaded").inc()
    return JSONResponse(
        {"detail": f"server busy: {exc}"},
        status_code=503,
        headers={"Retry-After": str(exc.retry_after_s)},
    )


async def _timeout(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BatchTimeout)
    request.app.state.metrics.rejections.labels(exc.name, "timeout").inc()
    return JSONResponse({"detail": f"request timed out: {exc}"}, status_code=504)


async def _closed(request: Request, exc: Exception) -> JSONResponse:
    retry = str(request.app.state.settings.retry_after_s)
    return JSONResponse(
        {"detail": f"service unavailable: {exc}"}, status_code=503, headers={"Retry-After": retry}
    )


async def _invalid_image(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=422)


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Overloaded, _overloaded)
    app.add_exception_handler(BatchTimeout, _timeout)
    app.add_exception_handler(BatcherClosed, _closed)
    app.add_exception_handler(InvalidImageError, _invalid_image)
    app.add_exception_handler(Exception, _internal)
