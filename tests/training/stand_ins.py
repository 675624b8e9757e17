"""Stand-ins for the shared data's extra sets, for a machine without them: folders of generated
images (as ``training.synthesize`` writes them) and clinic-sized lesion photos. With these, the
tests that score foreign generators and real photos run on a fresh machine too."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from models.preprocessing import images_to_bytes
from models.sngan import Generator, GeneratorConfig
from tests.training.ham_like import lesion_jpeg

CLINIC_SIZE = (1022, 767)  # the smallest of the shared ISIC clinic photos


def make_synthetic(folder: Path, n: int = 30, size: int = 32, seed: int = 0) -> Path:
    """PNGs from a randomly initialised SNGAN generator, as training.synthesize writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    gen = Generator(GeneratorConfig(image_size=size)).eval()
    with torch.no_grad():
        images = gen(gen.sample_z(n, torch.Generator().manual_seed(seed)))
    for i, data in enumerate(images_to_bytes(images)):
        (folder / f"synthetic_{i:05d}.png").write_bytes(data)
    return folder


def write_clinic_like(folder: Path, n: int = 4, size: tuple[int, int] = CLINIC_SIZE) -> list[Path]:
    """Lesion-like JPEGs at a clinic photo's size: large enough that decoding reduces them."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    photos = [folder / f"clinic_{i:03d}.jpg" for i in range(n)]
    for photo in photos:
        photo.write_bytes(lesion_jpeg(rng, size))
    return photos
