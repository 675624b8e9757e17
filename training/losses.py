"""GAN losses, one signature, chosen by name.

Every loss takes raw discriminator scores (logits, unbounded) and returns a scalar:
``loss.discriminator(real_scores, fake_scores)`` and ``loss.generator(fake_scores)``. SNGAN
(Miyato et al. 2018) reports its best results with the hinge loss, so that is the default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

DLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
GLoss = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class GanLoss:
    name: str
    discriminator: DLoss
    generator: GLoss


def _hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    # 2.0 exactly when D outputs 0 everywhere: the "collapsed D" signature to watch for.
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def _hinge_g(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


def _ns_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    # -log sigmoid(r) - log(1 - sigmoid(f)), written with softplus for stability.
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def _ns_g(fake: torch.Tensor) -> torch.Tensor:
    # Non-saturating: maximise log D(G(z)) instead of minimising log(1 - D(G(z))).
    return F.softplus(-fake).mean()


def _wgan_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    # Only meaningful with a Lipschitz D; spectral norm provides that here.
    return fake.mean() - real.mean()


LOSSES: dict[str, GanLoss] = {
    "hinge": GanLoss("hinge", _hinge_d, _hinge_g),
    "ns": GanLoss("ns", _ns_d, _ns_g),
    "wasserstein": GanLoss("wasserstein", _wgan_d, _hinge_g),
}


def get_loss(name: str) -> GanLoss:
    """The loss called ``name`` (``hinge``, ``ns`` = non-saturating, ``wasserstein``)."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown GAN loss {name!r}; choose one of {sorted(LOSSES)}") from None
