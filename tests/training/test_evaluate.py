import csv
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from models.checkpoint import read_meta
from models.operating_point import OperatingPoint, overall_verdict
from tests.training.stand_ins import make_synthetic
from training import evaluate, train_detector
from training.augment import PERTURBATIONS


def _train(ham_dir: Path, out: Path, *args: str) -> Path:
    common = ["--data", str(ham_dir), "--out", str(out), "--batch-size", "2", "--steps", "1"]
    train_detector.main(
        train_detector.parse_args([*common, "--limit-images", "4", "--quiet", *args])
    )
    return out / "detector.safetensors"


@pytest.fixture(scope="module")
def trained(ham_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A one-step VGG16 on the SNGAN source and a one-step NPR on two sources with one held
    out: the shape of the pipeline's two served detectors, at toy size. Removed when the
    module ends, failed or not: the VGG16 run alone is 2.5 GB."""
    root = tmp_path_factory.mktemp("evaluate-models")
    sngan = make_synthetic(root / "sngan", n=30, size=64, seed=2)
    other = make_synthetic(root / "other", n=30, size=32, seed=3)
    held = make_synthetic(root / "held", n=30, size=64, seed=4)
    vgg = _train(
        ham_dir,
        root / "vgg",
        "--synthetic",
        str(sngan),
        "--pretrained",
        "none",
        "--image-size",
        "32",
    )
    npr = _train(
        ham_dir,
        root / "npr",
        "--arch",
        "npr",
        "--image-size",
        "32",
        "--fake",
        f"sngan={sngan}",
        "--fake",
        f"other={other}",
        "--held-out",
        f"held={held}",
    )
    yield {"vgg16-paper": vgg, "npr-general": npr}
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def report_dir(
    ham_dir: Path,
    clinic_photos: list[Path],
    foreign_gans: dict[str, Path],
    trained: dict[str, Path],  # last: the data is ready before any training is paid for
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    photos = tmp_path_factory.mktemp("photos")
    for p in clinic_photos[:3]:  # links, not copies: three clinic-sized photos
        (photos / p.name).symlink_to(p)
    out = tmp_path_factory.mktemp("evaluation")
    cfg = evaluate.parse_args(
        [
            *(a for p in trained.values() for a in ("--checkpoint", str(p))),
            "--data",
            str(ham_dir),
            "--out",
            str(out),
            "--limit",
            "4",
            "--foreign",
            f"dcgan={foreign_gans['dcgan']}",
            "--real-extra",
            f"clinic={photos}",
            "--threads",
            "1",
            "--quiet",
        ]
    )
    evaluate.main(cfg)
    return out


def test_every_detector_is_reported_side_by_side(
    report_dir: Path, trained: dict[str, Path]
) -> None:
    for name in ("report.json", "report.md", "roc.png", "examples.png", "scores.csv"):
        assert (report_dir / name).is_file(), name
    report = json.loads((report_dir / "report.json").read_text())
    assert report["order"] == list(trained)
    for name, path in trained.items():
        entry = report["detectors"][name]
        assert (report_dir / f"confusion_{name}.png").is_file()
        meta = read_meta(path)
        # the operating point is the checkpoint's (chosen on validation), never re-tuned here
        assert entry["operating_point"]["threshold"] == meta.threshold
        test = entry["test"]
        assert sum(test["confusion_matrix"].values()) == sum(test["counts"].values())
        assert set(entry["robustness"]) == set(PERTURBATIONS)
        assert set(entry["resampling_control"]) == set(evaluate.CONTROLS)
        assert entry["real_photos"]["clinic"]["count"] == 3
        assert (entry["operating_point"]["half_scale_threshold"] is not None) == (
            meta.preprocess_config.crop == "native"
        )
        assert entry["foreign"]["dcgan"]["count"] == 8
        # every source any detector knows is scored by every detector
        assert set(entry["per_source"]) == {"sngan", "other", "held"}
    vgg, npr = report["detectors"]["vgg16-paper"], report["detectors"]["npr-general"]
    assert vgg["headline_sources"] == ["sngan"]
    assert vgg["per_source"]["held"]["role"] == "unseen"
    assert npr["per_source"]["held"]["role"] == "held out (validation)"
    assert npr["per_source"]["other"]["role"] == "trained"
    assert sorted(npr["headline_sources"]) == ["other", "sngan"]
    md = (report_dir / "report.md").read_text()
    assert "99.8%" in md and "jpeg_q75" in md and "foreign dcgan" in md and "clinic" in md


def _scores(report_dir: Path) -> dict[tuple[str, str], list[tuple[float, float | None]]]:
    """(P(synthetic), P(synthetic) at half scale or None) per image, by (model, set)."""
    rows: dict[tuple[str, str], list[tuple[float, float | None]]] = {}
    with (report_dir / "scores.csv").open() as f:
        for r in csv.DictReader(f):
            half = float(r["p_half_scale"]) if r["p_half_scale"] else None
            rows.setdefault((r["model"], r["set"]), []).append((float(r["p_synthetic"]), half))
    return rows


def test_shares_and_overall_verdicts_follow_the_saved_operating_points(
    report_dir: Path, trained: dict[str, Path]
) -> None:
    """Recount every flagged / inconclusive share from the per-image scores and the operating
    points in the checkpoints: the report must agree image for image."""
    report = json.loads((report_dir / "report.json").read_text())
    scores = _scores(report_dir)
    points = {
        n: OperatingPoint.from_metadata(read_meta(p).threshold, read_meta(p).extra)
        for n, p in trained.items()
    }
    for name, point in points.items():
        entry = report["detectors"][name]
        checks = {
            "real:clinic": entry["real_photos"]["clinic"],
            "foreign:dcgan": entry["foreign"]["dcgan"],
            "source:held": entry["per_source"]["held"],
            "control:jpeg_q50": entry["resampling_control"]["jpeg_q50"],
        }
        for key, shares in checks.items():
            called = [point.verdict(p, half) for p, half in scores[(name, key)]]
            assert (point.views == 2) == all(h is not None for _, h in scores[(name, key)])
            n = len(called)
            assert shares["flagged_synthetic"] == pytest.approx(called.count("synthetic") / n)
            assert shares["inconclusive"] == pytest.approx(called.count("inconclusive") / n)
            p = np.array([p for p, _ in scores[(name, key)]])
            assert shares["flagged_at_threshold"] == pytest.approx(np.mean(p >= point.threshold))
    combined = report["combined"]
    assert combined["models"] == list(trained)
    for key, shares in combined["sets"].items():
        per_model = [[points[n].verdict(p, h) for p, h in scores[(n, key)]] for n in trained]
        controlled = [points[n].controlled for n in trained]
        overall = [overall_verdict(list(v), controlled) for v in zip(*per_model, strict=True)]
        assert shares["synthetic_share"] == pytest.approx(overall.count("synthetic") / len(overall))
        assert shares["real_share"] == pytest.approx(overall.count("real") / len(overall))


def test_headline_test_metrics_are_recounted_from_the_scores(
    report_dir: Path, trained: dict[str, Path]
) -> None:
    """The test confusion matrix, accuracy, sensitivity and specificity follow exactly from the
    per-image scores (real test lesions vs the headline sources' test images) at the
    checkpoint's threshold: not copied from training, not re-tuned."""
    report = json.loads((report_dir / "report.json").read_text())
    scores = _scores(report_dir)
    for name, path in trained.items():
        entry = report["detectors"][name]
        threshold = read_meta(path).threshold
        real = np.array([p for p, _ in scores[(name, "real:test")]])
        fake = np.array(
            [p for src in entry["headline_sources"] for p, _ in scores[(name, f"source:{src}")]]
        )
        tp, fn = int((fake >= threshold).sum()), int((fake < threshold).sum())
        fp, tn = int((real >= threshold).sum()), int((real < threshold).sum())
        test = entry["test"]
        assert test["confusion_matrix"] == {"tp": tp, "fn": fn, "fp": fp, "tn": tn}
        assert test["counts"] == {"real": len(real), "synthetic": len(fake)}
        assert test["accuracy"] == pytest.approx((tp + tn) / (len(real) + len(fake)))
        assert test["sensitivity"] == pytest.approx(tp / len(fake))
        assert test["specificity"] == pytest.approx(tn / len(real))


def test_named_flags_need_a_name(tmp_path: Path) -> None:
    for flag in ("--foreign", "--real-extra", "--source"):
        with pytest.raises(SystemExit):
            evaluate.parse_args(
                ["--checkpoint", "x", "--data", "x", "--out", "x", flag, "no-name-here"]
            )
