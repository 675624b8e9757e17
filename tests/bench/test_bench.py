"""The benchmarks run end to end on tiny settings and report what docs/BENCHMARKS.md quotes.

No timing is asserted (timings belong in the benchmark output, not in a pass/fail); these check
that every measurement happened, was bounded, and that the ratios are computed from them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from bench import model_speed, service_speed, soak
from tests.app.conftest import Checkpoints, image_bytes


def test_model_speed_measures_every_setting_and_batch(tmp_path: Path) -> None:
    out = tmp_path / "model.json"
    args = ["--model", "generator", "--image-size", "32", "--batch-sizes", "1", "3"]
    args += ["--settings", "fp32", "fp32_cl", "--seconds", "0.05", "--out", str(out)]
    rows = model_speed.main(model_speed.parse_args(args))
    result = json.loads(out.read_text())
    assert [(r["setting"], r["batch"]) for r in result["rows"]] == [
        ("fp32", 1),
        ("fp32", 3),
        ("fp32_cl", 1),
        ("fp32_cl", 3),
    ]
    assert all(r["images_per_s"] > 0 for r in rows)
    assert all(r["ratio_vs_fp32"] == 1.0 for r in rows if r["setting"] == "fp32")
    assert result["machine"]["threads"] >= 1 and result["machine"]["torch"]


def test_model_speed_compares_models_in_one_run(tmp_path: Path) -> None:
    args = ["--model", "npr", "generator", "--image-size", "32", "--batch-sizes", "2"]
    rows = model_speed.main(
        model_speed.parse_args([*args, "--settings", "fp32", "--seconds", "0.05"])
    )
    assert [r["model"] for r in rows] == ["npr", "generator"]
    npr, gen = rows
    assert npr["ratio_vs_npr"] == 1.0
    assert gen["ratio_vs_npr"] == pytest.approx(gen["images_per_s"] / npr["images_per_s"], abs=0.01)


def test_model_speed_measures_onnx_runtime_int8_in_the_same_run(tmp_path: Path) -> None:
    args = ["--model", "npr", "--image-size", "32", "--batch-sizes", "2", "--repeats", "3"]
    args += ["--settings", "fp32", "ort_int8", "--seconds", "0.05"]
    rows = model_speed.main(model_speed.parse_args(args))
    assert [r["setting"] for r in rows] == ["fp32", "ort_int8"]
    fp32, int8 = rows
    assert len(int8["runs"]) == 3 and int8["images_per_s"] == sorted(int8["runs"])[1]
    ratio = int8["images_per_s"] / fp32["images_per_s"]
    assert int8["ratio_vs_fp32"] == pytest.approx(ratio, abs=0.01)


@pytest.mark.parametrize("client", ["httpx", "raw"])
def test_service_speed_runs_the_real_server_batched_and_unbatched(
    checkpoints: Checkpoints, tmp_path: Path, client: str
) -> None:
    images = tmp_path / "uploads"
    images.mkdir()
    for i in range(3):
        (images / f"{i}.png").write_bytes(image_bytes(seed=i))
    out = tmp_path / "service.json"
    args = ["--detector", str(checkpoints.detector), "--generator", str(checkpoints.generator)]
    args += ["--images", str(images), "--concurrency", "1", "4", "--requests", "6"]
    args += ["--images-per-request", "2", "--load-client", client]  # together, as 'files'
    args += ["--batch-size", "4", "--generate-n", "2", "--no-compile", "--raw-seconds", "0.1"]
    args += ["--memory-settings", "fp32_eager", "--precision", "fp32", "--out", str(out)]
    service_speed.main(service_speed.parse_args(args))
    result = json.loads(out.read_text())
    for mode in ("batched", "unbatched"):
        assert [r["concurrency"] for r in result[mode]["detect"]] == [1, 4]
        assert all(r["requests"] == 6 for r in result[mode]["detect"])  # the bound, all served
        # two images per request reached the models, as the service itself counted them
        assert all(r["served_images"] == 12 for r in result[mode]["detect"])
        assert all(r["load_client"] == client for r in result[mode]["detect"])
        for row in result[mode]["detect"]:  # the service worked, and so did the load generator
            assert row["server_cpu_ms_per_image"] > 0 and row["client_cpu_ms_per_image"] > 0
            # /proc counts 10 ms ticks: a short run can overshoot 1 by a few ticks
            assert 0 < row["server_core_share"] + row["client_core_share"] <= 1.25
            # by thread: the event loop, the decode pool and the model's batch thread are
            # told apart, the model worked, and the live threads' parts never exceed the whole
            # (which also counts threads that ended; /proc counts 10 ms ticks per thread)
            by_thread = row["server_cpu_ms_per_image_by_thread"]
            assert {"main", "image"} <= set(by_thread)
            assert Path(sys.executable).name[:15] not in by_thread  # the process's name: unnamed
            batch = [v for role, v in by_thread.items() if role.startswith("batch-")]
            assert len(batch) == 1 and batch[0] > 0, by_thread
            tick_ms = 1000 / os.sysconf("SC_CLK_TCK") * len(by_thread) / row["served_images"]
            assert sum(by_thread.values()) <= row["server_cpu_ms_per_image"] + tick_ms
        assert result[mode]["memory"]["rss_mib"] > 0
    assert result["batched"]["generate"]["n"] == 2
    assert set(result["memory"]) == {"fp32_eager"}
    top = result["batched"]["detect"][-1]["images_per_s"]
    raw = result["raw"]["detector_images_per_s"]
    assert result["ratios"]["detect_c4_vs_raw_model"] == pytest.approx(top / raw, rel=0.02)
    # No upper bound: torch's OpenMP threads spin after each forward, so a tiny model's raw CPU
    # per image (2.4 here) can exceed what the whole service spends per image.
    assert result["ratios"]["model_share_of_service_cpu_c4"] > 0


def test_soak_sends_every_kind_and_judges_the_server(
    checkpoints: Checkpoints, tmp_path: Path
) -> None:
    """A few seconds of the soak against the test checkpoints: every request answered, no
    server error, every hostile kind refused with its 4xx (or a 503 when saturated)."""
    images = tmp_path / "uploads" / "nested"
    images.mkdir(parents=True)
    for i in range(4):
        (images / f"{i}.jpg").write_bytes(image_bytes("JPEG", seed=i))
    out = tmp_path / "soak.json"
    args = ["--artifacts", str(checkpoints.artifacts), "--images", str(tmp_path / "uploads")]
    args += ["--seconds", "6", "--concurrency", "6", "--hostile", "0.6", "--out", str(out)]
    cfg = soak.parse_args(args)
    cfg.env["DERMAFAKE_GENERATOR_PATH"] = str(checkpoints.generator)
    cfg.env["DERMAFAKE_DETECTORS"] = str(checkpoints.npr)
    assert soak.main(cfg) == 0
    result = json.loads(out.read_text())
    assert result["requests"] > 0 and result["server_error_count"] == 0
    assert result["lost_count"] == 0 and result["ready_after"] is True
    assert set(soak.HOSTILE_STATUS) <= set(result["by_kind"])  # every kind was sent
    assert result["wrongly_answered_count"] == 0, result["wrongly_answered"]
    for kind, status in soak.HOSTILE_STATUS.items():
        assert set(result["by_kind"][kind]) <= {str(status), "503"}, (kind, result["by_kind"])
    assert result["rss_mb"]["start"] > 0


def test_cpu_seconds_reads_the_right_fields_of_proc_stat() -> None:
    """utime + stime (fields 14 and 15 of /proc/PID/stat) agree with os.times for this process."""
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:  # burn some CPU so both are well above one tick
        sum(i * i for i in range(1000))
    own = sum(os.times()[:2])
    assert service_speed.cpu_seconds(os.getpid()) == pytest.approx(own, abs=0.03)
