import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from training.metrics import (
    binary_report,
    confusion,
    ece,
    nan_to_none,
    rates,
    roc_auc,
    roc_curve,
    select_threshold,
)

# 4 synthetic (1), 6 real (0); scores hand-placed so threshold 0.5 gives TP 3, FN 1, FP 1, TN 5
LABELS = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
SCORES = np.array([0.9, 0.8, 0.6, 0.3, 0.55, 0.4, 0.2, 0.1, 0.05, 0.45])


def test_confusion_and_rates_by_hand() -> None:
    cm = confusion(LABELS, SCORES, 0.5)
    assert cm == {"tp": 3, "fp": 1, "tn": 5, "fn": 1}
    r = rates(cm)
    assert r["accuracy"] == pytest.approx(8 / 10)
    assert r["sensitivity"] == pytest.approx(3 / 4)
    assert r["specificity"] == pytest.approx(5 / 6)
    assert r["precision"] == pytest.approx(3 / 4)
    assert r["f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    assert r["balanced_accuracy"] == pytest.approx((3 / 4 + 5 / 6) / 2)
    # a score equal to the threshold counts as synthetic
    assert confusion([1, 0], [0.5, 0.5], 0.5) == {"tp": 1, "fp": 1, "tn": 0, "fn": 0}


def test_undefined_ratios_are_nan_not_zero() -> None:
    r = rates({"tp": 0, "fp": 0, "tn": 3, "fn": 0})
    assert math.isnan(r["sensitivity"]) and math.isnan(r["precision"])
    assert r["specificity"] == 1.0
    assert nan_to_none({"a": [float("nan"), 1.0]}) == {"a": [None, 1.0]}


def test_roc_auc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200) * 0.5 + y * 0.3, 1)  # coarse: many ties
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s))
    assert roc_auc(LABELS, SCORES) == pytest.approx(roc_auc_score(LABELS, SCORES))
    # hand: 24 pos/neg pairs, 21 ordered right (0.3 loses to 0.55, 0.4, 0.45)
    assert roc_auc(LABELS, SCORES) == pytest.approx(21 / 24)
    assert math.isnan(roc_auc([1, 1], [0.2, 0.3]))


def test_roc_curve_endpoints_and_monotone() -> None:
    fpr, tpr, thr = roc_curve(LABELS, SCORES)
    assert thr[0] == np.inf and np.all(np.diff(thr) < 0)
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(21 / 24)


def test_ece_by_hand() -> None:
    # two bins used with 2 bins: [0,0.5) holds p=0.2,0.2 (1 positive of 2 -> |0.5-0.2|),
    # [0.5,1] holds p=0.9,0.9,0.9,0.9 (all positive -> |1-0.9|)
    y = [1, 0, 1, 1, 1, 1]
    p = [0.2, 0.2, 0.9, 0.9, 0.9, 0.9]
    assert ece(y, p, n_bins=2) == pytest.approx((2 * 0.3 + 4 * 0.1) / 6)
    assert ece([0, 1], [0.0, 1.0]) == 0.0


def test_threshold_selection_on_validation() -> None:
    # separable: the threshold lands in the middle of the gap 0.3 .. 0.7
    t, j = select_threshold([0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.7, 0.9])
    assert t == pytest.approx(0.5) and j == pytest.approx(1.0)
    # overlapping: Youden's J picks the cut with the best sens + spec - 1
    t, j = select_threshold(LABELS, SCORES)
    cm = confusion(LABELS, SCORES, t)
    r = rates(cm)
    assert j == pytest.approx(r["sensitivity"] + r["specificity"] - 1)
    for cut in np.unique(SCORES):
        rr = rates(confusion(LABELS, SCORES, cut))
        assert rr["sensitivity"] + rr["specificity"] - 1 <= j + 1e-12
    t_acc, acc = select_threshold(LABELS, SCORES, "accuracy")
    assert acc == pytest.approx(rates(confusion(LABELS, SCORES, t_acc))["accuracy"])
    with pytest.raises(ValueError):
        select_threshold(LABELS, SCORES, "test-set")


def test_binary_report_is_complete() -> None:
    r = binary_report(LABELS, SCORES, 0.5)
    for key in ("accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc", "ece"):
        assert key in r
    assert sum(r["confusion_matrix"].values()) == LABELS.size
    assert r["counts"] == {"real": 6, "synthetic": 4}
    assert r["threshold"] == 0.5
