"""SNGAN generator and discriminator (Miyato et al. 2018, "standard CNN"), for 32, 64 and 128 px.

The discriminator owns its spectral normalisation: every Conv2d and Linear is wrapped in
``torch.nn.utils.parametrizations.spectral_norm`` inside its constructor, so no caller can forget
it. Losses live in ``training/losses.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

SUPPORTED_SIZES = (32, 64, 128)


def _num_doublings(image_size: int) -> int:
    if image_size not in SUPPORTED_SIZES:
        raise ValueError(f"image_size must be one of {SUPPORTED_SIZES}, got {image_size}")
    return int(math.log2(image_size // 4))


def _channels(base: int, level: int, levels: int, cap: int = 8) -> int:
    """Width at ``level`` (0 = 4x4, ``levels`` = full size): base * min(cap, 2**(levels-level))."""
    return base * min(cap, 2 ** (levels - level))


@dataclass(frozen=True)
class GeneratorConfig:
    image_size: int = 128
    z_dim: int = 128
    channels: int = 64  # width at full resolution; doubles per halving, capped at 8x


@dataclass(frozen=True)
class DiscriminatorConfig:
    image_size: int = 128
    channels: int = 64  # width at full resolution; doubles per halving, capped at 8x
    negative_slope: float = 0.1


class Generator(nn.Module):
    """z (N, z_dim) -> image (N, 3, S, S) in [-1, 1]: linear to 4x4, then stride-2 deconvs."""

    def __init__(self, config: GeneratorConfig = GeneratorConfig()) -> None:
        super().__init__()
        self.config = config
        levels = _num_doublings(config.image_size)
        c0 = _channels(config.channels, 0, levels)
        self.fc = nn.Linear(config.z_dim, 4 * 4 * c0)
        blocks: list[nn.Module] = [nn.BatchNorm2d(c0), nn.ReLU(inplace=True)]
        for level in range(1, levels + 1):
            c_in = _channels(config.channels, level - 1, levels)
            c_out = _channels(config.channels, level, levels)
            blocks += [
                nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        blocks += [nn.Conv2d(config.channels, 3, 3, padding=1), nn.Tanh()]
        self.body = nn.Sequential(*blocks)
        self._c0 = c0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(z.shape[0], self._c0, 4, 4)
        return self.body(x)

    def sample_z(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.config.z_dim, generator=generator, device=self.fc.weight.device)


class Discriminator(nn.Module):
    """image (N, 3, S, S) -> one unbounded score per image; spectral norm on every layer."""

    def __init__(self, config: DiscriminatorConfig = DiscriminatorConfig()) -> None:
        super().__init__()
        self.config = config
        levels = _num_doublings(config.image_size)
        act = nn.LeakyReLU(config.negative_slope, inplace=True)
        layers: list[nn.Module] = []
        c_in = 3
        # Full resolution down to 4x4: a 3x3 stride-1 conv then a 4x4 stride-2 conv per level.
        for level in range(levels, 0, -1):
            c = _channels(config.channels, level, levels)
            c_next = _channels(config.channels, level - 1, levels)
            layers += [nn.Conv2d(c_in, c, 3, padding=1), act]
            layers += [nn.Conv2d(c, c_next, 4, stride=2, padding=1), act]
            c_in = c_next
        layers += [nn.Conv2d(c_in, c_in, 3, padding=1), act]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(4 * 4 * c_in, 1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                spectral_norm(module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1)).squeeze(1)
