"""Typed request and response bodies; they are also the OpenAPI schema at /docs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_SEED = 2**32 - 1  # fits a JSON number exactly in every client


class Verdict(BaseModel):
    filename: str
    label: Literal["synthetic", "real"]
    probability_synthetic: float = Field(ge=0, le=1, description="P(synthetic) from the detector")
    threshold: float = Field(description="label is synthetic when probability >= threshold")


class DetectResponse(BaseModel):
    model_version: str
    results: list[Verdict]


class GenerateParams(BaseModel):
    """``n`` images; image ``i`` is generated from seed ``seed + i``, alone reproducible."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(1, ge=1, description="number of images (upper limit: DERMAFAKE_MAX_GENERATE_N)")
    seed: int | None = Field(
        None, ge=0, le=MAX_SEED, description="same seed, same images; random when absent"
    )
    format: Literal["png", "jpeg"] = "png"


class GeneratedImage(BaseModel):
    seed: int
    media_type: str
    data: str = Field(description="base64-encoded image file")


class GenerateResponse(BaseModel):
    model_version: str
    images: list[GeneratedImage]


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    models: dict[str, str] = Field(description="model name -> version")


class ModelInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str
    version: str
    weights_sha256: str
    code_version: str
    created: str
    step: int
    config: dict[str, Any]
    preprocessing: dict[str, Any]
    metrics: dict[str, Any]
    threshold: float | None
    device: str
    dtype: str
    channels_last: bool
    compile: bool
    batch_buckets: list[int]  # batch sizes compiled at start-up; empty when not compiled


class ModelList(BaseModel):
    models: list[ModelInfo]


class ErrorBody(BaseModel):
    detail: str
