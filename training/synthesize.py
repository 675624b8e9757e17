"""Write N synthetic lesions from a trained generator, reproducibly.

    python -m training.synthesize --checkpoint runs/gan/generator.safetensors --n 10000 \\
        --out runs/synthetic --seed 0

Image ``i`` is drawn from its own noise, ``z_i = randn(z_dim)`` seeded with ``seed + i`` (wrapping
past 2**32 - 1 to 0, as ``/generate`` does, so the service gives the same image for that seed),
and the generator runs in eval mode (BatchNorm on its running statistics), so every image depends
only on (checkpoint, seed + i): not on the batch size, the device's batch order or how many
images are asked for. Writes ``NNNNNN.png`` files at the generator's size, ``manifest.csv``
(file, seed) and ``config.json``.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from models.checkpoint import load_model
from models.noise import seed_noise, series_seeds
from models.preprocessing import images_to_bytes
from models.runtime import PRECISIONS, autocast, resolve_device, resolve_dtype
from training.common import write_json

SUFFIX = {"png": ".png", "jpeg": ".jpg"}


@dataclass
class SynthesizeConfig:
    checkpoint: Path
    out: Path
    n: int = 10_000
    seed: int = 0
    batch_size: int = 64
    format: str = "png"
    quality: int = 95
    device: str = "auto"
    precision: str = "fp32"
    threads: int = 0
    overwrite: bool = False
    quiet: bool = False


def parse_args(argv: list[str] | None = None) -> SynthesizeConfig:
    d = SynthesizeConfig(checkpoint=Path(), out=Path())
    p = argparse.ArgumentParser(
        prog="python -m training.synthesize",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--checkpoint", type=Path, required=True, help="generator.safetensors")
    p.add_argument("--out", type=Path, required=True, help="folder for the images + manifest")
    p.add_argument("--n", type=int, default=d.n, help="number of images")
    p.add_argument("--seed", type=int, default=d.seed, help="image i uses noise seed + i")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per forward")
    p.add_argument("--format", default=d.format, choices=sorted(SUFFIX), help="file format")
    p.add_argument("--quality", type=int, default=d.quality, help="JPEG quality (jpeg only)")
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda")
    p.add_argument(
        "--precision",
        default=d.precision,
        choices=PRECISIONS,
        help="autocast dtype; fp32 keeps outputs bit-identical across machines of one kind",
    )
    p.add_argument("--threads", type=int, default=d.threads, help="CPU threads (0 = default)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace images already in --out (else refuse)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    cfg = SynthesizeConfig(**vars(p.parse_args(argv)))
    if cfg.n < 1 or cfg.batch_size < 1:
        p.error("--n and --batch-size must be >= 1")
    return cfg


def noise_for(indices: range, seed: int, z_dim: int) -> torch.Tensor:
    """(len(indices), z_dim) standard normal noise; row i drawn from its own seed ``seed + i``
    (wrapped past 2**32 - 1 to 0), exactly as the service's ``/generate`` draws it."""
    return seed_noise(series_seeds(seed, indices), z_dim)


def _prepare_out(config: SynthesizeConfig) -> None:
    out = config.out
    existing = [p for p in out.iterdir() if p.suffix in (".png", ".jpg")] if out.is_dir() else []
    if existing and not config.overwrite:
        raise FileExistsError(
            f"{out} already holds {len(existing)} images: pass --overwrite or choose another --out"
        )
    for p in existing:
        p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def main(config: SynthesizeConfig) -> Path:
    """Write the images; returns the manifest path."""
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.precision, device)
    G, meta = load_model(config.checkpoint, "generator", map_location=str(device))
    z_dim = G.config.z_dim
    _prepare_out(config)
    write_json(
        config.out / "config.json",
        {
            **vars(config),
            "generator_step": meta.step,
            "generator_sha256": meta.weights_sha256,
            "image_size": G.config.image_size,
        },
    )
    rows: list[tuple[str, int]] = []
    suffix = SUFFIX[config.format]
    t0 = time.perf_counter()
    with tqdm(total=config.n, desc="synthesizing", unit="img", disable=config.quiet) as bar:
        for start in range(0, config.n, config.batch_size):
            idx = range(start, min(start + config.batch_size, config.n))
            z = noise_for(idx, config.seed, z_dim).to(device)
            with torch.no_grad(), autocast(device, dtype):
                images = G(z)
            blobs = images_to_bytes(images, config.format, config.quality)
            seeds = series_seeds(config.seed, idx)  # as noise_for drew them
            for i, seed, blob in zip(idx, seeds, blobs, strict=True):
                name = f"{i:06d}{suffix}"
                (config.out / name).write_bytes(blob)
                rows.append((name, seed))
            bar.update(len(idx))
    elapsed = time.perf_counter() - t0
    manifest = config.out / "manifest.csv"
    with manifest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "seed"])
        w.writerows(rows)
    print(
        f"wrote {config.n} {G.config.image_size}px images to {config.out} in {elapsed:.1f} s "
        f"({config.n / max(elapsed, 1e-9):.1f} images/s, generator step {meta.step})",
        file=sys.stderr,
    )
    return manifest


def cli(argv: list[str] | None = None) -> None:
    main(parse_args(argv))


if __name__ == "__main__":
    cli()
