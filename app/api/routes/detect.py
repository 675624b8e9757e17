"""POST /detect: is each uploaded image a real photo or a generated one, by every detector?"""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.api.deps import MetricsDep, SelectedDetectorsDep, ServicesDep
from app.api.disconnect import unless_disconnected
from app.api.schemas import DetectResponse, ErrorBody, ModelScore, Verdict
from app.api.uploads import OPENAPI_BODY, DecodedImagesDep
from models.operating_point import overall_verdict

router = APIRouter(tags=["detect"])
ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 413, 415, 422, 429, 503, 504)}


@router.post("/detect", response_model=DetectResponse, responses=ERRORS, openapi_extra=OPENAPI_BODY)
async def detect(
    request: Request,
    images: DecodedImagesDep,
    detectors: SelectedDetectorsDep,
    services: ServicesDep,
    metrics: MetricsDep,
) -> DetectResponse:
    """Multipart ``file`` (one image) or ``files`` (several); JPEG, PNG, WebP, BMP or TIFF,
    recognised by content (anything else is a 415). Every detector asked (``?model=``; all by
    default) scores each image at its own operating point; ``label`` combines their verdicts
    (models.operating_point.overall_verdict). Top-level ``probability_synthetic``,
    ``threshold`` and ``model_version`` are the first model's. An unknown model name is a 404
    that lists the served ones."""
    probabilities = await unless_disconnected(
        request, services.detect(detectors, [im.pixels for im in images])
    )
    results = []
    for i, image in enumerate(images):
        scores = []
        for detector, per_image in zip(detectors, probabilities, strict=True):
            score = per_image[i]
            verdict = detector.verdict(score)
            metrics.detector_verdicts.labels(detector.name, verdict).inc()
            scores.append(
                ModelScore(
                    model=detector.name,
                    model_version=detector.version,
                    probability_synthetic=score.probability,
                    probability_half_scale=score.half_scale,
                    threshold=detector.threshold,
                    inconclusive_below=detector.operating_point.band_low,
                    verdict=verdict,
                )
            )
        label = overall_verdict(
            [s.verdict for s in scores], [d.operating_point.controlled for d in detectors]
        )
        metrics.verdicts.labels(label).inc()
        primary = scores[0]
        results.append(
            Verdict(
                filename=image.filename,
                label=label,
                probability_synthetic=primary.probability_synthetic,
                threshold=primary.threshold,
                scores=scores,
            )
        )
    return DetectResponse(model_version=detectors[0].version, results=results)
