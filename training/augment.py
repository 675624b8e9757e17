"""Detector augmentations and the format-bias control, on preloaded uint8 images.

Why a format-bias control: HAM10000 photos are JPEG files (about quality 75, 4:2:0) and the
generator writes PNG. A detector given raw files learns "no JPEG history -> synthetic": the
project's first trial scored 100% on clean test images and fell to 50% once both classes were
re-encoded as JPEG q75. So:

1. Both classes take the same path from file to pixels (``models.preprocessing.load_uint8``:
   decode -> centre square crop -> resize to 128), and every augmentation below runs *after* it,
   on the uint8 tensor, from :class:`Augment`, which is never told the class of an image:
   every random draw is made per image from one generator, independently of the label.
2. ``jpeg_prob`` (default 1.0) re-encodes every training image of *both* classes as JPEG at a
   quality drawn uniformly from [``jpeg_quality_min``, ``jpeg_quality_max``] (default 30-100),
   as the last step. Every input then carries a fresh JPEG compression whose strength is
   independent of its class, so "looks JPEG-compressed" carries no label information. With
   ``jpeg_prob < 1`` it is the CNNDetection augmentation (Wang et al. 2020) instead.
   What remains is the *older* history of the real photos, visible mainly when the fresh
   quality is high; ``tests/training/test_augment.py`` measures that residual with a classic
   re-compression feature, and the evaluation's JPEG 95/75/50 rows measure its effect on the
   trained model.

A resolution cue hides the same way: a 64 px generator's PNGs are *upscaled* to 128 px (soft)
while the 200x150 photos are *downscaled* (sharp). ``rescale_prob`` downscales an image of either
class by a factor drawn in [``rescale_min``, 1] and back, so "soft" stops meaning "synthetic"
(off by default; the CPU run in docs/RESULTS.md uses 0.5 with its 64 px generator).

Gaussian blur (sigma uniform in [0, 3], probability ``blur_prob``) and horizontal/vertical flips
(lesions have no canonical orientation) complete the CNNDetection-style set. The same functions
implement the evaluation's robustness perturbations (:data:`PERTURBATIONS`).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from models.preprocessing import encode, to_pil, to_uint8_tensor


def jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    """uint8 (3, H, W) -> JPEG-encoded at ``quality`` (4:2:0, as cameras write) -> uint8."""
    data = encode(to_pil(image), "jpeg", int(quality))
    with Image.open(io.BytesIO(data)) as img:
        return to_uint8_tensor(img.convert("RGB"))


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur with standard deviation ``sigma`` px (kernel 2*ceil(3 sigma)+1); 0 = none."""
    if sigma <= 0:
        return image
    k = 2 * math.ceil(3 * sigma) + 1
    return TF.gaussian_blur(image, kernel_size=[k, k], sigma=[sigma, sigma])


def rescale(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Resize by ``factor`` (bicubic, antialiased) and back to the original size."""
    pil = to_pil(image)
    w, h = pil.size
    small = pil.resize(
        (max(1, round(w * factor)), max(1, round(h * factor))), Image.Resampling.BICUBIC
    )
    return to_uint8_tensor(small.resize((w, h), Image.Resampling.BICUBIC))


# Evaluation robustness conditions: applied identically to both classes after preprocessing.
PERTURBATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "jpeg_q95": lambda x: jpeg(x, 95),
    "jpeg_q75": lambda x: jpeg(x, 75),
    "jpeg_q50": lambda x: jpeg(x, 50),
    "downscale_x0.5": lambda x: rescale(x, 0.5),
    "blur_sigma1": lambda x: gaussian_blur(x, 1.0),
}


def perturb(batch: torch.Tensor, name: str) -> torch.Tensor:
    """Apply one named perturbation to every image of a uint8 batch (N, 3, S, S)."""
    fn = PERTURBATIONS[name]
    return torch.stack([fn(img) for img in batch])


@dataclass(frozen=True)
class AugmentConfig:
    hflip: float = 0.5
    vflip: float = 0.5
    blur_prob: float = 0.1
    blur_sigma_max: float = 3.0
    jpeg_prob: float = 1.0
    jpeg_quality_min: int = 30
    jpeg_quality_max: int = 100
    rescale_prob: float = 0.0
    rescale_min: float = 0.5

    def __post_init__(self) -> None:
        for name in ("hflip", "vflip", "blur_prob", "jpeg_prob", "rescale_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1]")
        if not 1 <= self.jpeg_quality_min <= self.jpeg_quality_max <= 100:
            raise ValueError("need 1 <= jpeg_quality_min <= jpeg_quality_max <= 100")
        if self.blur_sigma_max < 0:
            raise ValueError("blur_sigma_max must be >= 0")
        if not 0 < self.rescale_min <= 1:
            raise ValueError("rescale_min must be in (0, 1]")


class Augment:
    """Training augmentation of a uint8 batch. It takes no labels: real and synthetic images get
    the same transform chain with parameters drawn independently of their class."""

    def __init__(self, config: AugmentConfig) -> None:
        self.config = config

    def __call__(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        c = self.config
        n = batch.shape[0]
        u = torch.rand((n, 8), generator=generator, dtype=torch.float64)
        out = []
        for i in range(n):
            img = batch[i]
            if u[i, 0] < c.hflip:
                img = img.flip(-1)
            if u[i, 1] < c.vflip:
                img = img.flip(-2)
            if u[i, 6] < c.rescale_prob:
                img = rescale(img, c.rescale_min + float(u[i, 7]) * (1 - c.rescale_min))
            if u[i, 2] < c.blur_prob:
                img = gaussian_blur(img, float(u[i, 3]) * c.blur_sigma_max)
            if u[i, 4] < c.jpeg_prob:
                span = c.jpeg_quality_max - c.jpeg_quality_min + 1
                quality = c.jpeg_quality_min + min(int(u[i, 5] * span), span - 1)
                img = jpeg(img, quality)
            out.append(img.contiguous())
        return torch.stack(out)
