"""Small, reusable figures for training runs: image grids and loss curves.

Matplotlib is imported lazily with the non-interactive Agg backend, so importing this module
costs nothing and works on a headless server.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from training.common import read_csv


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> Image.Image:
    """uint8 (N, 3, H, W) -> one RGB image with the tiles in rows of ``nrow`` (default ~sqrt N)."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    n, _, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    grid = torch.zeros(3, rows * (h + padding) + padding, nrow * (w + padding) + padding)
    grid = grid.to(torch.uint8)
    for i in range(n):
        r, c = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        grid[:, top : top + h, left : left + w] = images[i].cpu()
    return Image.fromarray(grid.permute(1, 2, 0).numpy(), mode="RGB")


def save_grid(
    images: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int = 1
) -> Path:
    """Write :func:`make_grid` as PNG; ``scale`` > 1 enlarges small tiles (nearest neighbour)."""
    img = make_grid(images, nrow)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG", optimize=True)
    return path


def _smooth(values: Sequence[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot_curves(
    log_csv: str | Path,
    path: str | Path,
    panels: Sequence[tuple[str, Sequence[str]]] = (
        ("loss", ("d_loss", "g_loss")),
        ("mean D score", ("d_real", "d_fake")),
    ),
    x: str = "step",
    smooth: int = 1,
    title: str = "",
) -> Path:
    """One panel per (ylabel, columns) of a training ``log.csv``, against ``x``; PNG at ~100 dpi."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_csv(log_csv)
    if not rows:
        raise ValueError(f"{log_csv} has no rows to plot")
    xs = [float(r[x]) for r in rows]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.6 * len(panels)), sharex=True)
    axes = [axes] if len(panels) == 1 else list(axes)
    for ax, (ylabel, cols) in zip(axes, panels, strict=True):
        for col in cols:
            ys = [float(r[col]) for r in rows]
            ax.plot(xs, _smooth(ys, smooth) if smooth > 1 else ys, label=col, lw=1)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    axes[-1].set_xlabel(x)
    if title:
        axes[0].set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
