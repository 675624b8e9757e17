"""A detector's operating point: calibration, decision threshold and the inconclusive band.

Training chooses it on validation images and writes it into the checkpoint's metadata
(``extra["operating_point"]``); the service and the evaluation read it back from there, so one
definition of "synthetic", "real" and "inconclusive" holds everywhere.

- ``temperature`` and ``bias`` (Platt scaling; with ``bias = 0`` it is temperature scaling, Guo
  et al. 2017): ``P(synthetic) = sigmoid(logit / T + bias)``, fitted on validation so that
  probabilities mean what they say. With T > 0 it never changes the ranking.
- ``threshold``: on the calibrated probability. With ``criterion="fpr"`` it is the score that
  ``target_fpr`` of the real validation photos reach, so a real upload is called synthetic at
  that rate.
- ``inconclusive_below``: scores in ``[inconclusive_below, threshold)`` are ``inconclusive``
  rather than ``real``: the next most suspicious real photos (by default those up to twice the
  target rate) and the fakes that just miss the threshold. Equal to ``threshold`` means no band.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

Verdict = Literal["synthetic", "real", "inconclusive"]
VERDICTS: tuple[Verdict, ...] = ("synthetic", "real", "inconclusive")


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float = 0.5
    temperature: float = 1.0
    bias: float = 0.0
    inconclusive_below: float | None = None
    criterion: str = "default"
    target_fpr: float | None = None
    half_scale_threshold: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if not math.isfinite(self.bias):
            raise ValueError(f"bias must be finite, got {self.bias}")
        if self.half_scale_threshold is not None and not 0.0 <= self.half_scale_threshold <= 1.0:
            raise ValueError(
                f"half_scale_threshold must be in [0, 1], got {self.half_scale_threshold}"
            )
        if self.inconclusive_below is not None and not (
            0.0 <= self.inconclusive_below <= self.threshold
        ):
            raise ValueError("inconclusive_below must be in [0, threshold]")

    @property
    def band_low(self) -> float:
        return self.threshold if self.inconclusive_below is None else self.inconclusive_below

    def probability(self, logit: float) -> float:
        """Calibrated P(synthetic) for one logit (float64, no overflow)."""
        z = logit / self.temperature + self.bias
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)
        return e / (1.0 + e)

    @property
    def views(self) -> int:
        """How many views of an image the verdict needs: 2 with the half-scale check, else 1."""
        return 1 if self.half_scale_threshold is None else 2

    def verdict(self, probability: float, half_scale: float | None = None) -> Verdict:
        """The verdict for P(synthetic) of the image (and of its half-scale view, when this
        operating point checks it; without it, no image can be called synthetic)."""
        return self.decide(probability, half_scale)[0]

    def decide(self, probability: float, half_scale: float | None = None) -> tuple[Verdict, str]:
        """:meth:`verdict` and why, in one sentence for the person reading it: which threshold
        the score met or missed, and what that threshold means."""
        p, t = probability, self.threshold
        rate = (
            ""
            if self.target_fpr is None
            else f" (set so that {100 * self.target_fpr:g}% of real validation photos reach it)"
        )
        if p >= t:
            above = f"score {_versus(p, '>=', t, 'threshold ')}{rate}"
            h = self.half_scale_threshold
            if h is None:
                return "synthetic", above
            if half_scale is None:
                return "inconclusive", f"{above}, but the image was not scored at half scale"
            if half_scale >= h:
                persists = f"the trace persists at half scale ({_versus(half_scale, '>=', h)})"
                return "synthetic", f"{above}, and {persists}"
            return (
                "inconclusive",
                f"{above}, but at half scale it scores {_versus(half_scale, '<', h)}: a trace "
                "that vanishes at half scale is also what enlarging a real photo leaves",
            )
        if p >= self.band_low:
            score, low, top = _distinct(p, self.band_low, t)
            return (
                "inconclusive",
                f"score {score} is in the inconclusive band [{low}, {top}): too close to the "
                "threshold to call",
            )
        below = "the inconclusive band" if self.band_low < t else "the threshold"
        return "real", f"score {_versus(p, '<', self.band_low)}, below {below}"

    @property
    def controlled(self) -> bool:
        """Whether the threshold holds a known false-positive rate (see :func:`overall_verdict`)."""
        return self.target_fpr is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_metadata(cls, threshold: float | None, extra: dict[str, Any] | None) -> OperatingPoint:
        """From a checkpoint's ``threshold`` and ``extra``; checkpoints written before operating
        points existed (the paper's VGG16 runs) get their saved threshold and T = 1."""
        saved = dict((extra or {}).get("operating_point") or {})
        if threshold is not None:
            saved.setdefault("threshold", float(threshold))
        known = {k: saved[k] for k in cls.__dataclass_fields__ if k in saved}
        return cls(**known)


def _distinct(*values: float) -> list[str]:
    """The values with 3 decimals, or more where two that differ would otherwise read the
    same (a score of 0.59996 against a threshold of 0.6 must not read "0.600 < 0.600")."""
    for digits in range(3, 18):
        shown = [f"{v:.{digits}f}" for v in values]
        if all(
            (a == b) == (x == y)
            for (a, x), (b, y) in itertools.combinations(zip(shown, values, strict=True), 2)
        ):
            return shown
    return [repr(v) for v in values]


def _versus(a: float, op: str, b: float, label: str = "") -> str:
    shown_a, shown_b = _distinct(a, b)
    return f"{shown_a} {op} {label}{shown_b}"


def overall_verdict(verdicts: list[Verdict], controlled: list[bool] | None = None) -> Verdict:
    """One verdict from several models: :func:`overall_decision` without the reason."""
    return overall_decision(verdicts, controlled)[0]


def overall_decision(
    verdicts: list[Verdict], controlled: list[bool] | None = None, names: list[str] | None = None
) -> tuple[Verdict, str]:
    """One verdict from several models, and why (naming the models that decided it).

    ``synthetic`` when a model whose threshold holds a known false-positive rate on real photos
    (``controlled``: an operating point with a ``target_fpr``) says so: each catches generators
    the others miss, and each keeps its own rate. A model without that guarantee (the paper's
    Youden threshold) can raise doubt but not, alone, a synthetic verdict beside controlled
    ones: its synthetic becomes ``inconclusive``. When no model is controlled (or ``controlled``
    is not given) any model's synthetic counts. ``real`` only when every model says real.
    """
    if not verdicts:
        raise ValueError("no verdicts to combine")
    flags = [True] * len(verdicts) if controlled is None else list(controlled)
    if len(flags) != len(verdicts):
        raise ValueError("one controlled flag per verdict")
    names = [f"model {i + 1}" for i in range(len(verdicts))] if names is None else list(names)
    if len(names) != len(verdicts):
        raise ValueError("one name per verdict")
    counted = flags if any(flags) else [True] * len(flags)  # whose synthetic decides
    said = list(zip(names, verdicts, counted, strict=True))
    decisive = [n for n, v, c in said if v == "synthetic" and c]
    if decisive:
        return "synthetic", f"{', '.join(decisive)}: synthetic"
    if all(v == "real" for v in verdicts):
        return "real", "every model: real"
    doubt = [n for n, v, c in said if v == "synthetic" and not c]
    unsure = [n for n, v, _ in said if v == "inconclusive"]
    parts = []
    if doubt:
        one = len(doubt) == 1
        holds = "its threshold holds" if one else "their thresholds hold"
        raises = "it raises" if one else "they raise"
        parts.append(
            f"{', '.join(doubt)}: synthetic, but {holds} no known false-positive rate on real "
            f"photos, so {raises} doubt rather than a verdict"
        )
    if unsure:
        parts.append(f"{', '.join(unsure)}: inconclusive")
    return "inconclusive", "; ".join(parts)
