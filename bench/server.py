"""Start and stop ``python -m app`` the way a user runs it, on a free loopback port, configured
by ``DERMAFAKE_*`` variables only. The HTTP benchmark and the real-server tests share it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import httpx


class ServerStartError(RuntimeError):
    """The service exited, or did not say ready in time, during start-up."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(
    settings: Mapping[str, str],
    *,
    timeout_s: float,
    log: IO[str] | None = None,
    cwd: Path | None = None,
) -> tuple[subprocess.Popen, str, float]:
    """(process, base URL, seconds to ready) once ``/readyz`` answers 200.

    Inherited ``DERMAFAKE_*`` variables are dropped, so only ``settings`` configure it; with
    ``log`` its stdout and stderr go there. On failure the process is stopped and
    :class:`ServerStartError` says why.
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DERMAFAKE_")}
    env.update(settings, DERMAFAKE_HOST="127.0.0.1", DERMAFAKE_PORT=str(port))
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app"],
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT if log is not None else None,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise ServerStartError(f"server exited with {proc.returncode} during start-up")
        try:
            ready = httpx.get(f"{url}/readyz", timeout=2)
            if ready.status_code == 200:
                return proc, url, time.perf_counter() - started
            reason = str(ready.json().get("detail", ""))
            if "cannot load" in reason:  # it would wait for new artifacts: say why instead
                stop(proc)
                raise ServerStartError(reason)
        except (httpx.TransportError, ValueError):
            pass
        if time.monotonic() > deadline:
            stop(proc)
            raise ServerStartError(f"server not ready within {timeout_s:g} s")
        time.sleep(0.5)


def stop(proc: subprocess.Popen) -> int:
    """SIGTERM (uvicorn shuts down gracefully), SIGKILL after 30 s; the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def artifacts_env(artifacts: Path, detectors: str | None, compile: bool) -> dict[str, str]:
    """Settings serving a pipeline's output folder (every detector, or the ``detectors``
    named), quietly: the benchmarks that take ``--artifacts``."""
    return {
        "DERMAFAKE_ARTIFACTS_DIR": str(artifacts),
        "DERMAFAKE_COMPILE": str(compile).lower(),
        "DERMAFAKE_LOG_LEVEL": "warning",
        **({"DERMAFAKE_DETECTORS": detectors} if detectors else {}),
    }


def images_under(folder: Path) -> list[Path]:
    """Every .jpg and .png below ``folder`` (the official HAM10000 layout nests them), sorted."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    if not files:
        raise SystemExit(f"no .jpg or .png images under {folder}: pass --images")
    return files
