"""Scores, calibration and operating points: shared by detector training and evaluation.

A detector's raw logits are turned into something a user can act on, on validation images only:
a temperature and bias that calibrate P(synthetic) (:func:`fit_platt`), a decision threshold
(at a target false-positive rate on real photos, or the paper's Youden J) and an inconclusive
band below it (:func:`choose_operating_point`). The result is a
:class:`models.operating_point.OperatingPoint`, saved in the checkpoint and applied unchanged to
test images, foreign generators and uploads.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from models.operating_point import OperatingPoint
from models.preprocessing import PreprocessConfig, normalize
from models.runtime import autocast
from training.metrics import select_threshold

CRITERIA = ("fpr", "youden", "accuracy")


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    preprocess: PreprocessConfig,
    device: torch.device,
    dtype: torch.dtype,
    *,
    batch_size: int = 32,
    channels_last: bool = True,
    desc: str = "scoring",
    quiet: bool = False,
) -> np.ndarray:
    """Logits (float64) for a uint8 batch (N, 3, S, S) with the model in eval mode."""
    was_training = model.training
    model.eval()
    out = []
    starts = range(0, images.shape[0], batch_size)
    for i in tqdm(starts, desc=desc, unit="batch", disable=quiet, leave=False):
        x = normalize(images[i : i + batch_size].to(device), preprocess)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, dtype):
            out.append(model(x).float().cpu())
    model.train(was_training)
    if not out:
        return np.zeros(0, dtype=np.float64)
    return torch.cat(out).double().numpy()


def predict_view_logits(
    model: nn.Module,
    views: torch.Tensor,
    preprocess: PreprocessConfig,
    device: torch.device,
    dtype: torch.dtype,
    **kwargs: Any,
) -> np.ndarray:
    """Logits (N, V) of every view of every image, views uint8 (N, V, 3, S, S) as
    ``models.preprocessing.model_views`` cuts them (keyword arguments: :func:`predict_logits`)."""
    n, v = views.shape[:2]
    flat = views.reshape(n * v, *views.shape[2:])
    return predict_logits(model, flat, preprocess, device, dtype, **kwargs).reshape(n, v)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """P(synthetic) in float64 (keeps resolution where float32 would round to exactly 1.0)."""
    z = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -z))


def bce_from_logits(labels: np.ndarray, logits: np.ndarray) -> float:
    """Mean binary cross-entropy (nats) of the labels under the logits."""
    y = np.asarray(labels, dtype=np.float64)
    z = np.asarray(logits, dtype=np.float64)
    if y.size == 0:
        return float("nan")
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_platt(labels: np.ndarray, logits: np.ndarray) -> tuple[float, float]:
    """(temperature, bias) so that ``sigmoid(logit / T + bias)`` is calibrated (Platt 1999).

    Newton's method on the two-parameter logistic NLL with Platt's smoothed targets
    (``(N+ + 1) / (N+ + 2)`` and ``1 / (N- + 2)``), which keeps the optimum finite even when
    validation separates perfectly. Plain temperature scaling has no bias, so a model whose
    logits are all shifted (common early in training) would be "calibrated" to p = 0.5 for
    every image; the bias fixes that. A non-positive slope (a model worse than chance on
    validation) is refused: it would invert the ranking.
    """
    y = np.asarray(labels, dtype=np.float64)
    z = np.asarray(logits, dtype=np.float64)
    n_pos, n_neg = float(np.sum(y == 1)), float(np.sum(y == 0))
    if n_pos == 0 or n_neg == 0:
        return 1.0, 0.0
    t = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    scale = max(float(np.std(z)), 1e-6)
    x = np.stack([z / scale, np.ones_like(z)], axis=1)  # standardised for a stable Newton step
    w = np.array([1.0, 0.0])

    def nll(v: np.ndarray) -> float:
        u = x @ v
        return float(np.mean(np.logaddexp(0.0, u) - t * u))

    for _ in range(100):
        p = sigmoid(x @ w)
        grad = x.T @ (p - t)
        hess = x.T @ (x * (p * (1 - p))[:, None]) + 1e-9 * np.eye(2)
        step, here = np.linalg.solve(hess, grad), nll(w)
        while nll(w - step) > here and np.max(np.abs(step)) > 1e-12:
            step = step / 2  # backtracking keeps Newton from overshooting on separable data
        w = w - step
        if np.max(np.abs(step)) < 1e-10:
            break
    slope = w[0] / scale
    if not slope > 0:
        return 1.0, 0.0
    return float(1.0 / slope), float(w[1])


def threshold_at_fpr(real_scores: np.ndarray, fpr: float) -> float:
    """The lowest threshold that flags at most ``fpr`` of these real images (``score >= t``)."""
    s = np.sort(np.asarray(real_scores, dtype=np.float64))[::-1]
    if s.size == 0:
        raise ValueError("no real validation images to set a false-positive rate on")
    if not 0.0 <= fpr < 1.0:
        raise ValueError(f"target false-positive rate must be in [0, 1), got {fpr}")
    allowed = math.floor(fpr * s.size + 1e-9)  # this many reals may score >= t
    return float(min(1.0, np.nextafter(s[allowed], np.inf)))


def choose_operating_point(
    labels: np.ndarray,
    logits: np.ndarray,
    criterion: str = "fpr",
    target_fpr: float = 0.05,
    inconclusive_fpr: float | None = None,
    half_scale_real_logits: np.ndarray | None = None,
) -> OperatingPoint:
    """Calibrate, then place the threshold and the inconclusive band on validation scores.

    ``fpr``: the threshold flags ``target_fpr`` of the real validation images; the band reaches
    down to where ``inconclusive_fpr`` (default twice the target) of them would be flagged.
    ``youden``/``accuracy``: the paper-style threshold, no band.
    ``half_scale_real_logits`` (the real validation photos seen at half scale) adds the
    half-scale check at the same false-positive rate (``fpr`` criterion only).
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown threshold criterion {criterion!r}; choose from {CRITERIA}")
    y = np.asarray(labels)
    temperature, bias = fit_platt(y, logits)
    probs = sigmoid(np.asarray(logits, dtype=np.float64) / temperature + bias)
    if criterion == "fpr":
        threshold = threshold_at_fpr(probs[y == 0], target_fpr)
        band_fpr = 2 * target_fpr if inconclusive_fpr is None else inconclusive_fpr
        if band_fpr < target_fpr:
            raise ValueError("the inconclusive band's false-positive rate must be >= the target")
        low = min(threshold, threshold_at_fpr(probs[y == 0], min(band_fpr, 0.999)))
        half = None
        if half_scale_real_logits is not None and len(half_scale_real_logits):
            half_probs = sigmoid(np.asarray(half_scale_real_logits) / temperature + bias)
            half = threshold_at_fpr(half_probs, target_fpr)
        return OperatingPoint(threshold, temperature, bias, low, criterion, target_fpr, half)
    threshold, _ = select_threshold(y, probs, criterion)
    return OperatingPoint(float(threshold), temperature, bias, None, criterion, None)


def calibrated(point: OperatingPoint, logits: np.ndarray) -> np.ndarray:
    """The calibrated P(synthetic) of many logits (vectorised ``point.probability``)."""
    return sigmoid(np.asarray(logits, dtype=np.float64) / point.temperature + point.bias)


def verdicts(
    point: OperatingPoint, probs: np.ndarray, half_scale: np.ndarray | None = None
) -> list[str]:
    """``point.verdict`` of every image (with its half-scale view's score, when checked)."""
    halves = [None] * len(probs) if half_scale is None else [float(h) for h in half_scale]
    return [point.verdict(float(p), h) for p, h in zip(probs, halves, strict=True)]


def verdict_shares(
    probs: np.ndarray, point: OperatingPoint, half_scale: np.ndarray | None = None
) -> dict[str, Any]:
    """Share of images called synthetic / inconclusive / real at an operating point."""
    p = np.asarray(probs, dtype=np.float64)
    n = p.size
    called = verdicts(point, p, half_scale)
    flagged, inconclusive = called.count("synthetic"), called.count("inconclusive")
    return {
        "count": n,
        "flagged_synthetic": flagged / n if n else float("nan"),
        "inconclusive": inconclusive / n if n else float("nan"),
        "called_real": (n - flagged - inconclusive) / n if n else float("nan"),
        "mean_p_synthetic": float(np.mean(p)) if n else float("nan"),
        "flagged_at_threshold": float(np.mean(p >= point.threshold)) if n else float("nan"),
    }
