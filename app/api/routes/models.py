"""What is being served: a card per detector (operating point, calibration, preprocessing,
training sources, stored metrics) and the generator's, with versions, device and dtype."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import ServicesDep
from app.api.schemas import ModelInfo, ModelList

router = APIRouter(tags=["models"])


@router.get("/v1/models", response_model=ModelList)
async def list_models(services: ServicesDep) -> ModelList:
    """Every detector (primary first), then the generator."""
    return ModelList(models=[ModelInfo(**r.info()) for r in services.runners])
