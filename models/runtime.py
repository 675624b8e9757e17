"""Where a model runs and in what arithmetic: one answer for training, evaluation, the service
and the benchmarks.

``auto`` precision means bf16 on CUDA and on CPUs whose oneDNN has native bf16 kernels
(AVX-512 BF16 / AMX), fp32 everywhere else: without native kernels bf16 is emulated and several
times *slower* than fp32 (measured on an AVX2 EPYC: VGG16 1.5 vs 9.8 img/s).

:func:`prepare_for_inference` is the fast path the service serves with: weights cast to the
reduced dtype (half the memory, not just autocast), channels_last, and ``torch.compile`` with
inductor freezing; :func:`pad_to_bucket` keeps compiled graphs to a few static batch shapes.
"""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # torch's; the service adds int8 (app.backends)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is an error that says so."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was asked for but no CUDA GPU is visible; use cpu")
    return device


def cpu_has_bf16() -> bool:
    """True when oneDNN has native bf16 kernels (AVX-512 BF16 / AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def native_bf16(device: torch.device) -> bool:
    return device.type == "cuda" or cpu_has_bf16()


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 where it is native (CUDA, AVX-512 BF16/AMX CPUs), else fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    return DTYPES[precision]


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dtype]


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Mixed precision for training (weights stay fp32); a no-op for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass(frozen=True)
class InferenceOptions:
    """How a model is served. ``dtype`` other than fp32 casts the weights themselves."""

    device: torch.device
    dtype: torch.dtype = torch.float32
    channels_last: bool = False
    compile: bool = False

    def describe(self) -> dict[str, object]:
        return {
            "device": str(self.device),
            "dtype": dtype_name(self.dtype),
            "channels_last": self.channels_last,
            "compile": self.compile,
        }


def prepare_for_inference(model: nn.Module, options: InferenceOptions) -> nn.Module:
    """The model on its device, in eval mode, in the served dtype and layout, maybe compiled.

    Compilation is lazy: each new input shape compiles on its first call, so callers warm up
    every batch shape they will use (:func:`pad_to_bucket`) before taking traffic. ``dynamic``
    is off so each bucket gets its own static graph instead of a slower symbolic one, and
    freezing lets inductor fold the (now constant) weights and pre-pack them for oneDNN.
    """
    model = model.to(options.device, options.dtype).eval()
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    for p in model.parameters():
        p.requires_grad_(False)
    if options.compile:
        model = torch.compile(model, dynamic=False, options={"freezing": True})
    return model


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host to device through pinned memory, so the copy is asynchronous on CUDA."""
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def to_input(x: torch.Tensor, options: InferenceOptions) -> torch.Tensor:
    """A batch in the served device, dtype and layout."""
    x = to_device(x, options.device).to(options.dtype)
    if options.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def bucket_sizes(max_batch_size: int) -> tuple[int, ...]:
    """Powers of two below ``max_batch_size``, and ``max_batch_size`` itself: 1, 2, 4, 8, 12."""
    sizes = {max_batch_size}
    n = 1
    while n < max_batch_size:
        sizes.add(n)
        n *= 2
    return tuple(sorted(sizes))


def pad_to_bucket(x: torch.Tensor, buckets: Sequence[int]) -> torch.Tensor:
    """Pad the batch (repeating its last row) up to the smallest bucket that holds it.

    A batch larger than every bucket is returned unchanged. Padding repeats a real row rather
    than zeros so batch-dependent layers, if any, see realistic values; callers drop the extra
    outputs.
    """
    n = x.shape[0]
    i = bisect.bisect_left(buckets, n)
    if not buckets or i == len(buckets) or buckets[i] == n:
        return x
    return torch.cat([x, x[-1:].expand(buckets[i] - n, *x.shape[1:])])
