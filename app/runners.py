"""Model + device + dtype + forward on a batch: the only place the service touches torch models.

A runner is a plain callable ``list[item] -> list[result]`` that the batcher runs in a worker
thread. One :class:`DetectorRunner` class serves every detector kind
(``models.checkpoint.DETECTOR_KINDS``: the paper's VGG16, the NPR detector): each outputs one
logit per image, turned into a calibrated P(synthetic) by the checkpoint's own operating point
(``models.operating_point``). The model is prepared once by
:func:`models.runtime.prepare_for_inference` (served dtype, channels_last, optionally
``torch.compile`` with freezing); when compiled, every batch is padded to one of a few bucket
sizes, each compiled by :meth:`Runner.warmup` before the service reports ready, so no request
ever waits for a compilation. A detector's int8 ONNX file (``models.quantized.OnnxDetector``,
chosen by ``app.backends``) runs in the same runner, uncompiled and unpadded.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Self

import torch
from torch import nn

from app.discovery import read_detector
from models.checkpoint import CheckpointMeta, load_model
from models.noise import seed_noise
from models.operating_point import OperatingPoint, Verdict
from models.preprocessing import model_input, normalize, to_uint8
from models.quantized import OnnxDetector
from models.runtime import (
    InferenceOptions,
    pad_to_bucket,
    prepare_for_inference,
    to_device,
    to_input,
)
from models.saliency import Saliency, explain

ARCHITECTURES = {"detector": "vgg16", "npr": "npr", "generator": "sngan"}  # old checkpoints
logger = logging.getLogger(__name__)


class Runner:
    """A model prepared for serving, loaded from a checkpoint, with its batch-size buckets."""

    kind: str = ""

    def __init__(
        self,
        model: nn.Module,
        meta: CheckpointMeta,
        options: InferenceOptions,
        buckets: Sequence[int] = (),
        name: str | None = None,
    ) -> None:
        self.name = name or str(meta.extra.get("name") or meta.kind)
        self.meta = meta
        self.options = options
        self.buckets = tuple(sorted(set(buckets)))
        self.model = prepare_for_inference(model, options)
        self.preprocess = meta.preprocess_config

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, options: InferenceOptions, buckets: Sequence[int] = ()
    ) -> Self:
        model, meta = load_model(path, cls.kind)
        return cls(model, meta, options, buckets)

    @property
    def device(self) -> torch.device:
        return self.options.device

    @property
    def architecture(self) -> str:
        return str(self.meta.extra.get("architecture") or ARCHITECTURES.get(self.meta.kind, ""))

    @property
    def version(self) -> str:
        """Content address of the weights: changes exactly when the served model does."""
        return self.meta.weights_sha256[:12] or f"step-{self.meta.step}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model on a batch already on the device; fp32 outputs."""
        with torch.inference_mode():
            return self.model(to_input(x, self.options)).float()

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.meta.kind,
            "architecture": self.architecture,
            "version": self.version,
            "weights_sha256": self.meta.weights_sha256,
            "code_version": self.meta.code_version,
            "created": self.meta.created,
            "step": self.meta.step,
            "config": self.meta.config,
            "preprocessing": dataclasses.asdict(self.preprocess),  # with defaults filled in
            "metrics": self.meta.metrics,
            **self.options.describe(),
            "batch_buckets": list(self.buckets),
        }

    def warmup(self) -> None:
        """One forward per bucket (each compiles its graph when compiled), else one of size 1.

        If compilation fails (typically no C++ compiler or Python headers for inductor on CPU,
        or no C compiler for Triton on CUDA), the runner falls back to the eager model and says
        so loudly: a slower service beats no service, and ``/v1/models`` shows ``compile``.
        """
        try:
            for n in self.buckets or (1,):
                self(self.example(n))
        except Exception as error:
            if not self.options.compile:
                raise
            logger.error(
                "%s: torch.compile failed (%s: %s); serving the eager model instead. Install a "
                "C++ compiler and the Python headers (g++, python3-dev) for compiled speed, or "
                "set DERMAFAKE_COMPILE=false to skip the attempt.",
                self.name,
                type(error).__name__,
                str(error).splitlines()[0] if str(error) else "",
            )
            self.model = self.model._orig_mod  # the eager module torch.compile wrapped
            self.options = replace(self.options, compile=False)
            self.buckets = ()
            self(self.example(1))

    def example(self, n: int) -> list[Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class DetectorScore:
    """Calibrated P(synthetic) of an image, and of its half-scale view when the model checks it."""

    probability: float
    half_scale: float | None = None


class DetectorRunner(Runner):
    """uint8 views (V, 3, S, S) of each image -> its calibrated scores, for any detector kind.

    ``models.preprocessing.model_views`` gives one view (the model input) or, for native-crop
    models, two (the crop and its half-scale view); the runner scores as many as its operating
    point needs (:attr:`OperatingPoint.views`), all in one forward pass."""

    kind = "detector"

    def __init__(
        self,
        model: nn.Module,
        meta: CheckpointMeta,
        options: InferenceOptions,
        buckets: Sequence[int] = (),
        name: str | None = None,
    ) -> None:
        super().__init__(model, meta, options, buckets, name)
        self.operating_point = OperatingPoint.from_metadata(meta.threshold, meta.extra)
        self.int8 = model if isinstance(model, OnnxDetector) else None
        self.int8_refused: str | None = None  # why an int8 file was not served (app.backends)
        self.evaluation: dict[str, Any] | None = None  # held-out figures, set by the service
        self.path: Path | None = None  # the checkpoint file, when loaded from one
        self._explainer: nn.Module | None = None
        self._explainer_lock = threading.Lock()

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        options: InferenceOptions,
        buckets: Sequence[int] = (),
        name: str | None = None,
    ) -> Self:
        """Any detector kind; the name defaults to the checkpoint's (app.discovery)."""
        spec = read_detector(path)  # the header first: a wrong kind fails before the weights load
        model, meta = load_model(spec.path, spec.meta.kind)
        runner = cls(model, meta, options, buckets, name or spec.name)
        runner.path = spec.path
        return runner

    @property
    def threshold(self) -> float:
        return self.operating_point.threshold

    @property
    def version(self) -> str:
        return super().version + ("-int8" if self.int8 else "")

    def decide(self, score: DetectorScore) -> tuple[Verdict, str]:
        """The verdict and why (``OperatingPoint.decide``)."""
        return self.operating_point.decide(score.probability, score.half_scale)

    def info(self) -> dict[str, Any]:
        op = self.operating_point
        int8 = self.int8.meta if self.int8 is not None else None
        return {
            **super().info(),
            **({"dtype": "int8"} if int8 else {}),
            "backend": "onnxruntime" if int8 else "torch",
            "int8": {"file": self.int8.path.name, **dataclasses.asdict(int8)} if int8 else None,
            "int8_refused": self.int8_refused,
            "threshold": op.threshold,
            "inconclusive_below": op.band_low,
            "target_fpr": op.target_fpr,
            "criterion": op.criterion,
            "half_scale_threshold": op.half_scale_threshold,
            "calibration": {"method": "platt", "temperature": op.temperature, "bias": op.bias},
            "evaluation": self.evaluation,
            "sources": {
                role: sorted(names)  # names only: the training machine's folders mean nothing here
                for role, names in (self.meta.extra.get("sources") or {}).items()
            },
        }

    def __call__(self, images: list[torch.Tensor]) -> list[DetectorScore]:
        """Each item: the views (V, 3, S, S) of one image, or a single view (3, S, S)."""
        v = self.operating_point.views
        items = [im if im.dim() == 4 else im.unsqueeze(0) for im in images]
        if any(im.shape[0] < v for im in items):
            raise ValueError(f"{self.name} checks {v} views of each image (model_views)")
        views = torch.stack([im[:v] for im in items])  # (N, V, 3, S, S)
        # uint8 crosses to the device (4x less than float), normalisation happens there.
        batch = to_device(pad_to_bucket(views, self.buckets), self.device)
        logits = self.forward(normalize(batch.flatten(0, 1), self.preprocess))
        rows = logits.view(-1, v)[: len(images)].cpu().tolist()
        p = self.operating_point.probability
        return [DetectorScore(p(r[0]), p(r[1]) if v > 1 else None) for r in rows]

    def explain(self, views: torch.Tensor) -> Saliency:
        """Where the evidence lies in an image's model view (the first of its views), on an
        fp32 eager copy of the model loaded on first use: the served copy may be compiled or
        bf16 and has no gradients. CPU, off the batched path (``Services.explain``)."""
        with self._explainer_lock:
            if self._explainer is None:
                if self.path is None:
                    raise RuntimeError(f"{self.name}: no checkpoint file to explain with")
                self._explainer, _ = load_model(self.path, self.meta.kind)
        return explain(self._explainer, normalize(model_input(views), self.preprocess)[None])

    def example(self, n: int) -> list[torch.Tensor]:
        size = self.preprocess.image_size
        views = 2 if self.preprocess.crop == "native" else 1
        return [torch.zeros(views, 3, size, size, dtype=torch.uint8)] * n


class GeneratorRunner(Runner):
    """Seeds -> generated images, uint8 (3, S, S): each seed's image whatever batch it is in.
    Encoding (PNG, JPEG) is the caller's job, off this thread (``Services.generate``)."""

    kind = "generator"

    def __init__(
        self,
        model: nn.Module,
        meta: CheckpointMeta,
        options: InferenceOptions,
        buckets: Sequence[int] = (),
        name: str | None = None,
    ) -> None:
        super().__init__(model, meta, options, buckets, name or "generator")

    def info(self) -> dict[str, Any]:
        return {**super().info(), "quality": quality_of(self.meta)}

    def __call__(self, seeds: list[int]) -> list[torch.Tensor]:
        z = seed_noise(seeds, int(self.meta.config["z_dim"]))
        images = self.forward(to_device(pad_to_bucket(z, self.buckets), self.device))
        return list(to_uint8(images[: len(seeds)]).cpu())

    def example(self, n: int) -> list[int]:
        return list(range(n))


QUALITY_KEYS = ("fd", "kid", "precision", "recall", "n_generated")


def quality_of(meta: CheckpointMeta) -> dict[str, Any] | None:
    """A generator's last score in the lesion feature space (``train_gan --features``), or None
    for one trained without a feature model."""
    if "fd" not in meta.metrics:
        return None
    scored = {k: meta.metrics[k] for k in QUALITY_KEYS if k in meta.metrics}
    return {**scored, **(meta.extra or {}).get("quality", {})}
