"""Where in the image a detector's evidence for *synthetic* lies: Grad-CAM on a detector's last
convolutional block, or input-gradient saliency for a model without a known block.

Grad-CAM (Selvaraju et al. 2017): the block's activations A_k weighted by the spatial mean of
d logit / d A_k, summed over channels, ReLU, upsampled to the input. The logit is the synthetic
one, so a bright region is one that pushes the verdict towards synthetic. For the VGG16 that is
the last convolution's ReLU (``backbone.features.29``; 4x4 cells at 64 px, 8x8 at 128); for the
NPR detector its last residual stage (8x8 at 64 px). Both run on an fp32 eager copy of the
model: served copies may be compiled or bf16, and need no gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.detector import Detector
from models.npr import NPRDetector


@dataclass(frozen=True)
class Saliency:
    heatmap: np.ndarray  # (S, S) float32 in [0, 1], the model input's size; 1 = strongest
    method: str  # "grad-cam" or "input-gradient"
    layer: str  # the block the map is computed on ("input" for input gradients)
    # The map's maximum before normalisation. Normalising shows *where*, never *how much*: a
    # faint map is stretched to full strength, so callers need the raw peak to tell them apart.
    peak: float

    @property
    def empty(self) -> bool:
        """Nothing in the image pushes towards synthetic (the map is all zero): the model's
        score, whatever it is, does not rest on any one region."""
        return self.peak <= 0


@dataclass(frozen=True)
class Map:
    """A map normalised to [0, 1] and the maximum it was divided by."""

    heatmap: np.ndarray
    peak: float


def target_layer(model: nn.Module) -> str | None:
    """The block Grad-CAM reads for this architecture, or None (input gradients instead)."""
    if isinstance(model, Detector):
        return "backbone.features.29"  # ReLU after conv5_3, before the last max-pool
    if isinstance(model, NPRDetector):
        return model.stages[-1]
    return None


def _normalise(cam: torch.Tensor) -> Map:
    cam = cam.detach().float()
    top = max(float(cam.max()), 0.0)
    heatmap = (cam / top if top > 0 else torch.zeros_like(cam)).numpy().astype(np.float32)
    return Map(heatmap, top)


def grad_cam(model: nn.Module, x: torch.Tensor, layer: str) -> Map:
    """Grad-CAM of the synthetic logit for one normalised image ``x`` (1, 3, S, S)."""
    module = model.get_submodule(layer)
    seen: dict[str, torch.Tensor] = {}

    def keep(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        output.retain_grad()
        seen["a"] = output

    handle = module.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)  # a leaf: the graph is built
            logit = model(x).sum()
            logit.backward()
    finally:
        handle.remove()
    a = seen["a"]
    weights = a.grad.mean(dim=(2, 3), keepdim=True)  # (1, C, 1, 1)
    cam = F.relu((weights * a).sum(dim=1, keepdim=True))  # (1, 1, h, w)
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return _normalise(cam[0, 0])


def input_gradient(model: nn.Module, x: torch.Tensor) -> Map:
    """|d logit / d pixel|, summed over colour channels, for one normalised image (1, 3, S, S)."""
    with torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        model(x).sum().backward()
    return _normalise(x.grad[0].abs().sum(dim=0))


def explain(model: nn.Module, x: torch.Tensor) -> Saliency:
    """The map for one normalised image (1, 3, S, S) on an fp32 eager model in eval mode."""
    layer = target_layer(model)
    if layer is None:
        found = input_gradient(model, x)
        return Saliency(found.heatmap, "input-gradient", "input", found.peak)
    found = grad_cam(model, x, layer)
    return Saliency(found.heatmap, "grad-cam", layer, found.peak)
