import pytest
import torch

from models.sngan import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig


@pytest.mark.parametrize("size", [32, 64, 128])
def test_generator_shape_and_range(size: int) -> None:
    g = Generator(GeneratorConfig(image_size=size, channels=16)).eval()
    with torch.no_grad():
        x = g(torch.randn(3, 128) * 5)
    assert x.shape == (3, 3, size, size)
    assert x.min() >= -1 and x.max() <= 1


@pytest.mark.parametrize("size", [32, 64, 128])
def test_discriminator_shape(size: int) -> None:
    d = Discriminator(DiscriminatorConfig(image_size=size, channels=16))
    assert d(torch.randn(2, 3, size, size)).shape == (2,)


def test_unsupported_size_is_refused() -> None:
    with pytest.raises(ValueError, match="image_size"):
        Generator(GeneratorConfig(image_size=48))


def test_every_discriminator_layer_is_spectrally_normalised() -> None:
    d = Discriminator(DiscriminatorConfig(image_size=32, channels=16)).train()
    layers = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    assert layers and all(hasattr(m, "parametrizations") for m in layers)
    assert all(
        isinstance(m, torch.nn.LeakyReLU) and m.negative_slope == 0.1
        for m in d.features
        if not isinstance(m, torch.nn.Conv2d)
    )
    with torch.no_grad():  # make every raw weight far from unit norm
        for m in layers:
            m.parametrizations.weight.original.mul_(3.0)
    for _ in range(30):  # power iteration converges over training-mode forwards
        d(torch.randn(2, 3, 32, 32))
    d.eval()
    for m in layers:
        w = m.weight.detach()  # the normalised weight
        sigma = torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2)
        assert abs(sigma.item() - 1) < 0.05, (m, sigma)
        raw = m.parametrizations.weight.original.detach()
        raw_sigma = torch.linalg.matrix_norm(raw.reshape(raw.shape[0], -1), ord=2)
        assert raw_sigma.item() > 1.5  # the raw weight is not normalised: the wrapper is


def test_forward_backward_finite() -> None:
    g = Generator(GeneratorConfig(image_size=32, channels=16))
    d = Discriminator(DiscriminatorConfig(image_size=32, channels=16))
    loss = d(g(torch.randn(4, 128))).mean()
    loss.backward()
    grads = [p.grad for p in [*g.parameters(), *d.parameters()] if p.requires_grad]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
    assert torch.isfinite(loss)
