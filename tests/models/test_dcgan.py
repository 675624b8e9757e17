"""DCGAN: shapes at every supported size, and the attributes sampling code relies on."""

from __future__ import annotations

import pytest
import torch

from models.dcgan import DCGANConfig, DCGANDiscriminator, DCGANGenerator


@pytest.mark.parametrize("size", [32, 64, 128])
def test_shapes(size: int) -> None:
    torch.manual_seed(0)
    config = DCGANConfig(image_size=size, z_dim=16, g_channels=4, d_channels=4)
    G, D = DCGANGenerator(config), DCGANDiscriminator(config)
    z = G.sample_z(3)
    assert z.shape == (3, 16) and G.config.z_dim == 16
    x = G(z)
    assert x.shape == (3, 3, size, size)
    assert x.min() >= -1 and x.max() <= 1
    assert D(x).shape == (3,)


def test_no_spectral_norm_and_batchnorm_in_both() -> None:
    G, D = DCGANGenerator(DCGANConfig(32)), DCGANDiscriminator(DCGANConfig(32))
    assert not any("parametrizations" in k for k in D.state_dict())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in G.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in D.modules())


def test_unsupported_size_raises() -> None:
    with pytest.raises(ValueError, match="image_size"):
        DCGANConfig(image_size=48)
