"""NPR detector: the residual it looks at, its shape, its size, and that it can learn."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.npr import PARAMETER_COUNT, NPRConfig, NPRDetector, npr_residual


def test_one_logit_per_image_at_any_even_size() -> None:
    model = NPRDetector().eval()
    with torch.no_grad():
        assert model(torch.randn(3, 3, 64, 64)).shape == (3,)
        assert model(torch.randn(2, 3, 128, 96)).shape == (2,)


def test_exact_parameter_count() -> None:
    model = NPRDetector()
    assert sum(p.numel() for p in model.parameters()) == PARAMETER_COUNT == 1_437_761
    # The official code's layout and names, so its state dicts would load unchanged.
    keys = model.state_dict().keys()
    assert {"conv1.weight", "layer1.0.downsample.0.weight", "layer2.3.conv3.weight"} <= keys
    assert "fc1.weight" in keys and not any(k.startswith("layer3") for k in keys)


def test_residual_is_zero_on_nearest_upsampled_images_only() -> None:
    g = torch.Generator().manual_seed(0)
    small = torch.randn(2, 3, 16, 16, generator=g)
    upsampled = F.interpolate(small, scale_factor=2, mode="nearest")
    assert torch.equal(npr_residual(upsampled), torch.zeros_like(upsampled))
    noise = torch.randn(2, 3, 32, 32, generator=g)
    r = npr_residual(noise)
    assert r.abs().mean() > 0.5
    # Each 2x2 block's top-left pixel is its own reference; the other three carry the residual.
    assert torch.equal(r[..., ::2, ::2], torch.zeros_like(r[..., ::2, ::2]))
    assert (r[..., 1::2, 1::2] != 0).all()


def test_residual_refuses_odd_sides() -> None:
    with pytest.raises(ValueError, match="even"):
        npr_residual(torch.zeros(1, 3, 33, 32))


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    model = NPRDetector(NPRConfig(layers=(1, 1), width=8))
    logits = model(torch.randn(4, 3, 32, 32))
    F.binary_cross_entropy_with_logits(logits, torch.tensor([0.0, 1.0, 0.0, 1.0])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_config_round_trips_lists_and_validates() -> None:
    assert NPRConfig(layers=[3, 4]) == NPRConfig()  # type: ignore[arg-type]  # JSON gives lists
    with pytest.raises(ValueError, match="even"):
        NPRConfig(image_size=63)
    with pytest.raises(ValueError, match="layers"):
        NPRConfig(layers=())


def test_rms_norm_makes_the_residual_size_no_cue() -> None:
    """With ``residual_norm="rms"`` a sharper (higher-contrast) copy of an image scores the same:
    the network sees the residual's pattern, not its size. Without it, the score moves."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    for norm, same in (("rms", True), ("none", False)):
        torch.manual_seed(1)
        model = NPRDetector(NPRConfig(image_size=32, width=8, residual_norm=norm)).eval()
        with torch.no_grad():
            a, b = model(x), model(3.0 * x + 0.5)  # residual x3; the offset cancels in it
        assert torch.allclose(a, b, atol=1e-2) == same, norm  # 1e-2: the RMS floor


def test_unknown_residual_norm_is_refused() -> None:
    with pytest.raises(ValueError, match="residual_norm"):
        NPRConfig(residual_norm="l1")
