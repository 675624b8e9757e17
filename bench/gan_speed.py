"""SNGAN training speed on this machine: D and G updates per second by size, width, precision.

    python -m bench.gan_speed --sizes 64 128 --channels 64 16 --precisions fp32 bf16

Times ``Run.d_step`` / ``Run.g_step`` from ``training.train_gan`` (the code the trainer runs) on
random "real" batches, after one warm-up update of each, and prints a Markdown table. A
training iteration is ``n_dis`` D updates + 1 G update, so iterations/s at n_dis = k is
``1 / (k * t_D + t_G)``; both k = 5 (paper) and k = 1 (TTUR) are shown.
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from models.runtime import resolve_device
from training.train_gan import TrainGanConfig, build_run


@dataclass
class BenchConfig:
    sizes: list[int] = field(default_factory=lambda: [64, 128])
    channels: list[int] = field(default_factory=lambda: [64])
    precisions: list[str] = field(default_factory=lambda: ["fp32", "bf16"])
    batch_size: int = 64
    seconds: float = 10.0
    device: str = "auto"
    threads: int = 0


def parse_args(argv: list[str] | None = None) -> BenchConfig:
    d = BenchConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=d.sizes, help="image sizes")
    p.add_argument("--channels", type=int, nargs="+", default=d.channels, help="G = D widths")
    p.add_argument("--precisions", nargs="+", default=d.precisions, help="fp32 / bf16")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per update")
    p.add_argument("--seconds", type=float, default=d.seconds, help="time per measurement")
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=d.threads, help="CPU threads (0 = default)")
    return BenchConfig(**vars(p.parse_args(argv)))


def _time(fn, seconds: float, sync) -> float:
    """Mean seconds per call: at least 2 calls, then until ``seconds`` have passed."""
    n, t0 = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - t0 < seconds:
        fn()
        sync()
        n += 1
    return (time.perf_counter() - t0) / n


def main(config: BenchConfig) -> list[dict]:
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(f"device {device}, threads {torch.get_num_threads()}, batch {config.batch_size}")
    print("| size | width | precision | D upd/s | G upd/s | it/s n_dis=5 | it/s n_dis=1 |")
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    rows = []
    for size, ch, prec in itertools.product(config.sizes, config.channels, config.precisions):
        cfg = TrainGanConfig(
            data=Path(), out=Path(), image_size=size, g_channels=ch, d_channels=ch, precision=prec
        )
        run = build_run(cfg, device)
        real = torch.rand(config.batch_size, 3, size, size, device=device) * 2 - 1
        real = real.contiguous(memory_format=torch.channels_last)
        run.d_step(real)  # warm-up (allocations, oneDNN primitive caches)
        run.g_step(config.batch_size)
        t_d = _time(lambda run=run, real=real: run.d_step(real), config.seconds, sync)
        t_g = _time(lambda run=run: run.g_step(config.batch_size), config.seconds, sync)
        row = {
            "size": size,
            "width": ch,
            "precision": prec,
            "d_per_s": 1 / t_d,
            "g_per_s": 1 / t_g,
            "it_per_s_ndis5": 1 / (5 * t_d + t_g),
            "it_per_s_ndis1": 1 / (t_d + t_g),
        }
        rows.append(row)
        print(
            f"| {size} | {ch} | {prec} | {row['d_per_s']:.3f} | {row['g_per_s']:.3f} | "
            f"{row['it_per_s_ndis5']:.3f} | {row['it_per_s_ndis1']:.3f} |",
            flush=True,
        )
    return rows


if __name__ == "__main__":
    main(parse_args())
