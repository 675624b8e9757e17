"""Raw model throughput: images/s of the detector and generator per batch size and setting.

Settings: fp32 eager, + channels_last, + bf16 autocast (where the CPU/GPU has native bf16),
+ torch.compile with inductor freezing. Every setting is measured in this one run, so the ratios
are comparable. Writes JSON; prints a table.

    python -m bench.model_speed --batch-sizes 1 8 32 --out bench/results/model_speed.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from models.detector import Detector
from models.sngan import Generator, GeneratorConfig
from training.common import autocast, cpu_has_bf16, resolve_device


@dataclass
class Config:
    model: str = "detector"
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 32])
    settings: list[str] = field(
        default_factory=lambda: ["fp32", "fp32_cl", "bf16_cl", "compile_fp32_cl"]
    )
    image_size: int = 128
    seconds: float = 5.0
    device: str = "auto"
    threads: int = 0
    out: Path | None = None


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", choices=["detector", "generator"], default="detector")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument(
        "--settings",
        nargs="+",
        default=["fp32", "fp32_cl", "bf16_cl", "compile_fp32_cl"],
        help="any of fp32, fp32_cl, bf16_cl, compile_fp32_cl, compile_bf16_cl",
    )
    p.add_argument("--image-size", type=int, default=128, help="detector input / generator size")
    p.add_argument("--seconds", type=float, default=5.0, help="timed seconds per measurement")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", type=Path, default=None, help="JSON results file")
    return Config(**vars(p.parse_args(argv)))


def build(config: Config, setting: str, device: torch.device) -> tuple[torch.nn.Module, callable]:
    if config.model == "detector":
        model = Detector().eval()
        make = lambda n: torch.randn(n, 3, config.image_size, config.image_size)  # noqa: E731
    else:
        model = Generator(GeneratorConfig(image_size=config.image_size)).eval()
        make = lambda n: torch.randn(n, 128)  # noqa: E731
    model = model.to(device)
    cl = "_cl" in setting
    if cl:
        model = model.to(memory_format=torch.channels_last)
    if setting.startswith("compile"):
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        model = torch.compile(model)

    def inputs(n: int) -> torch.Tensor:
        x = make(n).to(device)
        return x.to(memory_format=torch.channels_last) if cl and x.dim() == 4 else x

    return model, inputs


def measure(model, x: torch.Tensor, dtype: torch.dtype, device: torch.device, seconds: float):
    with torch.inference_mode(), autocast(device, dtype):
        model(x)  # warm-up (and compilation)
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or n < 2:
            model(x)
            n += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    return n * x.shape[0] / elapsed


def main(config: Config) -> list[dict]:
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    has_bf16 = device.type == "cuda" or cpu_has_bf16()
    rows = []
    for setting in config.settings:
        dtype = torch.bfloat16 if "bf16" in setting else torch.float32
        model, inputs = build(config, setting, device)
        for bs in config.batch_sizes:
            ips = measure(model, inputs(bs), dtype, device, config.seconds)
            row = {"setting": setting, "batch": bs, "images_per_s": round(ips, 2)}
            rows.append(row)
            print(f"{config.model:9s} {setting:18s} batch {bs:3d}: {ips:8.2f} img/s", flush=True)
        torch._dynamo.reset()
    base = {r["batch"]: r["images_per_s"] for r in rows if r["setting"] == config.settings[0]}
    for r in rows:
        r["ratio_vs_" + config.settings[0]] = round(r["images_per_s"] / base[r["batch"]], 2)
    result = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "machine": {
            "device": torch.cuda.get_device_name()
            if device.type == "cuda"
            else platform.processor(),
            "threads": torch.get_num_threads(),
            "native_bf16": has_bf16,
            "torch": torch.__version__,
        },
        "rows": rows,
    }
    if config.out:
        config.out.parent.mkdir(parents=True, exist_ok=True)
        config.out.write_text(json.dumps(result, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main(parse_args())
