"""Model + device + dtype + forward on a batch: the only place the service touches torch models.

A runner is a plain callable ``list[item] -> list[result]`` that the batcher runs in a worker
thread. Keeping the forward pass here, in one small method per model, leaves room for a later
``torch.compile`` and padding batches to a few bucket sizes without touching routes or batching.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.checkpoint import CheckpointMeta, load_model
from models.preprocessing import encode, normalize, to_pil, to_uint8

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DEFAULT_THRESHOLD = 0.5


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is a configuration error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("DERMAFAKE_DEVICE=cuda but no CUDA device is available")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """True when oneDNN has native bf16 kernels (AVX512-BF16/AMX); elsewhere bf16 is emulated
    and several times slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The autocast dtype; ``auto`` is fp16 on CUDA, bf16 on a CPU with bf16 kernels, else fp32."""
    if precision == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if cpu_has_bf16() else torch.float32
    return DTYPES[precision]


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dtype]


@dataclass(frozen=True)
class GenerateItem:
    """One image to generate: its own seed makes it reproducible whatever batch it lands in."""

    seed: int
    fmt: str = "png"


class Runner:
    """A model on a device with an autocast dtype, loaded from a checkpoint."""

    kind: str = ""

    def __init__(
        self,
        model: nn.Module,
        meta: CheckpointMeta,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
    ) -> None:
        self.meta = meta
        self.device = device
        self.dtype = dtype
        self.channels_last = channels_last
        self.model = model.to(device).eval()
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.preprocess = meta.preprocess_config

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: torch.device, dtype: torch.dtype, channels_last: bool
    ) -> Runner:
        model, meta = load_model(path, cls.kind)
        return cls(model, meta, device, dtype, channels_last)

    @property
    def version(self) -> str:
        """Content address of the weights: changes exactly when the served model does."""
        return self.meta.weights_sha256[:12] or f"step-{self.meta.step}"

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def info(self) -> dict[str, Any]:
        return {
            "name": self.kind,
            "version": self.version,
            "weights_sha256": self.meta.weights_sha256,
            "code_version": self.meta.code_version,
            "created": self.meta.created,
            "step": self.meta.step,
            "config": self.meta.config,
            "preprocessing": self.meta.preprocessing,
            "metrics": self.meta.metrics,
            "threshold": self.meta.threshold,
            "device": str(self.device),
            "dtype": dtype_name(self.dtype),
            "channels_last": self.channels_last,
        }

    def warmup(self) -> None:
        raise NotImplementedError


class DetectorRunner(Runner):
    """uint8 (3, S, S) images -> P(synthetic) per image."""

    kind = "detector"

    @property
    def threshold(self) -> float:
        return DEFAULT_THRESHOLD if self.meta.threshold is None else float(self.meta.threshold)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "threshold": self.threshold}

    def __call__(self, images: list[torch.Tensor]) -> list[float]:
        batch = torch.stack(images).to(self.device, non_blocking=True)
        x = normalize(batch, self.preprocess)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self.autocast():
            logits = self.model(x)
        return torch.sigmoid(logits.float()).cpu().tolist()

    def warmup(self) -> None:
        size = self.preprocess.image_size
        self([torch.zeros(3, size, size, dtype=torch.uint8)])


def seed_noise(seed: int, z_dim: int) -> torch.Tensor:
    """z (1, z_dim) from its own CPU generator: the same on every device and in every batch."""
    return torch.randn(1, z_dim, generator=torch.Generator().manual_seed(seed))


class GeneratorRunner(Runner):
    """Seeds -> generated images, encoded as PNG or JPEG bytes."""

    kind = "generator"

    def __call__(self, items: list[GenerateItem]) -> list[bytes]:
        z_dim = int(self.meta.config["z_dim"])
        z = torch.cat([seed_noise(item.seed, z_dim) for item in items]).to(self.device)
        with torch.inference_mode(), self.autocast():
            images = self.model(z)
        pixels = to_uint8(images)
        return [encode(to_pil(img), item.fmt) for img, item in zip(pixels, items, strict=True)]

    def warmup(self) -> None:
        self([GenerateItem(seed=0)])
