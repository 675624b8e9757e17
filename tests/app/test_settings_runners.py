"""Settings from the environment, device/dtype resolution, runners on the test checkpoints."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from app.batching import Batcher
from app.main import create_app
from app.runners import GeneratorRunner
from app.settings import Settings
from models.runtime import InferenceOptions, cpu_has_bf16, resolve_device, resolve_dtype
from tests.app.conftest import Checkpoints


def test_settings_read_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DERMAFAKE_ARTIFACTS_DIR", "/srv/models")
    monkeypatch.setenv("DERMAFAKE_MAX_BATCH_SIZE", "4")
    monkeypatch.setenv("DERMAFAKE_PRECISION", "bf16")
    monkeypatch.setenv("DERMAFAKE_CHANNELS_LAST", "false")
    monkeypatch.setenv("DERMAFAKE_API_KEY", "s3cret")
    settings = Settings()
    assert settings.artifacts_dir == Path("/srv/models")
    assert settings.detectors is None and settings.detector_path is None  # discover them all
    assert settings.generator_checkpoint == Path("/srv/models/gan/generator.safetensors")
    assert settings.max_batch_size == 4 and settings.precision == "bf16"
    assert settings.channels_last is False
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    monkeypatch.setenv("DERMAFAKE_DETECTOR_PATH", "/elsewhere/d.safetensors")
    assert Settings().detector_path == Path("/elsewhere/d.safetensors")
    monkeypatch.setenv("DERMAFAKE_DETECTORS", " npr-general, /srv/vgg/detector.safetensors ,")
    assert Settings().detectors == ["npr-general", "/srv/vgg/detector.safetensors"]
    monkeypatch.setenv("DERMAFAKE_DETECTORS", '["a,b", "c"]')  # JSON: names may hold commas
    assert Settings().detectors == ["a,b", "c"]
    monkeypatch.setenv("DERMAFAKE_DETECTORS", "[oops")
    with pytest.raises(ValidationError, match="JSON"):
        Settings()


def test_settings_reject_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DERMAFAKE_API_KEY", "")
    assert Settings().api_key is None  # an empty variable means no key, not the empty key
    for name, value in [("DEVICE", "tpu"), ("PRECISION", "fp8"), ("MAX_BATCH_SIZE", "0")]:
        monkeypatch.setenv(f"DERMAFAKE_{name}", value)
        with pytest.raises(ValidationError, match=name.lower()):
            Settings()
        monkeypatch.delenv(f"DERMAFAKE_{name}")
    with pytest.raises(ValidationError, match="max_queue_size"):
        Settings(max_files=10, max_queue_size=4)
    with pytest.raises(ValidationError, match="batch_buckets"):
        Settings(max_batch_size=16, batch_buckets=[1, 8])  # 16 would compile under load
    with pytest.raises(ValidationError, match="max_decoding_images"):
        Settings(max_files=16, max_decoding_images=8)  # a full request could never decode
    with pytest.raises(ValidationError, match="max_request_pixels"):
        Settings(max_pixels=12_000_000, max_request_pixels=4_000_000)


def test_by_default_a_lone_client_never_waits_for_company(monkeypatch: pytest.MonkeyPatch) -> None:
    """MAX_WAIT_MS is 0 (a 5 ms wait cost a lone request 30%: docs/BENCHMARKS.md), and a
    Batcher built without the settings agrees."""
    monkeypatch.delenv("DERMAFAKE_MAX_WAIT_MS", raising=False)
    assert Settings().max_wait_ms == 0
    assert Batcher(lambda items: items).max_wait_s == 0


def test_buckets_follow_compile_and_batch_size(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(max_batch_size=16).buckets == (1, 2, 4, 8, 16)
    assert Settings(max_batch_size=12).buckets == (1, 2, 4, 8, 12)
    assert Settings(max_batch_size=16, compile=False).buckets == ()  # eager takes any shape
    monkeypatch.setenv("DERMAFAKE_BATCH_BUCKETS", "[16, 4, 4]")
    assert Settings().buckets == (4, 16)


def test_device_and_dtype_resolution() -> None:
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == (torch.bfloat16 if cpu_has_bf16() else torch.float32)
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("fp32", cpu) == torch.float32
    assert resolve_dtype("bf16", cpu) == torch.bfloat16
    assert resolve_device("cpu") == cpu
    if not torch.cuda.is_available():
        assert resolve_device("auto") == cpu
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_importing_the_module_app_loads_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DERMAFAKE_ARTIFACTS_DIR", "/nonexistent")
    module = importlib.reload(importlib.import_module("app.main"))
    assert module.app.state.host.services is None
    assert module.app.state.settings.artifacts_dir == Path("/nonexistent")


@pytest.mark.anyio
async def test_a_corrupt_checkpoint_keeps_the_service_unready_naming_the_file(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    bad = tmp_path / "bad" / "detector.safetensors"
    bad.parent.mkdir()
    bad.write_bytes(b"not a checkpoint")
    settings = make_settings(detectors=[str(bad)], load_retry_s=0.05)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        host = app.state.host
        for _ in range(200):
            if "cannot load" in host.status.reason:
                break
            await asyncio.sleep(0.05)
        assert not host.status.ready and str(bad) in host.status.reason
        assert host.services is None


def _pixels(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).numpy().astype(np.int16)


def test_generator_images_do_not_depend_on_their_batch(checkpoints: Checkpoints) -> None:
    options = InferenceOptions(torch.device("cpu"), channels_last=True)
    runner = GeneratorRunner.from_checkpoint(checkpoints.generator, options)
    batch = runner([11, 12, 13])
    alone = runner([12])
    assert np.abs(_pixels(batch[1]) - _pixels(alone[0])).max() <= 1
    assert not np.array_equal(_pixels(batch[0]), _pixels(batch[1]))


def test_bf16_weights_stay_close_to_fp32(checkpoints: Checkpoints) -> None:
    """The precision knob changes the arithmetic, not the picture (small generator: cheap)."""
    items = [5]
    device = torch.device("cpu")
    fp32 = GeneratorRunner.from_checkpoint(checkpoints.generator, InferenceOptions(device))
    bf16 = GeneratorRunner.from_checkpoint(
        checkpoints.generator, InferenceOptions(device, torch.bfloat16)
    )
    assert all(p.dtype == torch.bfloat16 for p in bf16.model.parameters())
    diff = np.abs(_pixels(fp32(items)[0]) - _pixels(bf16(items)[0]))
    assert diff.mean() < 3 and diff.max() < 40
    assert bf16.info()["dtype"] == "bf16"
