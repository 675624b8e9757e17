"""A CPU rehearsal of the paper profile from a fresh host: no data, an empty torch hub cache,
``--download`` against a local Dataverse-shaped server, every stage of the paper path (sizes
shrunk, ImageNet-weights branch included) to a model the service serves. No internet needed.
``make rehearse`` runs this file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from app.settings import Settings
from models.checkpoint import load_model
from models.detector import IMAGENET_FILENAME
from tests.app.conftest import running_app
from tests.training.ham_like import ham_archive, serve, vgg16_shaped_weights, weights_name
from training import pipeline

REPO = Path(__file__).resolve().parents[2]


def rehearse(
    root: Path, data_source: str, weights_url: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    """``training.pipeline --profile paper-rehearsal --download`` as a user runs it, with the
    torch hub cache and outputs under ``root``."""
    env = {**os.environ, "TORCH_HOME": str(root / "torch"), "PYTHONUNBUFFERED": "1"}
    args = ["--data", str(root / "data"), "--out", str(root / "artifacts")]
    args += ["--profile", "paper-rehearsal", "--device", "cpu", "--download", "--quiet"]
    args += ["--data-source", data_source, "--weights-url", weights_url]
    return subprocess.run(
        [sys.executable, "-m", "training.pipeline", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One rehearsal for the module; its 3.6 GB are removed when the module ends, failed or not."""
    root = tmp_path_factory.mktemp("rehearsal")
    weights = vgg16_shaped_weights()
    name = weights_name(weights)
    with serve(ham_archive(), extra={name: weights}) as server:
        r = rehearse(root, server.url, f"{server.url}/{name}", timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    yield {
        "root": root,
        "out": root / "artifacts",
        "stdout": r.stdout,
        "weights": root / "torch" / "hub" / "checkpoints" / name,
        "weights_bytes": weights,
        "requests": server.requests,
    }
    shutil.rmtree(root, ignore_errors=True)


def test_download_fetches_data_and_weights_then_every_stage_runs(rehearsal: dict) -> None:
    out, stdout = rehearsal["out"], rehearsal["stdout"]
    assert "preflight passed (paper-rehearsal profile)" in stdout
    assert (rehearsal["root"] / "data" / "HAM10000_metadata.csv").is_file()
    assert len(list((rehearsal["root"] / "data").glob("HAM10000_images_part_*/*.jpg"))) == 60
    assert rehearsal["weights"].read_bytes() == rehearsal["weights_bytes"]
    for stage in ("features", "gan", "synthetic", "fakes", "detector", "general", "evaluate"):
        assert f"[pipeline] {stage:9s} starts: " in stdout, stage
        assert f"[pipeline] {stage:9s} done in" in stdout, stage
    # the paper path: every zoo autoencoder, the DCGAN held out, n_dis 5
    assert len(list((out / "fakes").glob("zoo-*/"))) == 8
    assert '"n_dis": 5' in (out / "gan" / "config.json").read_text()


def test_the_vgg16_starts_from_the_downloaded_imagenet_weights(rehearsal: dict) -> None:
    state = torch.load(rehearsal["weights"], weights_only=True)
    model, _ = load_model(rehearsal["out"] / "detector" / "detector.safetensors", "detector")
    first = model.backbone.features[0].weight.detach()
    # two AdamW steps at lr 1e-4 move a weight by ~2e-4; a random init is ~100x further away
    assert torch.allclose(first, state["features.0.weight"], atol=2e-3)
    assert not torch.allclose(first, torch.zeros_like(first), atol=2e-3)


@pytest.mark.anyio
async def test_the_rehearsed_models_are_served(rehearsal: dict) -> None:
    out = rehearsal["out"]
    settings = Settings(artifacts_dir=out, device="cpu", precision="fp32", compile=False)
    image = next((rehearsal["root"] / "data").glob("HAM10000_images_part_1/*.jpg")).read_bytes()
    async with running_app(settings) as (_, client):
        assert (await client.get("/readyz")).status_code == 200
        r = await client.post("/detect", files={"file": ("lesion.jpg", image, "image/jpeg")})
        assert r.status_code == 200, r.text
        scores = {s["model"] for s in r.json()["results"][0]["scores"]}
        assert scores == {"vgg16-paper", "npr-general"}
        g = await client.get("/generate", params={"n": 1, "seed": 3})
        assert g.status_code == 200


def test_a_second_run_finds_everything_and_downloads_nothing(rehearsal: dict) -> None:
    unreachable = "http://127.0.0.1:9"  # nothing listens: any download attempt would fail
    weights_url = f"{unreachable}/{rehearsal['weights'].name}"
    r = rehearse(rehearsal["root"], unreachable, weights_url, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stdout.count("skipped") == 7 and "download" not in r.stdout


def test_the_imagenet_branch_reads_torchvisions_own_file_from_the_hub_cache(
    rehearsal: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GPU host with torchvision's file already cached (or fetched from its real URL, whose
    name carries the real hash): the detector stage asks for ``pretrained="imagenet"`` and
    finds it through the torch hub cache, the branch that failed after the GAN stage once.
    The mirror above serves its file under another name, so this runs the stage by itself."""
    hub = tmp_path / "torch"
    official = hub / "hub" / "checkpoints" / IMAGENET_FILENAME
    official.parent.mkdir(parents=True)
    shutil.copyfile(rehearsal["weights"], official)
    monkeypatch.setenv("TORCH_HOME", str(hub))
    out = tmp_path / "artifacts"
    out.mkdir()
    (out / "synthetic").symlink_to(rehearsal["out"] / "synthetic")  # the stage's one input
    profile = pipeline.PROFILES["paper-rehearsal"]
    cfg = pipeline.PipelineConfig(  # torchvision's own weights URL, as a user runs it
        data=rehearsal["root"] / "data", out=out, profile="paper-rehearsal", device="cpu",
        quiet=True,
    )  # fmt: skip
    stage = next(s for s in pipeline.build_stages(cfg, profile) if s.name == "detector")
    config = stage.config()
    assert config.pretrained == "imagenet" and pipeline.weights_file("imagenet") == official
    stage.run(config)
    model, _ = load_model(out / "detector" / "detector.safetensors", "detector")
    state = torch.load(official, weights_only=True)
    first = model.backbone.features[0].weight.detach()
    assert torch.allclose(first, state["features.0.weight"], atol=2e-3)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
