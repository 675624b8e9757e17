"""Prometheus exposition of this app's registry (no API key: Prometheus scrapes it)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.api.deps import MetricsDep
from app.metrics import CONTENT_TYPE

router = APIRouter(tags=["probes"])


@router.get("/metrics", response_class=Response)
async def metrics(metrics: MetricsDep) -> Response:
    return Response(metrics.exposition(), media_type=CONTENT_TYPE)
