import math
import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.operating_point import OperatingPoint
from training.metrics import ece
from training.scoring import (
    bce_from_logits,
    calibrated,
    choose_operating_point,
    fit_platt,
    sigmoid,
    threshold_at_fpr,
    verdict_shares,
)


def _gaussians(n: int, seed: int, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and logits: real ~ N(-1, 1), fake ~ N(+1, 1), times ``scale``.

    The log-likelihood ratio of the two is log N(z; 1, 1) - log N(z; -1, 1) = 2z, so with
    equal classes the calibrated logit is 2z / scale: temperature scale / 2, bias 0.
    """
    rng = np.random.default_rng(seed)
    z = np.concatenate([rng.normal(-1.0, 1.0, n), rng.normal(1.0, 1.0, n)]) * scale
    y = np.concatenate([np.zeros(n), np.ones(n)])
    return y, z


def test_fit_platt_recovers_the_bayes_calibration() -> None:
    y, z = _gaussians(3000, seed=0)
    temperature, bias = fit_platt(y, z)
    # With 6000 samples the maximum-likelihood slope (2) has a standard error of ~0.045, i.e.
    # ~0.011 on T = 1/slope, and the intercept one of ~0.03 (measured over 20 seeds: sd 0.011
    # and 0.030). The tolerances are ~4.5 and ~4 standard errors: a wrong optimum (T = 1,
    # i.e. no fit, or a sign error) is far outside them.
    assert temperature == pytest.approx(0.5, abs=0.05)
    assert bias == pytest.approx(0.0, abs=0.12)


def test_fit_platt_is_invariant_to_a_positive_affine_change_of_logits() -> None:
    y, z = _gaussians(1000, seed=1)
    t1, b1 = fit_platt(y, z)
    z2 = 3.0 * z - 2.0
    t2, b2 = fit_platt(y, z2)
    assert t2 == pytest.approx(3.0 * t1, rel=1e-4)  # the fit itself changes...
    p1, p2 = sigmoid(z / t1 + b1), sigmoid(z2 / t2 + b2)
    np.testing.assert_allclose(p2, p1, atol=1e-6)  # ...the calibrated probabilities do not


def test_fit_platt_on_perfectly_separated_data_stays_finite() -> None:
    rng = np.random.default_rng(2)
    n = 50
    z = np.concatenate([-5 + 1e-3 * rng.normal(size=n), 5 + 1e-3 * rng.normal(size=n)])
    y = np.concatenate([np.zeros(n), np.ones(n)])
    temperature, bias = fit_platt(y, z)
    assert math.isfinite(temperature) and temperature > 0 and math.isfinite(bias)
    p = sigmoid(z / temperature + bias)
    assert np.all(p[:n] < 0.5) and np.all(p[n:] > 0.5)
    # Platt's smoothed targets: the optimum sits at (N+ + 1) / (N+ + 2) and 1 / (N- + 2),
    # not at 0 and 1 (which would need an infinite slope)
    np.testing.assert_allclose(p[n:], (n + 1) / (n + 2), atol=1e-3)
    np.testing.assert_allclose(p[:n], 1 / (n + 2), atol=1e-3)


@pytest.mark.parametrize("label", [0, 1])
def test_fit_platt_single_class_is_identity(label: int) -> None:
    z = np.random.default_rng(3).normal(size=20)
    assert fit_platt(np.full(20, label), z) == (1.0, 0.0)


def test_fit_platt_refuses_to_invert_the_ranking() -> None:
    y, z = _gaussians(500, seed=4)
    assert fit_platt(y, -z) == (1.0, 0.0)


def test_calibration_lowers_ece_of_overconfident_logits() -> None:
    # validation-like data: calibrated logits (2z) made overconfident by a factor 5
    y, z = _gaussians(2000, seed=5)
    logits = 5 * 2 * z
    order = np.random.default_rng(6).permutation(y.size)
    fit, held = order[: y.size // 2], order[y.size // 2 :]
    temperature, bias = fit_platt(y[fit], logits[fit])
    raw = ece(y[held], sigmoid(logits[held]))
    cal = ece(y[held], sigmoid(logits[held] / temperature + bias))
    assert raw > 0.08
    assert cal < raw / 2


@pytest.mark.parametrize("n", [100, 257])
@pytest.mark.parametrize("fpr", [0.0, 0.01, 0.05, 0.1, 0.29, 0.5, 0.9])
def test_threshold_at_fpr_flags_exactly_floor_fpr_n(n: int, fpr: float) -> None:
    scores = np.random.default_rng(n).uniform(0.01, 0.99, n)
    assert np.unique(scores).size == n
    t = threshold_at_fpr(scores, fpr)
    allowed = math.floor(Fraction(str(fpr)) * n)  # exact: 0.29 * 100 is 28.999... in floats
    assert int(np.sum(scores >= t)) == allowed
    assert 0.0 <= t <= 1.0


@pytest.mark.parametrize("fpr", [0.0, 0.03, 0.05, 0.1, 0.2, 0.33, 0.5])
def test_threshold_at_fpr_never_flags_more_with_ties(fpr: float) -> None:
    rng = np.random.default_rng(7)
    values = rng.uniform(0.01, 0.99, 20)
    scores = rng.permutation(np.repeat(values, rng.integers(1, 8, 20)))
    n = scores.size
    allowed = math.floor(Fraction(str(fpr)) * n)
    flagged = int(np.sum(scores >= threshold_at_fpr(scores, fpr)))
    assert flagged <= allowed
    # and it is the largest count any threshold can reach without exceeding the budget
    reachable = [int(np.sum(scores >= v)) for v in np.unique(scores)] + [0]
    assert flagged == max(c for c in reachable if c <= allowed)


def test_threshold_at_fpr_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        threshold_at_fpr(np.array([]), 0.05)
    with pytest.raises(ValueError):
        threshold_at_fpr(np.array([0.1, 0.2]), 1.0)
    with pytest.raises(ValueError):
        threshold_at_fpr(np.array([0.1, 0.2]), -0.1)


@pytest.mark.parametrize("target", [0.01, 0.05, 0.1])
def test_choose_operating_point_fpr(target: float) -> None:
    y, z = _gaussians(1000, seed=8)
    op = choose_operating_point(y, z, "fpr", target_fpr=target)
    assert op.criterion == "fpr" and op.target_fpr == target
    assert (op.temperature, op.bias) == pytest.approx(fit_platt(y, z))
    p_real = calibrated(op, z[y == 0])
    flagged = float(np.mean(p_real >= op.threshold))
    in_band_or_flagged = float(np.mean(p_real >= op.band_low))
    assert flagged <= target
    assert flagged >= target - 2 / p_real.size  # not needlessly strict either
    assert op.inconclusive_below is not None
    assert op.band_low <= op.threshold
    assert in_band_or_flagged <= 2 * target
    assert in_band_or_flagged > flagged  # the band is not empty on continuous scores


def test_choose_operating_point_explicit_band_and_a_band_below_target() -> None:
    y, z = _gaussians(1000, seed=9)
    op = choose_operating_point(y, z, "fpr", target_fpr=0.05, inconclusive_fpr=0.2)
    p_real = calibrated(op, z[y == 0])
    assert 0.1 < float(np.mean(p_real >= op.band_low)) <= 0.2
    with pytest.raises(ValueError):
        choose_operating_point(y, z, "fpr", target_fpr=0.05, inconclusive_fpr=0.01)


def test_choose_operating_point_youden_has_no_band() -> None:
    y, z = _gaussians(1000, seed=10)
    op = choose_operating_point(y, z, "youden")
    assert op.criterion == "youden"
    assert op.inconclusive_below is None and op.target_fpr is None
    assert op.band_low == op.threshold
    # symmetric classes, calibrated: the balanced cut is where P(synthetic) is about 1/2
    assert op.threshold == pytest.approx(0.5, abs=0.1)
    assert {op.verdict(float(p)) for p in calibrated(op, z)} <= {"synthetic", "real"}


def test_choose_operating_point_unknown_criterion() -> None:
    y, z = _gaussians(50, seed=11)
    with pytest.raises(ValueError, match="criterion"):
        choose_operating_point(y, z, "f1")


def test_verdict_shares_by_hand() -> None:
    op = OperatingPoint(threshold=0.6, inconclusive_below=0.4)
    probs = np.array([0.1, 0.4, 0.5, 0.59999, 0.6, 0.9, 1.0, 0.39999])
    # synthetic: 0.6, 0.9, 1.0; inconclusive: 0.4, 0.5, 0.59999; real: 0.1, 0.39999
    shares = verdict_shares(probs, op)
    assert shares["count"] == 8
    assert shares["flagged_synthetic"] == pytest.approx(3 / 8)
    assert shares["inconclusive"] == pytest.approx(3 / 8)
    assert shares["called_real"] == pytest.approx(2 / 8)
    assert shares["mean_p_synthetic"] == pytest.approx(float(np.mean(probs)))
    total = shares["flagged_synthetic"] + shares["inconclusive"] + shares["called_real"]
    assert total == pytest.approx(1.0)
    # the same count as the operating point's own verdicts
    verdicts = [op.verdict(float(p)) for p in probs]
    assert shares["inconclusive"] == verdicts.count("inconclusive") / 8


def test_verdict_shares_random_sum_to_one_and_empty_is_nan() -> None:
    probs = np.random.default_rng(12).uniform(size=333)
    shares = verdict_shares(probs, OperatingPoint(threshold=0.7, inconclusive_below=0.2))
    total = shares["flagged_synthetic"] + shares["inconclusive"] + shares["called_real"]
    assert total == pytest.approx(1.0)
    assert shares["called_real"] == pytest.approx(float(np.mean(probs < 0.2)))
    empty = verdict_shares(np.array([]), OperatingPoint())
    assert empty["count"] == 0 and math.isnan(empty["flagged_synthetic"])


def test_sigmoid_is_stable() -> None:
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        p = sigmoid(np.array([-1000.0, -20.0, 0.0, 20.0, 1000.0]))
    assert p[0] == 0.0 or 0.0 < p[0] < 1e-300
    assert 0.0 < p[1] < 1e-8
    assert p[2] == 0.5
    assert 1 - 1e-8 < p[3] < 1.0  # float64 resolution kept (float32 would round to 1.0)
    assert p[4] == 1.0
    z = np.linspace(-30, 30, 61)
    np.testing.assert_allclose(sigmoid(z) + sigmoid(-z), 1.0, atol=1e-15)
    np.testing.assert_allclose(sigmoid(z), 1 / (1 + np.exp(-z)), rtol=1e-12)


def test_bce_from_logits_matches_torch() -> None:
    rng = np.random.default_rng(13)
    y = rng.integers(0, 2, 500).astype(np.float64)
    z = rng.normal(0, 3, 500)
    expected = F.binary_cross_entropy_with_logits(torch.from_numpy(z), torch.from_numpy(y))
    assert bce_from_logits(y, z) == pytest.approx(float(expected), rel=1e-12)
    # large logits stay finite and exact: a confident mistake costs |z| nats
    assert bce_from_logits(np.array([0.0, 1.0]), np.array([1000.0, 1000.0])) == pytest.approx(500)
    assert math.isnan(bce_from_logits(np.array([]), np.array([])))


def test_half_scale_threshold_is_set_on_real_half_scale_views_at_the_target_rate() -> None:
    rng = np.random.default_rng(3)
    y = np.r_[np.zeros(400), np.ones(400)]
    z = np.r_[rng.normal(-1, 1, 400), rng.normal(1, 1, 400)]
    half = rng.normal(-2, 1, 400)  # the real photos' half-scale views
    point = choose_operating_point(y, z, "fpr", 0.05, half_scale_real_logits=half)
    assert point.half_scale_threshold is not None
    flagged = calibrated(point, half) >= point.half_scale_threshold
    assert flagged.sum() == 20  # exactly 5% of 400 distinct scores
    # both views must flag: the synthetic verdicts among reals can only drop
    p_real, p_half = calibrated(point, z[:400]), calibrated(point, half)
    with_check = verdict_shares(p_real, point, p_half)["flagged_synthetic"]
    without = verdict_shares(
        p_real, OperatingPoint(**{**point.to_dict(), "half_scale_threshold": None})
    )
    assert with_check <= without["flagged_synthetic"] and with_check <= 0.05
    assert choose_operating_point(y, z, "youden", half_scale_real_logits=half).views == 1
