"""DCGAN generator and discriminator (Radford et al. 2016), for 32, 64 and 128 px.

A second GAN architecture beside ``models/sngan.py``: a detector that should catch generators it
never saw is trained on one and tested on this one (and the other way round), so the two differ
where it matters: DCGAN starts from a 1x1 latent "image" and upsamples with transposed
convolutions only (no 3x3 output conv), uses BatchNorm in both networks, and its discriminator
has no spectral norm. The generator has the attributes the project's sampling code reads
(``config.z_dim``, ``config.image_size``, ``sample_z``), like :class:`models.sngan.Generator`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

SUPPORTED_SIZES = (32, 64, 128)
MAX_MULT = 8  # widest layer = 8x the full-resolution width (the paper's 1024 = 8 x 128 at 64 px)


@dataclass(frozen=True)
class DCGANConfig:
    image_size: int = 64
    z_dim: int = 100
    g_channels: int = 64  # G width just below full resolution; doubles per halving, capped at 8x
    d_channels: int = 64  # D width after its first conv; doubles per halving, capped at 8x

    def __post_init__(self) -> None:
        if self.image_size not in SUPPORTED_SIZES:
            raise ValueError(f"image_size must be one of {SUPPORTED_SIZES}, got {self.image_size}")
        if min(self.z_dim, self.g_channels, self.d_channels) < 1:
            raise ValueError("z_dim, g_channels and d_channels must be >= 1")

    @property
    def levels(self) -> int:
        """Stride-2 layers between 4x4 and full size."""
        return int(math.log2(self.image_size // 4))


def _width(base: int, level: int) -> int:
    """Width ``level`` halvings below full resolution: base * min(8, 2**(level - 1))."""
    return base * min(MAX_MULT, 2 ** (level - 1))


def dcgan_init(module: nn.Module) -> None:
    """The paper's init: conv weights N(0, 0.02); BatchNorm scale N(1, 0.02), shift 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    """z (N, z_dim) -> image (N, 3, S, S) in [-1, 1]: 1x1 -> 4x4 -> ... -> S, transposed convs."""

    def __init__(self, config: DCGANConfig = DCGANConfig()) -> None:
        super().__init__()
        self.config = config
        levels = config.levels
        c = _width(config.g_channels, levels)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(config.z_dim, c, 4, stride=1, padding=0, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
        ]
        for level in range(levels - 1, 0, -1):
            c_out = _width(config.g_channels, level)
            layers += [
                nn.ConvTranspose2d(c, c_out, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            c = c_out
        layers += [nn.ConvTranspose2d(c, 3, 4, stride=2, padding=1, bias=False), nn.Tanh()]
        self.body = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z.view(z.shape[0], -1, 1, 1))

    def sample_z(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        device = self.body[0].weight.device
        return torch.randn(n, self.config.z_dim, generator=generator, device=device)


class DCGANDiscriminator(nn.Module):
    """image (N, 3, S, S) -> one logit per image: stride-2 convs, BatchNorm, LeakyReLU(0.2)."""

    def __init__(self, config: DCGANConfig = DCGANConfig()) -> None:
        super().__init__()
        self.config = config
        c = _width(config.d_channels, 1)
        # No BatchNorm on the first layer (the paper: it destabilises the input statistics).
        layers: list[nn.Module] = [
            nn.Conv2d(3, c, 4, stride=2, padding=1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        for level in range(2, config.levels + 1):
            c_out = _width(config.d_channels, level)
            layers += [
                nn.Conv2d(c, c_out, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            c = c_out
        layers += [nn.Conv2d(c, 1, 4, stride=1, padding=0, bias=False)]  # 4x4 -> 1x1
        self.body = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).flatten(1).squeeze(1)
