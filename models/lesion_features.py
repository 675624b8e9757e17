"""A small CNN that classifies HAM10000 diagnoses, trained from scratch: its pooled embedding is
the feature space in which generated lesions are compared with real ones (Fréchet distance,
KID, precision/recall in ``training.gan_metrics``).

Why not Inception: ImageNet features barely separate dermoscopic images from one another (every
lesion is "a brown blob on skin" to them), and papers' FID numbers need weights this project
cannot download at run time. A network that had to tell melanoma from naevus from keratosis has
to look at pigment network, border and colour variegation: the things a lesion generator must
get right.

Layout: ``len(widths)`` blocks of two 3x3 conv + BatchNorm + ReLU, each followed by a 2x2 max
pool, then a 1x1 conv to ``embed_dim`` + BatchNorm + ReLU and a global average pool (the
embedding, non-negative as Inception's pool3), then dropout and a linear head over diagnoses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LesionFeaturesConfig:
    image_size: int = 64
    widths: tuple[int, ...] = (16, 32, 64, 128)  # ~240 training img/s at 64 px on one core
    embed_dim: int = 256
    num_classes: int = 7
    dropout: float = 0.2

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))  # JSON gives lists
        if not self.widths or self.image_size % 2 ** len(self.widths):
            raise ValueError(
                f"image_size {self.image_size} must be divisible by 2**{len(self.widths)} "
                "(one 2x2 pool per block)"
            )


def _conv_bn_relu(c_in: int, c_out: int, kernel: int) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class LesionFeatures(nn.Module):
    """image (N, 3, S, S), normalised -> diagnosis logits (N, num_classes); ``features(x)`` ->
    the pooled embedding (N, embed_dim)."""

    def __init__(self, config: LesionFeaturesConfig = LesionFeaturesConfig()) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in = 3
        for width in config.widths:
            layers += _conv_bn_relu(c_in, width, 3) + _conv_bn_relu(width, width, 3)
            layers.append(nn.MaxPool2d(2))
            c_in = width
        layers += _conv_bn_relu(c_in, config.embed_dim, 1)
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(
            nn.Dropout(config.dropout), nn.Linear(config.embed_dim, config.num_classes)
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.body(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
