"""A real ``python -m app`` process on a loopback port, configured by environment variables."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from bench import server as app_process
from tests.app.conftest import NPR_NAME, VGG_NAME, Checkpoints

REPO = Path(__file__).resolve().parents[2]
STARTUP_S = 360  # two detectors and the generator, each compiled per bucket, on 2 cores


@contextmanager
def serving(checkpoints: Checkpoints, log_path: Path, **env_extra: str) -> Iterator[str]:
    """``python -m app`` with the test checkpoints (both detectors found in their artifacts
    folder), until /readyz says ready; stopped by SIGTERM at the end, which must shut it down
    cleanly."""
    settings = dict(
        DERMAFAKE_ARTIFACTS_DIR=str(checkpoints.artifacts),
        DERMAFAKE_GENERATOR_PATH=str(checkpoints.generator),
        DERMAFAKE_DEVICE="cpu",  # precision stays auto: the default path is what gets served
        DERMAFAKE_MAX_BATCH_SIZE="4",
        DERMAFAKE_LOG_LEVEL="warning",
    )
    with log_path.open("w+") as log:
        try:
            proc, base, _ = app_process.start(
                {**settings, **env_extra}, timeout_s=STARTUP_S, log=log, cwd=REPO
            )
        except app_process.ServerStartError as exc:
            log.seek(0)
            pytest.fail(f"{exc}:\n{log.read()}")
        try:
            yield base
        finally:
            returncode = app_process.stop(proc)
            log.seek(0)
            output = log.read()
    # uvicorn re-raises SIGTERM after its graceful shutdown; a traceback would mean it failed.
    assert returncode in (0, -signal.SIGTERM), output
    assert "Traceback" not in output, output


@pytest.fixture
def server(checkpoints: Checkpoints, tmp_path: Path) -> Iterator[str]:
    with serving(checkpoints, tmp_path / "server.log") as base:
        yield base


def test_real_server_detects_a_clinic_photo_and_generates(
    server: str, clinic_photos: list[Path]
) -> None:
    photo = clinic_photos[0]
    with httpx.Client(base_url=server, timeout=60) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
        assert list(models) == [NPR_NAME, VGG_NAME, "generator"]
        # The default path: every model compiled, one graph per bucket up to max_batch_size,
        # built before /readyz answered (the fixture waited for it).
        for name in models:
            assert models[name]["compile"] is True
            assert models[name]["batch_buckets"] == [1, 2, 4]
        response = client.post(
            "/detect", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")}
        )
        assert response.status_code == 200, response.text
        (verdict,) = response.json()["results"]
        assert verdict["filename"] == photo.name
        assert [s["model"] for s in verdict["scores"]] == [NPR_NAME, VGG_NAME]
        assert verdict["label"] in ("real", "synthetic", "inconclusive")
        image = client.get("/generate", params={"seed": 3}, headers={"Accept": "image/png"})
        assert image.status_code == 200 and image.content[:4] == b"\x89PNG"
        bad = client.post("/detect", files={"file": ("x.jpg", b"\xff\xd8\xff", "image/jpeg")})
        assert bad.status_code == 415
        assert client.get("/readyz").status_code == 200  # still serving after bad input
        metrics = client.get("/metrics").text
        assert 'dermafake_requests_total{endpoint="/detect",method="POST",status="200"} 1.0' in (
            metrics
        )
        for name in (NPR_NAME, VGG_NAME):
            assert f'dermafake_batch_size_sum{{model="{name}"}} 1.0' in metrics


def test_without_a_compiler_the_server_falls_back_to_eager_and_says_so(
    checkpoints: Checkpoints, tmp_path: Path, clinic_photos: list[Path]
) -> None:
    """A slim image without g++: compilation fails at warm-up, the service still comes up, serves
    eager, reports ``compile: false`` and logs what to install (a fresh inductor cache, so
    nothing compiled earlier can be reused)."""
    log = tmp_path / "server.log"
    env = {"CXX": "/nonexistent/g++", "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    env["DERMAFAKE_DETECTORS"] = f"{VGG_NAME}, {NPR_NAME}"  # names, in the order to serve them
    with (
        serving(checkpoints, log, **env) as base,
        httpx.Client(base_url=base, timeout=60) as client,
    ):
        models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
        assert list(models) == [VGG_NAME, NPR_NAME, "generator"]
        for name in models:
            assert models[name]["compile"] is False
            assert models[name]["batch_buckets"] == []
        photo = clinic_photos[0]
        response = client.post("/detect", files={"file": (photo.name, photo.read_bytes())})
        assert response.status_code == 200, response.text
        assert response.json()["model_version"] == models[VGG_NAME]["version"]
    text = log.read_text()
    assert "torch.compile failed" in text and "g++" in text and "DERMAFAKE_COMPILE=false" in text
