"""Dependencies shared by routes: settings, metrics, loaded services, the optional API key."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.metrics import Metrics
from app.runners import DetectorRunner
from app.services import Services, UnknownModel
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


async def selected_detectors(
    services: ServicesDep,
    model: Annotated[
        list[str] | None,
        Query(
            description="only these detectors (repeat the parameter or separate names by "
            "commas); every served detector when absent. Names: /v1/models"
        ),
    ] = None,
) -> list[DetectorRunner]:
    """The detectors a request asks for; 404 naming the served ones for an unknown name."""
    names = [n.strip() for value in model or [] for n in value.split(",") if n.strip()]
    try:
        return services.select(names)
    except UnknownModel as exc:
        raise HTTPException(404, str(exc)) from exc


SelectedDetectorsDep = Annotated[list[DetectorRunner], Depends(selected_detectors)]


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
