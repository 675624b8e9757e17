"""Raw model throughput: images/s of each model per batch size and setting.

Models: ``detector`` (the paper's VGG16 + head), ``npr`` (the general detector), ``generator``
(the SNGAN). Give several (``--model detector npr``) to compare them in one run: each row then
also carries its speed relative to the first model at the same setting and batch size.

Settings are names built from parts: ``fp32``/``bf16``/``fp16`` (weights and inputs cast, as the
service does), ``_cl`` (channels_last), ``compile_`` (torch.compile with inductor freezing, one
static graph per batch size). Each is prepared by the service's own
:func:`models.runtime.prepare_for_inference`. ``ort_fp32`` and ``ort_int8`` are the model exported
to ONNX and run by ONNX Runtime (``ort_fp32`` for the generator too), ``ort_int8`` quantized as
``training.quantize`` does (static QDQ; calibrated on random inputs here: speed does not depend
on the weights or the scales). Every setting is measured in this one run, so the ratios are
comparable; each figure is the median of ``--repeats`` timed runs. Writes JSON; prints a table.

    python -m bench.model_speed --batch-sizes 1 4 16 64 --out bench/results/model_speed.json
    python -m bench.model_speed --model detector npr --settings compile_fp32_cl \
        --batch-sizes 1 16 --out bench/results/npr_vs_vgg16.json
    python -m bench.model_speed --settings compile_fp32_cl compile_bf16_cl ort_fp32 ort_int8 \
        --batch-sizes 1 16 --repeats 5 --out bench/results/int8.json
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from bench.machine import describe
from bench.timing import timed
from models.detector import Detector
from models.npr import NPRConfig, NPRDetector
from models.quantized import OnnxDetector, OnnxModel
from models.runtime import (
    DTYPES,
    InferenceOptions,
    prepare_for_inference,
    resolve_device,
    to_input,
)
from models.sngan import Generator, GeneratorConfig
from training.common import write_json
from training.quantize import export_onnx, quantize_onnx


@dataclass
class Config:
    model: list[str] = field(default_factory=lambda: ["detector"])
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 32])
    settings: list[str] = field(
        default_factory=lambda: ["fp32", "fp32_cl", "bf16_cl", "compile_fp32_cl"]
    )
    image_size: int = 128
    seconds: float = 5.0
    repeats: int = 1
    device: str = "auto"
    threads: int = 0
    out: Path | None = None


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--model",
        nargs="+",
        choices=list(MODELS),
        default=["detector"],
        help="detector (VGG16), npr (general detector) and/or generator",
    )
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument(
        "--settings",
        nargs="+",
        default=["fp32", "fp32_cl", "bf16_cl", "compile_fp32_cl"],
        help="any of fp32, fp32_cl, bf16_cl, compile_fp32_cl, compile_bf16_cl, ort_fp32, "
        "ort_int8 (ort_int8: detectors only)",
    )
    p.add_argument("--image-size", type=int, default=128, help="detector input / generator size")
    p.add_argument("--seconds", type=float, default=5.0, help="timed seconds per measurement")
    p.add_argument("--repeats", type=int, default=1, help="measurements per row (median kept)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", type=Path, default=None, help="JSON results file")
    return Config(**vars(p.parse_args(argv)))


def options_for(setting: str, device: torch.device) -> InferenceOptions:
    """``compile_bf16_cl`` -> bf16 weights, channels_last, compiled; ``ort_*`` -> fp32 inputs."""
    if setting in ORT_SETTINGS:
        return InferenceOptions(device)
    precision = setting.removeprefix("compile_").removesuffix("_cl")
    if precision not in DTYPES:
        raise SystemExit(
            f"unknown setting {setting!r}: expected e.g. fp32, bf16_cl, compile_fp32_cl"
        )
    return InferenceOptions(
        device, DTYPES[precision], setting.endswith("_cl"), setting.startswith("compile_")
    )


MODELS = ("detector", "npr", "generator")
ORT_SETTINGS = ("ort_fp32", "ort_int8")


def build(
    name: str, config: Config, setting: str, device: torch.device, tmp: Path
) -> tuple[torch.nn.Module, Callable]:
    size = config.image_size
    options = options_for(setting, device)
    if name == "generator":
        model: torch.nn.Module = Generator(GeneratorConfig(image_size=size))
        make = lambda n: torch.randn(n, model.config.z_dim)  # noqa: E731
    else:
        model = Detector() if name == "detector" else NPRDetector(NPRConfig(image_size=size))
        make = lambda n: torch.randn(n, 3, size, size)  # noqa: E731
    if setting in ORT_SETTINGS:
        if name == "generator" and setting != "ort_fp32":
            raise SystemExit(
                f"{setting} is measured for detectors only (a generator needs no int8)"
            )
        return onnx_model(model.eval(), setting, make(2), tmp), make
    return prepare_for_inference(model, options), lambda n: to_input(make(n), options)


def onnx_model(model: torch.nn.Module, setting: str, example: torch.Tensor, tmp: Path) -> OnnxModel:
    """The model exported to ONNX; for ``ort_int8`` quantized as training.quantize does."""
    fp32 = tmp / "fp32.onnx"
    export_onnx(model, example, fp32)
    if setting == "ort_fp32":
        return OnnxModel(fp32)
    calibration = torch.randn(32, *example.shape[1:])
    quantize_onnx(fp32, tmp / "int8.onnx", calibration, batch_size=16, reduce_range=False)
    return OnnxDetector(tmp / "int8.onnx", require_meta=False)


def measure(
    model: torch.nn.Module, x: torch.Tensor, device: torch.device, seconds: float, repeats: int
) -> list[float]:
    """Images/s of ``repeats`` timed runs, after two warm-up calls (the first compiles)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    with torch.inference_mode():
        return [
            timed(lambda: model(x), seconds, x.shape[0], warmup=2 if i == 0 else 0, sync=sync)
            for i in range(repeats)
        ]


def main(config: Config) -> list[dict]:
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    rows = []
    for name, setting in ((n, s) for n in config.model for s in config.settings):
        with tempfile.TemporaryDirectory(prefix="model-speed-") as tmp:
            model, inputs = build(name, config, setting, device, Path(tmp))
            for bs in tqdm(config.batch_sizes, desc=f"{name} {setting}", leave=False):
                runs = measure(model, inputs(bs), device, config.seconds, config.repeats)
                ips = statistics.median(runs)
                row = {
                    "model": name,
                    "setting": setting,
                    "batch": bs,
                    "images_per_s": round(ips, 2),
                    "runs": [round(r, 2) for r in runs],
                }
                rows.append(row)
                print(f"{name:9s} {setting:18s} batch {bs:3d}: {ips:8.2f} img/s", flush=True)
            torch._dynamo.reset()
    first, base_setting = config.model[0], config.settings[0]
    ips = {(r["model"], r["setting"], r["batch"]): r["images_per_s"] for r in rows}
    for r in rows:
        base = ips[(r["model"], base_setting, r["batch"])]
        r["ratio_vs_" + base_setting] = round(r["images_per_s"] / base, 2)
        for other in config.settings:  # and against every compiled torch path measured
            if other.startswith("compile_") and other != base_setting:
                r["ratio_vs_" + other] = round(
                    r["images_per_s"] / ips[(r["model"], other, r["batch"])], 2
                )
        if len(config.model) > 1:
            r["ratio_vs_" + first] = round(
                r["images_per_s"] / ips[(first, r["setting"], r["batch"])], 2
            )
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
