import json
from pathlib import Path

import pytest

from tests.training.test_train_detector import make_synthetic
from training import evaluate, train_detector
from training.augment import PERTURBATIONS


@pytest.fixture(scope="module")
def trained(ham_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One step at the paper's 128 px on a handful of images."""
    synthetic = make_synthetic(tmp_path_factory.mktemp("synthetic"), n=30, size=64, seed=2)
    out = tmp_path_factory.mktemp("run")
    train_detector.main(
        train_detector.parse_args(
            [
                "--data",
                str(ham_dir),
                "--synthetic",
                str(synthetic),
                "--out",
                str(out),
                "--pretrained",
                "none",
                "--batch-size",
                "2",
                "--steps",
                "1",
                "--limit-images",
                "4",
                "--quiet",
            ]
        )
    )
    return out / "detector.safetensors", synthetic


def test_evaluation_report(
    trained: tuple[Path, Path], ham_dir: Path, shared_data: Path, tmp_path: Path
) -> None:
    checkpoint, synthetic = trained
    foreign = shared_data / "generated-eval" / "dcgan-cannata-64"
    cfg = evaluate.parse_args(
        [
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(ham_dir),
            "--synthetic",
            str(synthetic),
            "--out",
            str(tmp_path),
            "--limit",
            "4",
            "--foreign",
            f"dcgan={foreign}",
            "--quiet",
        ]
    )
    evaluate.main(cfg)
    for name in ("report.json", "report.md", "confusion_matrix.png", "roc.png", "examples.png"):
        assert (tmp_path / name).is_file(), name
    report = json.loads((tmp_path / "report.json").read_text())
    test = report["test"]
    n_test = test["counts"]["real"] + test["counts"]["synthetic"]
    assert test["counts"]["real"] == 4 and test["counts"]["synthetic"] >= 1
    assert sum(test["confusion_matrix"].values()) == n_test
    for key in ("accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc", "ece"):
        assert key in test
    # the threshold is the checkpoint's (chosen on validation), not re-tuned on test
    from models.checkpoint import read_meta

    assert report["threshold"] == read_meta(checkpoint).threshold == test["threshold"]
    assert set(report["robustness"]) == set(PERTURBATIONS)
    for r in report["robustness"].values():
        assert sum(r["confusion_matrix"].values()) == n_test
    dcgan = report["foreign"]["dcgan"]
    assert dcgan["count"] == 8
    assert 0.0 <= dcgan["flagged_synthetic"] <= 1.0
    md = (tmp_path / "report.md").read_text()
    assert "99.82%" in md and "jpeg_q75" in md and "dcgan" in md


def test_foreign_flag_needs_name(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        evaluate.parse_args(
            [
                "--checkpoint",
                "x",
                "--data",
                "x",
                "--synthetic",
                "x",
                "--out",
                "x",
                "--foreign",
                "no-name-here",
            ]
        )
