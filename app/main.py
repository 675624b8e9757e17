"""Assembles the service: ``create_app(settings)``. Nothing loads at import; the lifespan starts
the model host, which loads the models in the background while the port is already open
(``app/host.py``), and stops it at shutdown.

``uvicorn app.main:app`` serves the module-level ``app``, built from ``DERMAFAKE_*`` variables;
tests call :func:`create_app` with their own :class:`Settings`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.admission import AdmissionGate
from app.api.errors import install_error_handlers
from app.api.routes import api_router
from app.api.routes.page import static_files
from app.host import ModelHost
from app.limits import BodySizeLimitMiddleware
from app.metrics import Metrics, RequestMetricsMiddleware
from app.openapi import install_openapi
from app.ratelimit import RateLimiter
from app.request_context import RequestContextMiddleware
from app.settings import Settings


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    host: ModelHost = app.state.host
    host.start()
    try:
        yield
    finally:
        await host.stop()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()
    app = FastAPI(
        title="dermafake",
        summary="Tell real dermoscopic photos from generated ones; generate synthetic lesions.",
        version="0.1.0",
        lifespan=lifespan,
    )  # root_path is the server's (uvicorn sets it in every request's scope): app/__main__.py
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.host = ModelHost(settings, metrics)
    app.state.admission = gate = AdmissionGate(settings.max_inflight_requests)
    app.state.explain_gate = AdmissionGate(settings.max_concurrent_explains)
    metrics.in_flight.set_function(lambda: gate.in_flight)
    app.state.decode_gate = decoding = AdmissionGate(settings.max_decoding_images)
    metrics.decoding.set_function(lambda: decoding.in_flight)
    app.state.rate_limiter = (
        RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
        if settings.rate_limit_per_s > 0
        else None
    )
    install_error_handlers(app)
    app.add_middleware(
        BodySizeLimitMiddleware,
        default=settings.max_body_bytes,
        limits={"/detect": settings.max_upload_bytes},
    )
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestContextMiddleware)  # outermost: every response gets its id
    app.include_router(api_router)
    app.mount("/static", static_files(), name="static")
    install_openapi(app, settings)
    return app


app = create_app()
