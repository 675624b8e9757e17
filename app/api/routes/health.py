"""Liveness and readiness probes (no API key, no rate limit: orchestrators call them).

- ``/healthz`` (liveness): the process answers and no forward pass has hung past
  ``liveness_timeout_s``; 200 while the models are still loading (restarting would not help).
- ``/readyz`` (readiness): every model loaded, warmed up and its batcher running; 503 with the
  reason while loading or compiling, while waiting for artifacts, and once shutting down.
"""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import HostDep, SettingsDep
from app.api.errors import error_response
from app.api.schemas import ErrorBody, Health, Readiness

router = APIRouter(tags=["probes"])


@router.get("/healthz", response_model=Health, responses={503: {"model": ErrorBody}})
async def healthz(host: HostDep, settings: SettingsDep) -> Health:
    """200 while the process can serve; 503 when a model's forward pass has run longer than
    ``liveness_timeout_s`` (a hung model: restart the process)."""
    hung = host.hung()
    if hung:
        return error_response(  # type: ignore[return-value]
            503,
            f"unhealthy: forward pass of {', '.join(hung)} running for more than "
            f"{settings.liveness_timeout_s:g} s",
        )
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": ErrorBody}})
async def readyz(host: HostDep, settings: SettingsDep) -> Readiness:
    """200 when every model is loaded, warmed up and batching; ``models``: each detector's name
    and the generator, with their versions. 503 + Retry-After with the reason otherwise."""
    status = host.status
    if not status.ready or host.services is None:
        return error_response(  # type: ignore[return-value]
            503,
            f"not ready: {status.reason}",
            headers={"Retry-After": str(settings.retry_after_s)},
        )
    return Readiness(status="ready", models={r.name: r.version for r in host.services.runners})
