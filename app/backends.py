"""Which runtime serves each detector: its torch checkpoint (fp32/bf16, maybe compiled) or its
int8 ONNX file (``training.quantize``), and the gate an int8 file must pass first.

``precision=int8`` asks for every detector's int8 file; ``auto`` takes one wherever a detector
has a file that passes, on a CPU. An int8 file is refused, and the detector served by torch in
fp32 (``int8``) or as ``auto`` resolves (``auto``), when it was quantized from other weights
than the checkpoint served, when its recorded agreement with fp32 misses the gate, when it is
unreadable, or on CUDA (the torch path is the GPU path). A refusal is logged as an error and
shown in ``/v1/models`` (``int8_refused``): a detector never silently serves the wrong model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import torch

from app.discovery import DetectorSpec
from app.runners import DetectorRunner
from app.settings import Settings
from models.quantized import Gate, OnnxDetector, QuantizedModelError, gate_problem, quantized_path
from models.runtime import InferenceOptions, dtype_name

logger = logging.getLogger(__name__)
INT8_OPTIONS = dict(dtype=torch.float32, channels_last=False, compile=False)  # inputs stay fp32


def torch_precision(precision: str) -> str:
    """The precision the torch models run in: int8's fallback and the generator are fp32."""
    return "fp32" if precision == "int8" else precision


def int8_gate(settings: Settings) -> Gate:
    return Gate(settings.int8_min_agreement, settings.int8_max_auc_drop)


def load_detector(
    spec: DetectorSpec,
    options: InferenceOptions,
    buckets: Sequence[int],
    precision: str,
    gate: Gate,
) -> DetectorRunner:
    """The runner for one detector: its int8 file when asked for and it passes ``gate``, else
    torch with ``options`` (``precision`` as the setting, ``options`` as it resolved)."""
    wanted = precision == "int8" or (precision == "auto" and options.device.type == "cpu")
    path = quantized_path(spec.path)
    if not wanted or (precision == "auto" and not path.is_file()):
        return DetectorRunner.from_checkpoint(spec.path, options, buckets, spec.name)
    problem = None
    if options.device.type != "cpu":
        problem = f"int8 runs on the CPU only, and this service runs on {options.device}"
    elif not path.is_file():
        problem = f"there is no {path.name} beside it: run python -m training.quantize"
    else:
        try:
            model = OnnxDetector(path)
        except QuantizedModelError as exc:
            problem = str(exc)
        else:
            problem = gate_problem(model.meta, spec.meta, gate)  # type: ignore[arg-type]
            if problem is None:
                runner = DetectorRunner(
                    model, spec.meta, replace(options, **INT8_OPTIONS), (), spec.name
                )
                runner.path = spec.path
                logger.info("%s: serving int8 %s (%s)", spec.name, path, model.meta.agreement)
                return runner
    runner = DetectorRunner.from_checkpoint(spec.path, options, buckets, spec.name)
    runner.int8_refused = f"{path}: {problem}"
    logger.error(
        "%s: int8 model refused, serving the %s torch model instead: %s",
        spec.name,
        dtype_name(options.dtype),
        runner.int8_refused,
    )
    return runner
