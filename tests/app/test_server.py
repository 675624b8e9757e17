"""A real ``python -m app`` process on a loopback port, configured by environment variables."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.app.conftest import Checkpoints

REPO = Path(__file__).resolve().parents[2]
STARTUP_S = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(checkpoints: Checkpoints, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DERMAFAKE_")}
    env.update(
        DERMAFAKE_DETECTOR_PATH=str(checkpoints.detector),
        DERMAFAKE_GENERATOR_PATH=str(checkpoints.generator),
        DERMAFAKE_HOST="127.0.0.1",
        DERMAFAKE_PORT=str(port),
        DERMAFAKE_DEVICE="cpu",  # precision stays auto: the default path is what gets served
        DERMAFAKE_MAX_BATCH_SIZE="4",
        DERMAFAKE_LOG_LEVEL="warning",
    )
    log = (tmp_path / "server.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"server exited with {proc.returncode}:\n{log.read()}")
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready within {STARTUP_S} s")
            time.sleep(0.5)
        yield base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.seek(0)
        output = log.read()
        log.close()
    # uvicorn re-raises SIGTERM after its graceful shutdown; a traceback would mean it failed.
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "Traceback" not in output, output


def test_real_server_detects_a_clinic_photo_and_generates(
    server: str, clinic_photos: list[Path]
) -> None:
    photo = clinic_photos[0]
    with httpx.Client(base_url=server, timeout=60) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
        # The default path: compiled, one graph per bucket up to max_batch_size, built before
        # /readyz answered (the fixture waited for it).
        assert models["detector"]["compile"] is True
        assert models["detector"]["batch_buckets"] == [1, 2, 4]
        response = client.post(
            "/detect", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")}
        )
        assert response.status_code == 200, response.text
        (verdict,) = response.json()["results"]
        assert verdict["filename"] == photo.name
        assert verdict["label"] in ("real", "synthetic")
        image = client.get("/generate", params={"seed": 3}, headers={"Accept": "image/png"})
        assert image.status_code == 200 and image.content[:4] == b"\x89PNG"
        bad = client.post("/detect", files={"file": ("x.jpg", b"\xff\xd8\xff", "image/jpeg")})
        assert bad.status_code == 422
        assert client.get("/readyz").status_code == 200  # still serving after bad input
        metrics = client.get("/metrics").text
        assert 'dermafake_requests_total{endpoint="/detect",method="POST",status="200"} 1.0' in (
            metrics
        )
