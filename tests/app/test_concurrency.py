"""Many requests at once against a running app: batching, exact per-caller answers, overload."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import torch

from app.settings import Settings
from models.checkpoint import load_model
from models.operating_point import OperatingPoint
from models.preprocessing import load_uint8, normalize
from tests.app.conftest import (
    NPR_NAME,
    VGG_NAME,
    Checkpoints,
    http_scope,
    image_bytes,
    metric_value,
    running_app,
)

pytestmark = pytest.mark.anyio
FORMATS = ["PNG", "JPEG", "WEBP", "BMP"]


def unbatched_probability(path: Path, images: list[bytes]) -> list[float]:
    """Calibrated P(synthetic) of each image alone, straight from the checkpoint (its own
    preprocessing and operating point)."""
    model, meta = load_model(path)
    config = meta.preprocess_config
    point = OperatingPoint.from_metadata(meta.threshold, meta.extra)
    out = []
    with torch.inference_mode():
        for data in images:
            x = normalize(load_uint8(data, config), config).unsqueeze(0)
            out.append(point.probability(float(model(x)[0])))
    return out


async def test_32_concurrent_detects_are_batched_and_each_gets_its_own_answer(
    make_settings: Callable[..., Settings], checkpoints: Checkpoints
) -> None:
    # 16 distinct images, each sent twice (a batch-1 VGG16 forward is slow on a small CPU).
    unique = [image_bytes(FORMATS[i % 4], (64 + i, 48 + i), seed=100 + i) for i in range(16)]
    expected = {}
    for name, path in ((VGG_NAME, checkpoints.detector), (NPR_NAME, checkpoints.npr)):
        reference = unbatched_probability(path, unique)
        assert len({round(p, 3) for p in reference}) > 8  # distinct enough to catch a mix-up
        expected[name] = reference * 2
    images = unique * 2
    settings = make_settings(max_batch_size=8, max_wait_ms=50, max_queue_size=64)
    async with running_app(settings) as (_, client):

        async def detect(i: int) -> httpx.Response:
            files = {"file": (f"img{i}", images[i], "application/octet-stream")}
            return await client.post("/detect", files=files)

        async def bad(i: int) -> httpx.Response:
            files = {"file": (f"bad{i}", b"not an image", "image/png")}
            return await client.post("/detect", files=files)

        # Bad uploads mixed in: refused on their own, never reaching a batch.
        *responses, bad_responses = await asyncio.gather(
            *(detect(i) for i in range(32)), asyncio.gather(*(bad(i) for i in range(4)))
        )
        metrics = (await client.get("/metrics")).text
    assert [r.status_code for r in bad_responses] == [415] * 4
    assert [r.status_code for r in responses] == [200] * 32
    for i, response in enumerate(responses):
        (verdict,) = response.json()["results"]
        assert verdict["filename"] == f"img{i}"
        scores = {s["model"]: s["probability_synthetic"] for s in verdict["scores"]}
        assert scores == {
            name: pytest.approx(probabilities[i], abs=1e-4)
            for name, probabilities in expected.items()
        }
    for name in (VGG_NAME, NPR_NAME):  # each model batched on its own
        forward_passes = metric_value(metrics, "dermafake_batch_size_count", model=name)
        assert metric_value(metrics, "dermafake_batch_size_sum", model=name) == 32  # no bad one
        assert 4 <= forward_passes < 32  # batched, and never above max_batch_size=8


async def test_overload_is_503_with_retry_after_and_the_server_recovers(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(
        max_batch_size=1,
        max_wait_ms=0,
        max_queue_size=2,
        max_files=2,
        max_generate_n=2,
        max_upload_bytes=200_000,
        retry_after_s=3,
    )
    async with running_app(settings) as (app, client):
        png = image_bytes()

        async def detect() -> httpx.Response:
            return await client.post("/detect", files={"file": ("a.png", png, "image/png")})

        responses = await asyncio.gather(*(detect() for _ in range(12)))
        statuses = [r.status_code for r in responses]
        assert set(statuses) == {200, 503}, statuses
        for r in responses:
            if r.status_code == 503:
                assert r.headers["Retry-After"] == "3"
                assert "busy" in r.json()["detail"]
        metrics = (await client.get("/metrics")).text
        rejected = sum(  # each 503 is one model's full queue (the other's work is withdrawn)
            metric_value(metrics, "dermafake_rejections_total", model=name, reason="overloaded")
            for name in (VGG_NAME, NPR_NAME)
        )
        assert rejected == statuses.count(503)
        assert (await detect()).status_code == 200  # nothing stuck

        # A request that cannot get its result in time is a 504, and does not block the next.
        app.state.host.services.generate_batcher.timeout_s = 1e-9
        late = await client.get("/generate")
        assert late.status_code == 504 and "timed out" in late.json()["detail"]
        app.state.host.services.generate_batcher.timeout_s = 30
        assert (await client.get("/generate")).status_code == 200

        # An endless upload is cut off at the limit, not read to the end.
        chunks_read = 0

        async def endless() -> dict[str, object]:
            nonlocal chunks_read
            chunks_read += 1
            head = (
                b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
                if chunks_read == 1
                else b""
            )
            return {"type": "http.request", "body": head + b"\0" * 65536, "more_body": True}

        sent: list[dict[str, object]] = []

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        scope = http_scope("/detect", b"multipart/form-data; boundary=b", ("127.0.0.1", 1))
        await asyncio.wait_for(app(scope, endless, send), timeout=60)
        assert sent[0]["status"] == 413
        assert chunks_read <= 200_000 // 65536 + 2
        assert (await detect()).status_code == 200
