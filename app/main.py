"""Assembles the service: ``create_app(settings)``; models load in the lifespan, not at import.

``uvicorn app.main:app`` serves the module-level ``app``, built from ``DERMAFAKE_*`` variables;
tests call :func:`create_app` with their own :class:`Settings`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api.errors import install_error_handlers
from app.api.routes import api_router
from app.limits import BodySizeLimitMiddleware
from app.metrics import Metrics, RequestMetricsMiddleware
from app.services import Services
from app.settings import Settings


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.services = await Services.start(app.state.settings, app.state.metrics)
    try:
        yield
    finally:
        await app.state.services.stop()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()
    app = FastAPI(
        title="dermafake",
        summary="Tell real dermoscopic photos from generated ones; generate synthetic lesions.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.services = None
    install_error_handlers(app)
    app.add_middleware(
        BodySizeLimitMiddleware,
        default=settings.max_body_bytes,
        limits={"/detect": settings.max_upload_bytes},
    )
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)  # outermost: sees every status
    app.include_router(api_router)
    return app


app = create_app()
