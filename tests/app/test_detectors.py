"""Several detectors served alike: discovery and naming, one score per model and image, the
overall verdict, ``?model=``, operating points (calibration, threshold, inconclusive band) and
the model cards."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import torch

from app.discovery import DetectorSetupError, find_detectors
from app.host import run_folders, training_in
from app.main import create_app
from app.runners import DetectorRunner
from app.settings import Settings
from models import artifacts as artifacts_
from models.checkpoint import CheckpointError, load_model
from models.operating_point import OperatingPoint, overall_decision
from models.preprocessing import load_rgb, load_uint8, model_views, normalize
from models.runtime import InferenceOptions
from tests.app.conftest import (
    NPR_METRICS,
    NPR_NAME,
    NPR_OPERATING_POINT,
    NPR_SIZE,
    NPR_SOURCES,
    VGG_NAME,
    VGG_THRESHOLD,
    Checkpoints,
    TestClient,
    _until_ready,
    image_bytes,
    ready_client,
    running_app,
    write_npr,
)

IMAGES = 8  # seeds 0..7: the NPR detector calls some synthetic, some inconclusive, some real


def _link(root: Path, folder: str, target: Path) -> Path:
    """``root/folder/detector.safetensors`` pointing at ``target`` (no 640 MB copy)."""
    path = root / folder / "detector.safetensors"
    path.parent.mkdir(parents=True)
    path.symlink_to(target)
    return path


def _upload(n: int = IMAGES) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f"im{i}.png", image_bytes(seed=i), "image/png")) for i in range(n)]


# --- which detectors, under which names --------------------------------------------------------


def test_discovery_finds_every_detector_sorted_by_name(
    checkpoints: Checkpoints, tmp_path: Path
) -> None:
    specs = find_detectors(Settings(artifacts_dir=checkpoints.artifacts))
    assert [(s.name, s.path, s.meta.kind) for s in specs] == [
        (NPR_NAME, checkpoints.npr, "npr"),  # named by its metadata
        (VGG_NAME, checkpoints.detector, "detector"),  # no name stored: its folder's
    ]
    # Not a detector kind (a generator saved under that file name): skipped, not served.
    _link(tmp_path, "a-generator", checkpoints.generator)
    _link(tmp_path, "zz-paper", checkpoints.detector)
    _link(tmp_path, "b-general", checkpoints.npr)
    found = find_detectors(Settings(artifacts_dir=tmp_path))
    assert [s.name for s in found] == [NPR_NAME, "zz-paper"]


def test_explicit_detectors_by_name_or_path_and_the_old_detector_path(
    checkpoints: Checkpoints, tmp_path: Path
) -> None:
    artifacts = checkpoints.artifacts
    chosen = Settings(artifacts_dir=artifacts, detectors=[VGG_NAME, str(checkpoints.npr)])
    assert [s.name for s in find_detectors(chosen)] == [VGG_NAME, NPR_NAME]  # order as given
    folder = Settings(artifacts_dir=tmp_path, detectors=[str(checkpoints.npr.parent)])
    assert [s.path for s in find_detectors(folder)] == [checkpoints.npr]
    # The single-detector setting alone serves that file alone ...
    alone = Settings(artifacts_dir=artifacts, detector_path=checkpoints.detector)
    assert [s.name for s in find_detectors(alone)] == [VGG_NAME]
    # ... and with a list it is added (once).
    both = Settings(artifacts_dir=artifacts, detectors=[NPR_NAME], detector_path=checkpoints.npr)
    assert [s.name for s in find_detectors(both)] == [NPR_NAME]
    added = Settings(
        artifacts_dir=artifacts, detectors=[NPR_NAME], detector_path=checkpoints.detector
    )
    assert [s.name for s in find_detectors(added)] == [NPR_NAME, VGG_NAME]
    with pytest.raises(DetectorSetupError, match=rf"'nope'.*found: \['{NPR_NAME}', '{VGG_NAME}'\]"):
        find_detectors(Settings(artifacts_dir=artifacts, detectors=["nope"]))
    with pytest.raises(CheckpointError, match="holds a generator, expected a detector"):
        find_detectors(Settings(detectors=[str(checkpoints.generator)]))


def test_duplicate_and_reserved_names_are_refused_naming_the_files(
    checkpoints: Checkpoints, tmp_path: Path
) -> None:
    first = _link(tmp_path / "dup", "a", checkpoints.npr)
    second = _link(tmp_path / "dup", "b", checkpoints.npr)
    with pytest.raises(DetectorSetupError, match="two detectors are named") as error:
        find_detectors(Settings(artifacts_dir=tmp_path / "dup"))
    assert str(first) in str(error.value) and str(second) in str(error.value)
    # A new checkpoint that took the paper model's (folder) name, listed beside it.
    impostor = write_npr(
        tmp_path / "x.safetensors", name=VGG_NAME, operating_point={"threshold": 1}
    )
    clash = Settings(detectors=[str(impostor)], detector_path=checkpoints.detector)
    with pytest.raises(DetectorSetupError, match=f"named '{VGG_NAME}'") as error:
        find_detectors(clash)
    assert str(impostor) in str(error.value) and str(checkpoints.detector) in str(error.value)
    reserved = _link(tmp_path / "res", "generator", checkpoints.detector)
    with pytest.raises(DetectorSetupError, match="may not be named 'generator'"):
        find_detectors(Settings(detectors=[str(reserved)]))


def _write_trained(checkpoints: Checkpoints, artifacts: Path) -> None:
    """What a trainer has written by its detector stage: a detector and the generator, each
    atomically (as save_model writes them)."""
    for source, target in (
        (checkpoints.npr, artifacts / NPR_NAME / "detector.safetensors"),
        (checkpoints.generator, artifacts / "gan" / "generator.safetensors"),
    ):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target.with_suffix(".tmp"))
        target.with_suffix(".tmp").replace(target)


async def _not_ready_saying(client: httpx.AsyncClient, words: str) -> httpx.Response:
    """The first /readyz answer whose reason says ``words`` (the models load in the
    background); every answer until then is a 503."""
    for _ in range(200):
        ready = await client.get("/readyz")
        assert ready.status_code == 503, ready.text
        if words in ready.json()["detail"]:
            return ready
        await asyncio.sleep(0.05)
    raise AssertionError(f"/readyz never said {words!r}: {ready.json()}")


@pytest.mark.anyio
async def test_without_artifacts_the_port_is_up_not_ready_saying_why_then_picks_them_up(
    make_settings: Callable[..., Settings], checkpoints: Checkpoints, tmp_path: Path
) -> None:
    """As when `api` starts beside `trainer`: no detector yet. The service answers, is alive,
    is not ready and says what to run; when the trainer's files appear it loads them."""
    artifacts = tmp_path / "artifacts"
    settings = make_settings(
        artifacts_dir=artifacts,
        generator_path=artifacts / "gan" / "generator.safetensors",
        load_retry_s=0.05,
    )
    async with running_app(settings, ready=False) as (_, client):
        ready = await _not_ready_saying(client, "cannot load")
        assert ready.headers["Retry-After"] == "1"
        assert "python -m training.pipeline" in ready.json()["detail"]
        assert str(artifacts) in ready.json()["detail"]
        assert (await client.get("/healthz")).status_code == 200
        upload = {"file": ("a.png", image_bytes(), "image/png")}
        refused = await client.post("/detect", files=upload)
        assert refused.status_code == 503 and "Retry-After" in refused.headers
        assert "cannot load" in refused.json()["detail"]

        _write_trained(checkpoints, artifacts)
        await _until_ready(lambda: client.get("/readyz"), give_up_on_error=False)
        answer = await client.post("/detect", files=upload)
        assert answer.status_code == 200
        assert [s["model"] for s in answer.json()["results"][0]["scores"]] == [NPR_NAME]


@pytest.mark.anyio
async def test_while_a_trainer_writes_the_folder_nothing_is_loaded(
    make_settings: Callable[..., Settings], checkpoints: Checkpoints, tmp_path: Path
) -> None:
    """podman-compose starts `api` beside `trainer`: a detector the trainer has written but is
    still improving must not be loaded (and then served for good). The service waits while the
    marker says a stage runs, stays not ready after a failed run, and loads once it is gone."""
    artifacts = tmp_path / "artifacts"
    _write_trained(checkpoints, artifacts)
    artifacts_.write_marker(artifacts, state="running", stage="general", profile="quick")
    settings = make_settings(
        artifacts_dir=artifacts,
        generator_path=artifacts / "gan" / "generator.safetensors",
        load_retry_s=0.05,
    )
    async with running_app(settings, ready=False) as (_, client):
        detail = (await _not_ready_saying(client, "waiting for the trainer")).json()["detail"]
        assert "stage general" in detail and artifacts_.MARKER in detail
        upload = {"file": ("a.png", image_bytes(), "image/png")}
        assert (await client.post("/detect", files=upload)).status_code == 503

        artifacts_.write_marker(
            artifacts, state="failed", stage="general", profile="quick", error="KeyboardInterrupt"
        )
        detail = (await _not_ready_saying(client, "failed at stage general")).json()["detail"]
        assert "KeyboardInterrupt" in detail

        artifacts_.clear_marker(artifacts)
        await _until_ready(lambda: client.get("/readyz"), give_up_on_error=False)
        assert (await client.post("/detect", files=upload)).status_code == 200


def test_a_marker_holds_back_only_the_folders_this_load_reads(tmp_path: Path) -> None:
    """A trainer writing ./artifacts must not stop a service whose models all come from
    elsewhere; a trainer writing the run folder of a file given by path must."""
    art, other = tmp_path / "artifacts", tmp_path / "runs" / "quick"
    elsewhere = Settings(
        artifacts_dir=art,
        detectors=[str(other / "general" / "detector.safetensors")],
        generator_path=other / "gan" / "generator.safetensors",
    )
    assert run_folders(elsewhere) == [other]
    artifacts_.write_marker(art, state="running", stage="gan")
    assert training_in(elsewhere) is None
    artifacts_.write_marker(other, state="running", stage="general")
    assert "stage general" in (training_in(elsewhere) or "")
    discovered = Settings(artifacts_dir=art)  # the generator under it too
    assert run_folders(discovered) == [art]
    by_name = Settings(artifacts_dir=art, detectors=["npr-general"], generator_path=other / "g")
    assert run_folders(by_name) == [art, other.parent]


def test_a_marker_nobody_refreshes_is_called_stale(tmp_path: Path) -> None:
    """A trainer killed outright (SIGKILL, out of memory) cannot mark its run failed; its
    marker stops being refreshed, and the reason says what that most likely means."""
    path = artifacts_.write_marker(tmp_path, state="running", stage="detector")
    fresh = artifacts_.describe(tmp_path, artifacts_.read_marker(tmp_path) or {})
    assert "waiting for the trainer" in fresh
    info = json.loads(path.read_text())
    then = datetime.now(UTC) - timedelta(seconds=artifacts_.STALE_S + 60)
    info["updated"] = then.strftime("%Y-%m-%dT%H:%M:%S%z")
    path.write_text(json.dumps(info))
    stale = artifacts_.describe(tmp_path, artifacts_.read_marker(tmp_path) or {})
    assert "has not refreshed" in stale and "most likely killed" in stale


def test_one_runner_class_serves_every_detector_kind(checkpoints: Checkpoints) -> None:
    options = InferenceOptions(torch.device("cpu"))
    npr = DetectorRunner.from_checkpoint(checkpoints.npr, options)
    vgg = DetectorRunner.from_checkpoint(checkpoints.detector, options)
    assert (npr.name, npr.meta.kind, vgg.name, vgg.meta.kind) == (
        NPR_NAME,
        "npr",
        VGG_NAME,
        "detector",
    )
    assert npr.operating_point == OperatingPoint(**NPR_OPERATING_POINT)
    assert vgg.operating_point == OperatingPoint(threshold=VGG_THRESHOLD)  # saved one, T = 1
    with pytest.raises(CheckpointError, match="expected a detector"):
        DetectorRunner.from_checkpoint(checkpoints.generator, options)


# --- /detect with both models ------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    with ready_client(create_app(make_settings())) as c:
        yield c


def _reference(path: Path, n: int = IMAGES) -> list[tuple[float, str]]:
    """(calibrated P(synthetic), verdict) per image, straight from the checkpoint."""
    model, meta = load_model(path)
    config = meta.preprocess_config
    point = OperatingPoint.from_metadata(meta.threshold, meta.extra)
    out = []
    with torch.inference_mode():
        for i in range(n):
            logit = float(model(normalize(load_uint8(image_bytes(seed=i), config), config)[None]))
            out.append((point.probability(logit), point.verdict(point.probability(logit))))
    return out


def test_every_model_scores_every_image_and_the_label_combines_them(
    client: TestClient, checkpoints: Checkpoints
) -> None:
    body = client.post("/detect", files=_upload()).json()
    want = {VGG_NAME: _reference(checkpoints.detector), NPR_NAME: _reference(checkpoints.npr)}
    # Some VGG16 score lies between 0.5 and its stored threshold: a service deciding at 0.5
    # (ignoring the checkpoint) would give a different verdict there.
    assert any(0.5 <= p < VGG_THRESHOLD for p, _ in want[VGG_NAME])
    # The NPR detector's calibration is applied: p = sigmoid(logit / 2 + 0.25), not sigmoid(logit).
    model, meta = load_model(checkpoints.npr)
    config = meta.preprocess_config
    assert (config.crop, config.image_size) == ("native", NPR_SIZE)
    with torch.inference_mode():
        logit = float(model(normalize(load_uint8(image_bytes(seed=2), config), config)[None]))
    assert want[NPR_NAME][2][0] == pytest.approx(1 / (1 + math.exp(-(logit / 2 + 0.25))))
    assert abs(logit) > 0.5  # so that T = 1 would give a clearly different number
    npr_verdicts = []
    for i, result in enumerate(body["results"]):
        assert [s["model"] for s in result["scores"]] == [NPR_NAME, VGG_NAME]
        for score in result["scores"]:
            p, verdict = want[score["model"]][i]
            assert score["probability_synthetic"] == pytest.approx(p, abs=1e-5)
            assert score["verdict"] == verdict
            # the reason quotes the score it judged (the rest: tests/models/test_operating_point)
            assert score["reason"].startswith(f"score {score['probability_synthetic']:.3f}")
        npr, vgg = result["scores"]
        assert (npr["threshold"], npr["inconclusive_below"]) == (0.6, 0.4)
        assert (vgg["threshold"], vgg["inconclusive_below"]) == (VGG_THRESHOLD, VGG_THRESHOLD)
        # the NPR's threshold holds a target false-positive rate, the old VGG16's does not
        decided = overall_decision(
            [npr["verdict"], vgg["verdict"]], [True, False], [NPR_NAME, VGG_NAME]
        )
        assert (result["label"], result["reason"]) == decided
        npr_verdicts.append(npr["verdict"])
    # All three verdicts occur, so the assertions above could each fail.
    assert set(npr_verdicts) == {"synthetic", "inconclusive", "real"}


def test_model_parameter_restricts_and_orders_the_scores(client: TestClient) -> None:
    versions = client.get("/readyz").json()["models"]
    for query in (f"model={VGG_NAME}", f"model={VGG_NAME}&model={VGG_NAME}"):
        body = client.post(f"/detect?{query}", files=_upload(2)).json()
        assert body["model_version"] == versions[VGG_NAME]
        for result in body["results"]:
            (score,) = result["scores"]
            assert score["model"] == VGG_NAME
            assert result["label"] == score["verdict"]  # one model: its verdict is the label
            assert result["probability_synthetic"] == score["probability_synthetic"]
    for query in (f"model={VGG_NAME},{NPR_NAME}", f"model={VGG_NAME}&model={NPR_NAME}"):
        body = client.post(f"/detect?{query}", files=_upload(1)).json()
        assert [s["model"] for s in body["results"][0]["scores"]] == [VGG_NAME, NPR_NAME]
        assert body["model_version"] == versions[VGG_NAME]  # the first asked is the primary


def test_unknown_model_is_a_404_naming_the_served_ones(client: TestClient) -> None:
    response = client.post("/detect?model=npr-general,stylegan-killer", files=_upload(1))
    assert response.status_code == 404
    detail = response.json()["detail"]
    assert "'stylegan-killer'" in detail and NPR_NAME in detail and VGG_NAME in detail
    assert client.post("/detect", files=_upload(1)).status_code == 200


def test_model_cards_show_operating_points_sources_and_metrics(
    client: TestClient, checkpoints: Checkpoints
) -> None:
    cards = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    npr, vgg = cards[NPR_NAME], cards[VGG_NAME]
    assert (npr["kind"], npr["architecture"]) == ("npr", "npr")
    assert (vgg["kind"], vgg["architecture"]) == ("detector", "vgg16")
    assert (npr["threshold"], npr["inconclusive_below"]) == (0.6, 0.4)
    assert (npr["target_fpr"], npr["criterion"]) == (0.05, "fpr")
    assert npr["calibration"] == {"method": "platt", "temperature": 2.0, "bias": 0.25}
    assert npr["sources"] == {"train": ["sngan", "zoo-transposed-2"], "held_out": ["dcgan-64"]}
    assert NPR_SOURCES["held_out"] and npr["metrics"] == NPR_METRICS
    assert npr["preprocessing"]["crop"] == "native"
    assert npr["preprocessing"]["image_size"] == NPR_SIZE
    assert npr["config"]["width"] == 16
    # A checkpoint from before operating points: its threshold, T = 1, no band, no sources.
    assert (vgg["threshold"], vgg["inconclusive_below"]) == (VGG_THRESHOLD, VGG_THRESHOLD)
    assert vgg["target_fpr"] is None
    assert vgg["calibration"]["temperature"] == 1.0 and vgg["criterion"] == "default"
    assert vgg["sources"] == {} and vgg["preprocessing"]["crop"] == "center_square"
    for card in (npr, vgg):
        assert card["device"] == "cpu" and card["compile"] is False and card["batch_buckets"] == []
    assert cards["generator"]["calibration"] is None and cards["generator"]["sources"] is None


# --- operating points flip verdicts ------------------------------------------------------------

# Temperature 1e6 squeezes every logit to P(synthetic) = 0.5 +- 1e-6: where 0.5 falls decides.
OPERATING_POINTS = {
    "npr-always-synthetic": {"threshold": 0.0},
    "npr-always-inconclusive": {"threshold": 0.6, "inconclusive_below": 0.4, "temperature": 1e6},
    "npr-always-real": {"threshold": 0.6, "inconclusive_below": 0.55, "temperature": 1e6},
    "npr-strict": {"threshold": 1.0, "inconclusive_below": 0.0},  # never sure: all inconclusive
    # over the threshold, but the trace must also show at half scale: 0 lets every image
    # through, 1 none (a trace gone at half scale is what resizing a photo leaves)
    "npr-half-passes": {"threshold": 0.0, "half_scale_threshold": 0.0},
    "npr-half-fails": {"threshold": 0.0, "half_scale_threshold": 1.0},
}


@pytest.fixture(scope="module")
def flip_client(
    make_settings: Callable[..., Settings],
    checkpoints: Checkpoints,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("operating-points")
    paths = [
        str(write_npr(root / name / "detector.safetensors", name=name, operating_point=point))
        for name, point in OPERATING_POINTS.items()
    ]
    settings = make_settings(detectors=[str(checkpoints.npr), *paths])  # no VGG16: fast
    with ready_client(create_app(settings)) as c:
        yield c


@pytest.mark.parametrize(
    ("models", "expected"),
    [
        (["npr-always-synthetic"], "synthetic"),
        (["npr-always-inconclusive"], "inconclusive"),
        (["npr-always-real"], "real"),
        (["npr-strict"], "inconclusive"),
        (["npr-half-passes"], "synthetic"),
        (["npr-half-fails"], "inconclusive"),
        (["npr-always-real", "npr-always-inconclusive"], "inconclusive"),
        (["npr-always-inconclusive", "npr-always-synthetic"], "synthetic"),
        (["npr-always-real", "npr-always-synthetic", "npr-always-inconclusive"], "synthetic"),
    ],
)
def test_operating_points_decide_the_verdicts(
    flip_client: TestClient, models: list[str], expected: str
) -> None:
    body = flip_client.post(f"/detect?model={','.join(models)}", files=_upload()).json()
    for result in body["results"]:
        assert result["label"] == expected
        for score in result["scores"]:
            point = OPERATING_POINTS[score["model"]]
            want = {
                "npr-always-synthetic": "synthetic",
                "npr-always-real": "real",
                "npr-half-passes": "synthetic",
            }.get(score["model"], "inconclusive")
            assert score["verdict"] == want
            assert score["threshold"] == point["threshold"]
            assert score["inconclusive_below"] == point.get("inconclusive_below", 0.0)
            if point.get("temperature") == 1e6:
                assert score["probability_synthetic"] == pytest.approx(0.5, abs=1e-5)
            assert (score["probability_half_scale"] is None) == (
                "half_scale_threshold" not in point
            )


def test_a_model_saying_real_never_changes_another_models_verdict(flip_client: TestClient) -> None:
    """The same weights at three operating points: real is neutral, inconclusive and synthetic
    win over it, exactly as models.operating_point.overall_verdict says."""
    general = flip_client.post(f"/detect?model={NPR_NAME}", files=_upload()).json()["results"]
    own = [r["label"] for r in general]
    assert set(own) == {"synthetic", "inconclusive", "real"}
    paired = flip_client.post(f"/detect?model={NPR_NAME},npr-always-real", files=_upload()).json()[
        "results"
    ]
    assert [r["label"] for r in paired] == own
    unsure = flip_client.post(
        f"/detect?model={NPR_NAME}&model=npr-always-inconclusive", files=_upload()
    ).json()["results"]
    assert [r["label"] for r in unsure] == [
        "synthetic" if label == "synthetic" else "inconclusive" for label in own
    ]


def test_the_half_scale_view_is_scored_as_the_model_sees_it(flip_client: TestClient) -> None:
    """probability_half_scale is the checkpoint's own score of the image's half-scale view
    (models.preprocessing.model_views), computed outside the service."""
    body = flip_client.post("/detect?model=npr-half-fails", files=_upload()).json()
    model, meta = load_model(checkpoints_path(flip_client, "npr-half-fails"))
    config = meta.preprocess_config
    point = OperatingPoint.from_metadata(meta.threshold, meta.extra)
    for i, result in enumerate(body["results"]):
        views = model_views(load_rgb(image_bytes(seed=i), min_side=config.decode_min_side), config)
        with torch.inference_mode():
            logits = model(normalize(views, config)).tolist()
        (score,) = result["scores"]
        assert score["probability_synthetic"] == pytest.approx(
            point.probability(logits[0]), abs=1e-5
        )
        assert score["probability_half_scale"] == pytest.approx(
            point.probability(logits[1]), abs=1e-5
        )
        assert score["probability_half_scale"] != pytest.approx(score["probability_synthetic"])


def checkpoints_path(client: TestClient, name: str) -> Path:
    services = client.app.state.host.services  # type: ignore[attr-defined]
    return Path(services.detectors[name].path)


def test_evaluation_figures_attach_only_to_the_weights_they_measured(tmp_path: Path) -> None:
    from app.services import read_evaluation

    report = {
        "detectors": {
            "a": {"weights_sha256": "abc", "test": {"accuracy": 0.9}, "other": 1},
            "b": {"test": {"accuracy": 0.5}},  # no digest: not attributable to any weights
        }
    }
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    assert read_evaluation(path) == {"abc": {"test": {"accuracy": 0.9}}}
    assert read_evaluation(tmp_path / "missing.json") == {}
    path.write_text("{not json")
    assert read_evaluation(path) == {}
