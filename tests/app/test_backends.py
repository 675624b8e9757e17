"""Which runtime serves a detector: its int8 file only when it passes the gate (same source
weights, recorded agreement with fp32); otherwise the torch model, saying why."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from app.backends import int8_gate, load_detector
from app.discovery import DetectorSpec, read_detector
from app.runners import DetectorRunner
from app.settings import Settings
from models.checkpoint import load_model, save_model
from models.preprocessing import load_rgb, model_views
from models.quantized import OnnxDetector, quantized_path
from models.runtime import InferenceOptions
from tests.app.conftest import image_bytes, running_app
from training.quantize import write_quantized

CPU = InferenceOptions(torch.device("cpu"))


def serve(spec: DetectorSpec, settings: Settings) -> DetectorRunner:
    """The runner the service would build for this detector under these settings."""
    return load_detector(spec, CPU, (), settings.precision, int8_gate(settings))


def _recorded(int8_npr: Path) -> float:
    return OnnxDetector(quantized_path(int8_npr)).meta.agreement["verdict_agreement"]


def _passing(make_settings: Callable[..., Settings], int8_npr: Path, **kw: object) -> Settings:
    """int8 asked for, with a gate the file's recorded figures just meet (tiny test sets give
    coarse agreement figures; the default gate is exercised by the refusals below)."""
    return make_settings(
        precision="int8", int8_min_agreement=_recorded(int8_npr), int8_max_auc_drop=1.0, **kw
    )


def _copy(int8_npr: Path, folder: Path, *, other_weights: bool = False) -> Path:
    """The checkpoint and its int8 file in another folder; with ``other_weights`` the
    checkpoint is re-saved with one weight changed (a retrained model, a stale int8 file)."""
    folder.mkdir(parents=True)
    target = folder / int8_npr.name
    shutil.copy(quantized_path(int8_npr), quantized_path(target))
    if not other_weights:
        shutil.copy(int8_npr, target)
        return target
    model, meta = load_model(int8_npr)
    with torch.no_grad():
        model.fc1.bias.add_(0.01)
    extra = {**meta.extra, "name": folder.name}
    save_model(target, model, meta.preprocess_config, threshold=meta.threshold, extra=extra)
    return target


def test_a_passing_int8_file_is_served_and_its_verdicts_agree_with_fp32(
    int8_npr: Path, make_settings: Callable[..., Settings]
) -> None:
    spec = read_detector(int8_npr)
    runner = serve(spec, _passing(make_settings, int8_npr))
    reference = DetectorRunner.from_checkpoint(int8_npr, CPU)
    assert runner.int8 is not None and runner.int8_refused is None
    info = runner.info()
    assert (info["backend"], info["dtype"]) == ("onnxruntime", "int8")
    assert info["int8"]["source_sha256"] == spec.meta.weights_sha256
    assert runner.version == reference.version + "-int8"
    pre = runner.preprocess
    images = [model_views(load_rgb(image_bytes(seed=s)), pre) for s in range(48)]
    got, want = runner(images), reference(images)
    band = 0.05  # verdicts may differ only within this of a decision boundary
    op = runner.operating_point
    edges = [op.threshold, op.band_low, op.half_scale_threshold]
    compared = 0
    for g, w in zip(got, want, strict=True):
        assert abs(g.probability - w.probability) < 0.1
        near = [w.probability, w.half_scale]
        if all(abs(p - e) > band for p in near for e in edges if e is not None and p is not None):
            assert runner.decide(g)[0] == reference.decide(w)[0]
            compared += 1
    assert compared >= 12


def test_a_stale_int8_file_from_other_weights_is_refused_and_fp32_served(
    int8_npr: Path, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    target = _copy(int8_npr, tmp_path / "retrained", other_weights=True)
    runner = serve(read_detector(target), _passing(make_settings, int8_npr))
    assert runner.int8 is None
    assert "quantized from other weights" in str(runner.int8_refused)
    assert (runner.info()["backend"], runner.info()["dtype"]) == ("torch", "fp32")


@pytest.mark.parametrize(
    ("figures", "reason"),
    [
        ({"verdict_agreement": 0.9}, "agreed with fp32 on 90.00%"),
        ({"roc_auc_drop": 0.01}, "ROC-AUC is 0.0100 below fp32's"),
        ({"verdict_agreement": None}, "no agreement figures"),
    ],
)
def test_the_default_gate_refuses_low_recorded_agreement(
    int8_npr: Path,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    figures: dict,
    reason: str,
) -> None:
    target = _copy(int8_npr, tmp_path / "low")
    meta = OnnxDetector(quantized_path(target)).meta
    low = dataclasses.replace(
        meta, agreement={**meta.agreement, "verdict_agreement": 1.0, **figures}
    )
    write_quantized(quantized_path(target), low, quantized_path(target))
    runner = serve(read_detector(target), make_settings(precision="int8"))
    assert runner.int8 is None and reason in str(runner.int8_refused)


def test_auto_serves_torch_quietly_without_an_int8_file_and_int8_says_it_is_missing(
    checkpoints, make_settings: Callable[..., Settings]
) -> None:
    spec = read_detector(checkpoints.npr)
    quiet = serve(spec, make_settings(precision="auto"))
    assert quiet.int8 is None and quiet.int8_refused is None
    loud = serve(spec, make_settings(precision="int8"))
    assert loud.int8 is None and "no detector.int8.onnx" in str(loud.int8_refused)


@pytest.mark.anyio
async def test_model_cards_say_which_backend_serves_and_why_int8_was_refused(
    int8_npr: Path, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    stale = _copy(int8_npr, tmp_path / "stale", other_weights=True)
    settings = _passing(make_settings, int8_npr, detectors=[str(int8_npr), str(stale)])
    async with running_app(settings) as (_app, client):
        cards = {c["name"]: c for c in (await client.get("/v1/models")).json()["models"]}
        files = {"file": ("a.png", image_bytes(seed=3), "image/png")}
        detected = await client.post("/detect", files=files)
    assert detected.status_code == 200
    served, refused = cards["npr-int8"], cards["stale"]
    assert (served["backend"], served["dtype"], served["int8_refused"]) == (
        "onnxruntime",
        "int8",
        None,
    )
    assert served["int8"]["agreement"]["images"] > 0
    assert (refused["backend"], refused["dtype"]) == ("torch", "fp32")
    assert "other weights" in refused["int8_refused"]
