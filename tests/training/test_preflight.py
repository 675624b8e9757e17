"""The pipeline checks every input before its first stage and stops in seconds on a fresh host
(no data, an empty torch hub cache), saying what is missing and the command that fixes it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.test_deploy import _compose_config
from tests.training.ham_like import write_ham_like
from training import pipeline, preflight

REPO = Path(__file__).resolve().parents[2]
FRESH_LIMIT_S = 30  # the bound; the run itself takes a few seconds


def _fresh_env(tmp_path: Path) -> dict[str, str]:
    """An empty torch hub cache and no visible GPU (the same answer on every CI host)."""
    return {**os.environ, "TORCH_HOME": str(tmp_path / "empty-cache"), "CUDA_VISIBLE_DEVICES": ""}


def _timed(args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    r = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    return r, time.perf_counter() - start


def test_make_pipeline_paper_on_a_fresh_host_stops_in_seconds(tmp_path: Path) -> None:
    """``DATA=/nonexistent make pipeline PROFILE=paper``, with the environment installed."""
    stamp = tmp_path / "installed"
    stamp.touch()  # the environment exists: make must not reinstall it
    art = tmp_path / "artifacts"
    env = {**_fresh_env(tmp_path), "DATA": str(tmp_path / "nonexistent")}
    r, took = _timed(
        ["make", "pipeline", "PROFILE=paper", f"PY={sys.executable}", f"STAMP={stamp}",
         f"ARTIFACTS={art}"],
        env,
    )  # fmt: skip
    assert r.returncode != 0 and took < FRESH_LIMIT_S, (took, r.stdout, r.stderr)
    err = r.stderr
    assert "nothing was trained" in err
    assert f"data folder {tmp_path / 'nonexistent'} does not exist" in err
    assert "--download" in err and "python -m training.download --out" in err
    assert "vgg16-397923af.pth" in err and "curl -L -o" in err  # where to put the weights
    assert "no CUDA GPU is visible" in err and "--profile quick" in err
    assert not art.exists()  # nothing was created, let alone trained


def test_the_compose_trainer_command_offline_stops_in_seconds(tmp_path: Path) -> None:
    """The compose trainer's exact command (with --download) on a host without internet: the
    servers are unreachable, so it says which files to place where."""
    command = _compose_config("docker-compose.yml")["services"]["trainer"]["command"]
    assert "--download" in command and command[:3] == ["python", "-m", "training.pipeline"]
    paths = {"/data": str(tmp_path / "data"), "/artifacts": str(tmp_path / "artifacts")}
    args = [sys.executable, *[paths.get(a, a) for a in command[1:]]]  # the servers as shipped
    env = {k: v for k, v in _fresh_env(tmp_path).items() if k.lower() != "no_proxy"}
    offline = "http://127.0.0.1:9"  # nothing listens there: every request is refused
    env |= {"http_proxy": offline, "https_proxy": offline, "HTTP_PROXY": "", "HTTPS_PROXY": ""}
    r, took = _timed(args, env)
    assert r.returncode != 0 and took < FRESH_LIMIT_S, (took, r.stdout, r.stderr)
    assert f"--download cannot reach {pipeline.DATAVERSE}" in r.stderr
    assert f"--download cannot reach {pipeline.VGG16_URL}" in r.stderr
    assert "HAM10000_images_part_1/*.jpg" in r.stderr and "HAM10000_metadata.csv" in r.stderr
    assert f"copy it to {tmp_path / 'empty-cache' / 'hub' / 'checkpoints'}" in r.stderr
    assert not (tmp_path / "artifacts").exists()


def test_a_good_folder_passes_and_check_only_trains_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "cache"))
    data = write_ham_like(tmp_path / "ham")
    cfg = pipeline.PipelineConfig(
        data=data, out=tmp_path / "art", profile="quick", device="cpu", check_only=True
    )
    assert pipeline.main(cfg) == {}
    assert (
        "preflight passed (quick profile): to run features, gan, synthetic, fakes"
        in capsys.readouterr().out
    )
    assert not (tmp_path / "art").exists()


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    req = preflight.Request(
        data=tmp_path / "missing",
        out=tmp_path / "art",
        device="cuda:7",
        weights={"detector": tmp_path / "w.pth", "ablation": tmp_path / "w.pth"},
        weights_url="https://example.invalid/vgg16-397923af.pth",
        out_bytes=10**18,  # no disk is that large
    )
    problems = preflight.check(req).problems
    assert [p.what for p in problems] == ["data", "ImageNet weights", "device", "disk"]
    assert "the detector and ablation stages start from ImageNet VGG16" in problems[1].message
    with pytest.raises(preflight.PreflightFailed, match="4 problems; nothing was trained"):
        raise preflight.PreflightFailed(problems)


def test_weights_in_place_and_data_present_pass(tmp_path: Path) -> None:
    data = write_ham_like(tmp_path / "ham")
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    report = preflight.check(
        preflight.Request(data=data, out=tmp_path / "art", weights={"detector": weights})
    )
    assert report.problems == [] and report.n_images == 60
    assert not report.download_data and report.download_weights == []


def test_a_broken_metadata_file_is_named(tmp_path: Path) -> None:
    data = write_ham_like(tmp_path / "ham")
    (data / "HAM10000_metadata.csv").write_text("lesion_id,image_id\n")
    problems = preflight.check(preflight.Request(data=data, out=tmp_path / "art")).problems
    assert len(problems) == 1 and "lacks columns ['dx']" in problems[0].message


def _stage(tmp_path: Path, name: str, deps: tuple[str, ...] = ()) -> pipeline.Stage:
    folder = tmp_path / name

    def run(config: dict) -> None:
        folder.mkdir(parents=True)
        (folder / "out.txt").write_text(str(config))

    return pipeline.Stage(
        name,
        folder,
        [folder / "out.txt"],
        deps,
        lambda: {"size": 1},
        run,
        lambda c: pipeline.estimate.Estimate(None, "instant"),
    )


def test_the_plan_runs_what_is_stale_and_everything_downstream(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    stages = [_stage(tmp_path, "a"), _stage(tmp_path, "b", ("a",)), _stage(tmp_path, "c")]
    assert pipeline.plan(stages) == {"a": True, "b": True, "c": True}
    cfg = pipeline.PipelineConfig(data=tmp_path, out=tmp_path)
    tokens: dict[str, str] = {}
    for st in stages:
        tokens[st.name] = pipeline._run_stage(st, "".join(tokens[d] for d in st.deps), cfg)
    assert "[pipeline] a         starts: instant" in capsys.readouterr().out
    assert pipeline.plan(stages) == {"a": False, "b": False, "c": False}
    assert pipeline.plan(stages, force=("a",)) == {"a": True, "b": True, "c": False}
    (tmp_path / "b" / "out.txt").unlink()
    assert pipeline.plan(stages) == {"a": False, "b": True, "c": False}


def test_probes_give_up_together_at_one_deadline() -> None:
    """A server that accepts and never answers (a black hole): each probe would wait out
    urlopen's own timeout, one after the other; the probes are abandoned at their deadline."""
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(8)  # connections complete in the backlog; nothing ever reads or answers
        url = f"http://127.0.0.1:{hole.getsockname()[1]}"
        probes = preflight.Probes(timeout_s=0.5)
        probes.start(f"{url}/a")
        probes.start(f"{url}/b", "HEAD")
        running = [t for t in threading.enumerate() if t.name == "preflight-probe"]
        assert len(running) >= 2  # both in flight at once, before either result is asked for
        for path, method in (("/a", "GET"), ("/b", "HEAD")):
            body, why = probes.result(f"{url}{path}", method)
            assert body is None and why == "no answer within 0.5 s"
