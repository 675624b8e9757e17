"""Raw model throughput: images/s of the detector and generator per batch size and setting.

Settings are names built from parts: ``fp32``/``bf16``/``fp16`` (weights and inputs cast, as the
service does), ``_cl`` (channels_last), ``compile_`` (torch.compile with inductor freezing, one
static graph per batch size). Each is prepared by the service's own
:func:`models.runtime.prepare_for_inference`. Every setting is measured in this one run, so the
ratios are comparable. Writes JSON; prints a table.

    python -m bench.model_speed --batch-sizes 1 4 16 64 --out bench/results/model_speed.json
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from bench.machine import describe
from bench.timing import timed
from models.detector import Detector
from models.runtime import (
    DTYPES,
    InferenceOptions,
    prepare_for_inference,
    resolve_device,
    to_input,
)
from models.sngan import Generator, GeneratorConfig
from training.common import write_json


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


def options_for(setting: str, device: torch.device) -> InferenceOptions:
    """``compile_bf16_cl`` -> bf16 weights, channels_last, compiled."""
    precision = setting.removeprefix("compile_").removesuffix("_cl")
    if precision not in DTYPES:
        raise SystemExit(
            f"unknown setting {setting!r}: expected e.g. fp32, bf16_cl, compile_fp32_cl"
        )
    return InferenceOptions(
        device, DTYPES[precision], setting.endswith("_cl"), setting.startswith("compile_")
    )


def build(config: Config, options: InferenceOptions) -> tuple[torch.nn.Module, Callable]:
    if config.model == "detector":
        model: torch.nn.Module = Detector()
        size = config.image_size
        make = lambda n: torch.randn(n, 3, size, size)  # noqa: E731
    else:
        model = Generator(GeneratorConfig(image_size=config.image_size))
        make = lambda n: torch.randn(n, model.config.z_dim)  # noqa: E731
    return prepare_for_inference(model, options), lambda n: to_input(make(n), options)


def measure(model: torch.nn.Module, x: torch.Tensor, device: torch.device, seconds: float) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    with torch.inference_mode():
        return timed(lambda: model(x), seconds, x.shape[0], warmup=2, sync=sync)


def main(config: Config) -> list[dict]:
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    rows = []
    for setting in config.settings:
        model, inputs = build(config, options_for(setting, device))
        for bs in tqdm(config.batch_sizes, desc=setting, leave=False):
            ips = measure(model, inputs(bs), device, config.seconds)
            row = {"setting": setting, "batch": bs, "images_per_s": round(ips, 2)}
            rows.append(row)
            print(f"{config.model:9s} {setting:18s} batch {bs:3d}: {ips:8.2f} img/s", flush=True)
        torch._dynamo.reset()
    base = {r["batch"]: r["images_per_s"] for r in rows if r["setting"] == config.settings[0]}
    for r in rows:
        r["ratio_vs_" + config.settings[0]] = round(r["images_per_s"] / base[r["batch"]], 2)
    result = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "machine": describe(device),
        "rows": rows,
    }
    if config.out:
        write_json(config.out, result)
    return rows


if __name__ == "__main__":
    main(parse_args())
