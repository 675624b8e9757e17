"""int8 detectors: the quantized ONNX file beside an fp32 checkpoint, its metadata, and the gate
that decides whether it may be served in the checkpoint's place.

``training.quantize`` writes ``detector.int8.onnx`` next to ``detector.safetensors``: a static
QDQ model (ONNX Runtime, int8 per-channel weights, uint8 activations) calibrated on the
detector's validation images. Its metadata (an ONNX ``metadata_props`` entry, so the file is
plain protobuf and loads without pickle) names the fp32 weights it came from (their SHA-256),
the calibration set, the toolchain and its versions, and how often its verdicts agreed with the
fp32 model's on the held-out test set. :func:`gate_problem` turns those into a yes or a reason.

onnxruntime is imported only when a session is built: nothing heavy at import.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.checkpoint import CheckpointMeta

FORMAT = "dermafake-int8/1"
METADATA_KEY = "dermafake"
SUFFIX = ".int8.onnx"
INPUT_NAME = "x"


class QuantizedModelError(RuntimeError):
    """The int8 file is missing, unreadable, or carries no dermafake metadata."""


def quantized_path(checkpoint: str | Path) -> Path:
    """``.../detector.safetensors`` -> ``.../detector.int8.onnx`` (beside its source)."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name.removesuffix(".safetensors") + SUFFIX)


@dataclass(frozen=True)
class Gate:
    """What an int8 model must have shown on the held-out test set to be served: verdicts equal
    to fp32's on at least ``min_agreement`` of the images, ROC-AUC at most ``max_auc_drop``
    below fp32's."""

    min_agreement: float = 0.995
    max_auc_drop: float = 0.002


@dataclass
class QuantizedMeta:
    source_sha256: str  # CheckpointMeta.weights_sha256 of the fp32 weights quantized
    source_file: str
    kind: str
    calibration: dict[str, Any] = field(default_factory=dict)  # split, images per class
    toolchain: dict[str, Any] = field(default_factory=dict)  # name, versions, scheme
    agreement: dict[str, Any] = field(default_factory=dict)  # held-out test figures vs fp32
    created: str = ""
    code_version: str = ""
    format: str = FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> QuantizedMeta:
        return cls(**json.loads(text))


def gate_problem(meta: QuantizedMeta, source: CheckpointMeta, gate: Gate) -> str | None:
    """Why this int8 model may not stand in for ``source``, or None when it may."""
    if meta.source_sha256 != source.weights_sha256:
        return (
            f"it was quantized from other weights (source SHA-256 {meta.source_sha256[:12]}, "
            f"served checkpoint {source.weights_sha256[:12]}): re-run training.quantize"
        )
    a = meta.agreement
    agreement, drop = a.get("verdict_agreement"), a.get("roc_auc_drop")
    if not isinstance(agreement, int | float) or not isinstance(drop, int | float):
        return "its metadata holds no agreement figures: re-run training.quantize"
    if agreement < gate.min_agreement:
        return (
            f"its verdicts agreed with fp32 on {agreement:.2%} of {a.get('images')} held-out "
            f"images, below the gate's {gate.min_agreement:.2%}"
        )
    if drop > gate.max_auc_drop:
        return f"its ROC-AUC is {drop:.4f} below fp32's, more than the gate's {gate.max_auc_drop}"
    return None


def session(path: str | Path, threads: int = 0) -> Any:
    """An ONNX Runtime CPU session; ``threads`` 0 follows torch's intra-op thread count.

    Spinning is off: the service's cores are shared with image decoding and other models, and
    idle ORT threads spinning for work would take them."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types for bad files
        raise QuantizedModelError(f"{path} is not a loadable ONNX model ({exc})") from exc


def read_meta(sess: Any, path: str | Path) -> QuantizedMeta:
    """The dermafake metadata of a loaded session's model."""
    raw = sess.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if raw is None:
        raise QuantizedModelError(f"{path} carries no {METADATA_KEY} metadata: not ours")
    try:
        meta = QuantizedMeta.from_json(raw)
    except (json.JSONDecodeError, TypeError) as exc:
        raise QuantizedModelError(f"{path} has damaged metadata ({exc})") from exc
    if meta.format != FORMAT:
        raise QuantizedModelError(f"{path}: format {meta.format!r}, expected {FORMAT}")
    return meta


class OnnxModel(nn.Module):
    """Any one-input ONNX model as a module on torch batches (CPU, fp32): how benchmarks run the
    generator on ONNX Runtime, and the base of :class:`OnnxDetector`."""

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        super().__init__()
        self.path = Path(path)
        self.session = session(self.path, threads)
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        (out,) = self.session.run(None, {self.input_name: batch})
        return torch.from_numpy(out)


class OnnxDetector(OnnxModel):
    """An ONNX detector as a module on torch batches: (N, 3, S, S) float -> (N,) logits.

    A module (with no parameters) so everything that runs a torch detector runs this one too:
    the service's runner, ``training.scoring.predict_logits``. ``meta`` is None for a file
    without dermafake metadata (``training.quantize`` measures one before writing it)."""

    def __init__(self, path: str | Path, threads: int = 0, *, require_meta: bool = True) -> None:
        super().__init__(path, threads)
        if self.input_name != INPUT_NAME:
            raise QuantizedModelError(f"{path}: input {self.input_name!r}, expected {INPUT_NAME!r}")
        self.meta = read_meta(self.session, self.path) if require_meta else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).reshape(-1)
