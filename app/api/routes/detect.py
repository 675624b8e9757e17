"""POST /detect: is each uploaded image a real photo or a generated one, by every detector?"""

from __future__ import annotations

import base64

import numpy as np
import torch
from fastapi import APIRouter, Request
from PIL import Image

from app.api.deps import ExplainDep, MetricsDep, SelectedDetectorsDep, ServicesDep
from app.api.disconnect import unless_disconnected
from app.api.schemas import DetectResponse, ErrorBody, Explanation, ModelScore, Verdict
from app.api.uploads import OPENAPI_BODY, DecodedImagesDep
from models.operating_point import overall_decision
from models.preprocessing import encode, model_input, to_pil
from models.saliency import Saliency

router = APIRouter(tags=["detect"])
ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 413, 415, 422, 429, 503, 504)}


@router.post("/detect", response_model=DetectResponse, responses=ERRORS, openapi_extra=OPENAPI_BODY)
async def detect(
    request: Request,
    explain: ExplainDep,  # before the upload is read: a busy explainer refuses at once
    images: DecodedImagesDep,
    detectors: SelectedDetectorsDep,
    services: ServicesDep,
    metrics: MetricsDep,
) -> DetectResponse:
    """Multipart ``file`` (one image) or ``files`` (several); JPEG, PNG, WebP, BMP or TIFF,
    recognised by content (anything else is a 415). Every detector asked (``?model=``; all by
    default) scores each image at its own operating point; ``label`` combines their verdicts
    and ``reason`` says why (models.operating_point.overall_decision). Top-level
    ``probability_synthetic``, ``threshold`` and ``model_version`` are the first model's. An
    unknown model name is a 404 that lists the served ones."""
    pixels = [im.pixels for im in images]
    probabilities = await unless_disconnected(request, services.detect(detectors, pixels))
    maps = (
        await unless_disconnected(request, services.explain(detectors, pixels)) if explain else None
    )
    results = []
    for i, image in enumerate(images):
        scores = []
        for m, (detector, per_image) in enumerate(zip(detectors, probabilities, strict=True)):
            score = per_image[i]
            verdict, reason = detector.decide(score)
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
                    reason=reason,
                    explanation=None
                    if maps is None
                    else _explanation(maps[m][i], pixels[i][detector.preprocess]),
                )
            )
        label, why = overall_decision(
            [s.verdict for s in scores],
            [d.operating_point.controlled for d in detectors],
            [d.name for d in detectors],
        )
        metrics.verdicts.labels(label).inc()
        primary = scores[0]
        results.append(
            Verdict(
                filename=image.filename,
                label=label,
                reason=why,
                probability_synthetic=primary.probability_synthetic,
                threshold=primary.threshold,
                scores=scores,
            )
        )
    return DetectResponse(model_version=detectors[0].version, results=results)


def _png(image: Image.Image) -> str:
    return base64.b64encode(encode(image, "png")).decode()


def _explanation(saliency: Saliency, views: torch.Tensor) -> Explanation:
    view = model_input(views)
    heat = Image.fromarray((saliency.heatmap * 255 + 0.5).astype(np.uint8), mode="L")
    return Explanation(
        method=saliency.method,  # type: ignore[arg-type]
        layer=saliency.layer,
        size=int(view.shape[-1]),
        heatmap=_png(heat),
        peak=saliency.peak,
        empty=saliency.empty,
        input=_png(to_pil(view)),
    )
