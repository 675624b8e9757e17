"""All routers; model routes sit behind the optional API key, probes and metrics do not."""

from fastapi import APIRouter, Depends

from app.api.deps import require_api_key
from app.api.routes import detect, generate, health, metrics, models

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(metrics.router)
protected = [Depends(require_api_key)]
api_router.include_router(detect.router, dependencies=protected)
api_router.include_router(generate.router, dependencies=protected)
api_router.include_router(models.router, dependencies=protected)
