import math

import numpy as np
import pytest

from models.operating_point import VERDICTS, OperatingPoint, overall_decision, overall_verdict


def _below(x: float) -> float:
    """The largest float strictly below ``x``."""
    return float(np.nextafter(x, -np.inf))


def test_verdicts_at_and_around_threshold_and_band_edges() -> None:
    op = OperatingPoint(threshold=0.7, inconclusive_below=0.4)
    assert op.band_low == 0.4
    # p >= threshold: synthetic, the threshold itself included
    assert op.verdict(0.7) == "synthetic"
    assert op.verdict(0.9) == "synthetic"
    assert op.verdict(1.0) == "synthetic"
    # band_low <= p < threshold: inconclusive, both edges checked to the last float
    assert op.verdict(_below(0.7)) == "inconclusive"
    assert op.verdict(0.55) == "inconclusive"
    assert op.verdict(0.4) == "inconclusive"
    # below the band: real
    assert op.verdict(_below(0.4)) == "real"
    assert op.verdict(0.1) == "real"
    assert op.verdict(0.0) == "real"


def test_no_band_when_inconclusive_below_is_none() -> None:
    op = OperatingPoint(threshold=0.5)
    assert op.inconclusive_below is None
    assert op.band_low == 0.5
    assert op.verdict(0.5) == "synthetic"
    assert op.verdict(_below(0.5)) == "real"
    grid = np.linspace(0.0, 1.0, 1001)
    assert {op.verdict(float(p)) for p in grid} == {"synthetic", "real"}


def test_band_equal_to_threshold_is_no_band() -> None:
    op = OperatingPoint(threshold=0.3, inconclusive_below=0.3)
    assert op.verdict(0.3) == "synthetic"
    assert op.verdict(_below(0.3)) == "real"


@pytest.mark.parametrize(("temperature", "bias"), [(1.0, 0.0), (2.5, -0.3), (0.2, 1.7)])
def test_probability_matches_numpy_sigmoid(temperature: float, bias: float) -> None:
    op = OperatingPoint(temperature=temperature, bias=bias)
    logits = np.linspace(-8.0, 8.0, 33)
    expected = 1.0 / (1.0 + np.exp(-(logits / temperature + bias)))
    got = np.array([op.probability(float(z)) for z in logits])
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("temperature", [1.0, 0.01])
def test_probability_does_not_overflow(temperature: float) -> None:
    op = OperatingPoint(temperature=temperature, bias=0.5)
    hi, lo = op.probability(1000.0), op.probability(-1000.0)
    assert hi == 1.0
    assert lo == 0.0 or 0.0 < lo < 1e-300
    assert math.isfinite(hi) and math.isfinite(lo)
    # resolution kept away from 1: a large negative logit is tiny but positive
    assert 0.0 < op.probability(-30.0 * temperature) < 1e-12


def test_from_metadata_old_checkpoint() -> None:
    # written before operating points existed: a threshold and unrelated extra keys
    op = OperatingPoint.from_metadata(0.37, {"epochs": 3, "best_val_auc": 0.9})
    assert op == OperatingPoint(threshold=0.37)
    assert (op.temperature, op.bias, op.inconclusive_below) == (1.0, 0.0, None)
    assert OperatingPoint.from_metadata(0.37, None) == OperatingPoint(threshold=0.37)
    assert OperatingPoint.from_metadata(None, None) == OperatingPoint()


def test_from_metadata_new_checkpoint_ignores_unknown_keys() -> None:
    saved = {
        "threshold": 0.8,
        "temperature": 2.0,
        "bias": -0.25,
        "inconclusive_below": 0.6,
        "criterion": "fpr",
        "target_fpr": 0.05,
        "written_by": "a future version",  # unknown: ignored
    }
    op = OperatingPoint.from_metadata(0.5, {"operating_point": saved, "epochs": 7})
    assert op == OperatingPoint(0.8, 2.0, -0.25, 0.6, "fpr", 0.05)
    assert op.probability(2.0) == pytest.approx(1 / (1 + math.exp(-(1.0 - 0.25))))
    # without a threshold of its own, the operating point takes the checkpoint's
    del saved["threshold"]
    assert OperatingPoint.from_metadata(0.65, {"operating_point": saved}).threshold == 0.65


def test_to_dict_round_trips_through_from_metadata() -> None:
    op = OperatingPoint(0.42, 1.3, 0.1, 0.2, "fpr", 0.01)
    assert OperatingPoint.from_metadata(None, {"operating_point": op.to_dict()}) == op


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": -0.01},
        {"threshold": 1.01},
        {"threshold": float("nan")},
        {"temperature": 0.0},
        {"temperature": -1.0},
        {"temperature": float("inf")},
        {"temperature": float("nan")},
        {"threshold": 0.5, "inconclusive_below": 0.6},
        {"threshold": 0.5, "inconclusive_below": -0.1},
        {"bias": float("nan")},
        {"bias": float("inf")},
        {"bias": float("-inf")},
    ],
)
def test_invalid_values_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        OperatingPoint(**kwargs)


def test_boundary_values_are_valid() -> None:
    OperatingPoint(threshold=0.0)
    OperatingPoint(threshold=1.0, inconclusive_below=0.0)
    OperatingPoint(threshold=0.5, inconclusive_below=0.5)


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        (["synthetic"], "synthetic"),
        (["real", "synthetic"], "synthetic"),
        (["inconclusive", "synthetic", "real"], "synthetic"),
        (["real"], "real"),
        (["real", "real", "real"], "real"),
        (["inconclusive"], "inconclusive"),
        (["real", "inconclusive"], "inconclusive"),
        (["inconclusive", "inconclusive"], "inconclusive"),
    ],
)
def test_overall_verdict(verdicts: list, expected: str) -> None:
    assert overall_verdict(verdicts) == expected
    assert expected in VERDICTS


def test_overall_verdict_of_nothing_raises() -> None:
    with pytest.raises(ValueError):
        overall_verdict([])


def test_half_scale_check_turns_a_trace_that_vanishes_into_inconclusive() -> None:
    point = OperatingPoint(threshold=0.6, inconclusive_below=0.4, half_scale_threshold=0.3)
    assert point.views == 2 and OperatingPoint(threshold=0.6).views == 1
    assert point.verdict(0.9, 0.3) == "synthetic"  # the trace persists at half scale
    assert point.verdict(0.9, 0.29) == "inconclusive"  # gone at half scale: a resize?
    assert point.verdict(0.9, None) == "inconclusive"  # not measured: never sure
    assert point.verdict(0.5, 0.99) == "inconclusive"  # the band is unchanged
    assert point.verdict(0.1, 0.99) == "real"  # half scale alone never flags
    with pytest.raises(ValueError, match="half_scale_threshold"):
        OperatingPoint(threshold=0.6, half_scale_threshold=1.5)
    restored = OperatingPoint.from_metadata(0.6, {"operating_point": point.to_dict()})
    assert restored == point


def test_a_model_without_a_false_positive_guarantee_raises_doubt_not_a_verdict() -> None:
    assert OperatingPoint(threshold=0.5, target_fpr=0.05).controlled
    assert not OperatingPoint(threshold=0.5).controlled
    # the controlled model says real, the paper-style one synthetic: inconclusive
    assert overall_verdict(["real", "synthetic"], [True, False]) == "inconclusive"
    assert overall_verdict(["synthetic", "real"], [True, False]) == "synthetic"
    assert overall_verdict(["real", "real"], [True, False]) == "real"
    # nobody controlled: any synthetic counts, as without flags
    assert overall_verdict(["real", "synthetic"], [False, False]) == "synthetic"
    assert overall_verdict(["real", "synthetic"]) == "synthetic"
    with pytest.raises(ValueError, match="flag"):
        overall_verdict(["real"], [True, False])


def test_every_verdict_comes_with_the_reason_that_decided_it() -> None:
    point = OperatingPoint(
        threshold=0.6, inconclusive_below=0.4, half_scale_threshold=0.3, target_fpr=0.05
    )
    cases = {
        (0.9, 0.5): ("synthetic", ["0.900 >= threshold 0.600", "5%", "persists", "0.500 >= 0.300"]),
        (0.9, 0.1): ("inconclusive", ["0.100 < 0.300", "enlarging a real photo"]),
        (0.9, None): ("inconclusive", ["not scored at half scale"]),
        (0.5, 0.9): ("inconclusive", ["band [0.400, 0.600)"]),
        (0.1, 0.9): ("real", ["0.100 < 0.400", "below the inconclusive band"]),
    }
    for (p, half), (verdict, words) in cases.items():
        decided, reason = point.decide(p, half)
        assert decided == verdict, (p, half)
        for word in words:
            assert word in reason, (p, half, reason)
    # without a band or a half-scale check or a target rate, the reason says only what applies
    plain = OperatingPoint(threshold=0.5)
    assert plain.decide(0.7) == ("synthetic", "score 0.700 >= threshold 0.500")
    assert plain.decide(0.2) == ("real", "score 0.200 < 0.500, below the threshold")


def test_the_overall_reason_names_the_models_that_decided() -> None:
    names = ["npr-general", "vgg16-paper"]
    assert overall_decision(["synthetic", "real"], [True, False], names) == (
        "synthetic",
        "npr-general: synthetic",
    )
    label, reason = overall_decision(["real", "synthetic"], [True, False], names)
    assert label == "inconclusive" and reason.startswith("vgg16-paper: synthetic, but")
    assert overall_decision(["inconclusive", "real"], [True, False], names) == (
        "inconclusive",
        "npr-general: inconclusive",
    )
    assert overall_decision(["real", "real"], [True, False], names) == ("real", "every model: real")
    # nobody controlled: any synthetic decides, and is named
    assert overall_decision(["real", "synthetic"], [False, False], names)[1] == (
        "vgg16-paper: synthetic"
    )
    with pytest.raises(ValueError, match="name"):
        overall_decision(["real"], [True], names)


def test_reasons_at_the_edges_read_true() -> None:
    point = OperatingPoint(
        threshold=0.6, inconclusive_below=0.4, half_scale_threshold=0.3, target_fpr=0.025
    )
    # exactly at each threshold: the side the verdict took, and a rate that is not a whole percent
    assert point.decide(0.6, 0.3) == (
        "synthetic",
        "score 0.600 >= threshold 0.600 (set so that 2.5% of real validation photos reach it), "
        "and the trace persists at half scale (0.300 >= 0.300)",
    )
    assert point.decide(0.4)[0] == "inconclusive"
    # values that differ never read the same: more decimals where 3 would hide the difference
    assert point.decide(_below(0.4))[1].startswith(
        "score 0.39999999999999997 < 0.40000000000000002"
    )
    assert "0.29996 < 0.30000" in point.decide(0.9, 0.29996)[1]
    assert "0.59996 is in the inconclusive band [0.40000, 0.60000)" in point.decide(0.59996)[1]
    assert OperatingPoint(threshold=0.6).decide(0.5999)[1] == (
        "score 0.5999 < 0.6000, below the threshold"
    )
    # a band without a target rate says nothing of a rate
    assert (
        "real validation"
        not in OperatingPoint(threshold=0.6, inconclusive_below=0.4).decide(0.7)[1]
    )


def test_the_overall_label_never_depends_on_the_names() -> None:
    for names in (["", "vgg"], ["a", "b"], None):
        assert overall_decision(["synthetic", "real"], [True, False], names)[0] == "synthetic"
        assert overall_decision(["inconclusive", "real"], [True, False], names)[0] == (
            "inconclusive"
        )
    # several models in one clause, and every model that kept the label from "real" is named
    label, reason = overall_decision(
        ["inconclusive", "synthetic", "synthetic"], [True, False, False], ["npr", "v1", "v2"]
    )
    assert label == "inconclusive"
    assert reason.startswith("v1, v2: synthetic, but their thresholds hold")
    assert reason.endswith("; npr: inconclusive")
    assert overall_decision(["synthetic", "synthetic"], None, ["a", "b"]) == (
        "synthetic",
        "a, b: synthetic",
    )
