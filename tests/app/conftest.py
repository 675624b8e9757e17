"""Checkpoints written by the project's own code (a small SNGAN generator from two steps of
training.train_gan, the real VGG16 detector and a small NPR detector, laid out as the pipeline
lays out its artifacts), settings pointing at them, small images in every accepted format, and a
way to read /metrics."""

from __future__ import annotations

import asyncio
import io
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from fastapi import FastAPI
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from torch import nn

from app.main import create_app
from app.settings import Settings
from models.checkpoint import save_model
from models.detector import Detector, DetectorConfig
from models.npr import NPRConfig, NPRDetector
from models.preprocessing import GAN_MEAN, GAN_STD, PreprocessConfig, load_uint8, normalize
from models.sngan import Generator, GeneratorConfig
from tests.conftest import shared_data_dir

with warnings.catch_warnings():  # Starlette deprecates httpx for TestClient; we still use both
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

DETECTOR_SIZE = 32  # the real VGG16 + head, fed 32 px instead of 128: 16x fewer FLOPs on CPU
NPR_SIZE = 32
GENERATOR_SIZE = 32
VGG_NAME = "vgg16-paper"  # from its folder: the checkpoint predates model names
# Far from the 0.5 a service ignoring the checkpoint would use (tests check verdicts flip on it).
VGG_THRESHOLD = 0.7
NPR_NAME = "npr-general"  # from its metadata, as training writes it
NPR_OPERATING_POINT = {
    "threshold": 0.6,
    "temperature": 2.0,
    "bias": 0.25,
    "inconclusive_below": 0.4,
    "criterion": "fpr",
    "target_fpr": 0.05,
}
NPR_SOURCES = {  # as training writes them: name -> folder, by role
    "train": {"sngan": "/runs/synthetic", "zoo-transposed-2": "/runs/fakes/zoo-transposed-2"},
    "held_out": {"dcgan-64": "/runs/fakes/dcgan-64"},
}
NPR_METRICS = {
    "validation": {"roc_auc": 0.97, "fpr": 0.05, "tpr": 0.81},
    "held_out_source": {"source": "ae-bilinear", "tpr": 0.74},
}


@dataclass(frozen=True)
class Checkpoints:
    detector: Path  # ARTIFACTS/vgg16-paper/detector.safetensors: the paper's VGG16
    npr: Path  # ARTIFACTS/npr-general/detector.safetensors
    generator: Path

    @property
    def artifacts(self) -> Path:
        """The folder the service discovers both detectors in (ARTIFACTS/*/detector.safetensors)."""
        return self.detector.parent.parent


def write_checkpoints(root: Path) -> Checkpoints:
    """All test checkpoints under ``root`` (the ``checkpoints`` fixture in tests/conftest.py
    calls this once per session: the VGG16 file is ~640 MB and takes seconds to hash)."""
    torch.manual_seed(0)
    generator_path = _train_generator(root / "gan")
    if generator_path is None:  # no HAM10000 here: an untrained generator, same file format
        generator = Generator(GeneratorConfig(image_size=GENERATOR_SIZE, z_dim=128, channels=16))
        gan_pre = PreprocessConfig(image_size=GENERATOR_SIZE, mean=GAN_MEAN, std=GAN_STD)
        generator_path = root / "generator.safetensors"
        save_model(generator_path, generator.eval(), gan_pre, step=2)
    detector_pre = PreprocessConfig(image_size=DETECTOR_SIZE)
    vgg = Detector(DetectorConfig(image_size=DETECTOR_SIZE)).eval()
    detector = _spread_logits(vgg, vgg.head[-1], detector_pre)
    detector_path = root / VGG_NAME / "detector.safetensors"
    save_model(detector_path, detector, detector_pre, threshold=VGG_THRESHOLD, step=3)
    npr_path = write_npr(
        root / NPR_NAME / "detector.safetensors",
        name=NPR_NAME,
        operating_point=NPR_OPERATING_POINT,
        metrics=NPR_METRICS,
    )
    return Checkpoints(detector_path, npr_path, generator_path)


def npr_model() -> tuple[NPRDetector, PreprocessConfig]:
    """The same small NPR detector every call (seeded), logits spread like the VGG16's."""
    torch.manual_seed(1)
    pre = PreprocessConfig(image_size=NPR_SIZE, crop="native")
    model = NPRDetector(NPRConfig(image_size=NPR_SIZE, width=16)).eval()
    return _spread_logits(model, model.fc1, pre), pre


def write_npr(
    path: Path,
    *,
    name: str,
    operating_point: dict[str, Any],
    metrics: dict[str, Any] | None = None,
) -> Path:
    """An NPR checkpoint as the training code writes one: name, architecture, operating point,
    fake sources in its metadata (tests write variants with other operating points)."""
    model, pre = npr_model()
    extra = {
        "name": name,
        "architecture": "npr",
        "operating_point": operating_point,
        "sources": NPR_SOURCES,
    }
    save_model(
        path,
        model,
        pre,
        threshold=operating_point["threshold"],
        step=5,
        metrics=metrics or {},
        extra=extra,
    )
    return path


def _train_generator(out: Path) -> Path | None:
    """Two real SNGAN steps with the training program, scored in a feature model trained for a
    few steps by its own program, when the shared HAM10000 data is here."""
    data = shared_data_dir() / "ham10000-200x150"
    if not (data / "HAM10000_metadata.csv").is_file():
        return None
    from training import train_features  # only needed with data
    from training.train_gan import main, parse_args

    features = out.parent / "features"
    feature_args = ["--data", str(data), "--out", str(features), "--image-size", "32"]
    feature_args += ["--widths", "8,16", "--embed-dim", "16", "--batch-size", "8", "--steps", "4"]
    feature_args += ["--limit-images", "48", "--eval-every", "0", "--warmup-steps", "1", "--quiet"]
    train_features.main(train_features.parse_args(feature_args))
    args = ["--data", str(data), "--out", str(out), "--steps", "2", "--image-size", "32"]
    args += ["--g-channels", "16", "--d-channels", "8", "--batch-size", "4", "--n-dis", "1"]
    args += ["--limit-images", "8", "--sample-every", "2", "--quiet"]
    args += ["--features", str(features / train_features.CHECKPOINT), "--quality-n", "8"]
    return main(parse_args([*args, "--quality-real-n", "8"]))


def _spread_logits(model: nn.Module, last: nn.Linear, config: PreprocessConfig) -> nn.Module:
    """Random init gives logits within ~1e-3 of each other, which would make any comparison of
    probabilities pass. Rescale the last layer so varied images get logits of mean 0, std 2."""
    x = torch.stack([load_uint8(image_bytes(seed=1000 + i), config) for i in range(6)])
    seen: list[torch.Tensor] = []
    hook = last.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0]))
    with torch.inference_mode():
        model(normalize(x, config))
        raw = (seen[0] @ last.weight.T).squeeze(1)
    hook.remove()
    scale = 2.0 / float(raw.std())
    with torch.no_grad():
        last.weight.mul_(scale)
        last.bias.fill_(-scale * float(raw.mean()))
    return model


@pytest.fixture(scope="session")
def make_settings(checkpoints: Checkpoints) -> Callable[..., Settings]:
    """Settings for the test checkpoints (both detectors, discovered in their artifacts folder);
    fp32 so answers can be compared tightly."""

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "artifacts_dir": checkpoints.artifacts,
            "generator_path": checkpoints.generator,
            "device": "cpu",
            "precision": "fp32",
            "compile": False,  # minutes of compilation per app; test_fast_path.py compiles
            "max_batch_size": 8,
            "max_wait_ms": 10,
            "decode_threads": 2,
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


LOAD_TIMEOUT_S = 300


@asynccontextmanager
async def running_app(
    settings: Settings, ready: bool = True
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with its lifespan run and its models loaded (they load in the background, as in
    the server), and an in-process async client on the same event loop. ``ready=False``: at
    once, loaded or not, as a client finds the port open (for the not-ready states)."""
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        if ready:
            await _until_ready(lambda: client.get("/readyz"))
        yield app, client


async def _until_ready(readyz: Callable[[], Any], give_up_on_error: bool = True) -> None:
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    while True:
        response = await readyz()
        if response.status_code == 200:
            return
        reason = response.json()["detail"]
        if (give_up_on_error and "cannot load" in reason) or time.monotonic() > deadline:
            pytest.fail(f"models did not load: {reason}")
        await asyncio.sleep(0.05)


@contextmanager
def ready_client(app: FastAPI, **kwargs: Any) -> Iterator[TestClient]:
    """A TestClient with the lifespan run and the models loaded."""
    with TestClient(app, **kwargs) as client:
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while (response := client.get("/readyz")).status_code != 200:
            reason = response.json()["detail"]
            if "cannot load" in reason or time.monotonic() > deadline:
                pytest.fail(f"models did not load: {reason}")
            time.sleep(0.05)
        yield client


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (80, 60), seed: int = 0) -> bytes:
    """A small, distinct image: smooth colour gradients plus noise, different for every seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(0, 255, 3) + rng.uniform(-2, 2, 3) * (xx[..., None] + yy[..., None])
    pixels = np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format=fmt)
    return buf.getvalue()


def metric_value(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def http_scope(
    path: str, content_type: bytes, client: tuple[str, int] = ("127.0.0.1", 5000)
) -> dict[str, Any]:
    """An ASGI HTTP scope for a POST, for tests that drive the app's receive/send directly
    (clients that disconnect or send forever, which HTTP clients cannot be made to do)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test"), (b"content-type", content_type)],
        "client": client,
        "server": ("test", 80),
        "state": {},
    }


INT8_NAME = "npr-int8"
INT8_OPERATING_POINT = {**NPR_OPERATING_POINT, "half_scale_threshold": 0.5}  # both views scored


INT8_SMALL_SETS = ["--calibration-images", "8", "--sensitivity-images", "16", "--test-limit", "24"]


def write_int8_npr(root: Path, data: Path) -> Path:
    """A small NPR checkpoint whose fake source is a folder of generated images of its own,
    quantized by ``training.quantize`` (calibrated on its validation split, agreement measured on
    its test split): ``root/npr-int8/detector.safetensors`` with ``detector.int8.onnx`` beside."""
    from training.quantize import main, parse_args

    synthetic = root / "synthetic"
    synthetic.mkdir(parents=True)
    for i in range(60):
        (synthetic / f"{i:03d}.png").write_bytes(image_bytes(size=(72, 64), seed=500 + i))
    model, pre = npr_model()
    path = root / INT8_NAME / "detector.safetensors"
    extra = {
        "name": INT8_NAME,
        "architecture": "npr",
        "operating_point": INT8_OPERATING_POINT,
        "sources": {"train": {"sngan": str(synthetic)}, "held_out": {}},
    }
    save_model(path, model, pre, threshold=INT8_OPERATING_POINT["threshold"], extra=extra)
    args = ["--checkpoint", str(path), "--data", str(data), "--quiet"]
    main(parse_args([*args, *INT8_SMALL_SETS]))
    return path
