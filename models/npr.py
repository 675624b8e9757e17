"""NPR detector (Tan et al., CVPR 2024): a truncated ResNet-50 on neighbouring-pixel residuals.

Almost every generator (GANs, diffusion decoders, autoencoders) builds its output by
*upsampling*: nearest, bilinear, transposed or pixel-shuffle layers make the pixels of each 2x2
block depend on each other in a way a camera sensor and a JPEG encoder do not. The network
therefore never sees the image itself, only

    npr(x) = x - up(down(x))     (nearest x0.5, then nearest x2)

the difference between each pixel and the top-left pixel of its 2x2 block. Image content
(lesion colour, shape, hair) mostly cancels; the local correlation left by an upsampling layer
does not. That is why the paper trains this small network *from scratch* on one GAN (ProGAN)
and still averages 92.5% accuracy over 8 unseen GANs. The layers follow the official code
(chuangchuangtan/NPR-DeepfakeDetection, ``networks/resnet.py``): a 3x3 stride-2 stem on
``npr * 2/3``, max pool, ResNet-50's layer1 and layer2 (Bottlenecks), average pool, one logit.

``residual_norm="rms"`` (an option, not in the paper) divides each image's residual by its own
root mean square. The residual's *size* measures how sharp an image is, and cheap fake sources
trained for minutes (the upsampler zoo, a small GAN) are blurrier than real photos while other
generators can be noisier: a network that may use the size learns "soft = fake" and calls noisy
fakes real. Normalised, only the residual's *pattern* is left to learn.

The logit is for the positive class, *synthetic*: ``P(synthetic) = sigmoid(logit)``, as
:class:`models.detector.Detector`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import Bottleneck

PARAMETER_COUNT = 1_437_761  # NPRConfig() defaults; asserted in tests/models/test_npr.py
RESIDUAL_NORMS = ("none", "rms")
RMS_FLOOR = 1e-3  # a flat image (residual ~ 0) is not blown up into noise


def npr_residual(x: torch.Tensor) -> torch.Tensor:
    """``x - up(down(x))`` with nearest resampling: each pixel minus its 2x2 block's top-left.

    Exactly 0 wherever the image is a nearest-neighbour x2 upsampling; ``x`` is (N, C, H, W)
    with even H and W (an odd side has no whole 2x2 blocks to compare).
    """
    h, w = x.shape[-2:]
    if h % 2 or w % 2:
        raise ValueError(f"npr_residual needs even height and width, got {h}x{w}")
    down = F.interpolate(x, scale_factor=0.5, mode="nearest")
    return x - F.interpolate(down, size=(h, w), mode="nearest")


@dataclass(frozen=True)
class NPRConfig:
    image_size: int = 64  # the crop it is trained and served at; the network is size-agnostic
    layers: tuple[int, ...] = (3, 4)  # Bottlenecks per stage (ResNet-50's first two stages)
    width: int = 64  # stem channels; stage i has width * 2**i planes, 4x that at its output
    residual_norm: str = "none"  # or "rms": each image's residual divided by its own RMS

    def __post_init__(self) -> None:
        # JSON (checkpoint metadata) gives lists back; the config stays hashable and comparable.
        object.__setattr__(self, "layers", tuple(int(n) for n in self.layers))
        if self.image_size < 2 or self.image_size % 2:
            raise ValueError(f"image_size must be even and >= 2, got {self.image_size}")
        if not self.layers or any(n < 1 for n in self.layers):
            raise ValueError(f"layers must be one or more block counts >= 1, got {self.layers}")
        if self.width < 1:
            raise ValueError(f"width must be >= 1, got {self.width}")
        if self.residual_norm not in RESIDUAL_NORMS:
            raise ValueError(f"residual_norm must be one of {RESIDUAL_NORMS}")


class NPRDetector(nn.Module):
    """image (N, 3, S, S), normalised, S even -> one logit per image (N,); positive = synthetic."""

    def __init__(self, config: NPRConfig = NPRConfig()) -> None:
        super().__init__()
        self.config = config
        w = config.width
        self.conv1 = nn.Conv2d(3, w, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self._inplanes = w
        # Names as in the official code (layer1, layer2, fc1), so its state dicts load as they are.
        self.stages = [f"layer{i + 1}" for i in range(len(config.layers))]
        for i, (name, n) in enumerate(zip(self.stages, config.layers, strict=True)):
            self.add_module(name, self._make_stage(w * 2**i, n, stride=1 if i == 0 else 2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(self._inplanes, 1)
        for m in self.modules():  # as torchvision's and the official ResNet
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        out = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or self._inplanes != out:
            downsample = nn.Sequential(
                nn.Conv2d(self._inplanes, out, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out),
            )
        stage = [Bottleneck(self._inplanes, planes, stride, downsample)]
        stage += [Bottleneck(out, planes) for _ in range(1, blocks)]
        self._inplanes = out
        return nn.Sequential(*stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = npr_residual(x)
        if self.config.residual_norm == "rms":
            r = r / (r.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt() + RMS_FLOOR)
        x = self.conv1(r * (2.0 / 3.0))  # the official code's scaling
        x = self.maxpool(self.relu(self.bn1(x)))
        for name in self.stages:
            x = getattr(self, name)(x)
        return self.fc1(self.avgpool(x).flatten(1)).squeeze(1)
