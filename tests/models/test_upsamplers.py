"""Upsampler-zoo autoencoders: every kind and depth rebuilds an image of the same shape."""

from __future__ import annotations

import itertools

import pytest
import torch

from models.upsamplers import KINDS, MAX_STAGES, Autoencoder, UpsamplerConfig


@pytest.mark.parametrize(
    ("kind", "stages"), list(itertools.product(KINDS, range(1, MAX_STAGES + 1)))
)
def test_shape_kept_and_output_in_range(kind: str, stages: int) -> None:
    torch.manual_seed(0)
    model = Autoencoder(UpsamplerConfig(kind, stages, width=4)).eval()
    x = torch.rand(2, 3, 24, 40) * 2 - 1  # not square: any H, W divisible by 2**stages
    with torch.no_grad():
        y = model(x * 50)  # extreme inputs: tanh still bounds the output
    assert y.shape == x.shape
    assert y.min() >= -1 and y.max() <= 1


def test_kinds_differ_in_their_upsampling_layer() -> None:
    types = {
        kind: {type(m).__name__ for m in Autoencoder(UpsamplerConfig(kind, 1, 4)).decoder.modules()}
        for kind in KINDS
    }
    assert "ConvTranspose2d" in types["transposed"]
    assert "PixelShuffle" in types["pixel_shuffle"]
    assert "Upsample" in types["nearest_conv"] and "Upsample" in types["bilinear_conv"]
    assert "ConvTranspose2d" not in types["nearest_conv"] | types["pixel_shuffle"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "bicubic", "stages": 2}, "unknown upsampler kind"),
        ({"kind": "transposed", "stages": 0}, "stages"),
        ({"kind": "transposed", "stages": 4}, "stages"),
        ({"kind": "transposed", "stages": 1, "width": 0}, "width"),
    ],
)
def test_bad_config_raises(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        UpsamplerConfig(**kwargs)


def test_size_not_divisible_raises() -> None:
    model = Autoencoder(UpsamplerConfig("nearest_conv", 3, 4))
    with pytest.raises(ValueError, match="divisible by 8"):
        model(torch.zeros(1, 3, 150, 200))
