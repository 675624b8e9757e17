"""Saliency maps point at the evidence: a small NPR detector trained for a few seconds to tell
photo-like texture from 2x nearest-upsampled texture lights up an upsampled patch pasted into a
photo-like image, and the bright spot moves with the patch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.detector import Detector, DetectorConfig
from models.npr import NPRConfig, NPRDetector
from models.saliency import explain, grad_cam, input_gradient, target_layer

SIZE = 64


def photo_like(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    """Smooth colour fields plus pixel noise: every neighbouring pixel differs."""
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    smooth = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (smooth + 0.08 * torch.randn(n, 3, size, size, generator=g)) * 2 - 1


def upsampled(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    """The same content at half resolution, enlarged 2x nearest: what an upsampling layer
    leaves (2x2 blocks of equal pixels)."""
    small = photo_like(n, size // 2, g)
    return F.interpolate(small, scale_factor=2, mode="nearest")


@pytest.fixture(scope="module")
def trained_npr() -> NPRDetector:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = NPRDetector(NPRConfig(image_size=32, width=8))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        x = torch.cat([photo_like(8, 32, g), upsampled(8, 32, g)])
        y = torch.cat([torch.zeros(8), torch.ones(8)])
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():  # it has learned the difference
        assert model(upsampled(16, 32, g)).mean() > model(photo_like(16, 32, g)).mean() + 2
    return model


def composite(quadrant: tuple[int, int], g: torch.Generator) -> torch.Tensor:
    image = photo_like(1, SIZE, g)
    r, c = quadrant
    h = SIZE // 2
    image[:, :, r * h : (r + 1) * h, c * h : (c + 1) * h] = upsampled(1, h, g)
    return image


def quadrant_means(heatmap: np.ndarray) -> np.ndarray:
    h = SIZE // 2
    return np.array(
        [[heatmap[r * h : (r + 1) * h, c * h : (c + 1) * h].mean() for c in (0, 1)] for r in (0, 1)]
    )


@pytest.mark.parametrize("quadrant", [(0, 0), (1, 1), (0, 1)])
def test_grad_cam_lights_up_the_pasted_synthetic_patch(
    trained_npr: NPRDetector, quadrant: tuple[int, int]
) -> None:
    g = torch.Generator().manual_seed(10 + 2 * quadrant[0] + quadrant[1])
    saliency = explain(trained_npr, composite(quadrant, g))
    assert saliency.method == "grad-cam" and saliency.layer == "layer2"
    heatmap = saliency.heatmap
    assert heatmap.shape == (SIZE, SIZE) and heatmap.dtype == np.float32
    assert heatmap.min() >= 0 and heatmap.max() == pytest.approx(1.0)
    assert heatmap.std() > 0.05  # not uniform
    means = quadrant_means(heatmap)
    patch = means[quadrant]
    rest = (means.sum() - patch) / 3
    assert patch > 2 * rest, means  # the evidence is where the patch is, and moves with it


def test_the_peak_says_how_much_evidence_the_normalised_map_hides(
    trained_npr: NPRDetector,
) -> None:
    """Every map is stretched to a maximum of 1, so only the raw peak tells a photo with a
    synthetic patch from a photo alone."""
    g = torch.Generator().manual_seed(5)
    patched = explain(trained_npr, composite((1, 0), g))
    photos = [explain(trained_npr, photo_like(1, SIZE, g)) for _ in range(3)]
    assert not patched.empty and patched.heatmap.max() == pytest.approx(1.0)
    assert all(patched.peak > 2 * p.peak for p in photos), [p.peak for p in photos]


def test_a_model_without_evidence_gives_an_empty_map() -> None:
    """A detector whose output ignores its features has no evidence anywhere: the map is all
    zero and says so, rather than stretching nothing to full strength."""
    torch.manual_seed(0)
    model = NPRDetector(NPRConfig(image_size=32, width=8)).eval()
    with torch.no_grad():
        model.fc1.weight.zero_()
    saliency = explain(model, photo_like(1, SIZE, torch.Generator().manual_seed(0)))
    assert saliency.empty and saliency.peak == 0
    assert saliency.heatmap.shape == (SIZE, SIZE) and not saliency.heatmap.any()


def test_input_gradient_is_a_normalised_pixel_map(trained_npr: NPRDetector) -> None:
    """The fallback for architectures without a known block: per-pixel, not uniform. (It does
    not localise the patch here: inside a 2x2-constant patch the residual's gradient cancels.)"""
    found = input_gradient(trained_npr, composite((1, 0), torch.Generator().manual_seed(3)))
    heatmap = found.heatmap
    assert found.peak > 0
    assert heatmap.shape == (SIZE, SIZE) and heatmap.max() == pytest.approx(1.0)
    assert heatmap.std() > 0.05


def test_vgg16_grad_cam_reads_the_last_conv_block() -> None:
    torch.manual_seed(0)
    model = Detector(DetectorConfig(image_size=64)).eval()
    assert target_layer(model) == "backbone.features.29"
    assert isinstance(model.get_submodule("backbone.features.28"), torch.nn.Conv2d)
    x = torch.randn(1, 3, 64, 64)
    cam = grad_cam(model, x, "backbone.features.29").heatmap
    assert cam.shape == (64, 64) and cam.min() >= 0 and cam.max() <= 1
    assert x.grad is None  # the caller's tensor is left alone
