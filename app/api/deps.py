"""Dependencies shared by routes: settings, metrics, loaded services, and the checks a model
request passes, cheapest first, before any of its body is read: the API key, the client's rate
limit, the in-flight admission gate, the models being ready, and room in the models' queues."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Query, Request
from prometheus_client import Counter

from app.admission import AdmissionGate
from app.batching import Overloaded
from app.host import ModelHost
from app.metrics import Metrics, endpoint
from app.ratelimit import retry_after
from app.runners import DetectorRunner
from app.services import Services, UnknownModel
from app.settings import Settings


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_host(request: Request) -> ModelHost:
    return request.app.state.host


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
HostDep = Annotated[ModelHost, Depends(get_host)]


async def get_services(host: HostDep, settings: SettingsDep) -> Services:
    """The loaded models, or 503 + Retry-After saying why not (loading, waiting for artifacts,
    shutting down)."""
    status = host.status
    if not status.ready or host.services is None:
        raise HTTPException(
            503,
            f"service unavailable: {status.reason}",
            headers={"Retry-After": str(settings.retry_after_s)},
        )
    return host.services


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


async def detect_room(
    request: Request, services: ServicesDep, detectors: SelectedDetectorsDep
) -> None:
    """503 before the upload is read when a model's queue is already full, or when the decode
    gate has no room for even one image: a request that will be refused must not cost a read
    or a decode first. (How many images it holds is known only once it is read:
    :func:`decoding_slots` then takes room for all of them.)"""
    for detector in detectors:
        if not services.room_for(detector):
            raise Overloaded(detector.name, services.settings.retry_after_s)
    if not request.app.state.decode_gate.has_room():
        settings, metrics = services.settings, request.app.state.metrics
        raise _busy(metrics.decode_rejected, _decoding_detail(settings), settings.retry_after_s)


def _bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def require_api_key(
    settings: SettingsDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> None:
    """401 unless the server has no key or the request carries it as a Bearer token. (The
    OpenAPI schema declares bearer auth only when a key is set: app/openapi.py.)"""
    if settings.api_key is None:
        return
    challenge = {"WWW-Authenticate": "Bearer"}
    token = _bearer_token(authorization)
    if token is None:
        raise HTTPException(401, "missing API key: send 'Authorization: Bearer <key>'", challenge)
    if not secrets.compare_digest(token.encode(), settings.api_key.get_secret_value().encode()):
        raise HTTPException(401, "wrong API key", challenge)


def client_key(request: Request, settings: Settings) -> str:
    """Whom a rate limit counts: the API key (hashed: never held in memory in clear beyond the
    request) when the server has keys, else the client's address."""
    token = _bearer_token(request.headers.get("authorization"))
    if settings.api_key is not None and token is not None:
        return "key:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    return "addr:" + (request.client.host if request.client else "unknown")


async def rate_limit(request: Request, settings: SettingsDep, metrics: MetricsDep) -> None:
    """429 + Retry-After once a client has spent its bucket (off when the rate is 0)."""
    limiter = request.app.state.rate_limiter
    if limiter is None:
        return
    wait = limiter.acquire(client_key(request, settings))
    if wait > 0:
        metrics.rate_limited.labels(endpoint(request.scope)).inc()
        raise HTTPException(
            429,
            f"rate limit exceeded: {settings.rate_limit_per_s:g} requests/s, burst "
            f"{settings.rate_limit_burst}; retry in {wait:.1f} s",
            headers={"Retry-After": retry_after(wait)},
        )


def _busy(refused: Counter, detail: str, retry_after_s: int) -> HTTPException:
    """A 503 + Retry-After, counted in ``refused``."""
    refused.inc()
    return HTTPException(503, detail, headers={"Retry-After": str(retry_after_s)})


def _decoding_detail(settings: Settings) -> str:
    return f"server busy: {settings.max_decoding_images} images being decoded"


@asynccontextmanager
async def _hold(
    gate: AdmissionGate, refused: Counter, detail: str, retry_after_s: int, n: int = 1
) -> AsyncIterator[None]:
    """``n`` slots of ``gate`` while the block runs, or 503 + Retry-After at once (counted in
    ``refused``) when they are not free: before the work they stand for starts."""
    if not gate.try_enter(n):
        raise _busy(refused, detail, retry_after_s)
    try:
        yield
    finally:
        gate.leave(n)


async def admission(
    request: Request, settings: SettingsDep, metrics: MetricsDep
) -> AsyncIterator[None]:
    """At most ``max_inflight_requests`` model requests at once (reading, decoding, queued or
    running); one more is a 503 + Retry-After before its body is read."""
    detail = f"server busy: {settings.max_inflight_requests} requests in flight"
    gate, refused = request.app.state.admission, metrics.admission_rejected
    async with _hold(gate, refused, detail, settings.retry_after_s):
        yield


def decoding_slots(request: Request, images: int) -> AbstractAsyncContextManager[None]:
    """Room for ``images`` in the decode gate (at most ``max_decoding_images`` being decoded,
    all requests together), or 503 + Retry-After before any of them is decoded: the decode
    pool's backlog, and so the wait of every upload behind it, stays bounded."""
    settings, metrics = request.app.state.settings, request.app.state.metrics
    gate = request.app.state.decode_gate
    detail = _decoding_detail(settings)
    return _hold(gate, metrics.decode_rejected, detail, settings.retry_after_s, images)


async def explain_slot(
    request: Request,
    settings: SettingsDep,
    metrics: MetricsDep,
    explain: Annotated[
        bool,
        Query(
            description="also return, per image and model, a saliency map (Grad-CAM on the "
            "last convolutional block) and the model's view of the image; slower, computed "
            "outside the batched path, at most DERMAFAKE_MAX_CONCURRENT_EXPLAINS at once"
        ),
    ] = False,
) -> AsyncIterator[bool]:
    """Whether to explain; 503 + Retry-After before the upload is read when the explain slots
    are taken (each explanation is a backward pass per image and model)."""
    if not explain:
        yield False
        return
    detail = (
        f"explanations busy: {settings.max_concurrent_explains} in progress; retry, or ask "
        "without ?explain=true"
    )
    gate, refused = request.app.state.explain_gate, metrics.explain_rejected
    async with _hold(gate, refused, detail, settings.retry_after_s):
        yield True


ExplainDep = Annotated[bool, Depends(explain_slot)]


MODEL_ROUTE_CHECKS = [Depends(require_api_key), Depends(rate_limit), Depends(admission)]
