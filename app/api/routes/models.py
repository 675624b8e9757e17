"""What is being served: versions, configs, threshold, device and dtype of both models."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ServicesDep
from app.api.schemas import ModelInfo, ModelList

router = APIRouter(tags=["models"])


@router.get("/v1/models", response_model=ModelList)
async def list_models(services: ServicesDep) -> ModelList:
    return ModelList(
        models=[ModelInfo(**r.info()) for r in (services.detector, services.generator)]
    )
