"""/generate: synthetic lesion images from the SNGAN generator, reproducible by seed."""

from __future__ import annotations

import base64
import secrets
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError

from app.api.deps import MetricsDep, ServicesDep, SettingsDep
from app.api.disconnect import unless_disconnected
from app.api.schemas import (
    MAX_SEED,
    ErrorBody,
    GenerateBody,
    GeneratedImage,
    GenerateParams,
    GenerateResponse,
)
from app.request_context import record_images
from models.noise import series_seeds

router = APIRouter(tags=["generate"])
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg"}
ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 413, 429, 503, 504)}
RAW_IMAGE = {200: {"content": {"image/png": {}, "image/jpeg": {}}}}


def _raw_format(accept: str) -> str | None:
    """The image format the client asks for in Accept, if it asks for one before JSON."""
    for part in accept.split(","):
        media_type = part.split(";")[0].strip().lower()
        if media_type == "application/json":
            return None
        if media_type == "image/png":
            return "png"
        if media_type in ("image/jpeg", "image/jpg"):
            return "jpeg"
    return None


def seeds_for(seed: int, n: int) -> list[int]:
    """Image i's seed: ``seed + i``, wrapping past MAX_SEED to 0 (``training.synthesize`` numbers
    its series the same way), so every seed returned can be asked for again."""
    return series_seeds(seed, range(n))


async def _generate(
    request: Request,
    params: GenerateParams,
    loc: str,
    accept: str | None,
    services: ServicesDep,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> GenerateResponse | Response:
    if params.n > settings.max_generate_n:
        # Same shape as FastAPI's own validation errors: the limit is a setting, not a type.
        raise RequestValidationError(
            [
                {
                    "type": "less_than_equal",
                    "loc": (loc, "n"),
                    "msg": f"Input should be less than or equal to {settings.max_generate_n}",
                    "input": params.n,
                    "ctx": {"le": settings.max_generate_n},
                }
            ]
        )
    raw = _raw_format(accept or "") if params.n == 1 else None
    fmt = raw or params.format
    seed = secrets.randbelow(MAX_SEED + 1) if params.seed is None else params.seed
    seeds = seeds_for(seed, params.n)
    record_images(params.n)
    files = await unless_disconnected(request, services.generate(seeds, fmt))
    metrics.images_generated.labels(fmt).inc(len(files))
    version = services.generator.version
    if raw is not None:
        headers = {"X-Seed": str(seed), "X-Model-Version": version}
        return Response(files[0], media_type=MEDIA_TYPES[fmt], headers=headers)
    images = [
        GeneratedImage(seed=s, media_type=MEDIA_TYPES[fmt], data=base64.b64encode(f).decode())
        for s, f in zip(seeds, files, strict=True)
    ]
    return GenerateResponse(model_version=version, images=images)


@router.post("/generate", response_model=GenerateResponse, responses={**ERRORS, **RAW_IMAGE})
async def generate_post(
    request: Request,
    params: GenerateBody,
    services: ServicesDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    accept: Annotated[str | None, Header()] = None,
) -> GenerateResponse | Response:
    """JSON body ``{"n", "seed", "format"}``. Image ``i`` uses seed ``seed + i`` (wrapping to 0
    past 4294967295, so every returned seed can be asked for again). With ``n=1``
    and ``Accept: image/png`` (or ``image/jpeg``) the answer is the image file itself."""
    return await _generate(request, params, "body", accept, services, settings, metrics)


@router.get("/generate", response_model=GenerateResponse, responses={**ERRORS, **RAW_IMAGE})
async def generate_get(
    request: Request,
    params: Annotated[GenerateParams, Query()],
    services: ServicesDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    accept: Annotated[str | None, Header()] = None,
) -> GenerateResponse | Response:
    """Query ``?n=&seed=&format=``; same behaviour as POST."""
    return await _generate(request, params, "query", accept, services, settings, metrics)
