"""How close generated lesions are to real ones, in a feature space made for dermoscopy.

    python -m training.gan_metrics --features runs/features/lesion_features.safetensors \\
        --data data/ham10000-200x150 --generator runs/gan/generator.safetensors \\
        --n 2000 --seed 0 --out runs/gan/metrics.json

Scores, each between N generated images and a set of real ones, in the embedding of
``models.lesion_features`` (trained by ``training.train_features``):

- **FD**, the Fréchet distance between Gaussians fitted to the two sets (FID's formula, in this
  space): ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)``, in float64 through
  symmetric eigendecompositions (stable and real, unlike a general ``sqrtm`` of ``S1 S2``).
  Biased upwards for small sets: compare figures at equal sizes.
- **KID** (Bińkowski et al. 2018): the unbiased MMD^2 with the kernel ``(x.y/d + 1)^3``, mean and
  standard deviation over random subsets; ~0 (either sign) for one distribution.
- **Precision / recall** (Kynkäänniemi et al. 2019): the share of generated images inside the
  real manifold (the union of balls around each real image reaching its k-th nearest real
  neighbour), and the share of real images inside the generated manifold. Precision is fidelity,
  recall is diversity (mode collapse shows as low recall).

Real references: the ``gan_train`` lesions the GAN learnt from, and the held-out
``detector_val`` lesions it never saw (only read here); and, as the floor any generator is
measured against, held-out real vs ``gan_train`` real. The lesion split is the feature model's
own (saved in its checkpoint), and must be the generator's.

Pixels: every image, real or generated, decoded file or tensor, reaches the network through
``models.preprocessing.model_pixels`` (centre square crop, antialiased resize to the feature
model's size) and ``normalize``: :meth:`FeatureSpace.load` for files (decoded as everywhere in
the project: a large JPEG may be reduced in the DCT domain, never below twice the model size),
:meth:`FeatureSpace.pixels` for tensors. A generator's output is first rounded to uint8, as its
PNGs are, so ``--generator G --seed S`` scores exactly what ``training.synthesize --seed S``
writes.

For a training loop, every K steps::

    space = FeatureSpace.from_checkpoint(path, device)             # once
    reference = RealReference.from_files(space, real_paths)        # once: mean, cov, radii
    z = seed_noise(range(n), z_dim)                                # once: fixed noise
    scores = reference.score(generate(G_ema, z))                   # GanScores

``--inception PATH`` adds the standard FID/KID (torch-fidelity, the optional extra ``fid``) from
a local Inception file: the numbers papers print, with nothing downloaded here.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from models.checkpoint import CheckpointError, CheckpointMeta, load_model
from models.noise import seed_noise
from models.preprocessing import (
    PreprocessConfig,
    load_rgb,
    model_pixels,
    normalize,
    to_pil,
    to_uint8,
)
from models.runtime import resolve_device
from training.common import write_json
from training.data import Record, SplitConfig, list_images, load_splits, preload, subsample
from training.detector_data import split_of

FEATURES_KIND = "lesion_features"
# Real references: report name -> project split. The GAN learnt from gan_train; detector_val is
# held out from it (and from the feature model).
REFERENCES = {"gan_train": "gan_train", "held_out": "detector_val"}
FID_EXTRA = "fid"
# The real subsets (--n-real) and KID's random subsets: fixed, so that reports for different
# generators or noise seeds compare against the same real images.
SUBSET_SEED = 0
INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
    "weights-inception-2015-12-05-6726825d.pth"
)
INCEPTION_SHA256_PREFIX = "6726825d"  # torch hub's convention: the name carries the hash prefix


class InceptionError(RuntimeError):
    """The standard FID cannot run: no weights file, an unsafe one, or no torch-fidelity."""


# ---------------------------------------------------------------------------------------------
# The metrics, on feature arrays (float64)


@dataclass(frozen=True)
class GanScores:
    fd: float
    kid: float
    kid_std: float
    precision: float
    recall: float
    n_real: int
    n_generated: int

    def to_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of (N, D) features, float64."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need (N >= 2, D) features, got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix (negative
    eigenvalues from rounding are clipped to 0)."""
    w, v = np.linalg.eigh((matrix + matrix.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    sqrt_sigma1: np.ndarray | None = None,
) -> float:
    """``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2)``.

    ``S1^1/2 S2 S1^1/2`` is symmetric PSD and has the eigenvalues of ``S1 S2``, so the trace of
    the root is a sum of square roots of real eigenvalues: no complex parts to discard.
    ``sqrt_sigma1`` may be passed when it is cached (the real side of a reference)."""
    root1 = sqrtm_psd(sigma1) if sqrt_sigma1 is None else sqrt_sigma1
    middle = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_root = float(np.sqrt(np.clip(eig, 0, None)).sum())
    diff = np.asarray(mu1, dtype=np.float64) - np.asarray(mu2, dtype=np.float64)
    fd = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_root)
    return max(fd, 0.0)  # >= 0 in exact arithmetic; rounding can leave -1e-12


def _polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a @ b.T / a.shape[1] + 1) ** 3


def _within(a: np.ndarray) -> float:
    """Mean kernel value over distinct pairs of rows (the unbiased within-set term)."""
    k, m = _polynomial_kernel(a, a), a.shape[0]
    return float((k.sum() - np.trace(k)) / (m * (m - 1)))


KidCache = dict[int, tuple[list[np.ndarray], np.ndarray]]


def kernel_distance(
    x: np.ndarray,
    y: np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
    cache: KidCache | None = None,
) -> tuple[float, float]:
    """KID: mean and std over ``subsets`` of the unbiased MMD^2 between random subsets of
    ``m = min(subset_size, len(x), len(y))`` rows of each, kernel ``(a.b / d + 1)^3``.

    ``x``'s subsets and their within-set terms depend only on ``x``, ``m`` and the seed: pass
    one ``cache`` dict with the same ``x`` and seed to compute them once (a third of the cost).
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise ValueError(f"KID needs at least 2 images per side, got {len(x)} and {len(y)}")
    cache = {} if cache is None else cache
    if m not in cache or len(cache[m][0]) != subsets:
        rng_x = np.random.default_rng([seed, 0])
        chosen = [rng_x.choice(len(x), m, replace=False) for _ in range(subsets)]
        cache[m] = chosen, np.array([_within(x[i]) for i in chosen])
    chosen, within_x = cache[m]
    rng_y = np.random.default_rng([seed, 1])
    values = np.empty(subsets)
    for i, idx in enumerate(chosen):
        b = y[rng_y.choice(len(y), m, replace=False)]
        values[i] = within_x[i] + _within(b) - 2 * _polynomial_kernel(x[idx], b).mean()
    return float(values.mean()), float(values.std())


def _squared_distances(a: np.ndarray, b: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] + b_sq[None, :] - 2 * a @ b.T, 0.0)


def knn_radii(features: np.ndarray, k: int = 3, chunk: int = 1024) -> np.ndarray:
    """Distance from each row to its k-th nearest other row (itself excluded)."""
    x = np.asarray(features, dtype=np.float64)
    if not 1 <= k < len(x):
        raise ValueError(f"k must be in [1, {len(x) - 1}] for {len(x)} points, got {k}")
    x_sq = (x * x).sum(1)
    out = np.empty(len(x))
    for start in range(0, len(x), chunk):
        d2 = _squared_distances(x[start : start + chunk], x, x_sq)
        out[start : start + chunk] = np.partition(d2, k, axis=1)[:, k]  # [:, 0] is itself
    return np.sqrt(out)


def coverage(
    points: np.ndarray, centres: np.ndarray, radii: np.ndarray, chunk: int = 1024
) -> float:
    """Share of ``points`` inside at least one ball (``centres``, ``radii``)."""
    p, c = np.asarray(points, dtype=np.float64), np.asarray(centres, dtype=np.float64)
    c_sq, r2 = (c * c).sum(1), np.asarray(radii, dtype=np.float64) ** 2
    inside = [
        (_squared_distances(p[s : s + chunk], c, c_sq) <= r2[None, :]).any(axis=1)
        for s in range(0, len(p), chunk)
    ]
    return float(np.concatenate(inside).mean())


def precision_recall(
    real: np.ndarray, generated: np.ndarray, k: int = 3, real_radii: np.ndarray | None = None
) -> tuple[float, float]:
    """Kynkäänniemi et al. 2019: (generated inside the real k-NN manifold, real inside the
    generated one). ``real_radii`` may be passed when cached."""
    radii = knn_radii(real, k) if real_radii is None else real_radii
    precision = coverage(generated, real, radii)
    recall = coverage(real, generated, knn_radii(generated, k))
    return precision, recall


# ---------------------------------------------------------------------------------------------
# The feature space and a cached real reference


class FeatureSpace:
    """The feature model, its preprocessing and where it runs: images -> (N, D) float64."""

    def __init__(
        self,
        model: nn.Module,
        preprocessing: PreprocessConfig,
        *,
        device: str | torch.device = "cpu",
        batch_size: int = 256,
        meta: CheckpointMeta | None = None,
    ) -> None:
        if not hasattr(model, "features"):
            raise TypeError(f"{type(model).__name__} has no features() method")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.preprocessing = preprocessing
        self.batch_size = batch_size
        self.meta = meta

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str | torch.device = "cpu", batch_size: int = 256
    ) -> FeatureSpace:
        model, meta = load_model(path, FEATURES_KIND)
        return cls(model, meta.preprocess_config, device=device, batch_size=batch_size, meta=meta)

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """Decoded images (N, 3, H, W), uint8 or generator output in [-1, 1] -> uint8
        (N, 3, S, S) through ``model_pixels``, the step :meth:`load` applies to decoded files."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (N, 3, H, W), got shape {tuple(images.shape)}")
        images = images.cpu() if images.dtype == torch.uint8 else to_uint8(images)
        size = self.preprocessing.image_size
        out = torch.empty((images.shape[0], 3, size, size), dtype=torch.uint8)
        for i, image in enumerate(images):
            out[i] = model_pixels(to_pil(image), self.preprocessing)
        return out

    def load(self, paths: Sequence[Path], quiet: bool = True) -> torch.Tensor:
        """Image files -> uint8 (N, 3, S, S): decoded, then ``model_pixels``."""
        return preload(paths, self.preprocessing, desc="decoding", quiet=quiet)

    def embed(self, images: torch.Tensor) -> np.ndarray:
        """Images (as :meth:`pixels` takes them) -> embeddings (N, D), float64."""
        return self.forward(self.pixels(images))

    def embed_files(self, paths: Sequence[Path], quiet: bool = True) -> np.ndarray:
        return self.forward(self.load(paths, quiet))

    @torch.inference_mode()
    def forward(self, pixels: torch.Tensor) -> np.ndarray:
        """uint8 (N, 3, S, S) from :meth:`pixels` or :meth:`load` -> embeddings, float64."""
        parts = []
        for i in range(0, pixels.shape[0], self.batch_size):
            x = normalize(pixels[i : i + self.batch_size].to(self.device), self.preprocessing)
            parts.append(self.model.features(x).float().cpu())
        return torch.cat(parts).double().numpy()


class RealReference:
    """Real images' features and what every score needs of them, computed once: mean,
    covariance and its square root, k-NN radii. ``score`` then costs one pass of the generated
    images through the feature model plus their own statistics."""

    def __init__(
        self,
        space: FeatureSpace,
        features: np.ndarray,
        *,
        k: int = 3,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        seed: int = 0,
    ) -> None:
        self.space = space
        self.features = np.asarray(features, dtype=np.float64)
        self.k = k
        self.kid_subsets, self.kid_subset_size, self.seed = kid_subsets, kid_subset_size, seed
        self.mu, self.sigma = gaussian_stats(self.features)
        self.sqrt_sigma = sqrtm_psd(self.sigma)
        self.radii = knn_radii(self.features, k)
        self.kid_cache: KidCache = {}  # this set's KID subsets and within-set terms

    @classmethod
    def from_images(cls, space: FeatureSpace, images: torch.Tensor, **kwargs: Any) -> RealReference:
        return cls(space, space.embed(images), **kwargs)

    @classmethod
    def from_files(
        cls, space: FeatureSpace, paths: Sequence[Path], quiet: bool = True, **kwargs: Any
    ) -> RealReference:
        return cls(space, space.embed_files(paths, quiet), **kwargs)

    def __len__(self) -> int:
        return len(self.features)

    def score(self, images: torch.Tensor) -> GanScores:
        """Generated images (uint8, or float in [-1, 1]; any size) against this reference."""
        return self.score_features(self.space.embed(images))

    def score_features(self, features: np.ndarray) -> GanScores:
        mu, sigma = gaussian_stats(features)
        kid, kid_std = kernel_distance(
            self.features,
            features,
            self.kid_subsets,
            self.kid_subset_size,
            self.seed,
            self.kid_cache,
        )
        precision, recall = precision_recall(self.features, features, self.k, self.radii)
        return GanScores(
            fd=frechet_distance(self.mu, self.sigma, mu, sigma, self.sqrt_sigma),
            kid=kid,
            kid_std=kid_std,
            precision=precision,
            recall=recall,
            n_real=len(self.features),
            n_generated=len(features),
        )


@torch.no_grad()
def generate(generator: nn.Module, z: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """uint8 (N, 3, S, S) on the CPU from noise ``z``, in eval mode (BatchNorm on its running
    statistics, as ``training.synthesize`` and the service); the module's mode is restored."""
    was_training = generator.training
    device = next(generator.parameters()).device
    generator.eval()
    try:
        return torch.cat(
            [
                to_uint8(generator(z[i : i + batch_size].to(device)))
                for i in range(0, z.shape[0], batch_size)
            ]
        )
    finally:
        generator.train(was_training)


# ---------------------------------------------------------------------------------------------
# The standard FID / KID (Inception, torch-fidelity), optional


def check_inception_weights(path: Path) -> str:
    """SHA-256 of a local Inception weights file that loads as plain tensors; a clear error
    otherwise. (torch-fidelity unpickles the file fully; this check refuses anything that is not
    a plain state dict before it gets there.)"""
    if not path.is_file():
        raise InceptionError(
            f"Inception weights not found at {path}. Nothing is downloaded here: fetch "
            f"{INCEPTION_URL} on a machine with internet and pass its path to --inception."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors have many types
        raise InceptionError(f"{path} is not a plain tensor state dict ({exc})") from exc
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise InceptionError(f"{path} is not a state dict of tensors")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _torch_fidelity() -> Any:
    try:
        import torch_fidelity
    except ImportError as exc:
        raise InceptionError(
            f"--inception needs torch-fidelity, which is not installed: "
            f"pip install 'dermafake[{FID_EXTRA}]' (or pip install torch-fidelity)"
        ) from exc
    return torch_fidelity


class _Uint8Images(Dataset):
    """uint8 (3, H, W) images, as torch-fidelity takes a dataset."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def inception_scores(
    real: torch.Tensor,
    generated: torch.Tensor,
    weights: Path,
    device: torch.device,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
) -> dict[str, Any]:
    """Standard FID and KID (torch-fidelity's TF-compatible Inception) of uint8 image sets."""
    digest = check_inception_weights(weights)
    fidelity = _torch_fidelity()
    result = fidelity.calculate_metrics(
        input1=_Uint8Images(generated),
        input2=_Uint8Images(real),
        fid=True,
        kid=True,
        kid_subsets=kid_subsets,
        kid_subset_size=min(kid_subset_size, len(real), len(generated)),
        feature_extractor_weights_path=str(weights),
        cuda=device.type == "cuda",
        cache=False,
        save_cpu_ram=True,  # no DataLoader worker processes: the images are already in memory
        verbose=False,
    )
    return {
        "fid": float(result["frechet_inception_distance"]),
        "kid": float(result["kernel_inception_distance_mean"]),
        "kid_std": float(result["kernel_inception_distance_std"]),
        "weights_sha256": digest,
        "standard_weights": digest.startswith(INCEPTION_SHA256_PREFIX),
    }


# ---------------------------------------------------------------------------------------------
# The program


@dataclass
class GanMetricsConfig:
    features: Path
    data: Path
    out: Path
    generator: Path | None = None
    images: Path | None = None
    n: int = 2000
    seed: int = 0
    k: int = 3
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    n_real: int = 0
    batch_size: int = 256
    device: str = "auto"
    threads: int = 0
    inception: Path | None = None
    quiet: bool = False


def build_parser() -> argparse.ArgumentParser:
    d = GanMetricsConfig(features=Path(), data=Path(), out=Path())
    p = argparse.ArgumentParser(
        prog="python -m training.gan_metrics",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    a = p.add_argument
    a("--features", type=Path, required=True, help="lesion_features.safetensors")
    a("--data", type=Path, required=True, help="HAM10000 folder (either layout)")
    a("--out", type=Path, required=True, help="the JSON report to write")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--generator", type=Path, help="generator.safetensors to sample from")
    source.add_argument("--images", type=Path, help="a folder of generated images instead")
    a("--n", type=int, default=d.n, help="images to generate (--generator)")
    a("--seed", type=int, default=d.seed, help="image i from noise seed + i (as synthesize)")
    a("--k", type=int, default=d.k, help="nearest neighbour of precision/recall's radii")
    a("--kid-subsets", type=int, default=d.kid_subsets, help="random subsets KID averages")
    a("--kid-subset-size", type=int, default=d.kid_subset_size, help="images per KID subset")
    a(
        "--n-real",
        type=int,
        default=d.n_real,
        help="at most N images per real reference, a fixed seeded subset (0 = all)",
    )
    a("--batch-size", type=int, default=d.batch_size, help="images per forward")
    a("--device", default=d.device, help="auto, cpu or cuda")
    a("--threads", type=int, default=d.threads, help="CPU threads (0 = torch default)")
    a(
        "--inception",
        type=Path,
        default=None,
        help="a local Inception file (torch-fidelity's weights-inception-2015-12-05-6726825d.pth)"
        f": adds the standard FID/KID; needs the '{FID_EXTRA}' extra",
    )
    a("--quiet", action="store_true", help="no progress bars")
    return p


def parse_args(argv: list[str] | None = None) -> GanMetricsConfig:
    p = build_parser()
    cfg = GanMetricsConfig(**vars(p.parse_args(argv)))
    if cfg.n < 2 or cfg.k < 1 or cfg.kid_subsets < 1 or cfg.kid_subset_size < 2:
        p.error("--n and --kid-subset-size must be >= 2, --k and --kid-subsets >= 1")
    return cfg


def check_same_split(generator: Path, split: SplitConfig) -> None:
    """The generator's run config (``config.json`` beside it, when there) must name the feature
    model's lesion split, or ``gan_train`` and the held-out lesions mean different images."""
    config_path = generator.parent / "config.json"
    if not config_path.is_file():
        return
    run = json.loads(config_path.read_text())
    if "split_fractions" not in run:
        return
    theirs = SplitConfig(run["split_fractions"], run["split_seed"])
    if not theirs.same_as(split):
        raise ValueError(
            f"{generator} was trained on split {theirs.fractions} (seed {theirs.seed}) but the "
            f"feature model on {split.fractions} (seed {split.seed}): "
            "train the feature model with the generator's --split and --split-seed"
        )


def _generated(
    config: GanMetricsConfig, space: FeatureSpace, device: torch.device
) -> tuple[np.ndarray, dict[str, Any]]:
    """The generated images' features, and where the images came from."""
    if config.generator is not None:
        G, meta = load_model(config.generator, "generator", map_location=str(device))
        z = seed_noise(range(config.seed, config.seed + config.n), G.config.z_dim)
        images = generate(G, z, config.batch_size)
        info = {"generator": config.generator, "step": meta.step, "sha256": meta.weights_sha256}
        return space.embed(images), {**info, "n": config.n, "seed": config.seed}
    assert config.images is not None
    paths = list_images(config.images)
    return space.embed_files(paths, config.quiet), {"images": config.images, "n": len(paths)}


def main(config: GanMetricsConfig) -> dict[str, Any]:
    """Score; writes and returns the report."""
    if config.inception is not None:  # fail before minutes of work, not after
        check_inception_weights(config.inception)
        _torch_fidelity()
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    t0 = time.perf_counter()
    space = FeatureSpace.from_checkpoint(config.features, device, config.batch_size)
    assert space.meta is not None
    split, _ = split_of(space.meta)
    if config.generator is not None:
        check_same_split(config.generator, split)
    gen_features, source = _generated(config, space, device)

    splits = load_splits(config.data, split)
    opts = dict(
        k=config.k,
        kid_subsets=config.kid_subsets,
        kid_subset_size=config.kid_subset_size,
        seed=SUBSET_SEED,
    )
    references = {
        name: RealReference.from_files(
            space, real_paths(splits, name, config), config.quiet, **opts
        )
        for name in REFERENCES
    }
    scores = {name: ref.score_features(gen_features) for name, ref in references.items()}
    floor = references["gan_train"].score_features(references["held_out"].features)

    report: dict[str, Any] = {
        "features": {
            "checkpoint": config.features,
            "sha256": space.meta.weights_sha256,
            "image_size": space.preprocessing.image_size,
            "val_balanced_accuracy": space.meta.metrics.get("val_balanced_accuracy"),
        },
        "generated": source,
        "split": {"fractions": split.fractions, "seed": split.seed},
        "settings": {
            "k": config.k,
            "kid_subsets": config.kid_subsets,
            "kid_subset_size": config.kid_subset_size,
            "n_real": config.n_real,
        },
        "scores": {name: s.to_dict() for name, s in scores.items()},
        "real_vs_real": {"held_out_vs_gan_train": floor.to_dict()},
    }
    if config.inception is not None:
        report["inception"] = _inception_report(config, splits, device)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(config.out, report)
    print(format_table(report))
    return report


def real_paths(
    splits: dict[str, list[Record]], reference: str, config: GanMetricsConfig
) -> list[Path]:
    """The images of a real reference (:data:`REFERENCES`), a seeded subset with ``--n-real``."""
    records = splits[REFERENCES[reference]]
    return [r.path for r in subsample(records, config.n_real, SUBSET_SEED)]


def _inception_report(
    config: GanMetricsConfig, splits: dict[str, list[Record]], device: torch.device
) -> dict[str, Any]:
    """Standard FID/KID of the generated images at their own size, against real photos brought
    to that size by the same path (centre square crop, antialiased resize)."""
    assert config.inception is not None
    if config.generator is not None:
        G, _ = load_model(config.generator, "generator", map_location=str(device))
        z = seed_noise(range(config.seed, config.seed + config.n), G.config.z_dim)
        generated = generate(G, z, config.batch_size)
    else:
        assert config.images is not None
        paths = list_images(config.images)
        side = min(load_rgb(paths[0]).size)
        generated = preload(paths, PreprocessConfig(image_size=side), quiet=config.quiet)
    pre = PreprocessConfig(image_size=generated.shape[-1])
    out = {}
    for name in REFERENCES:
        real = preload(real_paths(splits, name, config), pre, desc=name, quiet=config.quiet)
        out[name] = inception_scores(
            real, generated, config.inception, device, config.kid_subsets, config.kid_subset_size
        )
    return out


def format_table(report: dict[str, Any]) -> str:
    rows = [(f"generated vs {name}", s) for name, s in report["scores"].items()]
    rows += [("real: held_out vs gan_train", report["real_vs_real"]["held_out_vs_gan_train"])]
    lines = [
        f"{'':30} {'n_real':>6} {'n_gen':>6} {'FD':>9} {'KID':>18} {'precision':>9} {'recall':>7}"
    ]
    for label, s in rows:
        kid = f"{s['kid']:.4f} ± {s['kid_std']:.4f}"
        lines.append(
            f"{label:30} {s['n_real']:>6} {s['n_generated']:>6} {s['fd']:>9.3f} {kid:>18} "
            f"{s['precision']:>9.3f} {s['recall']:>7.3f}"
        )
    for name, s in report.get("inception", {}).items():
        lines.append(f"Inception vs {name}: FID {s['fid']:.2f}, KID {s['kid']:.4f}")
    return "\n".join(lines)


def cli(argv: list[str] | None = None) -> None:
    try:
        main(parse_args(argv))
    except (InceptionError, CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


if __name__ == "__main__":
    cli()
