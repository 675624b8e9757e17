"""Latent noise by seed: row i drawn from its own generator seeded ``seeds[i]``, on the CPU, so a
seed gives the same z (and image) on every device, in every batch and in any order. The service's
``/generate``, ``training.synthesize`` and the DCGAN fake source all draw z here."""

from __future__ import annotations

from collections.abc import Iterable

import torch

MAX_SEED = 2**32 - 1  # the seeds /generate takes and returns: exact as a JSON number anywhere


def series_seeds(seed: int, indices: Iterable[int]) -> list[int]:
    """Image i's seed in a series starting at ``seed``: ``seed + i``, wrapping past MAX_SEED to
    0, so every seed handed out can be asked for again and gives the same image."""
    return [(seed + i) % (MAX_SEED + 1) for i in indices]


def seed_noise(seeds: Iterable[int], z_dim: int) -> torch.Tensor:
    """(len(seeds), z_dim) standard normal noise, row i from seed ``seeds[i]``."""
    g = torch.Generator()
    rows = [torch.randn(z_dim, generator=g.manual_seed(int(s))) for s in seeds]
    return torch.stack(rows) if rows else torch.empty(0, z_dim)
