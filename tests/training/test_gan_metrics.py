"""Generator metrics: the numerics on known cases, sanity on real images (real vs real near 0,
corruptions monotone), the feature model's training program, and the gan_metrics program on a
folder and on a generator checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from models.checkpoint import load_model, read_meta, save_model
from models.preprocessing import (
    GAN_MEAN,
    GAN_STD,
    PreprocessConfig,
    encode,
    load_rgb,
    to_pil,
    to_uint8_tensor,
)
from models.sngan import Generator, GeneratorConfig
from training import gan_metrics, train_features
from training.augment import gaussian_blur
from training.common import read_csv
from training.data import SplitConfig, load_index, load_splits, subsample
from training.gan_metrics import (
    FeatureSpace,
    InceptionError,
    RealReference,
    frechet_distance,
    kernel_distance,
    precision_recall,
)
from training.synthesize import main as synthesize
from training.synthesize import parse_args as synthesize_args

SIZE = 32
TINY = [
    "--image-size", str(SIZE), "--widths", "8,16", "--embed-dim", "32", "--batch-size", "16",
    "--steps", "80", "--warmup-steps", "0", "--lr", "3e-3", "--jitter", "0",
    "--limit-images", "96", "--log-every", "10", "--eval-every", "40", "--threads", "1",
    "--quiet",
]  # fmt: skip


@pytest.fixture(scope="module")
def features_run(ham_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny feature model trained by the real program on real (or HAM-shaped) images."""
    out = tmp_path_factory.mktemp("features")
    train_features.main(
        train_features.parse_args(["--data", str(ham_dir), "--out", str(out), *TINY])
    )
    return out


@pytest.fixture(scope="module")
def space(features_run: Path) -> FeatureSpace:
    return FeatureSpace.from_checkpoint(features_run / train_features.CHECKPOINT)


@pytest.fixture(scope="module")
def real_pixels(ham_dir: Path, space: FeatureSpace) -> torch.Tensor:
    """200 gan_train photos at the feature size, by the one path."""
    records = load_splits(ham_dir, SplitConfig())["gan_train"]
    return space.load([r.path for r in subsample(records, 200, seed=1)])


@pytest.fixture(scope="module")
def generator_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small SNGAN generator checkpoint, written as tests/training/test_synthesize.py does."""
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(image_size=SIZE, channels=8))
    with torch.no_grad():
        for _ in range(3):
            G(torch.randn(16, 128))  # train mode: moves the running statistics
    path = tmp_path_factory.mktemp("gen") / "generator.safetensors"
    save_model(path, G, PreprocessConfig(SIZE, GAN_MEAN, GAN_STD), step=7)
    return path


# --------------------------------------------------------------------------- the numerics


def test_fd_of_identical_statistics_is_zero_and_matches_closed_forms() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(64, 64))
    sigma = a @ a.T + 1e-3 * np.eye(64)
    mu = rng.normal(size=64)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)
    # diagonal covariances: |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2
    d1, d2 = rng.uniform(0.1, 2, 16), rng.uniform(0.1, 2, 16)
    m1, m2 = rng.normal(size=16), rng.normal(size=16)
    expected = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(d1) - np.sqrt(d2)) ** 2)
    assert frechet_distance(m1, np.diag(d1), m2, np.diag(d2)) == pytest.approx(expected, rel=1e-9)


def test_fd_matches_the_usual_scipy_formula() -> None:
    scipy_linalg = pytest.importorskip("scipy.linalg")  # scipy comes with the dev extras
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(64, 64)), rng.normal(size=(64, 64))
    sigma, mu = a @ a.T + 1e-3 * np.eye(64), rng.normal(size=64)
    sigma2 = b @ b.T + 1e-3 * np.eye(64)
    root = scipy_linalg.sqrtm(sigma @ sigma2)
    assert np.abs(root.imag).max() < 1e-6
    scipy_fd = np.sum((mu - 1) ** 2) + np.trace(sigma + sigma2 - 2 * root.real)
    assert frechet_distance(mu, sigma, np.ones(64), sigma2) == pytest.approx(scipy_fd, rel=1e-7)


def test_kid_is_unbiased_for_one_distribution_and_grows_with_a_shift() -> None:
    rng = np.random.default_rng(0)
    same = [
        kernel_distance(rng.normal(size=(200, 8)), rng.normal(size=(200, 8)), 10, 100, seed=i)[0]
        for i in range(20)
    ]
    # Unbiased: centred on 0, both signs (the biased estimator is always > 0, by ~E k(x,x)/m).
    assert min(same) < 0 < max(same)
    assert abs(np.mean(same)) < 3 * np.std(same) / np.sqrt(len(same))
    x = rng.normal(size=(300, 8))
    shifts = [kernel_distance(x, rng.normal(size=(300, 8)) + s, 10, 100)[0] for s in (0.5, 1, 2)]
    assert 10 * abs(np.mean(same)) < shifts[0] < shifts[1] < shifts[2]


def test_kid_cache_gives_the_same_numbers() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(120, 6)), rng.normal(size=(90, 6)) + 0.2
    cache: gan_metrics.KidCache = {}
    first = kernel_distance(x, y, 7, 50, seed=3, cache=cache)
    assert list(cache) == [50]
    assert kernel_distance(x, y, 7, 50, seed=3, cache=cache) == first
    assert kernel_distance(x, y, 7, 50, seed=3) == first


def test_precision_recall_of_a_set_against_itself_far_sets_and_a_dropped_mode() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    assert precision_recall(x, x, k=3) == (1.0, 1.0)
    assert precision_recall(x, x + 100, k=3) == (0.0, 0.0)
    # real: two far-apart modes; generated: only the first, densely -> faithful but not diverse
    modes = np.concatenate([rng.normal(size=(200, 4)), rng.normal(size=(200, 4)) + 20])
    one_mode = rng.normal(size=(200, 4)) * 0.5
    precision, recall = precision_recall(modes, one_mode, k=3)
    assert precision > 0.95
    assert 0.2 < recall < 0.55


# --------------------------------------------------------------------------- the one path


def test_generated_tensors_and_decoded_files_take_one_path(
    space: FeatureSpace, ham_dir: Path, tmp_path: Path
) -> None:
    photo = load_index(ham_dir)[0].path
    # a photo decoded as load() decodes it (a JPEG may be DCT-reduced, never below twice the
    # model size), handed over as a tensor
    decoded = load_rgb(photo, min_side=space.preprocessing.decode_min_side)
    decoded = to_uint8_tensor(decoded).unsqueeze(0)
    assert torch.equal(space.pixels(decoded), space.load([photo]))
    big = torch.randint(0, 256, (2, 3, 4 * SIZE, 4 * SIZE), dtype=torch.uint8)  # a 128 px "GAN"
    paths = []
    for i, image in enumerate(big):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(encode(to_pil(image), "png"))
    assert torch.equal(space.pixels(big), space.load(paths))
    as_float = big.float() / 127.5 - 1  # generator output in [-1, 1]
    assert torch.equal(space.pixels(as_float), space.pixels(big))


# --------------------------------------------------------------------------- sanity on real images


def noisy(x: torch.Tensor, std: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (x.float() + std * torch.randn(x.shape, generator=g)).round().clamp(0, 255).byte()


def colour_shifted(x: torch.Tensor, amount: float) -> torch.Tensor:
    shift = torch.tensor([amount, 0.0, -amount]).view(1, 3, 1, 1)  # warmer: more red, less blue
    return (x.float() + shift).round().clamp(0, 255).byte()


def blurred(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return torch.stack([gaussian_blur(image, sigma) for image in x])


CORRUPTIONS = {  # strengths at 32 px, on 0-255 pixels
    "blur": (blurred, (1.0, 2.0, 4.0)),
    "noise": (noisy, (8.0, 16.0, 32.0)),
    "colour": (colour_shifted, (10.0, 20.0, 40.0)),
}


@pytest.fixture(scope="module")
def halves(space: FeatureSpace, real_pixels: torch.Tensor) -> tuple[RealReference, torch.Tensor]:
    reference = RealReference.from_images(space, real_pixels[::2], kid_subsets=20)
    return reference, real_pixels[1::2]


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_scores_grow_with_each_corruption_and_real_vs_real_stays_near_zero(
    halves: tuple[RealReference, torch.Tensor], name: str
) -> None:
    reference, other_half = halves
    clean = reference.score(other_half)
    corrupt, strengths = CORRUPTIONS[name]
    scores = [reference.score(corrupt(other_half, s)) for s in strengths]
    fds = [s.fd for s in scores]
    kids = [s.kid for s in scores]
    assert fds[0] < fds[1] < fds[2], (name, clean.fd, fds)
    assert kids[0] < kids[1] < kids[2], (name, clean.kid, kids)
    assert clean.fd < 0.5 * fds[-1]
    assert abs(clean.kid) < 0.5 * kids[-1]
    assert clean.precision > scores[-1].precision


def test_a_reference_scores_its_own_images_as_perfect(halves) -> None:
    reference, _ = halves
    own = reference.score_features(reference.features)
    assert own.fd == pytest.approx(0.0, abs=1e-6)
    assert (own.precision, own.recall) == (1.0, 1.0)


# --------------------------------------------------------------------------- the programs


def test_train_features_writes_checkpoint_config_log_and_its_loss_falls(features_run: Path):
    rows = read_csv(features_run / "log.csv")
    losses = [float(r["loss"]) for r in rows]
    assert len(losses) == 8 and losses[-1] < 0.8 * losses[0], losses
    config = json.loads((features_run / "config.json").read_text())
    assert config["image_size"] == SIZE and config["widths"] == [8, 16]
    meta = read_meta(features_run / train_features.CHECKPOINT)
    assert meta.kind == "lesion_features" and meta.step == 80
    val = [float(r["val_balanced_accuracy"]) for r in rows if r["val_balanced_accuracy"]]
    assert len(val) == 2
    assert meta.metrics["val_balanced_accuracy"] == pytest.approx(val[-1], abs=1e-5)
    assert meta.extra["split"] == {"fractions": SplitConfig().fractions, "seed": 0}
    sub = meta.extra["subsplit"]
    assert sub["of"] == "gan_train" and sub["train_images"] + sub["val_images"] == 96
    parts: dict[str, set[str]] = {}
    for row in read_csv(features_run / "split_manifest.csv"):
        parts.setdefault(row["split"], set()).add(row["lesion_id"])
    assert set(parts) == {"features_train", "features_val"}
    assert not parts["features_train"] & parts["features_val"]
    assert meta.extra["classes"] == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def test_class_weights_balance_the_loss() -> None:
    labels = torch.tensor([5] * 90 + [4] * 9 + [3])
    w = train_features.class_weights(labels, 7)
    per_class_total = torch.bincount(labels, minlength=7).float() * w
    assert torch.allclose(per_class_total[[3, 4, 5]], torch.full((3,), 100 / 3))
    assert w[0] == 0


def metrics_cli(features_run: Path, ham_dir: Path, out: Path, *source: str) -> dict:
    args = [
        "--features", str(features_run / train_features.CHECKPOINT), "--data", str(ham_dir),
        "--out", str(out), "--n-real", "60", "--kid-subsets", "5", "--threads", "1", "--quiet",
        *source,
    ]  # fmt: skip
    gan_metrics.main(gan_metrics.parse_args(args))
    return json.loads(out.read_text())


def test_gan_metrics_on_a_generator_and_on_its_synthesized_folder(
    features_run: Path, ham_dir: Path, generator_file: Path, tmp_path: Path
) -> None:
    from_g = metrics_cli(
        features_run, ham_dir, tmp_path / "g.json", "--generator", str(generator_file),
        "--n", "40", "--seed", "3",
    )  # fmt: skip
    folder = tmp_path / "synthetic"
    synthesize(synthesize_args(["--checkpoint", str(generator_file), "--out", str(folder),
                                "--n", "40", "--seed", "3", "--quiet"]))  # fmt: skip
    from_dir = metrics_cli(features_run, ham_dir, tmp_path / "d.json", "--images", str(folder))
    assert from_g["generated"]["n"] == from_dir["generated"]["n"] == 40
    # the same pixels by both paths, so the same numbers
    assert from_g["scores"] == from_dir["scores"]
    splits = load_splits(ham_dir, SplitConfig())
    for name, split in (("gan_train", "gan_train"), ("held_out", "detector_val")):
        s = from_g["scores"][name]
        assert (s["n_real"], s["n_generated"]) == (min(60, len(splits[split])), 40)
        assert s["fd"] > 0 and 0 <= s["precision"] <= 1 and 0 <= s["recall"] <= 1
    floor = from_g["real_vs_real"]["held_out_vs_gan_train"]
    # an untrained generator's noise is far from real lesions; real photos are not
    assert floor["fd"] < 0.5 * from_g["scores"]["held_out"]["fd"]
    assert floor["precision"] > from_g["scores"]["held_out"]["precision"]


def test_gan_metrics_refuses_a_generator_trained_on_another_split(
    features_run: Path, ham_dir: Path, generator_file: Path, tmp_path: Path
) -> None:
    run = tmp_path / "gan"
    run.mkdir()
    (run / "generator.safetensors").write_bytes(generator_file.read_bytes())
    (run / "config.json").write_text(
        json.dumps({"split_fractions": SplitConfig().fractions, "split_seed": 5})
    )
    with pytest.raises(ValueError, match="split"):
        metrics_cli(features_run, ham_dir, tmp_path / "x.json", "--generator",
                    str(run / "generator.safetensors"), "--n", "8")  # fmt: skip
    assert not (tmp_path / "x.json").exists()


def test_inception_needs_a_local_file_a_plain_state_dict_and_the_extra(
    features_run: Path, ham_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    with pytest.raises(InceptionError, match=r"not found.*Nothing is downloaded"):
        metrics_cli(features_run, ham_dir, tmp_path / "r.json", "--images", str(tmp_path),
                    "--inception", str(missing))  # fmt: skip
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"w": print}, unsafe)  # a pickled callable: refused before torch-fidelity sees it
    with pytest.raises(InceptionError, match="not a plain tensor state dict"):
        gan_metrics.check_inception_weights(unsafe)
    plain = tmp_path / "plain.pth"
    torch.save({"w": torch.zeros(2)}, plain)
    monkeypatch.setitem(__import__("sys").modules, "torch_fidelity", None)  # not installed
    with pytest.raises(InceptionError, match=r"dermafake\[fid\]"):
        metrics_cli(features_run, ham_dir, tmp_path / "r.json", "--images", str(tmp_path),
                    "--inception", str(plain))  # fmt: skip
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("module", [gan_metrics, train_features])
def test_every_flag_has_help(module) -> None:
    actions = [a for a in module.build_parser()._actions if a.dest != "help"]
    assert actions and all(a.help and len(a.help) > 10 for a in actions)


def test_train_gan_scores_its_generator_keeps_the_best_and_resumes(
    features_run: Path, ham_dir: Path, tmp_path: Path
) -> None:
    """train_gan --features: quality.csv gets a row per scoring, the best-FD EMA generator is
    kept beside the last one (with its score), the score is a function of the weights alone
    (fixed noise), and a resumed run carries the best on."""
    from training import train_gan
    from training.gan_watch import BEST_FILE, FeatureSplitMismatch, QualityWatch

    features = features_run / "lesion_features.safetensors"
    run = tmp_path / "gan"
    args = ["--data", str(ham_dir), "--out", str(run), "--image-size", str(SIZE)]
    args += ["--g-channels", "8", "--d-channels", "8", "--batch-size", "4", "--n-dis", "1"]
    args += ["--limit-images", "16", "--sample-every", "2", "--threads", "1", "--quiet"]
    args += ["--features", str(features), "--quality-every", "1", "--quality-n", "12"]
    train_gan.main(train_gan.parse_args([*args, "--steps", "4"]))

    rows = read_csv(run / "quality.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    fds = [float(r["fd"]) for r in rows]
    assert all(np.isfinite(fds)) and min(fds) > 0
    assert (run / "quality.png").stat().st_size > 0
    best = read_meta(run / BEST_FILE)
    assert best.step == int(rows[int(np.argmin(fds))]["step"])
    assert best.metrics["fd"] == pytest.approx(min(fds), rel=1e-5)
    last = read_meta(run / "generator.safetensors")
    assert last.step == 4 and last.metrics["fd"] == pytest.approx(fds[-1], rel=1e-5)

    split = SplitConfig()
    records = load_splits(ham_dir, split)["gan_train"][:16]
    watch = QualityWatch(features, records, split, out=tmp_path / "again", n=12)
    generator, _ = load_model(run / BEST_FILE, "generator")
    assert watch.score(generator).fd == pytest.approx(best.metrics["fd"], rel=1e-5)

    train_gan.main(train_gan.parse_args([*args, "--steps", "6", "--resume"]))
    rows = read_csv(run / "quality.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    fds = [float(r["fd"]) for r in rows]
    assert read_meta(run / BEST_FILE).metrics["fd"] == pytest.approx(min(fds), rel=1e-5)

    other = tmp_path / "other-split"
    with pytest.raises(FeatureSplitMismatch, match="--split-seed"):
        train_gan.main(
            train_gan.parse_args([*args, "--steps", "2", "--out", str(other), "--split-seed", "1"])
        )
    assert not (other / "state.pt").exists()  # refused before any training
