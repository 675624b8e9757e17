"""POST /detect: is each uploaded image a real photo or a generated one?"""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import MetricsDep, ServicesDep
from app.api.schemas import DetectResponse, ErrorBody, Verdict
from app.api.uploads import OPENAPI_BODY, DecodedImagesDep

router = APIRouter(tags=["detect"])
ERRORS = {code: {"model": ErrorBody} for code in (401, 413, 415, 422, 503, 504)}


@router.post("/detect", response_model=DetectResponse, responses=ERRORS, openapi_extra=OPENAPI_BODY)
async def detect(
    images: DecodedImagesDep, services: ServicesDep, metrics: MetricsDep
) -> DetectResponse:
    """Multipart ``file`` (one image) or ``files`` (several); JPEG, PNG, WebP, BMP or TIFF,
    recognised by content. Each image gets P(synthetic) and a label from the model threshold."""
    probabilities = await services.detect_batcher.submit_many([im.pixels for im in images])
    threshold = services.detector.threshold
    results = []
    for image, p in zip(images, probabilities, strict=True):
        label = "synthetic" if p >= threshold else "real"
        metrics.verdicts.labels(label).inc()
        results.append(
            Verdict(
                filename=image.filename,
                label=label,
                probability_synthetic=p,
                threshold=threshold,
            )
        )
    return DetectResponse(model_version=services.detector.version, results=results)
