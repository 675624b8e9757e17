"""GAN losses on hand-computed inputs, and DiffAugment's contract (shape, gradient, seed)."""

from __future__ import annotations

import math

import pytest
import torch

from training.diffaugment import diff_augment, parse_policy
from training.losses import get_loss

REAL = torch.tensor([2.0, 0.5, -1.0])
FAKE = torch.tensor([-2.0, 0.0, 0.5])


def test_hinge_values():
    loss = get_loss("hinge")
    # relu(1 - real) = [0, 0.5, 2] -> 2.5/3 ; relu(1 + fake) = [0, 1, 1.5] -> 2.5/3
    assert loss.discriminator(REAL, FAKE).item() == pytest.approx(5.0 / 3.0)
    assert loss.generator(FAKE).item() == pytest.approx(0.5)  # -mean(fake) = -(-1.5/3)
    # A D that outputs 0 everywhere (no separation) sits at exactly 2.0.
    zeros = torch.zeros(4)
    assert loss.discriminator(zeros, zeros).item() == 2.0
    # Beyond the margin nothing is left to learn.
    assert loss.discriminator(torch.full((2,), 3.0), torch.full((2,), -3.0)).item() == 0.0


def test_non_saturating_values():
    loss = get_loss("ns")
    zeros = torch.zeros(3)
    assert loss.discriminator(zeros, zeros).item() == pytest.approx(2 * math.log(2))
    s = torch.tensor([math.log(3.0)])  # sigmoid(s) = 3/4
    # -log(3/4) - log(1 - 3/4) = log(4/3) + log(4)
    assert loss.discriminator(s, s).item() == pytest.approx(math.log(4 / 3) + math.log(4))
    assert loss.generator(s).item() == pytest.approx(math.log(4 / 3))  # -log sigmoid(s)


def test_wasserstein_and_unknown_name():
    loss = get_loss("wasserstein")
    assert loss.discriminator(REAL, FAKE).item() == pytest.approx(FAKE.mean() - REAL.mean())
    with pytest.raises(ValueError, match="unknown GAN loss"):
        get_loss("lsgan-typo")


def test_losses_push_scores_the_right_way():
    """A gradient step on D's loss raises D(real) and lowers D(fake); G's loss raises D(fake)."""
    for name in ("hinge", "ns", "wasserstein"):
        loss = get_loss(name)
        real = torch.zeros(3, requires_grad=True)
        fake = torch.zeros(3, requires_grad=True)
        loss.discriminator(real, fake).backward()
        assert (real.grad < 0).all() and (fake.grad > 0).all(), name
        fake_g = torch.zeros(3, requires_grad=True)
        loss.generator(fake_g).backward()
        assert (fake_g.grad < 0).all(), name


def test_diffaugment_shape_gradient_and_seed():
    x = torch.rand(6, 3, 16, 16, requires_grad=True)
    policy = parse_policy("color,translation,cutout")
    y1 = diff_augment(x, policy, torch.Generator().manual_seed(1))
    y2 = diff_augment(x, policy, torch.Generator().manual_seed(1))
    y3 = diff_augment(x, policy, torch.Generator().manual_seed(2))
    assert y1.shape == x.shape
    assert torch.equal(y1, y2) and not torch.equal(y1, y3)
    y1.sum().backward()  # differentiable: G learns through the augmentation
    assert x.grad is not None and x.grad.abs().sum() > 0
    # cutout zeroes a (8x8) square of each 16x16 image (fewer pixels where it hits the border)
    ones = torch.ones(4, 3, 16, 16)
    cut = diff_augment(ones, ("cutout",), torch.Generator().manual_seed(0))
    zeroed = (cut[:, 0] == 0).flatten(1).sum(1)
    assert ((zeroed > 0) & (zeroed <= 64)).all()
    assert diff_augment(x, "none") is x
    with pytest.raises(ValueError, match="unknown DiffAugment"):
        parse_policy("color,rotate")
