"""What a benchmark ran on, written beside its numbers so tables from different boxes never mix."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from models.runtime import native_bf16


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """The cores this process may run on (a container's or taskset's limit), not the host's."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def describe(device: torch.device) -> dict[str, object]:
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "cpu": cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cores": usable_cores(),
        "cores_on_the_machine": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "native_bf16": native_bf16(device),
        "torch": torch.__version__,
    }
