"""How long a pipeline stage will take on this machine, said before it starts.

A time-capped stage takes its cap (or less); a stage counted in steps is timed over a couple of
steps of its own model on random inputs of its batch shape, on its own device, and multiplied
out. Stages of a handful of steps are not timed (the timing would cost as much as the stage).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from models.runtime import autocast, resolve_device, resolve_dtype
from training.fakes import FakesConfig
from training.train_detector import TrainConfig, build_model
from training.train_features import TrainFeaturesConfig
from training.train_gan import TrainGanConfig, build_run

MIN_TIMED_STEPS = 20  # fewer steps than this: not worth timing


@dataclass(frozen=True)
class Estimate:
    seconds: float | None  # None: not estimated
    detail: str

    def __str__(self) -> str:
        if self.seconds is None:
            return self.detail
        return f"~{duration(self.seconds)} ({self.detail})"


def duration(seconds: float) -> str:
    """45 s, 12 min, 3 h 20 min."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def seconds_per_call(fn: Callable[[], object], device: torch.device, repeats: int = 2) -> float:
    """Mean wall time of ``fn`` after one warm-up call (allocations, cuDNN autotuning)."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - t0) / repeats


def steps_at_pace(steps: int, per_step: float, cap_s: float) -> Estimate:
    """``steps`` at ``per_step`` seconds, or the time cap with the steps reachable in it."""
    total = steps * per_step
    if cap_s > 0 and total > cap_s:
        reach = int(cap_s / per_step)
        return Estimate(
            cap_s,
            f"time cap; ~{reach:,} of {steps:,} steps fit at {per_step:.3g} s/step measured",
        )
    return Estimate(total, f"{steps:,} steps at {per_step:.3g} s/step measured")


def features(cfg: TrainFeaturesConfig) -> Estimate:
    """The lesion feature model's stage: counted in epochs unless given steps."""
    if cfg.steps:
        return untimed(cfg.steps, 60 * cfg.time_limit_min)
    if cfg.time_limit_min > 0:
        return Estimate(60 * cfg.time_limit_min, f"time cap, at most {cfg.epochs} epochs")
    return Estimate(None, f"{cfg.epochs} epochs: minutes on a CPU")


def untimed(steps: int, cap_s: float) -> Estimate:
    if cap_s > 0:
        return Estimate(cap_s, f"time cap, at most {steps:,} steps")
    return Estimate(None, f"{steps:,} steps: seconds")


def gan(cfg: TrainGanConfig) -> Estimate:
    """The SNGAN stage: ``n_dis`` D updates + one G update per step."""
    steps, cap = cfg.steps, 60 * cfg.time_limit_min
    if steps < MIN_TIMED_STEPS:
        return untimed(steps, cap)
    device = resolve_device(cfg.device)
    run = build_run(cfg, device)
    bs, size = cfg.batch_size, cfg.image_size
    real = torch.randn(bs, 3, size, size, device=device)
    real = real.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        for _ in range(cfg.n_dis):
            run.d_step(real)
        run.g_step(bs)

    return steps_at_pace(steps, seconds_per_call(step, device), cap)


def detector_steps(cfg: TrainConfig, n_train: int) -> int:
    """Optimiser steps of a detector stage on ``n_train`` images of its larger class."""
    per_step = max(1, cfg.batch_size // 2)
    total = cfg.epochs * math.ceil(max(1, n_train) / per_step)
    return min(total, cfg.steps) if cfg.steps > 0 else total


def detector(cfg: TrainConfig, n_train: int) -> Estimate:
    """A detector stage (VGG16 or NPR): forward, backward and AdamW on one batch, times the
    steps of its epochs (validation passes come on top)."""
    steps, cap = detector_steps(cfg, n_train), 60 * cfg.time_limit_min
    if steps < MIN_TIMED_STEPS:
        return untimed(steps, cap)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.precision, device)
    model: nn.Module = build_model(dataclasses.replace(cfg, pretrained="none"))
    model = model.to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    bs, size = cfg.batch_size, cfg.image_size
    x = torch.randn(bs, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    y = (torch.arange(bs, device=device) % 2).float()

    def step() -> None:
        with autocast(device, dtype):
            logits = model(x)
        loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    found = steps_at_pace(steps, seconds_per_call(step, device), cap)
    return dataclasses.replace(found, detail=found.detail + ", plus validation")


def fakes(cfg: FakesConfig) -> Estimate:
    """The zoo and DCGAN are capped in seconds (or steps); rebuilding and sampling come on top."""
    zoo = len(cfg.zoo) if "zoo" in cfg.sources else 0
    dcgan = "dcgan" in cfg.sources
    capped = zoo * cfg.zoo_seconds + (cfg.dcgan_seconds if dcgan else 0.0)
    per = f"{cfg.per_source:,} images per source"
    if capped > 0:
        return Estimate(capped, f"{zoo} autoencoders + DCGAN under time caps, then {per}")
    return Estimate(None, f"{zoo} autoencoders + DCGAN of a few steps each, then {per}")
