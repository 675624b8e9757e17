"""The served fast path (compiled, channels_last, bucket-padded, maybe bf16) against plain fp32
eager, on held-out HAM10000 test images and generated ones: the verdicts must agree and nothing
may compile once warm-up is over."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch._dynamo

from app.runners import DetectorRunner, GeneratorRunner
from app.settings import Settings
from bench.agreement import score
from models.preprocessing import load_uint8, to_pil
from models.runtime import InferenceOptions, resolve_device, resolve_dtype
from tests.app.conftest import Checkpoints
from training.data import SplitConfig, load_splits

CPU = torch.device("cpu")
N_REAL = 48  # held-out real images; as many generated ones join them


@pytest.fixture(scope="module")
def test_images(ham_dir: Path, checkpoints: Checkpoints) -> list[torch.Tensor]:
    """Real images from the lesion-level test split, plus the generator's own output."""
    detector = DetectorRunner.from_checkpoint(checkpoints.detector, InferenceOptions(CPU))
    pre = detector.preprocess
    test = load_splits(ham_dir, SplitConfig())["detector_test"][:N_REAL]
    real = [load_uint8(record.path, pre) for record in test]
    generator = GeneratorRunner.from_checkpoint(checkpoints.generator, InferenceOptions(CPU))
    fake = [load_uint8(to_pil(image), pre) for image in generator(list(range(N_REAL)))]
    return real + fake


def compare(reference: list[float], fast: list[float], threshold: float) -> tuple[float, float]:
    agree = sum((r >= threshold) == (f >= threshold) for r, f in zip(reference, fast, strict=True))
    return agree / len(reference), max(abs(r - f) for r, f in zip(reference, fast, strict=True))


def test_served_default_path_agrees_with_fp32_eager(
    checkpoints: Checkpoints, test_images: list[torch.Tensor]
) -> None:
    settings = Settings(detector_path=checkpoints.detector, max_batch_size=8)  # defaults
    assert settings.compile and settings.buckets == (1, 2, 4, 8)
    device = resolve_device(settings.device)
    options = InferenceOptions(
        device, resolve_dtype(settings.precision, device), settings.channels_last, True
    )
    reference = DetectorRunner.from_checkpoint(checkpoints.detector, InferenceOptions(CPU))
    fast = DetectorRunner.from_checkpoint(checkpoints.detector, options, settings.buckets)
    fast.warmup()
    with torch._dynamo.config.patch(error_on_recompile=True):  # warm-up compiled every shape
        got = score(fast, test_images, [8, 3, 5, 1, 8, 6, 2, 7])
    want = score(reference, test_images, [8])
    agreement, max_diff = compare(want, got, reference.threshold)
    print(f"fast path ({options.describe()}): agreement {agreement:.4f}, max |dp| {max_diff:.2e}")
    if options.dtype == torch.float32:  # auto on CPUs without native bf16
        assert agreement >= 0.999 and max_diff < 1e-4
    else:  # auto picks bf16 on CUDA and AVX-512-BF16/AMX CPUs: see the bf16 test below
        clear = [
            (w, g) for w, g in zip(want, got, strict=True) if abs(w - reference.threshold) > 0.05
        ]
        assert clear and all(
            (w >= reference.threshold) == (g >= reference.threshold) for w, g in clear
        )
    assert min(want) < reference.threshold < max(want)  # both verdicts occur: the check can fail


def test_bf16_weights_agree_where_the_verdict_is_not_a_coin_flip(
    checkpoints: Checkpoints, test_images: list[torch.Tensor]
) -> None:
    """bf16 keeps 8 bits of mantissa: probabilities move by up to a few 1e-2, so verdicts may
    flip only for images that close to the threshold."""
    reference = DetectorRunner.from_checkpoint(checkpoints.detector, InferenceOptions(CPU))
    bf16 = DetectorRunner.from_checkpoint(
        checkpoints.detector, InferenceOptions(CPU, torch.bfloat16, channels_last=True)
    )
    want = score(reference, test_images, [8])
    got = score(bf16, test_images, [8])
    _, max_diff = compare(want, got, reference.threshold)
    margin = 0.05
    clear = [
        (w, g) for w, g in zip(want, got, strict=True) if abs(w - reference.threshold) > margin
    ]
    agreement, _ = compare(*zip(*clear, strict=True), reference.threshold)
    print(f"bf16: max |dp| {max_diff:.2e}; agreement beyond +-{margin}: {agreement:.4f}")
    assert max_diff < margin and agreement == 1.0 and len(clear) > len(want) // 2
