"""All routers. Model routes pass the API key, the rate limit and the admission gate first (in
that order, before any body is read: app/api/deps.py); probes and metrics pass none of them."""

from fastapi import APIRouter, Depends

from app.api.deps import MODEL_ROUTE_CHECKS, rate_limit, require_api_key
from app.api.routes import detect, generate, health, metrics, models, page

api_router = APIRouter()
api_router.include_router(page.router)
api_router.include_router(health.router)
api_router.include_router(metrics.router)
api_router.include_router(detect.router, dependencies=MODEL_ROUTE_CHECKS)
api_router.include_router(generate.router, dependencies=MODEL_ROUTE_CHECKS)
api_router.include_router(
    models.router, dependencies=[Depends(require_api_key), Depends(rate_limit)]
)
