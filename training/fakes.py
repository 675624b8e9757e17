"""Build extra fake sources for a detector that must catch generators it never saw.

    python -m training.fakes --data data/ham10000-200x150 --out runs/fakes

Two families, both built from the ``gan_train`` lesions only (the detector's real images come
from the other splits, so no lesion is ever on both sides):

- ``zoo``: one small autoencoder per upsampling kind and depth (``models/upsamplers.py``),
  trained for seconds on random native-resolution crops (L1), then used to rebuild a seeded
  random subset of gan_train photos at their native size. The rebuilt image keeps the photo's
  content and gains the decoder's upsampling trace: what a detector should learn, without a GAN.
- ``dcgan``: a DCGAN (``models/dcgan.py``), a second GAN architecture next to the SNGAN, trained
  on the same images through the project's GAN preprocessing and sampled one seed per image.

Each source gets its own folder ``OUT/<name>/`` with its PNGs, ``manifest.csv``, ``source.json``
and the trained model's checkpoint; ``OUT/sources.json`` lists them and ``OUT/config.json`` holds
the resolved flags. Everything is seeded, and each source from its own name, so adding or
dropping a source changes no other. With step caps only (``--zoo-seconds 0 --dcgan-seconds 0``) a
rerun gives the same images on the same CPU and ``--threads``. With a time cap the number of
steps depends on the machine; ``source.json`` records it, so ``--zoo-steps``/``--dcgan-steps``
reproduce a run. Arithmetic is fp32 throughout.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import shutil
import sys
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from models.checkpoint import kind_of, save_model
from models.dcgan import SUPPORTED_SIZES, DCGANConfig, DCGANDiscriminator, DCGANGenerator
from models.preprocessing import (
    GAN_MEAN,
    GAN_STD,
    InvalidImageError,
    PreprocessConfig,
    encode,
    load_rgb,
    normalize,
    to_pil,
    to_uint8,
    to_uint8_tensor,
)
from models.runtime import resolve_device
from models.upsamplers import Autoencoder, UpsamplerConfig
from training.common import batch_indices, write_json
from training.data import (
    DEFAULT_FRACTIONS,
    SPLITS,
    DatasetError,
    Record,
    SplitConfig,
    load_splits,
    parse_fractions,
    preload,
    subsample,
)
from training.losses import get_loss
from training.progress import Progress
from training.synthesize import noise_for
from training.train_gan import random_flips

FAMILIES = ("zoo", "dcgan")
DEFAULT_ZOO = (
    "transposed-1",
    "transposed-2",
    "nearest_conv-2",
    "bilinear_conv-2",
    "pixel_shuffle-2",
    "transposed-3",
    "nearest_conv-3",
    "pixel_shuffle-1",
)
MANIFEST_FIELDS = ("file", "source", "family", "parent_image_id", "parent_lesion_id", "seed")
REBUILD_BATCH = 16  # images per autoencoder forward when rebuilding (fixed: part of the recipe)
SMOOTH = 10  # first/final loss = mean over this many steps


@dataclass
class FakesConfig:
    data: Path
    out: Path
    sources: tuple[str, ...] = FAMILIES
    zoo: tuple[str, ...] = DEFAULT_ZOO
    crop: int = 64
    # 16, not the module's 32: on a 2-core CPU a 45 s budget gives width 32 only 27-67 steps
    # (rebuilds at 10-30 dB PSNR), width 16 ~100-300 steps (28-36 dB); blurry rebuilds would
    # teach "blurry = fake" instead of the upsampling trace.
    zoo_width: int = 16
    zoo_steps: int = 0
    zoo_seconds: float = 45.0
    zoo_lr: float = 2e-3
    zoo_batch_size: int = 32
    dcgan_size: int = 64
    dcgan_steps: int = 0
    dcgan_seconds: float = 240.0
    dcgan_lr: float = 2e-4
    dcgan_batch_size: int = 64
    per_source: int = 600
    limit_images: int = 0
    seed: int = 0
    split_fractions: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    split_seed: int = 0
    device: str = "auto"
    threads: int = 0
    overwrite: bool = False
    quiet: bool = False


# ---------------------------------------------------------------------------------------------
# Command line


def _names(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def parse_zoo_variant(text: str) -> UpsamplerConfig:
    """``KIND-STAGES`` (e.g. ``nearest_conv-2``) -> the autoencoder's config (ValueError if bad)."""
    kind, sep, stages = text.rpartition("-")
    if not sep or not stages.isdigit():
        raise ValueError(f"zoo variant {text!r} is not KIND-STAGES, e.g. transposed-2")
    return UpsamplerConfig(kind=kind, stages=int(stages))


def parse_args(argv: Sequence[str] | None = None) -> FakesConfig:
    d = FakesConfig(data=Path(), out=Path())
    p = argparse.ArgumentParser(
        prog="python -m training.fakes",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", type=Path, required=True, help="HAM10000 folder (either layout)")
    p.add_argument("--out", type=Path, required=True, help="folder for every source's folder")
    p.add_argument(
        "--sources",
        type=_names,
        default=",".join(d.sources),
        help=f"comma-separated families to build, of {', '.join(FAMILIES)}",
    )
    p.add_argument(
        "--zoo",
        type=_names,
        default=",".join(d.zoo),
        help="comma-separated autoencoder variants KIND-STAGES (kinds: transposed, nearest_conv, "
        "bilinear_conv, pixel_shuffle; stages 1-3); empty = none",
    )
    p.add_argument("--crop", type=int, default=d.crop, help="zoo training crop side (native px)")
    p.add_argument("--zoo-width", type=int, default=d.zoo_width, help="autoencoder base width")
    p.add_argument(
        "--zoo-steps", type=int, default=d.zoo_steps, help="max steps per autoencoder (0 = no cap)"
    )
    p.add_argument(
        "--zoo-seconds",
        type=float,
        default=d.zoo_seconds,
        help="max training seconds per autoencoder (0 = no cap)",
    )
    p.add_argument("--zoo-lr", type=float, default=d.zoo_lr, help="autoencoder Adam learning rate")
    p.add_argument(
        "--zoo-batch-size", type=int, default=d.zoo_batch_size, help="crops per autoencoder step"
    )
    p.add_argument(
        "--dcgan-size",
        type=int,
        default=d.dcgan_size,
        choices=SUPPORTED_SIZES,
        help="DCGAN image side in px",
    )
    p.add_argument(
        "--dcgan-steps", type=int, default=d.dcgan_steps, help="max DCGAN steps (0 = no cap)"
    )
    p.add_argument(
        "--dcgan-seconds",
        type=float,
        default=d.dcgan_seconds,
        help="max DCGAN training seconds (0 = no cap)",
    )
    p.add_argument("--dcgan-lr", type=float, default=d.dcgan_lr, help="DCGAN Adam learning rate")
    p.add_argument(
        "--dcgan-batch-size", type=int, default=d.dcgan_batch_size, help="DCGAN images per step"
    )
    p.add_argument("--per-source", type=int, default=d.per_source, help="images written per source")
    p.add_argument(
        "--limit-images",
        type=int,
        default=d.limit_images,
        help="train on a seeded subset of N gan_train images (0 = all)",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="model init, data order, noise")
    p.add_argument(
        "--split-fractions",
        "--split",
        dest="split_fractions",
        type=parse_fractions,
        default=",".join(str(v) for v in DEFAULT_FRACTIONS.values()),
        help=f"lesion-level split fractions for {', '.join(SPLITS)} (as train_gan)",
    )
    p.add_argument("--split-seed", type=int, default=d.split_seed, help="seed of the split")
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=d.threads, help="CPU threads (0 = torch default)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace source folders that already exist"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or summaries")
    args = p.parse_args(argv)
    if isinstance(args.split_fractions, str):
        args.split_fractions = parse_fractions(args.split_fractions)
    if isinstance(args.sources, str):
        args.sources = _names(args.sources)
    if isinstance(args.zoo, str):
        args.zoo = _names(args.zoo)
    cfg = FakesConfig(**vars(args))
    try:
        validate(cfg)
    except ValueError as exc:
        p.error(str(exc))
    return cfg


def validate(config: FakesConfig) -> None:
    """Every mistake a flag can make, found before minutes of decoding and training."""
    unknown = set(config.sources) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown sources {sorted(unknown)}; choose from {FAMILIES}")
    for text in config.zoo:
        parse_zoo_variant(text)
    if len(set(config.zoo)) != len(config.zoo):
        raise ValueError(f"zoo variants repeat: {config.zoo}")
    positive = ("crop", "zoo_width", "zoo_batch_size", "dcgan_batch_size", "per_source")
    for name in positive:
        if getattr(config, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if "zoo" in config.sources and config.zoo and config.zoo_steps <= 0 and config.zoo_seconds <= 0:
        raise ValueError("give --zoo-steps and/or --zoo-seconds: the zoo needs a stopping rule")
    if "dcgan" in config.sources and config.dcgan_steps <= 0 and config.dcgan_seconds <= 0:
        raise ValueError(
            "give --dcgan-steps and/or --dcgan-seconds: the DCGAN needs a stopping rule"
        )
    if config.dcgan_size not in SUPPORTED_SIZES:
        raise ValueError(f"--dcgan-size must be one of {SUPPORTED_SIZES}")


# ---------------------------------------------------------------------------------------------
# Pieces


def source_seed(seed: int, name: str) -> int:
    """A seed per source from the run seed and the source's name, so adding or dropping one
    source leaves every other source's models and images unchanged."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % 2**62


@dataclass(frozen=True)
class Budget:
    """When training stops: after ``steps`` (0 = no cap) or ``seconds`` (0 = no cap)."""

    steps: int = 0
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.steps <= 0 and self.seconds <= 0:
            raise ValueError("a training budget needs a step cap, a time cap or both")

    def done(self, step: int, elapsed: float) -> bool:
        return (self.steps > 0 and step >= self.steps) or (
            self.seconds > 0 and elapsed >= self.seconds
        )

    def stopped_by(self, step: int) -> str:
        return "steps" if self.steps > 0 and step >= self.steps else "seconds"


@dataclass
class TrainResult:
    steps: int
    seconds: float
    stopped_by: str
    first: dict[str, float]
    final: dict[str, float]


def train_until(
    budget: Budget, step_fn: Callable[[int], dict[str, float]], desc: str, quiet: bool
) -> TrainResult:
    """Call ``step_fn(k)`` for k = 0, 1, ... until the budget is spent.

    The bar (``training.progress``, as every training loop's) measures what limits the run:
    seconds against the time cap when there is one, else steps against the step cap.
    """
    progress = Progress(budget.steps, 0, budget.seconds, quiet, desc)
    history: list[dict[str, float]] = []
    step = 0
    while not budget.done(step, progress.elapsed()):
        history.append(step_fn(step))
        step += 1
        progress.update(step, **{k: f"{v:.4f}" for k, v in history[-1].items()})
    progress.close()
    elapsed = progress.elapsed()
    return TrainResult(
        step, elapsed, budget.stopped_by(step), _mean(history[:SMOOTH]), _mean(history[-SMOOTH:])
    )


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    if not rows:
        return {}
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}


def load_native(records: Sequence[Record], *, quiet: bool) -> list[torch.Tensor]:
    """Decode every image at its native size, uint8 (3, H, W): no crop, no resize."""
    out = []
    for r in tqdm(records, desc="decoding (native)", unit="img", disable=quiet, leave=False):
        try:
            out.append(to_uint8_tensor(load_rgb(r.path)))
        except InvalidImageError as exc:
            raise DatasetError(f"unreadable image {r.path}: {exc}") from exc
    return out


def random_crops(
    images: Sequence[torch.Tensor], n: int, size: int, g: torch.Generator
) -> torch.Tensor:
    """``n`` random ``size`` x ``size`` crops (uint8) from randomly drawn images, native pixels."""
    crops = []
    for i in torch.randint(len(images), (n,), generator=g).tolist():
        img = images[i]
        h, w = img.shape[-2:]
        top = int(torch.randint(h - size + 1, (1,), generator=g))
        left = int(torch.randint(w - size + 1, (1,), generator=g))
        crops.append(img[:, top : top + size, left : left + size])
    return torch.stack(crops)


@torch.no_grad()
def rebuild(model: Autoencoder, images: torch.Tensor, pre: PreprocessConfig) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> the autoencoder's uint8 rebuild at the same size.

    The image is reflect-padded at the bottom/right to a multiple of ``2**stages`` and the result
    cropped back, so every rebuilt pixel is at the photo's native scale (no resizing).
    """
    h, w = images.shape[-2:]
    m = model.config.multiple
    device = next(model.parameters()).device
    x = normalize(images.to(device), pre)
    x = F.pad(x, (0, (-w) % m, 0, (-h) % m), mode="reflect")
    return to_uint8(model(x)[..., :h, :w])


def pick(n_total: int, n: int, seed: int) -> list[int]:
    """A seeded random subset of ``min(n, n_total)`` indices, in ascending order."""
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n_total, generator=g)[:n].tolist())


def _write_png(path: Path, image: torch.Tensor) -> None:
    path.write_bytes(encode(to_pil(image), "png"))


def _write_manifest(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=MANIFEST_FIELDS)
        w.writeheader()
        w.writerows({k: row.get(k, "") for k in MANIFEST_FIELDS} for row in rows)


def _prepare_folder(folder: Path, overwrite: bool) -> None:
    if folder.exists():
        if not overwrite:
            raise FileExistsError(f"{folder} already exists: pass --overwrite or another --out")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


# ---------------------------------------------------------------------------------------------
# Sources


def build_zoo_source(
    config: FakesConfig,
    variant: UpsamplerConfig,
    records: Sequence[Record],
    images: Sequence[torch.Tensor],
    device: torch.device,
    split: dict[str, Any],
) -> dict[str, Any]:
    """Train one autoencoder on random native crops, then rebuild ``--per-source`` photos."""
    variant = dataclasses.replace(variant, width=config.zoo_width)
    name = f"zoo-{variant.name}"
    folder = config.out / name
    seed = source_seed(config.seed, name)
    torch.manual_seed(seed)
    model = Autoencoder(variant).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=config.zoo_lr)
    pre = PreprocessConfig(image_size=config.crop, mean=GAN_MEAN, std=GAN_STD, crop="native")
    g = torch.Generator().manual_seed(seed + 1)

    def step(_: int) -> dict[str, float]:
        x = normalize(random_crops(images, config.zoo_batch_size, config.crop, g).to(device), pre)
        loss = F.l1_loss(model(x), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"l1": loss.item()}

    budget = Budget(config.zoo_steps, config.zoo_seconds)
    result = train_until(budget, step, name, config.quiet)
    model.eval()

    chosen = pick(len(records), config.per_source, seed + 2)
    by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i in chosen:
        by_shape[tuple(images[i].shape)].append(i)
    rows: list[dict[str, Any]] = []
    with tqdm(
        total=len(chosen), desc=f"{name} rebuild", unit="img", disable=config.quiet, leave=False
    ) as bar:
        for shape in sorted(by_shape):
            idx = by_shape[shape]
            for start in range(0, len(idx), REBUILD_BATCH):
                part = idx[start : start + REBUILD_BATCH]
                out = rebuild(model, torch.stack([images[i] for i in part]), pre)
                for i, image in zip(part, out, strict=True):
                    r = records[i]
                    _write_png(folder / f"{r.image_id}.png", image)
                    rows.append(
                        {
                            "file": f"{r.image_id}.png",
                            "parent_image_id": r.image_id,
                            "parent_lesion_id": r.lesion_id,
                        }
                    )
                bar.update(len(part))
    rows.sort(key=lambda row: row["file"])
    train = {
        "loss": "l1",
        "lr": config.zoo_lr,
        "batch_size": config.zoo_batch_size,
        "crop": config.crop,
        "budget": dataclasses.asdict(budget),
    }
    return _finish(config, folder, name, "zoo", model, pre, result, train, rows, split, seed)


def build_dcgan_source(
    config: FakesConfig, records: Sequence[Record], device: torch.device, split: dict[str, Any]
) -> dict[str, Any]:
    """Train the DCGAN (non-saturating loss, the paper's Adam), then one image per seed."""
    name = f"dcgan-{config.dcgan_size}"
    folder = config.out / name
    seed = source_seed(config.seed, name)
    pre = PreprocessConfig(image_size=config.dcgan_size, mean=GAN_MEAN, std=GAN_STD)
    data = preload([r.path for r in records], pre, desc="decoding (DCGAN)", quiet=config.quiet)
    torch.manual_seed(seed)
    model_config = DCGANConfig(image_size=config.dcgan_size)
    G = DCGANGenerator(model_config).to(device).train()
    D = DCGANDiscriminator(model_config).to(device).train()
    betas = (0.5, 0.999)
    opt_g = torch.optim.Adam(G.parameters(), lr=config.dcgan_lr, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=config.dcgan_lr, betas=betas)
    loss = get_loss("ns")
    g = torch.Generator().manual_seed(seed + 1)
    bs = config.dcgan_batch_size

    def step(k: int) -> dict[str, float]:
        real = normalize(data[batch_indices(k, data.shape[0], bs, seed + 2)], pre)
        real = random_flips(real, g).to(device)
        z = torch.randn(bs, model_config.z_dim, generator=g).to(device)
        fake = G(z)
        # D on real and fake as separate batches (its BatchNorm sees one kind at a time).
        s_real, s_fake = D(real), D(fake.detach())
        d_loss = loss.discriminator(s_real, s_fake)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        D.requires_grad_(False)
        try:
            g_loss = loss.generator(D(fake))
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
        finally:
            D.requires_grad_(True)
        return {
            "d_loss": d_loss.item(),
            "g_loss": g_loss.item(),
            "d_real": s_real.mean().item(),
            "d_fake": s_fake.mean().item(),
        }

    budget = Budget(config.dcgan_steps, config.dcgan_seconds)
    result = train_until(budget, step, name, config.quiet)
    G.eval()  # BatchNorm on running statistics: an image depends on its seed alone

    rows: list[dict[str, Any]] = []
    with (
        torch.no_grad(),
        tqdm(
            total=config.per_source,
            desc=f"{name} sample",
            unit="img",
            disable=config.quiet,
            leave=False,
        ) as bar,
    ):
        for start in range(0, config.per_source, 64):
            idx = range(start, min(start + 64, config.per_source))
            images = to_uint8(G(noise_for(idx, config.seed, model_config.z_dim).to(device)))
            for i, image in zip(idx, images, strict=True):
                _write_png(folder / f"{i:06d}.png", image)
                rows.append({"file": f"{i:06d}.png", "seed": config.seed + i})
            bar.update(len(idx))
    train = {
        "loss": "ns",
        "lr": config.dcgan_lr,
        "betas": list(betas),
        "batch_size": bs,
        "budget": dataclasses.asdict(budget),
        "flips": True,
    }
    return _finish(config, folder, name, "gan", G, pre, result, train, rows, split, seed)


def _finish(
    config: FakesConfig,
    folder: Path,
    name: str,
    family: str,
    model: nn.Module,
    pre: PreprocessConfig,
    result: TrainResult,
    train: dict[str, Any],
    rows: list[dict[str, Any]],
    split: dict[str, Any],
    seed: int,
) -> dict[str, Any]:
    """Manifest, checkpoint and ``source.json`` of one source; returns its sources.json entry."""
    for row in rows:
        row.update(source=name, family=family)
    _write_manifest(folder / "manifest.csv", rows)
    kind = kind_of(model)
    checkpoint = f"{kind}.safetensors"
    train = {
        **train,
        "steps": result.steps,
        "seconds": round(result.seconds, 2),
        "stopped_by": result.stopped_by,
        "first_loss": result.first,
        "final_loss": result.final,
    }
    save_model(
        folder / checkpoint,
        model,
        pre,
        step=result.steps,
        metrics=result.final,
        extra={"source": name, "family": family, "train": train},
    )
    info = {
        "name": name,
        "family": family,
        "kind": kind,
        "model": dataclasses.asdict(model.config),
        "preprocessing": dataclasses.asdict(pre),
        "checkpoint": checkpoint,
        "train": train,
        "images": len(rows),
        "seed": seed,
        "split": split,
    }
    write_json(folder / "source.json", info)
    if not config.quiet:
        losses = ", ".join(f"{k} {v:.4f}" for k, v in result.final.items())
        print(
            f"{name}: {result.steps} steps in {result.seconds:.0f} s ({losses}), "
            f"{len(rows)} images in {folder}",
            file=sys.stderr,
        )
    return {k: info[k] for k in ("name", "family", "kind", "checkpoint", "images")} | {
        "folder": name
    }


# ---------------------------------------------------------------------------------------------
# Main


def main(config: FakesConfig) -> Path:
    """Build every requested source; returns the path of ``OUT/sources.json``."""
    validate(config)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    variants = [parse_zoo_variant(v) for v in config.zoo] if "zoo" in config.sources else []
    names = [f"zoo-{v.name}" for v in variants]
    if "dcgan" in config.sources:
        names.append(f"dcgan-{config.dcgan_size}")
    if not names:
        raise ValueError("nothing to build: --sources and --zoo select no source")
    for name in names:  # refuse before any training, not after the first source
        if (config.out / name).exists() and not config.overwrite:
            raise FileExistsError(
                f"{config.out / name} already exists: pass --overwrite or another --out"
            )

    splits = load_splits(config.data, SplitConfig(config.split_fractions, config.split_seed))
    records = splits["gan_train"]
    records = subsample(records, config.limit_images, config.seed)  # seeded: all diagnoses
    split = {
        "name": "gan_train",
        "fractions": config.split_fractions,
        "seed": config.split_seed,
        "images": len(records),
        "limit_images": config.limit_images,
    }
    config.out.mkdir(parents=True, exist_ok=True)
    write_json(config.out / "config.json", {**dataclasses.asdict(config), "device": str(device)})

    built: list[dict[str, Any]] = []
    if variants:
        images = load_native(records, quiet=config.quiet)
        smallest = min(min(img.shape[-2:]) for img in images)
        if config.crop > smallest:
            raise ValueError(f"--crop {config.crop} exceeds the smallest image side {smallest}")
        for variant in variants:
            _prepare_folder(config.out / f"zoo-{variant.name}", config.overwrite)
            built.append(build_zoo_source(config, variant, records, images, device, split))
        del images
    if "dcgan" in config.sources:
        _prepare_folder(config.out / f"dcgan-{config.dcgan_size}", config.overwrite)
        built.append(build_dcgan_source(config, records, device, split))
    return write_json(config.out / "sources.json", {"sources": built, "split": split})


def cli(argv: Sequence[str] | None = None) -> None:
    main(parse_args(argv))


if __name__ == "__main__":
    cli()
