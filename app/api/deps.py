"""Dependencies shared by routes: settings, metrics, loaded services, the optional API key."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.metrics import Metrics
from app.services import Services
from app.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="DERMAFAKE_API_KEY, when the server sets one")


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_services(request: Request) -> Services:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None or not services.ready:
        retry = str(request.app.state.settings.retry_after_s)
        raise HTTPException(503, "models are not loaded yet", headers={"Retry-After": retry})
    return services


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ServicesDep = Annotated[Services, Depends(get_services)]


async def require_api_key(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """401 unless the server has no key or the request carries it as a Bearer token."""
    if settings.api_key is None:
        return
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise HTTPException(401, "missing API key: send 'Authorization: Bearer <key>'", challenge)
    expected = settings.api_key.get_secret_value().encode()
    if not secrets.compare_digest(credentials.credentials.encode(), expected):
        raise HTTPException(401, "wrong API key", challenge)
