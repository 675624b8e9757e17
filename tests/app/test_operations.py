"""What operators rely on, in one app with real checkpoints: admission before any work, rate
limits, request ids, clients that leave, liveness, loading, encoding off the model thread, seeds, a
path prefix and the schema."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from app import services as services_module
from app.api.schemas import MAX_SEED
from app.main import create_app
from app.ratelimit import RateLimiter
from app.settings import Settings
from bench.soak import png_header
from tests.app.conftest import (
    NPR_NAME,
    VGG_NAME,
    Checkpoints,
    _until_ready,
    http_scope,
    image_bytes,
    metric_value,
    ready_client,
    running_app,
)

pytestmark = pytest.mark.anyio
UPLOAD = {"file": ("a.png", image_bytes(seed=5), "image/png")}


@pytest.fixture
def npr_only(make_settings: Callable[..., Settings], checkpoints: Checkpoints) -> Callable:
    """Settings serving the small NPR detector alone (fast), with overrides."""

    def make(**overrides: Any) -> Settings:
        return make_settings(detectors=[str(checkpoints.npr)], **overrides)

    return make


@contextmanager
def gated(batcher: Any) -> Iterator[threading.Event]:
    """Hold a model's forward passes until the event is set; the real model still runs them.
    (A test harness gate on the batch function, so a queue can be filled deterministically.)"""
    gate = threading.Event()
    run = batcher.fn

    def held(items: list) -> list:
        gate.wait(timeout=30)
        return run(items)

    batcher.fn = held
    try:
        yield gate
    finally:
        gate.set()
        batcher.fn = run


async def _until(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


# --- admission before work --------------------------------------------------------------------


async def test_a_full_queue_refuses_before_the_upload_is_decoded(npr_only: Callable) -> None:
    """With the queue full, even a non-image upload gets the 503: nothing was decoded (a decode
    would have made it a 415)."""
    settings = npr_only(max_queue_size=2, max_batch_size=1, max_files=2, max_generate_n=2)
    async with running_app(settings) as (app, client):
        batcher = app.state.host.services.detect_batchers[NPR_NAME]
        with gated(batcher) as gate:
            running = asyncio.ensure_future(client.post("/detect", files=UPLOAD))
            await _until(lambda: batcher.busy_for_s > 0)
            files = [("files", (f"{i}.png", image_bytes(seed=i), "image/png")) for i in (1, 2)]
            queued = asyncio.ensure_future(client.post("/detect", files=files))
            await _until(lambda: batcher.queue_depth == 2)
            text = {"file": ("t.png", b"not an image at all", "image/png")}
            refused = await client.post("/detect", files=text)
            gate.set()
            assert (await running).status_code == 200 and (await queued).status_code == 200
        metrics = (await client.get("/metrics")).text
    assert refused.status_code == 503, refused.text
    assert refused.headers["Retry-After"] == "1" and "queue is full" in refused.json()["detail"]
    assert metric_value(metrics, "dermafake_rejections_total", model=NPR_NAME, reason="overloaded")


async def test_requests_past_the_in_flight_limit_get_503_at_once(npr_only: Callable) -> None:
    settings = npr_only(max_inflight_requests=1)
    async with running_app(settings) as (app, client):
        batcher = app.state.host.services.detect_batchers[NPR_NAME]
        with gated(batcher) as gate:
            first = asyncio.ensure_future(client.post("/detect", files=UPLOAD))
            await _until(lambda: batcher.busy_for_s > 0)
            busy = await client.post("/detect", files=UPLOAD)
            also_busy = await client.get("/generate")
            probe = await client.get("/readyz")  # probes are never gated
            gate.set()
            assert (await first).status_code == 200
        refused = await client.post("/detect", files={"file": ("t.png", b"text", "image/png")})
        after = await client.post("/detect", files=UPLOAD)
        metrics = (await client.get("/metrics")).text
    assert refused.status_code == 415  # a request that fails gives its slot back too
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
    assert "1 requests in flight" in busy.json()["detail"]
    assert also_busy.status_code == 503 and probe.status_code == 200
    assert after.status_code == 200  # the slot was given back
    assert metric_value(metrics, "dermafake_admission_rejected_total") == 2
    assert metric_value(metrics, "dermafake_inflight_requests") == 0


async def test_images_past_the_decode_limit_get_503_before_any_is_decoded(
    npr_only: Callable,
) -> None:
    """With two images in decode (the decode thread held), a third is refused at once: a text
    upload gets the 503, not the 415 a decode would give, and an upload over the size limit the
    503, not the 413 reading it would give; the slots come back afterwards."""
    settings = npr_only(max_decoding_images=2, max_files=2, max_generate_n=2, decode_threads=1)
    async with running_app(settings) as (app, client):
        pool, held = app.state.host.services.image_pool, threading.Event()
        pool.submit(held.wait, 10)  # the decode thread is busy (without a limit: for 10 s)
        try:
            files = [("files", (f"{i}.png", image_bytes(seed=i), "image/png")) for i in (1, 2)]
            first = asyncio.ensure_future(client.post("/detect", files=files))
            await _until(lambda: pool._work_queue.qsize() > 0)  # its images wait for the thread
            text = {"file": ("t.png", b"not an image at all", "image/png")}
            busy = await client.post("/detect", files=text)
            # Not even read: an upload over the size limit is refused for the gate, not a 413.
            big = {"file": ("big.png", b"0" * (settings.max_upload_bytes + 1), "image/png")}
            unread = await client.post("/detect", files=big)
        finally:
            held.set()
        assert (await first).status_code == 200
        after = await client.post("/detect", files=UPLOAD)
        metrics = (await client.get("/metrics")).text
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
    assert "2 images being decoded" in busy.json()["detail"]
    assert unread.status_code == 503 and "2 images being decoded" in unread.json()["detail"]
    assert after.status_code == 200
    assert metric_value(metrics, "dermafake_decode_rejected_total") == 2
    assert metric_value(metrics, "dermafake_decoding_images") == 0


def test_a_request_over_the_pixel_budget_is_413_before_any_image_is_decoded(
    npr_only: Callable,
) -> None:
    """The budget is summed from the headers: two PNGs that declare 300x200 and hold no pixels
    (decoding either is a 422) are a 413 naming the limit; one alone is within it and decoded."""
    settings = npr_only(max_pixels=60_000, max_request_pixels=100_000)
    headers_only = [("files", (f"{i}.png", png_header(300, 200), "image/png")) for i in (1, 2)]
    at_limit = [("files", (f"{i}.png", image_bytes(size=(250, 200), seed=i))) for i in (1, 2)]
    with ready_client(create_app(settings)) as client:
        over = client.post("/detect", files=headers_only)
        one = client.post("/detect", files=headers_only[:1])
        within = client.post("/detect", files=at_limit)
    assert over.status_code == 413, over.text
    assert "120000 pixels in all, limit 100000 per request" in over.json()["detail"]
    assert one.status_code == 422 and "cannot decode" in one.json()["detail"]
    assert within.status_code == 200


# --- rate limits -------------------------------------------------------------------------------


def test_rate_limit_is_a_token_bucket_per_client() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.acquire("a") for _ in range(3)] == [0, 0, 0]  # the burst
    assert limiter.acquire("a") == pytest.approx(0.5)  # one token per 0.5 s
    assert limiter.acquire("b") == 0  # another client has its own bucket
    now[0] = 0.5
    assert limiter.acquire("a") == 0 and limiter.acquire("a") > 0
    small = RateLimiter(rate=1.0, burst=1, max_clients=2, clock=lambda: now[0])
    for client in ("x", "y", "z"):
        small.acquire(client)
    assert set(small._buckets) == {"y", "z"}  # bounded memory: the oldest is forgotten


def test_rate_limit_answers_429_with_retry_after_and_counts_it(npr_only: Callable) -> None:
    settings = npr_only(rate_limit_per_s=0.2, rate_limit_burst=2, api_key="k1")
    with ready_client(create_app(settings), headers={"Authorization": "Bearer k1"}) as client:
        statuses = [client.get("/v1/models").status_code for _ in range(3)]
        limited = client.post("/detect", files=UPLOAD)
        probes = [client.get(p).status_code for p in ("/healthz", "/readyz", "/metrics")]
        metrics = client.get("/metrics").text
    assert statuses == [200, 200, 429]
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 4
    assert "rate limit exceeded" in limited.json()["detail"]
    assert probes == [200, 200, 200]  # probes and metrics are not rate limited
    assert metric_value(metrics, "dermafake_rate_limited_total", endpoint="/detect") == 1


# --- request ids and logs ---------------------------------------------------------------------


async def test_request_ids_are_echoed_or_made_and_each_request_logs_one_line(
    npr_only: Callable, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dermafake.request")
    async with running_app(npr_only()) as (_, client):
        mine = await client.post("/detect", files=UPLOAD, headers={"X-Request-ID": "abc-123"})
        made = await client.get("/generate", params={"n": 2, "seed": 1})
        hostile = await client.get("/healthz", headers={"X-Request-ID": "a b\x01" * 60})
    assert mine.headers["X-Request-ID"] == "abc-123"
    assert len(made.headers["X-Request-ID"]) == 32
    assert hostile.headers["X-Request-ID"] != "a b\x01" * 60  # not echoed into logs: replaced
    lines = {r.fields["request_id"]: r.fields for r in caplog.records if hasattr(r, "fields")}
    detect = lines["abc-123"]
    assert detect["route"] == "/detect" and detect["status"] == 200 and detect["images"] == 1
    assert detect["models"] == {NPR_NAME: mine.json()["results"][0]["scores"][0]["model_version"]}
    assert detect["inference_s"] > 0 and detect["queue_wait_s"] >= 0
    generate = lines[made.headers["X-Request-ID"]]
    assert generate["images"] == 2 and list(generate["models"]) == ["generator"]


# --- clients that leave ----------------------------------------------------------------------


def _multipart(data: bytes) -> tuple[bytes, bytes]:
    body = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + data + b"\r\n--b--\r\n"
    )
    return body, b"multipart/form-data; boundary=b"


async def test_a_client_that_disconnects_is_not_served(npr_only: Callable) -> None:
    """Its image leaves the queue before its batch forms: the model never runs it."""
    async with running_app(npr_only(max_batch_size=1)) as (app, client):
        batcher = app.state.host.services.detect_batchers[NPR_NAME]
        with gated(batcher) as gate:
            first = asyncio.ensure_future(client.post("/detect", files=UPLOAD))
            await _until(lambda: batcher.busy_for_s > 0)
            body, content_type = _multipart(image_bytes(seed=9))
            gone = asyncio.Event()
            sent: list[dict] = []
            messages = iter([{"type": "http.request", "body": body, "more_body": False}])

            async def receive() -> dict:
                message = next(messages, None)
                if message is not None:
                    return message
                await gone.wait()
                return {"type": "http.disconnect"}

            async def send(message: dict) -> None:
                sent.append(message)

            scope = http_scope("/detect", content_type)
            leaving = asyncio.ensure_future(app(scope, receive, send))
            await _until(lambda: batcher.queue_depth == 1)
            gone.set()  # the client hangs up while its image waits
            await asyncio.wait_for(leaving, 10)
            gate.set()
            assert (await first).status_code == 200
        metrics = (await client.get("/metrics")).text
    assert metric_value(metrics, "dermafake_batch_size_sum", model=NPR_NAME) == 1  # first only
    assert metric_value(metrics, "dermafake_client_disconnects_total", endpoint="/detect") == 1
    assert sent[0]["status"] == 499


async def test_a_client_that_hangs_up_mid_upload_is_no_server_error(npr_only: Callable) -> None:
    """Half a body, then the connection closes: logged as 499 and counted, never a 500."""
    async with running_app(npr_only()) as (app, client):
        body, content_type = _multipart(image_bytes(seed=9))
        messages = iter(
            [
                {"type": "http.request", "body": body[: len(body) // 2], "more_body": True},
                {"type": "http.disconnect"},
            ]
        )
        sent: list[dict] = []

        async def receive() -> dict:
            return next(messages)

        async def send(message: dict) -> None:
            sent.append(message)

        scope = http_scope("/detect", content_type, ("127.0.0.1", 5001))
        await app(scope, receive, send)
        metrics = (await client.get("/metrics")).text
    assert sent[0]["status"] == 499
    assert metric_value(metrics, "dermafake_client_disconnects_total", endpoint="/detect") == 1
    assert not metric_value(
        metrics, "dermafake_requests_total", endpoint="/detect", method="POST", status="500"
    )


# --- liveness ----------------------------------------------------------------------------------


async def test_liveness_fails_while_a_forward_pass_hangs(npr_only: Callable) -> None:
    async with running_app(npr_only(liveness_timeout_s=0.2)) as (app, client):
        assert (await client.get("/healthz")).status_code == 200
        batcher = app.state.host.services.detect_batchers[NPR_NAME]
        with gated(batcher) as gate:
            stuck = asyncio.ensure_future(client.post("/detect", files=UPLOAD))
            await _until(lambda: batcher.busy_for_s > 0.3)
            hung = await client.get("/healthz")
            gate.set()
            assert (await stuck).status_code == 200
        assert (await client.get("/healthz")).status_code == 200
    assert hung.status_code == 503 and NPR_NAME in hung.json()["detail"]


# --- life cycle and generation ------------------------------------------------------------------


async def test_while_the_models_load_the_port_answers_not_ready_then_ready(
    npr_only: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading held at its first step (finding the checkpoints): alive, not ready ("loading"),
    model routes 503 with Retry-After; once loading goes on, ready and serving."""
    loading = threading.Event()
    find_detectors = services_module.find_detectors

    def held(settings: Settings) -> Any:
        loading.wait(30)
        return find_detectors(settings)

    monkeypatch.setattr(services_module, "find_detectors", held)
    async with running_app(npr_only(), ready=False) as (_, client):
        try:
            ready = await client.get("/readyz")
            health = await client.get("/healthz")
            detect = await client.post("/detect", files=UPLOAD)
            generate = await client.get("/generate")
        finally:
            loading.set()
        await _until_ready(lambda: client.get("/readyz"))
        served = await client.post("/detect", files=UPLOAD)
    assert ready.status_code == 503 and "loading" in ready.json()["detail"]
    assert health.status_code == 200
    for refused in (detect, generate):
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert "loading" in refused.json()["detail"]
    assert served.status_code == 200


async def test_generated_images_are_encoded_on_an_image_thread_not_the_models(
    npr_only: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The generator's thread only runs forward passes: it hands back uint8 pixels, and every
    PNG of /generate is written on an image-pool thread (Pillow's save, wherever it is called,
    records the thread it runs on)."""
    threads: list[str] = []
    save = Image.Image.save

    def recorded_save(image: Image.Image, *args: Any, **kwargs: Any) -> None:
        threads.append(threading.current_thread().name)
        save(image, *args, **kwargs)

    async with running_app(npr_only()) as (app, client):
        pixels = await app.state.host.services.generate_batcher.submit_many([1, 2])
        monkeypatch.setattr(Image.Image, "save", recorded_save)
        response = await client.get("/generate", params={"n": 3, "seed": 1})
    assert response.status_code == 200 and len(response.json()["images"]) == 3
    assert [(p.dtype, p.shape[0]) for p in pixels] == [(torch.uint8, 3)] * 2  # not encoded
    assert len(threads) == 3 and all(name.startswith("image_") for name in threads), threads


# --- seeds, prefix, schema --------------------------------------------------------------------


def test_every_returned_seed_can_be_asked_for_again(npr_only: Callable) -> None:
    with ready_client(create_app(npr_only())) as client:
        images = client.get("/generate", params={"n": 3, "seed": MAX_SEED - 1}).json()["images"]
        assert [i["seed"] for i in images] == [MAX_SEED - 1, MAX_SEED, 0]  # wraps, never above
        for image in images:
            again = client.get("/generate", params={"seed": image["seed"]})
            assert again.status_code == 200
            assert again.json()["images"][0]["data"] == image["data"]
    assert base64.b64decode(images[2]["data"])[:4] == b"\x89PNG"


def test_upload_limit_holds_behind_a_path_prefix(npr_only: Callable) -> None:
    """Behind a proxy serving the app at /dermafake, /detect keeps its upload limit instead of
    the 64 KiB default for other bodies."""
    settings = npr_only(root_path="/dermafake", max_body_bytes=1024)
    big = image_bytes("PNG", (200, 150), seed=3)
    assert len(big) > 1024
    with ready_client(create_app(settings), root_path="/dermafake") as client:
        # As uvicorn --root-path passes it on: path /dermafake/detect, root_path /dermafake.
        response = client.post("/dermafake/detect", files={"file": ("big.png", big, "image/png")})
        assert response.status_code == 200, response.text
        small_limit = client.post("/dermafake/generate", content=b"{" + b" " * 2000 + b"}")
        assert small_limit.status_code == 413  # other routes keep the small default


def test_schema_declares_auth_only_when_a_key_is_set(npr_only: Callable) -> None:
    def schema(settings: Settings) -> dict:
        return json.loads(json.dumps(create_app(settings).openapi()))

    open_schema = schema(npr_only())
    keyed = schema(npr_only(api_key="k"))
    for path, method in (("/detect", "post"), ("/generate", "get"), ("/v1/models", "get")):
        assert "security" not in open_schema["paths"][path][method]
        assert keyed["paths"][path][method]["security"] == [{"bearer": []}]
    assert "security" not in keyed["paths"]["/healthz"]["get"]
    assert "securitySchemes" not in open_schema.get("components", {})
    body = open_schema["paths"]["/detect"]["post"]["requestBody"]["content"]
    form = body["multipart/form-data"]["schema"]
    assert form["minProperties"] == form["maxProperties"] == 1  # file or files, not both
    assert form["properties"]["files"]["maxItems"] == 16 and not form["additionalProperties"]
    detect_params = {p["name"] for p in open_schema["paths"]["/detect"]["post"]["parameters"]}
    assert {"explain", "model"} <= detect_params
    explanation = open_schema["components"]["schemas"]["Explanation"]
    assert {"heatmap", "peak", "empty"} <= set(explanation["required"])
    assert "before normalisation" in explanation["properties"]["peak"]["description"]
    assert "/" not in open_schema["paths"]  # the page is not part of the API
    n = next(p for p in open_schema["paths"]["/generate"]["get"]["parameters"] if p["name"] == "n")
    assert n["schema"]["maximum"] == 16  # the server's max_generate_n


def test_default_pixel_limit_is_what_the_models_need(npr_only: Callable) -> None:
    """12 MP by default (a 4000x3000 phone photo), read from the header before decoding: a
    14 MP upload costs the server nothing but the header."""
    settings = npr_only()
    assert Settings.model_fields["max_pixels"].default == settings.max_pixels == 12_000_000
    assert settings.max_request_pixels == 48_000_000  # four such photos, or 16 of 3 MP
    with ready_client(create_app(settings)) as client:
        big = client.post("/detect", files={"file": ("a.png", png_header(4000, 3500))})
        ok = client.post("/detect", files={"file": ("b.png", image_bytes("PNG", (400, 300)))})
    assert big.status_code == 422 and "14000000 pixels, limit 12000000" in big.json()["detail"]
    assert ok.status_code == 200


# --- explanations ------------------------------------------------------------------------------


def test_explain_returns_a_map_and_the_view_per_model_and_image(
    make_settings: Callable[..., Settings],
) -> None:
    with ready_client(create_app(make_settings())) as client:
        files = [("files", (f"{i}.png", image_bytes(seed=i), "image/png")) for i in range(2)]
        plain = client.post("/detect", files=files).json()
        explained = client.post("/detect?explain=true", files=files).json()
        metrics = client.get("/metrics").text
    spread: dict[str, list[float]] = {NPR_NAME: [], VGG_NAME: []}
    for before, after in zip(plain["results"], explained["results"], strict=True):
        for a, b in zip(before["scores"], after["scores"], strict=True):
            assert a["explanation"] is None
            assert b["probability_synthetic"] == pytest.approx(a["probability_synthetic"], abs=1e-5)
            e = b["explanation"]
            assert e["method"] == "grad-cam"
            assert e["layer"] == ("layer2" if b["model"] == NPR_NAME else "backbone.features.29")
            heat = Image.open(io.BytesIO(base64.b64decode(e["heatmap"])))
            view = Image.open(io.BytesIO(base64.b64decode(e["input"])))
            assert heat.mode == "L" and heat.size == view.size == (e["size"], e["size"])
            pixels = np.asarray(heat)
            # Normalised to its own maximum; the raw one and whether there was any are said.
            if e["empty"]:
                assert e["peak"] == 0 and pixels.max() == 0
            else:
                assert e["peak"] > 0 and pixels.max() == 255
            spread[b["model"]].append(float(pixels.std()))
    assert any(s > 0 for s in spread[NPR_NAME] + spread[VGG_NAME]), spread  # not uniform
    for model in (NPR_NAME, VGG_NAME):
        assert metric_value(metrics, "dermafake_explain_duration_seconds_count", model=model) == 2


async def test_explanations_have_their_own_concurrency_limit(npr_only: Callable) -> None:
    async with running_app(npr_only(max_concurrent_explains=1)) as (app, client):
        pool = app.state.host.services.explain_pool
        gate = threading.Event()
        pool.submit(gate.wait, 30)  # the explain thread is busy: the first request waits
        first = asyncio.ensure_future(client.post("/detect?explain=true", files=UPLOAD))
        await _until(lambda: app.state.explain_gate.in_flight == 1)
        busy = await client.post("/detect?explain=true", files=UPLOAD)
        plain = await client.post("/detect", files=UPLOAD)  # scoring alone is unaffected
        gate.set()
        assert (await first).status_code == 200
        metrics = (await client.get("/metrics")).text
    assert busy.status_code == 503 and "explanations busy" in busy.json()["detail"]
    assert busy.headers["Retry-After"] == "1" and plain.status_code == 200
    assert metric_value(metrics, "dermafake_explain_rejected_total") == 1
