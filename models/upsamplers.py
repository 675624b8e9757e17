"""The "upsampler zoo": small autoencoders whose decoders differ only in how they upsample.

A real photo passed through an autoencoder comes back with the content it had and the trace of
the decoder's upsampling layers, the trace nearly every generator leaves (Zhang et al. 2019,
AutoGAN; Jeong et al. 2021, arXiv 2111.06575). Training a detector on several such rebuilt
images, one source per upsampling kind and depth, teaches it that trace rather than one GAN's
content or colours, and costs seconds per source instead of a GAN's hours.

Kinds (each layer doubles height and width and halves the channels):

- ``transposed``: ConvTranspose2d, kernel 4, stride 2 (checkerboard-prone; DCGAN, SNGAN);
- ``nearest_conv``: nearest x2, then a 3x3 conv (StyleGAN-like resize-convolution);
- ``bilinear_conv``: bilinear x2, then a 3x3 conv;
- ``pixel_shuffle``: a 3x3 conv to 4C channels, then PixelShuffle(2) (sub-pixel convolution).

The network is fully convolutional: any H and W divisible by ``2**stages``; input and output are
images in [-1, 1] of the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import nn

KINDS = ("transposed", "nearest_conv", "bilinear_conv", "pixel_shuffle")
MAX_STAGES = 3


@dataclass(frozen=True)
class UpsamplerConfig:
    kind: str = "transposed"
    stages: int = 2  # stride-2 downsamplings in the encoder = upsamplings in the decoder
    width: int = 32  # channels at full resolution; doubled per stage

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown upsampler kind {self.kind!r}; choose one of {KINDS}")
        if not 1 <= self.stages <= MAX_STAGES:
            raise ValueError(f"stages must be in 1..{MAX_STAGES}, got {self.stages}")
        if self.width < 1:
            raise ValueError(f"width must be >= 1, got {self.width}")

    @property
    def name(self) -> str:
        """``KIND-STAGES``, e.g. ``transposed-2`` (how ``training/fakes.py`` names a source)."""
        return f"{self.kind}-{self.stages}"

    @property
    def multiple(self) -> int:
        """Height and width must be multiples of this."""
        return 2**self.stages


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


def upsample_layer(kind: str, c_in: int, c_out: int) -> nn.Sequential:
    """One x2 upsampling of the given kind, followed by its activation."""
    if kind == "transposed":
        layers: list[nn.Module] = [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)]
    elif kind == "nearest_conv":
        layers = [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1)]
    elif kind == "bilinear_conv":
        layers = [
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(c_in, c_out, 3, padding=1),
        ]
    elif kind == "pixel_shuffle":
        layers = [nn.Conv2d(c_in, 4 * c_out, 3, padding=1), nn.PixelShuffle(2)]
    else:
        raise ValueError(f"unknown upsampler kind {kind!r}; choose one of {KINDS}")
    return nn.Sequential(*layers, _act())


class Autoencoder(nn.Module):
    """image (N, 3, H, W) in [-1, 1] -> the same image rebuilt through ``stages`` upsamplings."""

    def __init__(self, config: UpsamplerConfig = UpsamplerConfig()) -> None:
        super().__init__()
        self.config = config
        widths = [config.width * 2**i for i in range(config.stages + 1)]
        encoder: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, padding=1), _act()]
        for c_in, c_out in pairwise(widths):
            encoder += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), _act()]
        self.encoder = nn.Sequential(*encoder)
        self.bottleneck = nn.Sequential(nn.Conv2d(widths[-1], widths[-1], 3, padding=1), _act())
        self.decoder = nn.Sequential(
            *(upsample_layer(config.kind, c_in, c_out) for c_in, c_out in pairwise(widths[::-1]))
        )
        self.to_rgb = nn.Sequential(nn.Conv2d(widths[0], 3, 3, padding=1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.config.multiple
        if h % m or w % m:
            raise ValueError(
                f"{self.config.name} needs height and width divisible by {m}, got {h}x{w}"
            )
        return self.to_rgb(self.decoder(self.bottleneck(self.encoder(x))))
