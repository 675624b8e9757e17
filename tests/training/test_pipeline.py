"""The whole chain at smoke size: data -> GAN -> synthetic -> fakes -> both detectors ->
evaluation -> service."""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.settings import Settings
from models import artifacts as artifacts_
from models.checkpoint import read_meta
from tests.app.conftest import running_app
from training import pipeline
from training.common import read_csv

REPO = Path(__file__).resolve().parents[2]


def _stage_tokens(out: Path) -> dict[str, str]:
    return {
        s: json.loads((out / d / "stage.json").read_text())["finished"]
        for s, d in [
            ("features", "features"),
            ("gan", "gan"),
            ("synthetic", "synthetic"),
            ("fakes", "fakes"),
            ("detector", "detector"),
            ("general", "general"),
            ("evaluate", "evaluation"),
        ]
    }


@pytest.fixture(scope="module")
def artifacts(
    ham_dir: Path, foreign_gans: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """Every stage of the smoke profile, once for the module; removed when the module ends,
    failed or not (two VGG16-sized runs, 5 GB)."""
    out = tmp_path_factory.mktemp("artifacts")
    foreign = {"stylegan": foreign_gans["stylegan"]}
    cfg = pipeline.PipelineConfig(
        data=ham_dir, out=out, profile="smoke", foreign=foreign, quiet=True
    )
    report = pipeline.main(cfg)
    assert report["order"] == ["vgg16-paper", "npr-general"]
    for entry in report["detectors"].values():
        cm = entry["test"]["confusion_matrix"]
        assert sum(cm.values()) == sum(entry["test"]["counts"].values())
    yield out
    shutil.rmtree(out, ignore_errors=True)


def test_every_stage_writes_its_outputs(artifacts: Path) -> None:
    for rel in [
        "features/lesion_features.safetensors",
        "gan/generator.safetensors",
        "gan/generator_best.safetensors",
        "gan/quality.csv",
        "gan/config.json",
        "synthetic/manifest.csv",
        "fakes/sources.json",
        "detector/detector.safetensors",
        "general/detector.safetensors",
        "evaluation/report.json",
        "evaluation/confusion_vgg16-paper.png",
        "evaluation/confusion_npr-general.png",
        "summary.md",
        "pipeline.json",
    ]:
        assert (artifacts / rel).is_file(), rel
    assert len(list((artifacts / "synthetic").glob("*.png"))) == 24
    summary = (artifacts / "summary.md").read_text()
    assert "| accuracy |" in summary and "99.8%" in summary and "stylegan" in summary
    assert "jpeg_q75" in summary and "npr-general" in summary
    # the general detector trains on the SNGAN and the zoo, with the DCGAN held out
    meta = read_meta(artifacts / "general" / "detector.safetensors")
    sources = meta.extra["sources"]
    assert set(sources["train"]) == {"sngan", "zoo-transposed-1", "zoo-nearest_conv-2"}
    assert set(sources["held_out"]) == {"dcgan-32"}
    assert meta.kind == "npr" and meta.preprocess_config.crop == "native"


def test_second_run_skips_and_a_changed_stage_reruns_downstream(
    artifacts: Path, ham_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    cfg = pipeline.PipelineConfig(
        data=ham_dir,
        out=artifacts,
        profile="smoke",
        quiet=True,
        foreign=json.loads((artifacts / "pipeline.json").read_text())["foreign"],
    )
    cfg = dataclasses.replace(cfg, foreign={k: Path(v) for k, v in cfg.foreign.items()})
    before = _stage_tokens(artifacts)
    pipeline.main(cfg)
    assert _stage_tokens(artifacts) == before
    assert capsys.readouterr().out.count("skipped") == 7

    smoke = pipeline.PROFILES["smoke"]
    changed = dataclasses.replace(smoke, synthetic={**smoke.synthetic, "n": 20})
    monkeypatch.setitem(pipeline.PROFILES, "smoke", changed)
    capsys.readouterr()
    pipeline.main(cfg)
    out = capsys.readouterr().out
    # the finished stage about to be replaced is named, with what changed, before it is gone
    assert "[pipeline] synthetic: its config differs" in out and "-> 20" in out, out
    assert "detector: its config differs" not in out  # reruns after it, not for its own config
    after = _stage_tokens(artifacts)
    assert after["gan"] == before["gan"] and after["fakes"] == before["fakes"]
    assert after["features"] == before["features"]
    assert all(after[s] != before[s] for s in ("synthetic", "detector", "general", "evaluate"))
    assert len(list((artifacts / "synthetic").glob("*.png"))) == 20


@pytest.mark.anyio
async def test_service_serves_the_pipeline_artifacts(artifacts: Path, ham_dir: Path) -> None:
    settings = Settings(artifacts_dir=artifacts, device="cpu", precision="fp32", compile=False)
    image = next(ham_dir.rglob("*.jpg")).read_bytes()  # images/ or the official part folders
    async with running_app(settings) as (_, client):
        assert (await client.get("/readyz")).status_code == 200
        r = await client.post("/detect", files={"file": ("lesion.jpg", image, "image/jpeg")})
        assert r.status_code == 200, r.text
        verdict = r.json()["results"][0]
        assert verdict["label"] in ("real", "synthetic", "inconclusive")
        report = json.loads((artifacts / "evaluation" / "report.json").read_text())
        scores = {s["model"]: s for s in verdict["scores"]}
        assert set(scores) == {"vgg16-paper", "npr-general"}  # both served detectors answer
        for name, score in scores.items():
            point = report["detectors"][name]["operating_point"]
            assert score["threshold"] == pytest.approx(point["threshold"])
        # each card carries the held-out figures the evaluation measured for its weights
        cards = {c["name"]: c for c in (await client.get("/v1/models")).json()["models"]}
        for name in scores:
            evaluation = cards[name]["evaluation"]
            assert evaluation["test"] == report["detectors"][name]["test"]
            assert set(evaluation["per_source"]) == set(report["detectors"][name]["per_source"])
        assert cards["generator"]["evaluation"] is None
        # the generator's card says how close its images are to real lesions, and how measured
        quality = cards["generator"]["quality"]
        rows = read_csv(artifacts / "gan" / "quality.csv")
        assert quality["fd"] == pytest.approx(float(rows[-1]["fd"]), rel=1e-5)
        features = read_meta(artifacts / "features" / "lesion_features.safetensors")
        assert quality["feature_model_sha256"] == features.weights_sha256
        g = await client.get("/generate", params={"n": 2, "seed": 5})
        assert g.status_code == 200 and len(g.json()["images"]) == 2


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_until_stops_after_the_named_stage(ham_dir: Path, tmp_path: Path, capsys) -> None:
    """--until gan: the feature model and the generator, nothing downstream, no report."""
    cfg = pipeline.PipelineConfig(
        data=ham_dir, out=tmp_path / "run", profile="smoke", quiet=True, until="gan"
    )
    assert pipeline.main(cfg) == {}
    assert (tmp_path / "run" / "gan" / "generator.safetensors").is_file()
    assert (tmp_path / "run" / "features" / "stage.json").is_file()
    made = {p.name for p in (tmp_path / "run").iterdir() if p.is_dir()}
    assert made == {"features", "gan"}
    assert "stopped after gan (--until)" in capsys.readouterr().out
    assert not artifacts_.marker_path(tmp_path / "run").exists()  # finished: nothing waits
    with pytest.raises(ValueError, match="--until ablation: this run's stages are"):
        pipeline.main(dataclasses.replace(cfg, until="ablation"))  # not asked for: no ablation


def test_the_marker_names_the_running_stage_and_a_failure_stays_marked(
    ham_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service beside the trainer must not load a folder mid-run or after a crash: the
    marker says which stage runs, and a failed stage leaves it saying why."""
    out = tmp_path / "run"
    seen = []

    def gan_that_fails(config: object) -> None:
        seen.append(artifacts_.read_marker(out))
        (out / "gan").mkdir(parents=True, exist_ok=True)
        (out / "gan" / "generator.safetensors").write_bytes(b"half")  # as a cut-short stage
        raise RuntimeError("disk full")

    monkeypatch.setattr(pipeline.train_gan, "main", gan_that_fails)
    cfg = pipeline.PipelineConfig(data=ham_dir, out=out, profile="smoke", quiet=True, until="gan")
    with pytest.raises(RuntimeError, match="disk full"):
        pipeline.main(cfg)
    assert seen[0] is not None
    assert (seen[0]["state"], seen[0]["stage"], seen[0]["profile"]) == ("running", "gan", "smoke")
    left = artifacts_.read_marker(out)
    assert left is not None
    assert (left["state"], left["stage"]) == ("failed", "gan")
    assert left["error"] == "RuntimeError: disk full"
    assert "failed at stage gan" in artifacts_.describe(out, left)


def test_the_marker_is_refreshed_while_a_stage_runs(tmp_path: Path) -> None:
    """The heartbeat rewrites the marker (here every 20 ms) until the block ends; a clean end
    removes it."""
    with artifacts_.TrainingRun(tmp_path, heartbeat_s=0.02, stage="gan") as run:
        artifacts_.clear_marker(tmp_path)  # gone: only the heartbeat can bring it back
        for _ in range(500):
            if artifacts_.marker_path(tmp_path).exists():
                break
            time.sleep(0.01)
        info = artifacts_.read_marker(tmp_path)
        assert info is not None and (info["state"], info["stage"]) == ("running", "gan")
        run.stage("detector")
    assert not artifacts_.marker_path(tmp_path).exists()


def test_sigterm_marks_the_run_failed(ham_dir: Path, tmp_path: Path) -> None:
    """``docker compose stop`` sends SIGTERM: the pipeline unwinds as on Ctrl-C and its marker
    says the run failed, instead of claiming for good a trainer that is gone."""
    out = tmp_path / "run"
    args = ["--data", str(ham_dir), "--out", str(out), "--profile", "quick", "--until",
            "features", "--device", "cpu", "--quiet"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "training.pipeline", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(1200):  # the quick feature stage runs for minutes: time to catch it
            info = artifacts_.read_marker(out)
            if info is not None and info.get("stage") == "features":
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert "stopped by signal" in err
    left = artifacts_.read_marker(out)
    assert left is not None and (left["state"], left["stage"]) == ("failed", "features")
    assert "SIGTERM" in left["error"]


def test_the_cpu_long_profile_is_the_quick_one_with_a_longer_generator() -> None:
    quick, long = pipeline.PROFILES["quick"], pipeline.PROFILES["cpu-long"]
    assert long.gan["time_limit_min"] == 90.0 > quick.gan["time_limit_min"]
    assert {k: v for k, v in long.gan.items() if "every" not in k and "time" not in k} == {
        k: v for k, v in quick.gan.items() if "every" not in k and "time" not in k
    }
    assert (long.detector, long.general, long.fakes) == (quick.detector, quick.general, quick.fakes)
    assert (
        pipeline.parse_args(["--data", "d", "--profile", "cpu-long", "--until", "gan"]).until
        == "gan"
    )


def test_paths_are_made_absolute_so_two_spellings_are_one_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`data` and `./data` (or its absolute path) must not read as another config: that would
    retrain every stage and replace the finished ones."""
    monkeypatch.chdir(tmp_path)
    spellings = (
        ["--data", "data", "--out", "runs/a"],
        ["--data", "./data/", "--out", "runs/../runs/a"],
    )
    configs = [pipeline.parse_args([*args, "--foreign", "g=./gen"]) for args in spellings]
    for cfg in configs:
        assert cfg.data == tmp_path / "data" and cfg.out == tmp_path / "runs" / "a"
        assert cfg.foreign == {"g": tmp_path / "gen"}
    assert configs[0] == configs[1]
