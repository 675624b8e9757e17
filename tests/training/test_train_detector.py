import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from models.checkpoint import load_model, load_state
from models.operating_point import OperatingPoint
from models.preprocessing import InvalidImageError, load_rgb
from tests.training.stand_ins import make_synthetic
from training.common import read_csv
from training.data import SplitConfig, load_splits, preload, read_manifest, subsample
from training.detector_data import split_synthetic
from training.metrics import select_threshold
from training.scoring import calibrated, predict_logits
from training.train_detector import main, parse_args


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic(tmp_path_factory.mktemp("synthetic"))


def _args(ham_dir: Path, synthetic_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--data",
        str(ham_dir),
        "--synthetic",
        str(synthetic_dir),
        "--out",
        str(out),
        "--pretrained",
        "none",
        "--batch-size",
        "4",
        "--limit-images",
        "6",
        "--image-size",
        "64",
        "--seed",
        "1",
        "--precision",
        "fp32",  # the threshold check below recomputes the validation scores in fp32
        "--quiet",
        *extra,
    ]


def test_synthetic_split_is_deterministic_and_disjoint(synthetic_dir: Path) -> None:
    paths = sorted(synthetic_dir.glob("*.png"))
    a = split_synthetic(paths)
    assert a == split_synthetic(list(reversed(paths)))
    assert sum(len(v) for v in a.values()) == len(paths)
    assert not set(a["train"]) & set(a["test"]) and not set(a["val"]) & set(a["test"])
    # adding a file never moves the others
    b = split_synthetic([*paths, synthetic_dir / "zzz_new.png"])
    for name in a:
        assert set(a[name]) <= set(b[name])


def test_two_steps_write_a_loadable_checkpoint_and_resume(
    ham_dir: Path, synthetic_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    main(parse_args(_args(ham_dir, synthetic_dir, out, "--steps", "1")))
    for name in ("detector.safetensors", "state.pt", "config.json", "log.csv", "split.csv"):
        assert (out / name).is_file(), name
    first = load_state(out / "state.pt")
    assert first["step"] == 1

    main(parse_args(_args(ham_dir, synthetic_dir, out, "--steps", "2", "--resume")))
    state = load_state(out / "state.pt")
    assert state["step"] == 2  # continued at the saved step, not from 0
    assert [int(r["step"]) for r in read_csv(out / "log.csv")] == [1, 2]
    changed = [
        k
        for k, v in state["model"].items()
        if v.is_floating_point() and not torch.equal(v, first["model"][k])
    ]
    assert changed, "the second step did not change the weights"
    assert all(math.isfinite(float(r["loss"])) for r in read_csv(out / "log.csv"))

    model, meta = load_model(out / "detector.safetensors", "detector")
    assert meta.threshold is not None and 0.0 < meta.threshold < 1.0
    assert meta.preprocess_config.image_size == 64
    assert meta.preprocess_config.mean == (0.485, 0.456, 0.406)
    assert meta.metrics["validation"]["roc_auc"] is not None

    # the manifest records the lesion split (that gan_train is never *read* is tested below)
    manifest = read_manifest(out / "split.csv")
    splits = load_splits(ham_dir, SplitConfig())
    assert [r.image_id for r in manifest["gan_train"]] == [r.image_id for r in splits["gan_train"]]
    assert {"fake:sngan:train", "fake:sngan:val", "fake:sngan:test"} <= set(manifest)

    # the saved threshold is the one the *validation* scores choose (never the test set's)
    val_real = [r.path for r in manifest["detector_val"]]
    val_real = subsample(val_real, 6, 1)
    val_syn = [r.path for r in manifest["fake:sngan:val"] if r.dx == "train"]
    images = torch.cat(
        [
            preload(val_real, meta.preprocess_config, quiet=True),
            preload(val_syn, meta.preprocess_config, quiet=True),
        ]
    )
    labels = np.array([0] * len(val_real) + [1] * len(val_syn))
    point = OperatingPoint.from_metadata(meta.threshold, meta.extra)
    probs = calibrated(
        point,
        predict_logits(model, images, meta.preprocess_config, torch.device("cpu"), torch.float32),
    )
    expected, _ = select_threshold(labels, probs, "youden")
    assert meta.threshold == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert meta.metrics["validation"]["counts"] == {
        "real": len(val_real),
        "synthetic": len(val_syn),
    }


def test_odd_batch_is_refused(ham_dir: Path, synthetic_dir: Path, tmp_path: Path) -> None:
    cfg = parse_args(_args(ham_dir, synthetic_dir, tmp_path, "--batch-size", "3"))
    with pytest.raises(ValueError, match="even"):
        main(cfg)


def test_general_detector_run_holds_a_source_out_and_sets_its_operating_point(
    ham_dir: Path, synthetic_dir: Path, tmp_path: Path
) -> None:
    """--arch npr with a held-out source: native crops, the held-out source never trained on but
    choosing the checkpoint, threshold and half-scale check at the target rate on real photos."""
    zoo = make_synthetic(tmp_path / "zoo", n=30, size=32, seed=4)
    held = make_synthetic(tmp_path / "held", n=30, size=64, seed=5)
    out = tmp_path / "npr"
    args = ["--arch", "npr", "--fake", f"zoo={zoo}", "--held-out", f"held={held}"]
    main(parse_args([*_args(ham_dir, synthetic_dir, out, "--steps", "2"), *args]))
    _, meta = load_model(out / "detector.safetensors", "npr")
    assert meta.preprocess_config.crop == "native" and meta.extra["architecture"] == "npr"
    assert set(meta.extra["sources"]["train"]) == {"sngan", "zoo"}
    assert set(meta.extra["sources"]["held_out"]) == {"held"}
    validation = meta.metrics["validation"]
    assert validation["selection_on"] == "held-out sources"
    assert validation["selection"] == validation["per_source"]["held"]["roc_auc_vs_real"]
    assert validation["per_source"]["held"]["held_out"] is True
    point = OperatingPoint.from_metadata(meta.threshold, meta.extra)
    assert point.criterion == "fpr" and point.target_fpr == 0.05 and point.views == 2
    # at most 5% of the real validation photos reach the threshold, with or without half scale
    assert validation["real"]["flagged_at_threshold"] <= 0.05
    assert validation["real"]["flagged_synthetic"] <= validation["real"]["flagged_at_threshold"]
    assert "resampling_control" in validation
    # the held-out source's images were never trained on
    summary = json.loads((out / "train_summary.json").read_text())
    assert "source:held" not in summary["counts"]["train"]
    rows = read_manifest(out / "split.csv")
    assert {r.dx for r in rows["fake:held:train"]} == {"unused"}


def test_gan_train_lesions_are_never_read(
    ham_dir: Path, synthetic_dir: Path, tmp_path: Path
) -> None:
    """The GAN's lesions must never reach the detector (its real class would then overlap what
    the generator learned from). Every gan_train image is replaced by bytes that are not an
    image, every other file is the original: training must run through without noticing."""
    poisoned = {r.path.resolve() for r in load_splits(ham_dir, SplitConfig())["gan_train"]}
    assert poisoned
    data = tmp_path / "ham"
    for source in ham_dir.rglob("*"):
        if source.is_dir():
            continue
        target = data / source.relative_to(ham_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.resolve() in poisoned:
            target.write_bytes(b"a gan_train lesion: the detector must never read this")
        else:
            target.symlink_to(source.resolve())
    with pytest.raises(InvalidImageError):  # the poison works
        load_rgb(data / next(iter(poisoned)).relative_to(ham_dir.resolve()))
    out = tmp_path / "run"
    main(parse_args(_args(data, synthetic_dir, out, "--steps", "2", "--limit-images", "12")))
    assert (out / "detector.safetensors").is_file()
