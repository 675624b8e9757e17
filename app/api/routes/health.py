"""Liveness and readiness probes (no API key: orchestrators call them)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.api.schemas import ErrorBody, Health, Readiness

router = APIRouter(tags=["probes"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process answers; says nothing about the models."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": ErrorBody}})
async def readyz(request: Request) -> Readiness | JSONResponse:
    """Every model loaded, warmed up and its batcher running; 503 while loading or stopping.
    ``models``: each detector's name and the generator, with their versions."""
    services = getattr(request.app.state, "services", None)
    if services is None or not services.ready:
        return JSONResponse({"detail": "not ready: models are not loaded"}, status_code=503)
    stopped = [b.name for b in services.batchers if not b.running]
    if stopped:
        return JSONResponse({"detail": f"not ready: {stopped} stopped"}, status_code=503)
    return Readiness(status="ready", models={r.name: r.version for r in services.runners})
