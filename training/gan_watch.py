"""Generator quality while it trains: the EMA generator scored in the lesion feature space
(``training.gan_metrics``) every K steps on one fixed noise sample, logged, plotted, and the
best-scoring generator kept beside the last one.

Why a fixed sample and a capped real reference: the score is then a function of the weights
alone (no sampling noise between checkpoints), and one scoring costs seconds, not minutes, so a
10-minute CPU run can afford it every few hundred steps. Lower FD is better; the best generator
is chosen on FD against the ``gan_train`` lesions it learnt from.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.checkpoint import read_meta
from models.noise import seed_noise
from training.common import CsvLog
from training.data import Record, SplitConfig, subsample
from training.detector_data import split_of
from training.gan_metrics import FeatureSpace, GanScores, RealReference, generate
from training.plots import plot_curves

FIELDS = ("step", "fd", "kid", "kid_std", "precision", "recall", "elapsed_s")
BEST_FILE = "generator_best.safetensors"
NOISE_SEED_OFFSET = 1_000_003  # the watch's noise never overlaps the sample grid's


class FeatureSplitMismatch(ValueError):
    """The feature model was trained on another lesion split than the generator's."""


class QualityWatch:
    """Scores a generator against the real ``gan_train`` lesions; the loop says when."""

    def __init__(
        self,
        features: Path,
        real: Sequence[Record],
        split: SplitConfig,
        *,
        out: Path,
        n: int = 1000,
        real_n: int = 2000,
        z_dim: int = 128,
        seed: int = 0,
        device: torch.device | str = "cpu",
        resume_step: int = 0,
        quiet: bool = True,
    ) -> None:
        self.space = FeatureSpace.from_checkpoint(features, device)
        assert self.space.meta is not None
        theirs, _ = split_of(self.space.meta)
        if not theirs.same_as(split):
            raise FeatureSplitMismatch(
                f"{features} was trained on lesion split {theirs.fractions} (seed {theirs.seed}) "
                f"but this GAN uses {dict(split.fractions)} (seed {split.seed}): its real "
                "reference would not be this GAN's gan_train lesions; train the feature model "
                "with the GAN's --split and --split-seed"
            )
        self.basis = quality_basis(self.space.meta.weights_sha256, real_n, seed)
        paths = [r.path for r in subsample(list(real), real_n, seed)]
        self.reference = RealReference.from_files(self.space, paths, quiet=quiet)
        self.z = seed_noise(range(NOISE_SEED_OFFSET + seed, NOISE_SEED_OFFSET + seed + n), z_dim)
        self.out = out
        self.log = CsvLog(out / "quality.csv", FIELDS, resume_step=resume_step)
        best = out / BEST_FILE
        self.best_fd = (
            float(read_meta(best).metrics.get("fd", float("inf")))
            if resume_step and best.is_file()
            else float("inf")
        )

    def score(self, generator: nn.Module) -> GanScores:
        """The generator (EMA weights, eval mode for the duration) on the fixed noise."""
        device = next(generator.parameters()).device
        return self.reference.score(generate(generator, self.z.to(device)))

    def record(self, step: int, scores: GanScores, elapsed_s: float) -> bool:
        """Log one scoring; True when it is the best FD so far (the caller keeps that
        generator)."""
        row = {k: v for k, v in scores.to_dict().items() if k in FIELDS}
        self.log.write({"step": step, **row, "elapsed_s": round(elapsed_s, 1)})
        if scores.fd < self.best_fd:
            self.best_fd = scores.fd
            return True
        return False

    def plot(self, title: str) -> Path:
        panels = (
            ("FD (lower is better)", ("fd",)),
            ("precision / recall", ("precision", "recall")),
        )
        return plot_curves(self.out / "quality.csv", self.out / "quality.png", panels, title=title)


def metrics_of(scores: GanScores, prefix: str = "") -> dict[str, float]:
    """The figures a generator checkpoint carries in its metadata (and /v1/models shows)."""
    d = scores.to_dict()
    return {prefix + k: float(d[k]) for k in ("fd", "kid", "precision", "recall", "n_generated")}


def quality_basis(feature_sha256: str, real_n: int, seed: int) -> dict[str, Any]:
    """How a generator's score was measured, for its checkpoint (and /v1/models): the feature
    model's weights, the real reference and the noise sample."""
    return {
        "feature_model_sha256": feature_sha256,
        "reference": "gan_train lesions",
        "reference_images": real_n or "all",
        "noise_seed": NOISE_SEED_OFFSET + seed,
        "measured_by": "training.gan_metrics (lesion feature space)",
    }
