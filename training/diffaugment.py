"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) for GANs trained on little data.

The same random colour / translation / cutout transforms are applied to real *and* generated
images before the discriminator sees them, and gradients flow through them to the generator.
D then cannot memorise the ~5,000 training lesions, while G is not taught to produce augmented
images (the augmentation sits after G, on both sides). Port of the authors' reference
``DiffAugment_pytorch.py`` (mit-han-lab/data-efficient-gans), with an explicit
``torch.Generator`` so runs are reproducible and resumable.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Aug = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]


def _rand(x: torch.Tensor, shape: tuple[int, ...], g: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, generator=g, device=x.device, dtype=x.dtype)


def brightness(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    return x + (_rand(x, (x.shape[0], 1, 1, 1), g) - 0.5)


def saturation(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_rand(x, (x.shape[0], 1, 1, 1), g) * 2) + mean


def contrast(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x, (x.shape[0], 1, 1, 1), g) + 0.5) + mean


def translation(x: torch.Tensor, g: torch.Generator | None, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its size, zero-padding what comes in."""
    n, _, h, w = x.shape
    sx, sy = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dev = x.device
    tx = torch.randint(-sx, sx + 1, (n, 1, 1), generator=g, device=dev)
    ty = torch.randint(-sy, sy + 1, (n, 1, 1), generator=g, device=dev)
    gb, gx, gy = torch.meshgrid(
        torch.arange(n, device=dev),
        torch.arange(h, device=dev),
        torch.arange(w, device=dev),
        indexing="ij",
    )
    gx = torch.clamp(gx + tx + 1, 0, h + 1)
    gy = torch.clamp(gy + ty + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    return padded.permute(0, 2, 3, 1).contiguous()[gb, gx, gy].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, g: torch.Generator | None, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of ``ratio`` x size at a random place in each image."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dev = x.device
    ox = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), generator=g, device=dev)
    oy = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), generator=g, device=dev)
    gb, gx, gy = torch.meshgrid(
        torch.arange(n, device=dev),
        torch.arange(ch, device=dev),
        torch.arange(cw, device=dev),
        indexing="ij",
    )
    gx = torch.clamp(gx + ox - ch // 2, 0, h - 1)
    gy = torch.clamp(gy + oy - cw // 2, 0, w - 1)
    mask = torch.ones(n, h, w, dtype=x.dtype, device=dev)
    mask[gb, gx, gy] = 0
    return x * mask.unsqueeze(1)


POLICIES: dict[str, list[Aug]] = {
    "color": [brightness, saturation, contrast],
    "translation": [translation],
    "cutout": [cutout],
}


def parse_policy(policy: str) -> tuple[str, ...]:
    """``"color,translation,cutout"`` -> names, validated; ``""``/``"none"`` -> no augmentation."""
    if policy.strip().lower() in ("", "none"):
        return ()
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown DiffAugment policy {unknown}; choose from {sorted(POLICIES)}")
    return names


def diff_augment(
    x: torch.Tensor, policy: tuple[str, ...] | str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Apply the policy's transforms in order (independent random parameters per image)."""
    names = parse_policy(policy) if isinstance(policy, str) else policy
    for name in names:
        for fn in POLICIES[name]:
            x = fn(x, generator)
    return x
