"""Which layers cost an int8 detector its agreement with fp32, and does keeping them fp32 help?

For one checkpoint: every weight layer (Conv, Gemm, MatMul) of its ONNX export quantized
**alone**, the rest fp32, scored on its **validation** images (mean |dp| and verdict agreement
with fp32 at the checkpoint's operating point); then the most sensitive layers kept fp32, the
``--keep`` counts in that order, each model scored on validation and, to report it, on the whole
held-out test set. The ranking never looks at the test set. Quantization and scoring are
``training.quantize``'s own (calibrated on the same validation images it uses).

    python -m bench.int8_sensitivity --checkpoint artifacts/detector/detector.safetensors \\
        --data data/ham10000-200x150 --keep 0 1 4 8 10 \\
        --out bench/results/int8_sensitivity.json
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from bench.machine import describe
from models.checkpoint import load_model
from models.quantized import OnnxDetector
from training.common import write_json
from training.detector_data import checkpoint_sets
from training.quantize import (
    calibration_inputs,
    compare,
    detector_example,
    export_onnx,
    graph_nodes,
    operating_views,
    quantize_onnx,
    ranked,
    sensitivity,
    served_verdicts,
)


@dataclass
class Config:
    checkpoint: Path = Path("artifacts/detector/detector.safetensors")
    data: Path = Path("data/ham10000")
    synthetic: Path | None = None
    keep: list[int] = field(default_factory=lambda: [0, 1, 2, 4, 8])
    ops: str = "weights"
    calibration_images: int = 64
    val_limit: int = 256
    test_limit: int = 0
    batch_size: int = 32
    seed: int = 0
    out: Path | None = None


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    a = p.add_argument
    a("--checkpoint", type=Path, default=Config.checkpoint, help="detector .safetensors")
    a("--data", type=Path, default=Config.data, help="HAM10000 folder it trained on")
    a("--synthetic", type=Path, default=None, help="for checkpoints naming no fake sources")
    a("--keep", type=int, nargs="+", default=[0, 1, 2, 4, 8], help="layers kept fp32, counts")
    a(
        "--ops",
        choices=("weights", "all"),
        default="weights",
        help="rank the weight layers only (Conv, Gemm, MatMul), or every node of the graph (ONNX "
        "Runtime also quantizes the tensors between additions, residuals, pooling, resizing; "
        "keeping every node fp32 is the fp32 model)",
    )
    a(
        "--calibration-images",
        type=int,
        default=Config.calibration_images,
        help="validation images per class and source to calibrate on (training.quantize's)",
    )
    a("--val-limit", type=int, default=Config.val_limit, help="validation images per class")
    a("--test-limit", type=int, default=0, help="test images per class and source (0: all)")
    a("--batch-size", type=int, default=Config.batch_size, help="scoring batch size")
    a("--seed", type=int, default=0, help="seed of the image subsamples")
    a("--out", type=Path, default=None, help="JSON report")
    return Config(**vars(p.parse_args(argv)))


def layers_of(checkpoint: Path, ops: str = "weights") -> list[str]:
    """The ranked nodes of a checkpoint's ONNX export (what ``--keep`` counts)."""
    model, meta = load_model(checkpoint)
    with tempfile.TemporaryDirectory(prefix="int8-layers-") as tmp:
        path = Path(tmp) / "fp32.onnx"
        export_onnx(model, detector_example(meta.preprocess_config.image_size), path)
        return graph_nodes(path, ops)


def main(cfg: Config) -> dict:
    model, meta = load_model(cfg.checkpoint)
    pre = meta.preprocess_config
    sets = checkpoint_sets(
        meta, cfg.data, cfg.synthetic, {"val": cfg.val_limit, "test": cfg.test_limit}, cfg.seed
    )
    calibration_set = checkpoint_sets(
        meta, cfg.data, cfg.synthetic, {"val": cfg.calibration_images, "test": 1}, cfg.seed
    )["val"]
    calibration = calibration_inputs(meta, calibration_set)
    views = {name: operating_views(meta, sets[name]) for name in ("val", "test")}
    fp32_scores = {name: served_verdicts(model, meta, v) for name, v in views.items()}
    result: dict = {
        "config": {k: str(v) for k, v in asdict(cfg).items()},
        "machine": describe(torch.device("cpu")),
    }
    with tempfile.TemporaryDirectory(prefix="int8-sensitivity-") as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        export_onnx(model, detector_example(pre.image_size), fp32)
        nodes = graph_nodes(fp32, cfg.ops)
        alone = sensitivity(
            fp32, calibration, meta, views["val"], fp32_scores["val"], nodes, quiet=False
        )
        order = ranked(alone)

        def quantized(exclude: list[str]) -> OnnxDetector:
            quantize_onnx(fp32, int8, calibration, 16, False, exclude=exclude)
            return OnnxDetector(int8, require_meta=False)

        rows = []
        for k in tqdm(cfg.keep, desc="keeping the worst fp32"):
            q = quantized(order[:k])
            row = {"kept_fp32": order[:k]}
            for name in ("val", "test"):
                row[name] = compare(q, meta, views[name], fp32_scores[name])
            rows.append(row)
            print(
                f"{k:3d} layers fp32: val mean |dp| {row['val']['mean_abs_dp']:.4f}, agreement "
                f"{row['val']['agreement']:.4f}; test {row['test']['mean_abs_dp']:.4f}, "
                f"{row['test']['agreement']:.4f}",
                flush=True,
            )
    result.update(
        images={name: len(v) for name, v in views.items()},
        alone=alone,
        ranked=order,
        kept=rows,
    )
    if cfg.out:
        write_json(cfg.out, result)
    return result


if __name__ == "__main__":
    main(parse_args())
