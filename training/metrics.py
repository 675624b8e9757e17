"""Binary detection metrics as pure functions on numpy arrays (positive class = synthetic).

Labels are 0 (real) / 1 (synthetic); scores are ``P(synthetic)`` in [0, 1]. A prediction is
positive when ``score >= threshold``. Sensitivity is the share of synthetic images caught,
specificity the share of real images passed (the positive class is synthetic everywhere). The
decision threshold is chosen on validation scores only (:func:`select_threshold`); the test set
never moves it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

THRESHOLD_CRITERIA = ("youden", "accuracy")


def _arrays(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"{y.size} labels but {s.size} scores")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (real) or 1 (synthetic)")
    return y, s


def confusion(labels: Any, scores: Any, threshold: float) -> dict[str, int]:
    """Counts {tp, fp, tn, fn} of ``score >= threshold`` against the labels."""
    y, s = _arrays(labels, scores)
    pred = s >= threshold
    pos = y == 1
    return {
        "tp": int(np.sum(pred & pos)),
        "fp": int(np.sum(pred & ~pos)),
        "tn": int(np.sum(~pred & ~pos)),
        "fn": int(np.sum(~pred & pos)),
    }


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")


def rates(cm: dict[str, int]) -> dict[str, float]:
    """Accuracy, sensitivity, specificity, precision, F1 and balanced accuracy from counts.

    An undefined ratio (no positives, nothing flagged...) is NaN, never a silent 0 or 1.
    """
    tp, fp, tn, fn = cm["tp"], cm["fp"], cm["tn"], cm["fn"]
    sens = _ratio(tp, tp + fn)
    spec = _ratio(tn, tn + fp)
    prec = _ratio(tp, tp + fp)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    return {
        "accuracy": _ratio(tp + tn, tp + fp + tn + fn),
        "sensitivity": sens,
        "specificity": spec,
        "precision": prec,
        "f1": f1,
        "balanced_accuracy": (sens + spec) / 2,
    }


def roc_auc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties count one half); NaN with one class."""
    y, s = _arrays(labels, scores)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(s.size, dtype=np.float64)
    # average ranks over ties (1-based)
    i = 0
    while i < s.size:
        j = i
        while j + 1 < s.size and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def roc_curve(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) for ``score >= t`` at every distinct score, from (0,0) to (1,1)."""
    y, s = _arrays(labels, scores)
    thresholds = np.concatenate([[np.inf], np.unique(s)[::-1]])
    n_pos, n_neg = max(int(y.sum()), 1), max(int((1 - y).sum()), 1)
    tpr = np.array([np.sum((s >= t) & (y == 1)) / n_pos for t in thresholds])
    fpr = np.array([np.sum((s >= t) & (y == 0)) / n_neg for t in thresholds])
    return fpr, tpr, thresholds


def ece(labels: Any, scores: Any, n_bins: int = 15) -> float:
    """Expected calibration error of ``P(synthetic)``: equal-width bins over [0, 1], the
    size-weighted mean of |observed synthetic rate - mean predicted probability|."""
    y, s = _arrays(labels, scores)
    if s.size == 0:
        return float("nan")
    bins = np.clip((s * n_bins).astype(np.int64), 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            total += mask.sum() * abs(y[mask].mean() - s[mask].mean())
    return float(total / s.size)


def select_threshold(
    val_labels: Any, val_scores: Any, criterion: str = "youden"
) -> tuple[float, float]:
    """Decision threshold from *validation* scores; returns (threshold, criterion value).

    Candidates are midpoints between consecutive distinct scores (plus just below the smallest and
    above the largest). ``youden`` maximises sensitivity + specificity - 1 (balanced accuracy,
    fit for any class ratio); ``accuracy`` maximises plain accuracy. When several cuts tie, the
    middle one is taken, so a cleanly separated validation set gets a threshold in the middle of
    the gap rather than on its edge.
    """
    if criterion not in THRESHOLD_CRITERIA:
        raise ValueError(f"criterion must be one of {THRESHOLD_CRITERIA}, got {criterion!r}")
    y, s = _arrays(val_labels, val_scores)
    if s.size == 0:
        raise ValueError("no validation scores to choose a threshold from")
    u = np.unique(s)
    candidates = np.concatenate(
        [[np.nextafter(u[0], -np.inf)], (u[:-1] + u[1:]) / 2, [np.nextafter(u[-1], np.inf)]]
    )
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    values = []
    for t in candidates:
        cm = confusion(y, s, float(t))
        if criterion == "youden":
            sens = cm["tp"] / n_pos if n_pos else 0.0
            spec = cm["tn"] / n_neg if n_neg else 0.0
            values.append(sens + spec - 1)
        else:
            values.append((cm["tp"] + cm["tn"]) / s.size)
    values_arr = np.asarray(values)
    best = np.flatnonzero(values_arr == values_arr.max())
    pick = int(best[len(best) // 2])
    return float(candidates[pick]), float(values_arr[pick])


def binary_report(labels: Any, scores: Any, threshold: float, n_bins: int = 15) -> dict[str, Any]:
    """Every number report.json carries for one condition."""
    y, s = _arrays(labels, scores)
    cm = confusion(y, s, threshold)
    out: dict[str, Any] = dict(rates(cm))
    out["roc_auc"] = roc_auc(y, s)
    out["ece"] = ece(y, s, n_bins)
    out["confusion_matrix"] = cm
    out["counts"] = {"real": int((y == 0).sum()), "synthetic": int((y == 1).sum())}
    out["threshold"] = float(threshold)
    return out


def nan_to_none(obj: Any) -> Any:
    """NaN/inf -> None, recursively, so reports are strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [nan_to_none(v) for v in obj]
    return obj
