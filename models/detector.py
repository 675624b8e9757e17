"""The paper's detector: ImageNet VGG16 (7x7 adaptive pool, full classifier) plus a two-layer head.

Abbasi et al. 2024 append two Linear-4096 layers, each with BatchNorm, ReLU and dropout, and a
one-unit output to torchvision's VGG16. The logit is for the positive class, *synthetic*:
``P(synthetic) = sigmoid(logit)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.models import VGG16_Weights, vgg16

PARAMETER_COUNT = 159_259_433
IMAGENET_FILENAME = Path(VGG16_Weights.IMAGENET1K_V1.url).name  # vgg16-397923af.pth


class PretrainedWeightsUnavailable(RuntimeError):
    """ImageNet weights were asked for but are neither cached nor downloadable."""


@dataclass(frozen=True)
class DetectorConfig:
    image_size: int = 128
    hidden: int = 4096
    dropout: float = 0.5


class Detector(nn.Module):
    """VGG16 -> [Linear-BN-ReLU-Dropout] x 2 -> Linear(1); returns one logit per image."""

    def __init__(self, config: DetectorConfig = DetectorConfig()) -> None:
        super().__init__()
        self.config = config
        self.backbone = vgg16(weights=None)
        h = config.hidden
        self.head = nn.Sequential(
            nn.Linear(1000, h),
            nn.BatchNorm1d(h),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Linear(h, h),
            nn.BatchNorm1d(h),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Linear(h, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)).squeeze(1)


def imagenet_cache_path() -> Path:
    """Where torchvision keeps the IMAGENET1K_V1 VGG16 file (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILENAME


def load_imagenet_weights(
    model: Detector, source: str | Path = "imagenet", *, allow_download: bool = False
) -> Path | None:
    """Load ImageNet VGG16 weights into ``model.backbone`` and return the file used.

    ``source`` is ``"imagenet"`` (torch hub cache, then a download if ``allow_download``) or a path
    to a ``vgg16-397923af.pth``-style state dict. Loading never unpickles arbitrary objects.
    """
    path = imagenet_cache_path() if str(source) == "imagenet" else Path(source)
    if not path.is_file():
        if str(source) != "imagenet":
            raise PretrainedWeightsUnavailable(f"no VGG16 weights file at {path}")
        if not allow_download:
            raise PretrainedWeightsUnavailable(
                f"ImageNet VGG16 weights are not in the torch hub cache ({path}). Download "
                f"{VGG16_Weights.IMAGENET1K_V1.url} and pass its path (--pretrained PATH), copy it "
                "to that cache path, allow the download, or train with --pretrained none."
            )
        try:
            state = VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=True)
        except Exception as exc:  # network errors come in many types
            raise PretrainedWeightsUnavailable(
                f"could not download {VGG16_Weights.IMAGENET1K_V1.url} ({exc}); pass a local "
                "file with --pretrained PATH or train with --pretrained none"
            ) from exc
        model.backbone.load_state_dict(state)
        return imagenet_cache_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.backbone.load_state_dict(state)
    return path
