"""Progress bars and stage estimates tell the truth about time-capped stages."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from training import estimate
from training.progress import Progress
from training.train_detector import TrainConfig
from training.train_features import TrainFeaturesConfig
from training.train_gan import TrainGanConfig


def test_a_time_capped_bar_counts_seconds_against_the_cap(capsys: pytest.CaptureFixture) -> None:
    """The quick SNGAN: 100,000 steps capped at 10 minutes shows 600 s, not 100,000 steps."""
    progress = Progress(100_000, 0, 600.0, quiet=False, desc="SNGAN")
    assert progress.bar.total == 600.0
    progress.t0 -= 60.0  # as if the first 500 steps took a minute
    progress.update(500, D="1.000")
    assert 4900 < progress.reachable(500) <= 5000  # ~500 steps a minute, for 10 minutes
    progress.close()
    shown = capsys.readouterr().err
    assert "60/600 s" in shown and re.search(r"step=500 \(~49\d\d in the limit\)", shown)
    assert "100000" not in shown


def test_a_run_capped_by_time_alone_projects_its_steps() -> None:
    """The upsampler zoo's budget may be seconds only (0 steps: no step cap)."""
    progress = Progress(0, 0, 120.0, quiet=True, desc="zoo")
    progress.t0 -= 30.0  # 300 steps in 30 s
    assert 1190 < progress.reachable(300) <= 1200
    progress.close()


def test_an_uncapped_bar_counts_steps(capsys: pytest.CaptureFixture) -> None:
    progress = Progress(10, 2, 0.0, quiet=False, desc="detector")
    progress.update(3, loss="0.5")
    assert (progress.bar.n, progress.bar.total) == (3, 10) and not progress.out_of_time()
    progress.close()
    assert "3/10" in capsys.readouterr().err


def test_estimates_of_capped_and_counted_stages() -> None:
    capped = estimate.steps_at_pace(100_000, 0.5, 600.0)
    assert capped.seconds == 600.0 and "~1,200 of 100,000 steps" in str(capped)
    assert "~10 min" in str(capped)
    counted = estimate.steps_at_pace(200, 0.5, 600.0)
    assert counted.seconds == 100.0 and str(counted).startswith("~2 min")
    assert estimate.duration(3 * 3600 + 20 * 60) == "3 h 20 min"


def test_a_gan_and_a_detector_stage_are_timed_on_their_own_models(tmp_path: Path) -> None:
    gan = TrainGanConfig(
        data=tmp_path, out=tmp_path, image_size=32, g_channels=8, d_channels=8, batch_size=2,
        n_dis=2, steps=1000, device="cpu", precision="fp32",
    )  # fmt: skip
    found = estimate.gan(gan)
    assert found.seconds is not None and found.seconds > 0 and "1,000 steps at" in found.detail
    npr = TrainConfig(
        data=tmp_path, out=tmp_path, arch="npr", image_size=32, batch_size=4, epochs=3,
        device="cpu", precision="fp32", time_limit_min=1e-9,
    )  # fmt: skip
    assert estimate.detector_steps(npr, n_train=100) == 150
    capped = estimate.detector(npr, n_train=100)
    assert "time cap" in capped.detail and capped.seconds == pytest.approx(6e-8)
    few = estimate.detector(TrainConfig(data=tmp_path, out=tmp_path, steps=2), n_train=100)
    assert few.seconds is None  # two steps are not worth timing


def test_the_feature_stage_is_estimated_in_epochs_or_steps() -> None:
    """A feature model counted in epochs says epochs, not steps (the first quick run said
    "at most 30 steps" for 30 epochs)."""
    cfg = TrainFeaturesConfig(data=Path(), out=Path(), epochs=30, time_limit_min=3.0)
    capped = estimate.features(cfg)
    assert capped.seconds == 180 and "30 epochs" in capped.detail and "steps" not in capped.detail
    assert estimate.features(replace(cfg, time_limit_min=0.0)).seconds is None
    stepped = estimate.features(replace(cfg, steps=2, time_limit_min=0.0))
    assert "2 steps" in stepped.detail
