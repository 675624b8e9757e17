"""Quantize detectors to int8 for CPU serving, and measure that their verdicts still agree.

For each checkpoint: export the fp32 model to ONNX (batch size dynamic), quantize it statically
with ONNX Runtime (QDQ; int8 per-channel weights, uint8 activations) calibrated on the
checkpoint's own **validation** images of both classes (never its test set), correct its output
(one scale and one shift of the logit, least squares against the fp32 logits on validation
images: int8 rounding shifts a ReLU network's output, and a verdict near the threshold moves
with it; ``training.logit_correction``), then score its **held-out test set** (real test lesions
and the test split of every fake source it names) with both models and record how often the
served verdicts agree and how much ROC-AUC moved. The int8 file, ``detector.int8.onnx``, goes
beside ``detector.safetensors`` with all of that in its metadata (``models.quantized``); the
service serves it only when those figures pass its gate.

Why ONNX Runtime: on the 2-core AVX2 CPU of issue 16's trial it was the fastest int8 path at
batch 1 and batch 16 (torchao PT2E + inductor close at 16, half its speed at 1); on an AVX-512
VNNI one it runs ~2x native bf16 (docs/BENCHMARKS.md); it needs no per-batch-size compilation
at start-up, and its files are plain protobuf (no pickle).

    python -m training.quantize --checkpoint artifacts/detector/detector.safetensors \\
        artifacts/general/detector.safetensors --data data/ham10000
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from models.checkpoint import CheckpointMeta, code_version, load_model
from models.operating_point import OperatingPoint
from models.preprocessing import PreprocessConfig, normalize
from models.quantized import (
    INPUT_NAME,
    METADATA_KEY,
    Gate,
    OnnxDetector,
    QuantizedMeta,
    gate_problem,
    quantized_path,
)
from training.common import write_json
from training.detector_data import DetectorData, checkpoint_sets, load_views
from training.logit_correction import append_affine, fit_correction, implausible
from training.metrics import roc_auc
from training.scoring import calibrated, predict_view_logits, verdicts

logger = logging.getLogger(__name__)
TOOLCHAIN = "onnxruntime static QDQ"
WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
AUTO_KEEP = (0, 1, 2, 4, 8, 16, 32)
CALIBRATION_METHODS = ("minmax", "percentile")


@dataclass
class QuantizeConfig:
    checkpoints: list[Path] = field(default_factory=list)
    data: Path = Path("data/ham10000")
    synthetic: Path | None = None  # for checkpoints that name no fake sources
    calibration_images: int = 256  # per class and per fake source, from the validation split
    calibration_method: str = "percentile"  # activation ranges: minmax, or percentile 99.999
    calibration_views: int = 1024  # at most, half per class: percentile holds them all in memory
    correct_logits: bool = True  # fit the int8 output's scale and shift to fp32's on validation
    fp32_head: bool = False  # keep the logit's layer (and what follows it) in fp32
    test_limit: int = 0  # images per class and per source for the agreement (0: all)
    reduce_range: bool = False  # 7-bit weights: for CPUs without VNNI if agreement drops
    keep_fp32: str = "0"  # nodes kept fp32, most sensitive first: a count, or auto
    sensitivity_images: int = 256  # validation images per class and source: correction, ranking
    min_agreement: float = Gate.min_agreement
    max_auc_drop: float = Gate.max_auc_drop
    batch_size: int = 16
    seed: int = 0
    quiet: bool = False


def parse_args(argv: list[str] | None = None) -> QuantizeConfig:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    a = p.add_argument
    a(
        "--checkpoint",
        dest="checkpoints",
        type=Path,
        nargs="+",
        required=True,
        help="detector .safetensors files; each gets a detector.int8.onnx beside it",
    )
    a("--data", type=Path, default=QuantizeConfig.data, help="HAM10000 folder they trained on")
    a(
        "--synthetic",
        type=Path,
        default=None,
        help="synthetic folder, for checkpoints from before named fake sources",
    )
    a(
        "--calibration-images",
        type=int,
        default=QuantizeConfig.calibration_images,
        help="validation images per class (and per fake source) to calibrate on",
    )
    a(
        "--calibration-method",
        choices=CALIBRATION_METHODS,
        default=QuantizeConfig.calibration_method,
        help="activation ranges: the largest value seen (minmax) or its 99.999th percentile "
        "(measured on the quick VGG16: percentile keeps more verdicts, docs/BENCHMARKS.md)",
    )
    a(
        "--calibration-views",
        type=int,
        default=QuantizeConfig.calibration_views,
        help="calibrate on at most this many views, half per class (a seeded sample; 0: all): "
        "ONNX Runtime's percentile calibration keeps every activation of every view in memory",
    )
    a(
        "--no-correct-logits",
        dest="correct_logits",
        action="store_false",
        help="leave the int8 output as ONNX Runtime wrote it (by default its logit gets one "
        "scale and one shift, fitted to the fp32 logits on validation images)",
    )
    a(
        "--fp32-head",
        action="store_true",
        help="keep the layer that makes the logit (and the nodes after it) in fp32: the int8 "
        "logit is otherwise rounded to a uint8 grid",
    )
    a(
        "--test-limit",
        type=int,
        default=0,
        help="held-out test images per class and source for the agreement (0: all)",
    )
    a(
        "--reduce-range",
        action="store_true",
        help="7-bit weights (CPUs without VNNI can saturate 8-bit products)",
    )
    a(
        "--keep-fp32",
        default="0",
        help="keep the N nodes whose int8 error is largest in fp32, ranked on validation images "
        "(each node quantized alone; minutes: one quantization per node), or 'auto': the "
        f"smallest of {AUTO_KEEP} whose validation agreement reaches --min-agreement "
        "(the test set is only measured, never used to choose)",
    )
    a(
        "--sensitivity-images",
        type=int,
        default=QuantizeConfig.sensitivity_images,
        help="validation images per class (and per fake source) that fit the output correction "
        "and rank the nodes for --keep-fp32",
    )
    a(
        "--min-agreement",
        type=float,
        default=Gate.min_agreement,
        help="verdict agreement the service's default gate asks for (reported here)",
    )
    a(
        "--max-auc-drop",
        type=float,
        default=Gate.max_auc_drop,
        help="ROC-AUC drop the service's default gate allows (reported here)",
    )
    a("--batch-size", type=int, default=QuantizeConfig.batch_size, help="scoring batch size")
    a("--seed", type=int, default=0, help="seed of the image subsamples")
    a("--quiet", action="store_true", help="no progress bars")
    cfg = QuantizeConfig(**vars(p.parse_args(argv)))
    if cfg.calibration_views != 0 and cfg.calibration_views < 2:
        p.error("--calibration-views takes 0 (all) or at least 2 (one per class)")
    if cfg.keep_fp32 != "auto" and not cfg.keep_fp32.isdigit():
        p.error(f"--keep-fp32 takes a count or 'auto', not {cfg.keep_fp32!r}")
    return cfg


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """The fp32 model as ONNX with a dynamic batch dimension (one file, weights inline); its
    input is named after the forward argument (``x`` for detectors, ``z`` for the generator)."""
    (arg,) = [n for n in inspect.signature(model.forward).parameters if n != "self"]
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(
        model.eval(),
        (example,),
        str(path),
        input_names=[arg],
        output_names=["out"],
        dynamic_shapes={arg: {0: batch}},
        dynamo=True,
        external_data=False,
        verbose=False,
    )


def detector_example(size: int) -> torch.Tensor:
    return torch.zeros(2, 3, size, size)


def model_inputs(views: torch.Tensor, preprocess: PreprocessConfig) -> torch.Tensor:
    """Normalised float inputs (N * V, 3, S, S): every view the service would score."""
    return normalize(views.flatten(0, 1), preprocess)


def quantize_onnx(
    fp32: Path,
    out: Path,
    calibration: torch.Tensor,
    batch_size: int,
    reduce_range: bool,
    *,
    exclude: Sequence[str] = (),
    only: Sequence[str] = (),
    method: str = "minmax",
) -> None:
    """Static QDQ int8 of ``fp32``; ``exclude`` keeps those nodes fp32, ``only`` quantizes just
    those (both for sensitivity studies: ``bench.int8_sensitivity``)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration.split(batch_size))

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.batches, None)
            return None if x is None else {INPUT_NAME: x.numpy()}

    root = logging.getLogger()  # ORT advises pre-processing on every call; measured: no change
    root.addFilter(_no_preprocessing_advice)
    try:
        quantize_static(
            str(fp32),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=reduce_range,
            calibrate_method={
                "minmax": CalibrationMethod.MinMax,
                "percentile": CalibrationMethod.Percentile,
            }[method],
            nodes_to_exclude=list(exclude),
            nodes_to_quantize=list(only),
        )
    finally:
        root.removeFilter(_no_preprocessing_advice)


def _no_preprocessing_advice(record: logging.LogRecord) -> bool:
    return "pre-process" not in record.getMessage()


def calibration_inputs(
    meta: CheckpointMeta,
    val: DetectorData,
    quiet: bool = True,
    max_views: int = 0,
    seed: int = 0,
) -> torch.Tensor:
    """Normalised inputs of every view of the validation images both classes calibrate on; with
    ``max_views``, a seeded sample of at most that many, half from each class: ONNX Runtime's
    percentile calibration holds every activation of every view in memory (the quick NPR's
    5,000 views took 20 GB)."""
    pre = meta.preprocess_config
    parts = []
    for images in (val.real, val.synthetic):
        _, views = load_views(images, pre, desc="calibration", quiet=quiet)
        x = model_inputs(views, pre)
        if max_views and len(x) > max_views // 2:
            order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
            x = x[order[: max_views // 2].sort().values]
        parts.append(x)
    return torch.cat(parts)


def operating_views(meta: CheckpointMeta, data: DetectorData, quiet: bool = True) -> torch.Tensor:
    """Every image's views (real first, then synthetic) as many as the operating point uses."""
    point = OperatingPoint.from_metadata(meta.threshold, meta.extra)
    images = [*data.real, *data.synthetic]
    _, views = load_views(images, meta.preprocess_config, desc="images", quiet=quiet)
    return views[:, : point.views]


def view_logits(
    model: nn.Module,
    meta: CheckpointMeta,
    views: torch.Tensor,
    batch_size: int = 16,
    name: str = "",
    quiet: bool = True,
) -> np.ndarray:
    """Raw logits (N, V) of every view, on CPU in fp32."""
    logits = predict_view_logits(
        model,
        views,
        meta.preprocess_config,
        torch.device("cpu"),
        torch.float32,
        batch_size=batch_size,
        channels_last=False,
        desc=f"scoring {name}",
        quiet=quiet,
    )
    return np.asarray(logits)


def verdicts_of(meta: CheckpointMeta, logits: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Calibrated P(synthetic) and the verdict the service would give, at the checkpoint's own
    operating point (threshold, inconclusive band, half-scale check)."""
    point = OperatingPoint.from_metadata(meta.threshold, meta.extra)
    p = calibrated(point, logits)
    half = p[:, 1] if point.views > 1 else None
    return p[:, 0], verdicts(point, p[:, 0], half)


def served_verdicts(
    model: nn.Module,
    meta: CheckpointMeta,
    views: torch.Tensor,
    batch_size: int = 16,
    name: str = "",
    quiet: bool = True,
) -> tuple[np.ndarray, list[str]]:
    """:func:`verdicts_of` ``model`` on ``views``, on CPU in fp32."""
    return verdicts_of(meta, view_logits(model, meta, views, batch_size, name, quiet))


@dataclass
class Reference:
    """Validation views, the fp32 model's logits on them and its served verdicts: what an int8
    candidate is ranked, corrected and counted against."""

    views: torch.Tensor
    logits: np.ndarray
    served: tuple[np.ndarray, list[str]]

    @classmethod
    def of(
        cls, model: nn.Module, meta: CheckpointMeta, views: torch.Tensor, cfg: QuantizeConfig
    ) -> Reference:
        logits = view_logits(model, meta, views, cfg.batch_size, "fp32 validation", cfg.quiet)
        return cls(views, logits, verdicts_of(meta, logits))


def build_int8(
    fp32: Path,
    out: Path,
    calibration: torch.Tensor,
    meta: CheckpointMeta,
    reference: Reference | None,
    cfg: QuantizeConfig,
    exclude: Sequence[str] = (),
) -> dict[str, Any] | None:
    """Quantize ``fp32`` to ``out`` and, unless ``--no-correct-logits``, fit the output
    correction on ``reference`` and bake it in (or say why not); returns it, for the metadata."""
    quantize_onnx(
        fp32,
        out,
        calibration,
        cfg.batch_size,
        cfg.reduce_range,
        exclude=exclude,
        method=cfg.calibration_method,
    )
    if not cfg.correct_logits:
        return None
    assert reference is not None
    raw = view_logits(OnnxDetector(out, require_meta=False), meta, reference.views, cfg.batch_size)
    scale, shift = fit_correction(raw, reference.logits)
    correction = {
        "scale": scale,
        "shift": shift,
        "rule": "least squares of the fp32 logits on the int8 logits",
        "validation_views": int(raw.size),
    }
    problem = implausible(scale)
    if problem:
        logger.warning("%s: output correction not applied: %s", out, problem)
        return {**correction, "applied": False, "reason": problem}
    append_affine(out, scale, shift)
    return {**correction, "applied": True}


def agreement(
    reference: nn.Module,
    quantized: nn.Module,
    meta: CheckpointMeta,
    test: DetectorData,
    cfg: QuantizeConfig,
) -> dict[str, Any]:
    """Verdicts and ROC-AUC of both models on the held-out test set, at the checkpoint's own
    operating point (threshold, inconclusive band, half-scale check)."""
    views = operating_views(meta, test, quiet=cfg.quiet)
    labels = np.array([0] * len(test.real) + [1] * len(test.synthetic))
    p32, v32 = served_verdicts(reference, meta, views, cfg.batch_size, "fp32", cfg.quiet)
    p8, v8 = served_verdicts(quantized, meta, views, cfg.batch_size, "int8", cfg.quiet)
    same = np.array([a == b for a, b in zip(v32, v8, strict=True)])
    auc32, auc8 = roc_auc(labels, p32), roc_auc(labels, p8)
    return {
        "set": "held-out test (real test lesions + every named source's test split)",
        "images": len(labels),
        "real": len(test.real),
        "synthetic": len(test.synthetic),
        "verdict_agreement": float(same.mean()) if len(same) else float("nan"),
        "verdicts_differing": int((~same).sum()),
        "roc_auc_fp32": auc32,
        "roc_auc_int8": auc8,
        "roc_auc_drop": auc32 - auc8,
        "max_abs_probability_diff": float(np.abs(p32 - p8).max()) if len(p8) else 0.0,
        "mean_abs_probability_diff": float(np.abs(p32 - p8).mean()) if len(p8) else 0.0,
    }


def graph_nodes(path: Path, ops: str = "all") -> list[str]:
    """Names of an ONNX file's nodes, in graph order: every node (ONNX Runtime quantizes the
    tensors between additions, residuals and pooling too: keeping every node fp32 is the fp32
    model) or only the weight layers."""
    import onnx

    nodes = onnx.load(str(path)).graph.node
    return [n.name for n in nodes if ops == "all" or n.op_type in WEIGHT_OPS]


def head_nodes(path: Path) -> list[str]:
    """The last weight layer and every node after it: the layer that makes the logit. Kept fp32
    by ``--fp32-head``, the logit is not rounded to the uint8 grid of the layer before it (one
    step was 0.185 logit units for the quick NPR); its weights are a few kB."""
    import onnx

    nodes = list(onnx.load(str(path)).graph.node)
    last = max(i for i, n in enumerate(nodes) if n.op_type in WEIGHT_OPS)
    return [n.name for n in nodes[last:]]


def compare(
    model: nn.Module, meta: CheckpointMeta, views: torch.Tensor, reference: tuple
) -> dict[str, float]:
    """Mean |dp| and verdict agreement of ``model`` against fp32 ``reference`` scores."""
    p32, v32 = reference
    p8, v8 = served_verdicts(model, meta, views)
    return {
        "mean_abs_dp": float(np.abs(p8 - p32).mean()),
        "agreement": float(np.mean([a == b for a, b in zip(v32, v8, strict=True)])),
    }


def sensitivity(
    fp32: Path,
    calibration: torch.Tensor,
    meta: CheckpointMeta,
    views: torch.Tensor,
    reference: tuple,
    nodes: Sequence[str],
    reduce_range: bool = False,
    quiet: bool = True,
    *,
    method: str = "minmax",
) -> dict[str, dict[str, float]]:
    """Each node quantized alone (the rest fp32), compared with fp32 on ``views``."""
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="sensitivity-") as tmp:
        int8 = Path(tmp) / "int8.onnx"
        for node in tqdm(nodes, desc="int8 error of each node alone", disable=quiet):
            quantize_onnx(fp32, int8, calibration, 16, reduce_range, only=[node], method=method)
            out[node] = compare(OnnxDetector(int8, require_meta=False), meta, views, reference)
    return out


def ranked(alone: dict[str, dict[str, float]]) -> list[str]:
    """Nodes, largest int8 error first."""
    return sorted(alone, key=lambda n: -alone[n]["mean_abs_dp"])


def choose_fp32_nodes(
    meta: CheckpointMeta,
    fp32: Path,
    calibration: torch.Tensor,
    reference: Reference,
    cfg: QuantizeConfig,
    head: Sequence[str] = (),
) -> tuple[list[str], dict[str, Any]]:
    """The nodes to keep fp32 (``--keep-fp32``), ranked and, for ``auto``, counted on
    validation images only; with how they were chosen, for the int8 file's metadata."""
    nodes = graph_nodes(fp32)
    alone = sensitivity(
        fp32,
        calibration,
        meta,
        reference.views,
        reference.served,
        nodes,
        cfg.reduce_range,
        cfg.quiet,
        method=cfg.calibration_method,
    )
    order = ranked(alone)
    counts = AUTO_KEEP if cfg.keep_fp32 == "auto" else (int(cfg.keep_fp32),)
    tried = {}
    with tempfile.TemporaryDirectory(prefix="keep-fp32-") as tmp:
        int8 = Path(tmp) / "int8.onnx"
        for k in counts:
            exclude = [*order[:k], *head]
            build_int8(fp32, int8, calibration, meta, reference, cfg, exclude=exclude)
            model = OnnxDetector(int8, require_meta=False)
            tried[k] = compare(model, meta, reference.views, reference.served)
            if tried[k]["agreement"] >= cfg.min_agreement:
                break
    k = list(tried)[-1]
    return order[:k], {
        "rule": f"--keep-fp32 {cfg.keep_fp32}: nodes ranked by their int8 error alone, "
        "on validation images",
        "validation_images": len(reference.views),
        "most_sensitive": {n: alone[n]["mean_abs_dp"] for n in order[: max(k, 10)]},
        "tried": {str(n): v for n, v in tried.items()},
    }


def versions() -> dict[str, str]:
    out = {"torch": torch.__version__}
    for package in ("onnxruntime", "onnx", "onnxscript"):
        try:
            out[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            out[package] = "absent"
    return out


def write_quantized(model_file: Path, meta: QuantizedMeta, out: Path) -> None:
    """The int8 model with its metadata, written atomically (a half-written file never sits
    where the service looks)."""
    import onnx

    proto = onnx.load(str(model_file))
    kept = [p for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    proto.metadata_props.add(key=METADATA_KEY, value=meta.to_json())
    tmp = out.with_name(out.name + ".tmp")
    onnx.save(proto, str(tmp))
    tmp.chmod(0o644)
    tmp.replace(out)


def quantize_checkpoint(checkpoint: Path, cfg: QuantizeConfig) -> QuantizedMeta:
    """Quantize one detector, measure it, write ``detector.int8.onnx`` beside it."""
    start = time.perf_counter()
    model, meta = load_model(checkpoint)
    pre = meta.preprocess_config
    limits = {"val": cfg.calibration_images, "test": cfg.test_limit}
    sets = checkpoint_sets(meta, cfg.data, cfg.synthetic, limits, cfg.seed)
    val = sets["val"]
    if not val.real or not val.synthetic:
        raise SystemExit(f"{checkpoint}: its validation split lacks real or synthetic images")
    calibration = calibration_inputs(meta, val, cfg.quiet, cfg.calibration_views, cfg.seed)
    out = quantized_path(checkpoint)
    with tempfile.TemporaryDirectory(prefix="quantize-", dir=out.parent) as tmp:
        fp32_file, int8_file = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        export_onnx(model, detector_example(pre.image_size), fp32_file)
        reference = None
        if cfg.correct_logits or cfg.keep_fp32 != "0":
            fit_set = checkpoint_sets(
                meta, cfg.data, cfg.synthetic, {"val": cfg.sensitivity_images, "test": 1}, cfg.seed
            )["val"]
            reference = Reference.of(model, meta, operating_views(meta, fit_set, cfg.quiet), cfg)
        head = head_nodes(fp32_file) if cfg.fp32_head else []  # read the graph once
        kept: list[str] = []
        selection = None
        if cfg.keep_fp32 != "0":
            assert reference is not None
            kept, selection = choose_fp32_nodes(meta, fp32_file, calibration, reference, cfg, head)
        correction = build_int8(
            fp32_file, int8_file, calibration, meta, reference, cfg, exclude=[*kept, *head]
        )
        quantized = OnnxDetector(int8_file, require_meta=False)
        figures = agreement(model, quantized, meta, sets["test"], cfg)
        result = QuantizedMeta(
            source_sha256=meta.weights_sha256,
            source_file=checkpoint.name,
            kind=meta.kind,
            calibration={
                "split": "val",
                "real": len(val.real),
                "synthetic": len(val.synthetic),
                "sources": sorted(set(val.source)),
                "views": int(calibration.shape[0]),
                "max_views": cfg.calibration_views,
                "method": cfg.calibration_method,
            },
            toolchain={
                "name": TOOLCHAIN,
                "format": "QDQ",
                "weights": "int8, per channel" + (", reduced range" if cfg.reduce_range else ""),
                "activations": "uint8, per tensor",
                "kept_fp32": kept,
                "fp32_head": head,
                "output_correction": correction,
                **({"kept_fp32_selection": selection} if selection else {}),
                **versions(),
            },
            agreement=figures,
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            code_version=code_version(),
        )
        write_quantized(int8_file, result, out)
    problem = gate_problem(result, meta, Gate(cfg.min_agreement, cfg.max_auc_drop))
    logger.info("%s: %s", out, figures)
    print(
        f"{out}: verdict agreement {figures['verdict_agreement']:.4f} on {figures['images']} "
        f"held-out images, ROC-AUC {figures['roc_auc_fp32']:.4f} -> {figures['roc_auc_int8']:.4f}"
        f" ({time.perf_counter() - start:.0f} s)",
        flush=True,
    )
    if problem:
        print(f"WARNING: the service's default gate will refuse {out}: {problem}", flush=True)
    write_json(
        out.with_name("quantize.json"),
        {"config": dataclasses.asdict(cfg), "result": dataclasses.asdict(result)},
    )
    return result


def main(cfg: QuantizeConfig) -> list[QuantizedMeta]:
    torch.manual_seed(cfg.seed)
    return [quantize_checkpoint(Path(c), cfg) for c in cfg.checkpoints]


if __name__ == "__main__":
    main(parse_args())
