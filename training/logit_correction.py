"""The int8 detector's output correction: one scale and one shift of its logit, fitted to the
fp32 model's logits on validation views and written into the ONNX graph.

Why: int8 rounding through a ReLU network moves its output systematically (the quick VGG16's
int8 logit sat 0.04 below fp32's on average), and a detector whose scores crowd its threshold
turns that shift into changed verdicts (docs/BENCHMARKS.md). The correction lives inside the
served file, so every runtime that reads the file applies it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SCALE_RANGE = (0.5, 2.0)  # outside it the fit says the int8 model is broken, not shifted


def fit_correction(int8_logits: np.ndarray, fp32_logits: np.ndarray) -> tuple[float, float]:
    """Least-squares scale and shift taking the int8 logits to fp32's (every view pooled)."""
    x = np.asarray(int8_logits, np.float64).ravel()
    y = np.asarray(fp32_logits, np.float64).ravel()
    (scale, shift), *_ = np.linalg.lstsq(np.stack([x, np.ones_like(x)], 1), y, rcond=None)
    return float(scale), float(shift)


def implausible(scale: float) -> str | None:
    """Why a fitted scale must not be applied (it would reorder or flatten the scores)."""
    low, high = SCALE_RANGE
    if not low <= scale <= high:
        return f"fitted scale {scale:.3g} is outside [{low}, {high}]: int8 lost the ranking"
    return None


def append_affine(path: Path, scale: float, shift: float) -> None:
    """Rewrite the one-output ONNX file at ``path`` so its output is ``scale * output + shift``
    (two fp32 nodes after the last; nodes that read the old output read it under a new name)."""
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.load(str(path))
    graph = proto.graph
    if len(graph.output) != 1:
        raise ValueError(f"{path}: {len(graph.output)} outputs; the correction needs one")
    out = graph.output[0].name
    raw = f"{out}_uncorrected"
    produced = False
    for node in graph.node:
        produced |= out in node.output
        node.output[:] = [raw if name == out else name for name in node.output]
        node.input[:] = [raw if name == out else name for name in node.input]
    if not produced:
        raise ValueError(f"{path}: no node produces the output {out!r}")
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(scale, np.float32), f"{out}_scale"),
            numpy_helper.from_array(np.array(shift, np.float32), f"{out}_shift"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("Mul", [raw, f"{out}_scale"], [f"{out}_scaled"], "logit_scale"),
            helper.make_node("Add", [f"{out}_scaled", f"{out}_shift"], [out], "logit_shift"),
        ]
    )
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
