"""Typed request and response bodies; they are also the OpenAPI schema at /docs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from models.noise import MAX_SEED

Label = Literal["synthetic", "real", "inconclusive"]


class Explanation(BaseModel):
    """Where one model's evidence for *synthetic* lies in one image (``?explain=true``)."""

    method: Literal["grad-cam", "input-gradient"]
    layer: str = Field(description="the block the map is computed on ('input' for gradients)")
    size: int = Field(description="side of both PNGs: the model input's size")
    heatmap: str = Field(
        description="base64 PNG, greyscale, the model input's size: brighter = more evidence "
        "for synthetic, normalised to this map's own maximum (so it shows where, not how much: "
        "read `peak`, `empty` and the score for that); all black when `empty`"
    )
    peak: float = Field(
        ge=0,
        description="the map's maximum before normalisation (Grad-CAM or gradient units). A "
        "full-white spot in a map with a small peak is weak evidence stretched to full scale; "
        "comparable between images for one model, not between models",
    )
    empty: bool = Field(
        description="true when no region pushes towards synthetic (peak 0, the map all black): "
        "the model's score, whatever it is, does not rest on any one region"
    )
    input: str = Field(
        description="base64 PNG of what the model saw (its crop of the upload), to overlay on"
    )


class ModelScore(BaseModel):
    """One detector's answer for one image, at that detector's own operating point."""

    model_config = ConfigDict(protected_namespaces=())

    model: str = Field(description="detector name (see /v1/models)")
    model_version: str
    probability_synthetic: float = Field(
        ge=0, le=1, description="calibrated P(synthetic): sigmoid(logit / temperature + bias)"
    )
    probability_half_scale: float | None = Field(
        None,
        ge=0,
        le=1,
        description="calibrated P(synthetic) of the image seen at half scale, for models that "
        "check it (null otherwise): a trace that is gone at half scale is what any 2x resize of "
        "a photo leaves, so such an image is inconclusive rather than synthetic",
    )
    threshold: float = Field(
        description="synthetic when probability_synthetic >= threshold (and, for models with a "
        "half-scale check, probability_half_scale >= half_scale_threshold)"
    )
    inconclusive_below: float = Field(
        description="inconclusive when inconclusive_below <= probability_synthetic < threshold, "
        "real below; equal to threshold when the model has no inconclusive band"
    )
    verdict: Label
    reason: str = Field(
        description="why this verdict, in words: which threshold the score met or missed, and "
        "what that threshold means"
    )
    explanation: Explanation | None = Field(
        None, description="with ?explain=true: the model's saliency map for this image"
    )


class Verdict(BaseModel):
    """One image: the overall verdict and every asked model's score."""

    filename: str
    label: Label = Field(
        description="overall verdict: synthetic when any model says synthetic, real only when "
        "every model says real, else inconclusive"
    )
    reason: str = Field(description="why this label, naming the models that decided it")
    probability_synthetic: float = Field(
        ge=0, le=1, description="the first (primary) model's score, as in scores[0]"
    )
    threshold: float = Field(description="the first (primary) model's threshold")
    scores: list[ModelScore] = Field(description="one per model asked, primary first")


class DetectResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_version: str = Field(description="the first (primary) model's version")
    results: list[Verdict]


class GenerateParams(BaseModel):
    """``n`` images; image ``i`` is generated from seed ``seed + i``, alone reproducible."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(1, ge=1, description="number of images (upper limit: DERMAFAKE_MAX_GENERATE_N)")
    seed: int | None = Field(
        None, ge=0, le=MAX_SEED, description="same seed, same images; random when absent"
    )
    format: Literal["png", "jpeg"] = "png"


class GenerateBody(GenerateParams):
    """The JSON body of POST /generate. JSON has types: ``n`` and ``seed`` must be JSON
    integers (``3`` or ``3.0``), not ``true`` or ``"3"``, which pydantic's lax mode would take.
    The query form (GET) parses text and stays lax."""

    @field_validator("n", "seed", mode="before")
    @classmethod
    def _json_integer(cls, value: Any) -> Any:
        if isinstance(value, bool | str):
            raise ValueError("must be a JSON integer")
        return value


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


class Calibration(BaseModel):
    method: Literal["platt"] = "platt"
    temperature: float = Field(gt=0, description="P(synthetic) = sigmoid(logit / T + bias)")
    bias: float = Field(0.0, description="0 for temperature scaling alone")


class ModelInfo(BaseModel):
    """A model card: what the checkpoint is, how it decides, what it was trained and measured on,
    and how it is served. Detector-only fields are null for the generator."""

    model_config = ConfigDict(protected_namespaces=())

    name: str = Field(description="the name /detect's scores and the metrics use")
    kind: str = Field(description="checkpoint kind: detector (VGG16), npr, generator")
    architecture: str
    version: str = Field(description="weights SHA-256 prefix")
    weights_sha256: str
    code_version: str
    created: str
    step: int
    config: dict[str, Any]
    preprocessing: dict[str, Any] = Field(description="size, crop, mean, std, interpolation")
    metrics: dict[str, Any] = Field(description="as stored at training (validation, held-out)")
    threshold: float | None = None
    inconclusive_below: float | None = None
    target_fpr: float | None = Field(None, description="false-positive rate the threshold targets")
    criterion: str | None = Field(None, description="how the threshold was chosen")
    half_scale_threshold: float | None = Field(
        None, description="the half-scale view must reach this too for a synthetic verdict"
    )
    calibration: Calibration | None = None
    sources: dict[str, Any] | None = Field(
        None,
        description="fake sources by role: {train: [...], held_out: [...]} (held out = "
        "never trained on, used to choose the checkpoint)",
    )
    evaluation: dict[str, Any] | None = Field(
        None,
        description="held-out test figures of these exact weights from the pipeline's evaluation "
        "(ARTIFACTS_DIR/evaluation/report.json): test, per fake source, foreign generators, "
        "other real photos, resampling control; null when not evaluated",
    )
    quality: dict[str, Any] | None = Field(
        None,
        description="generator only: how close its images are to real lesions, measured at "
        "training in a feature space trained on HAM10000 diagnoses (training.gan_metrics): "
        "Fréchet distance fd and kid (lower is better; real-vs-real is near 0), k-NN precision "
        "(fidelity) and recall (diversity), n_generated images against the gan_train lesions; "
        "null when trained without a feature model",
    )
    device: str
    dtype: str = Field(description="fp32, bf16, fp16 (torch) or int8 (ONNX Runtime)")
    backend: str = Field("torch", description="torch, or onnxruntime for an int8 detector")
    int8: dict[str, Any] | None = Field(
        None,
        description="the int8 file served: source weights' SHA-256, calibration set, toolchain "
        "and versions, held-out agreement with fp32 (training.quantize)",
    )
    int8_refused: str | None = Field(
        None, description="why this detector's int8 file was not served (it serves fp32)"
    )
    channels_last: bool
    compile: bool
    batch_buckets: list[int]  # batch sizes compiled at start-up; empty when not compiled


class ModelList(BaseModel):
    models: list[ModelInfo]


class ErrorBody(BaseModel):
    detail: str | list[dict[str, Any]] = Field(
        description="what is wrong, and where it helps, what to do; for a malformed parameter "
        "or body, FastAPI's list of validation errors (loc, msg, type)"
    )
    request_id: str | None = Field(
        None, description="the request's X-Request-ID (also a response header): quote it"
    )
