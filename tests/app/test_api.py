"""Every endpoint of one app (real checkpoints, lifespan run), its limits and its bad input."""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from app.settings import Settings
from bench.soak import png_header
from models.checkpoint import load_model, read_meta
from models.preprocessing import images_to_bytes
from tests.app.conftest import (
    DETECTOR_SIZE,
    GENERATOR_SIZE,
    NPR_NAME,
    VGG_NAME,
    VGG_THRESHOLD,
    Checkpoints,
    TestClient,
    image_bytes,
    metric_value,
    ready_client,
)

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_UPLOAD = 300_000


@pytest.fixture(scope="module")
def client(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    settings = make_settings(
        api_key=KEY,
        max_upload_bytes=MAX_UPLOAD,
        max_pixels=1_000_000,
        max_files=3,
        max_generate_n=4,
    )
    with ready_client(create_app(settings), headers=AUTH) as c:
        yield c


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


# --- probes and model info -------------------------------------------------------------------


def test_healthz_readyz_and_models(client: TestClient, checkpoints: Checkpoints) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["models"] == {
        NPR_NAME: read_meta(checkpoints.npr).weights_sha256[:12],
        VGG_NAME: read_meta(checkpoints.detector).weights_sha256[:12],
        "generator": read_meta(checkpoints.generator).weights_sha256[:12],
    }
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert list(models) == [NPR_NAME, VGG_NAME, "generator"]  # detectors by name, then generator
    assert models[VGG_NAME]["threshold"] == VGG_THRESHOLD
    assert models[VGG_NAME]["preprocessing"]["image_size"] == DETECTOR_SIZE
    assert models["generator"]["config"]["image_size"] == GENERATOR_SIZE
    assert models[VGG_NAME]["device"] == "cpu" and models[VGG_NAME]["dtype"] == "fp32"
    assert models["generator"]["step"] == 2
    assert models["generator"]["kind"] == "generator" and models["generator"]["threshold"] is None


# --- /detect ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF"])
def test_detect_accepts_every_format_by_content(client: TestClient, fmt: str) -> None:
    # Declared as octet-stream with a misleading name: the content decides.
    files = {"file": ("upload.bin", image_bytes(fmt, seed=3), "application/octet-stream")}
    response = client.post("/detect", files=files)
    assert response.status_code == 200, response.text
    (verdict,) = response.json()["results"]
    assert verdict["filename"] == "upload.bin"
    assert [s["model"] for s in verdict["scores"]] == [NPR_NAME, VGG_NAME]
    assert all(0 <= s["probability_synthetic"] <= 1 for s in verdict["scores"])


def test_detect_several_files_one_score_per_model_primary_on_top(client: TestClient) -> None:
    files = [("files", (f"im{i}.png", image_bytes(seed=i), "image/png")) for i in range(3)]
    body = client.post("/detect", files=files).json()
    versions = client.get("/readyz").json()["models"]
    assert body["model_version"] == versions[NPR_NAME]  # the first model, by name
    assert [r["filename"] for r in body["results"]] == ["im0.png", "im1.png", "im2.png"]
    for r in body["results"]:
        npr, vgg = r["scores"]
        assert (npr["model"], vgg["model"]) == (NPR_NAME, VGG_NAME)
        assert npr["model_version"] == versions[NPR_NAME]
        assert vgg["model_version"] == versions[VGG_NAME]
        assert (r["probability_synthetic"], r["threshold"]) == (
            npr["probability_synthetic"],
            npr["threshold"],
        )
        # The VGG16 checkpoint has no operating point: its saved threshold, no band.
        assert vgg["threshold"] == vgg["inconclusive_below"] == VGG_THRESHOLD
        verdict = "synthetic" if vgg["probability_synthetic"] >= VGG_THRESHOLD else "real"
        assert vgg["verdict"] == verdict
    assert len({r["scores"][1]["probability_synthetic"] for r in body["results"]}) == 3


def _multipart(parts: list[tuple[str, str, bytes]] | None) -> tuple[bytes, dict[str, str]]:
    body = b""
    for name, filename, data in parts or []:
        body += (
            (
                f'--b\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    return body + b"--b--\r\n", {"Content-Type": "multipart/form-data; boundary=b"}


BAD_DETECT: dict[str, tuple[dict[str, object], int, str]] = {
    "no file": ({"content_parts": []}, 422, "no file uploaded"),
    "not multipart": ({"json": {"file": "x"}}, 415, "no file uploaded"),
    "wrong field": ({"files": {"image": ("a.png", image_bytes(), "image/png")}}, 422, "'image'"),
    "text in file field": (
        {"data": {"file": "hello"}, "files": {"files": ("a.png", image_bytes(), "image/png")}},
        422,
        "must be a file",
    ),
    "file and files": (
        {
            "files": [
                ("file", ("a.png", image_bytes(), "image/png")),
                ("files", ("b.png", image_bytes(), "image/png")),
            ]
        },
        422,
        "not both",
    ),
    "empty file": ({"files": {"file": ("e.png", b"", "image/png")}}, 422, "empty file"),
    "text": (
        {"files": {"file": ("t.png", b"just some text\n", "image/png")}},
        415,
        "not a supported image: send JPEG, PNG, WebP, BMP or TIFF",
    ),
    "gif": ({"files": {"file": ("a.gif", image_bytes("GIF"), "image/gif")}}, 415, "a.gif: not a"),
    "ico": ({"files": {"file": ("a.png", image_bytes("ICO"), "image/png")}}, 415, "a.png: not a"),
    "truncated jpeg": (
        {"files": {"file": ("cut.jpg", image_bytes("JPEG", (300, 200))[:1500], "image/jpeg")}},
        422,
        "truncated",
    ),
    "decompression bomb": (
        {"files": {"file": ("bomb.png", png_header(40000, 40000), "image/png")}},
        422,
        "decompression bomb",
    ),
    "too many pixels": (
        {"files": {"file": ("big.png", png_header(2000, 1000), "image/png")}},
        422,
        "image too large",
    ),
    "too many files": (
        {"files": [("files", (f"{i}.png", image_bytes(), "image/png")) for i in range(4)]},
        413,
        "too many files",
    ),
    "too large": (
        {"files": {"file": ("huge.png", b"\0" * (MAX_UPLOAD + 1), "image/png")}},
        413,
        "too large",
    ),
}


@pytest.mark.parametrize("case", list(BAD_DETECT))
def test_detect_bad_input_is_a_4xx_naming_the_problem(client: TestClient, case: str) -> None:
    kwargs, status, needle = BAD_DETECT[case]
    if "content_parts" in kwargs:
        body, headers = _multipart(kwargs.pop("content_parts"))  # type: ignore[arg-type]
        kwargs = {"content": body, "headers": {**AUTH, **headers}}
    response = client.post("/detect", **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    assert needle in str(response.json()["detail"])
    # Every error names its request, in the body and the header, for the user's bug report.
    assert response.json()["request_id"] == response.headers["X-Request-ID"]
    assert len(response.headers["X-Request-ID"]) == 32
    ok = client.post("/detect", files={"file": ("ok.png", image_bytes(), "image/png")})
    assert ok.status_code == 200  # the server keeps answering


def test_detect_body_without_content_length_is_cut_off(client: TestClient) -> None:
    body, headers = _multipart([("file", "big.png", b"\0" * (2 * MAX_UPLOAD))])

    def chunks() -> Iterator[bytes]:  # chunked transfer: no Content-Length to reject up front
        for i in range(0, len(body), 65536):
            yield body[i : i + 65536]

    response = client.post("/detect", content=chunks(), headers={**AUTH, **headers})
    assert response.status_code == 413
    assert "too large" in response.json()["detail"]


# --- /generate -------------------------------------------------------------------------------


def test_generate_same_seed_same_images(client: TestClient) -> None:
    first = client.post("/generate", json={"n": 3, "seed": 7}).json()
    again = client.get("/generate", params={"n": 3, "seed": 7}).json()
    assert [im["seed"] for im in first["images"]] == [7, 8, 9]
    assert [im["data"] for im in first["images"]] == [im["data"] for im in again["images"]]
    assert len({im["data"] for im in first["images"]}) == 3
    other = client.post("/generate", json={"n": 1, "seed": 8}).json()["images"][0]
    # Image i is seed + i on its own, whatever batch it was generated in.
    assert (
        np.abs(
            decode(base64.b64decode(other["data"]))
            - decode(base64.b64decode(first["images"][1]["data"]))
        ).max()
        <= 1
    )


def test_generated_image_matches_the_generator_run_directly(
    client: TestClient, checkpoints: Checkpoints
) -> None:
    generator, _ = load_model(checkpoints.generator, "generator")
    z = generator.sample_z(1, generator=torch.Generator().manual_seed(1234))
    with torch.inference_mode():
        (expected,) = images_to_bytes(generator(z), "png")
    served = client.get("/generate", params={"seed": 1234}, headers={"Accept": "image/png"})
    assert served.headers["content-type"] == "image/png"
    assert served.headers["x-seed"] == "1234"
    assert decode(served.content).shape == (GENERATOR_SIZE, GENERATOR_SIZE, 3)
    assert np.abs(decode(served.content) - decode(expected)).max() <= 1


def test_generate_formats_and_content_negotiation(client: TestClient) -> None:
    jpeg = client.post("/generate", json={"format": "jpeg", "seed": 1}).json()["images"][0]
    assert jpeg["media_type"] == "image/jpeg"
    assert base64.b64decode(jpeg["data"])[:2] == b"\xff\xd8"
    png = client.post("/generate", json={}).json()["images"][0]
    assert base64.b64decode(png["data"])[:8] == b"\x89PNG\r\n\x1a\n"
    raw = client.post("/generate", json={"n": 1}, headers={"Accept": "image/jpeg"})
    assert raw.headers["content-type"] == "image/jpeg" and raw.content[:2] == b"\xff\xd8"
    several = client.post("/generate", json={"n": 2}, headers={"Accept": "image/png"})
    assert several.headers["content-type"] == "application/json"
    seeds = [im["seed"] for im in several.json()["images"]]
    assert seeds[1] == seeds[0] + 1  # random seed when none is given, still consecutive


BAD_GENERATE: dict[str, tuple[str, dict[str, object], str]] = {
    "n zero": ("GET", {"n": 0}, "n"),
    "n above limit": ("POST", {"n": 5}, "n"),
    "n not a number": ("GET", {"n": "many"}, "n"),
    "negative seed": ("POST", {"seed": -1}, "seed"),
    "seed too big": ("GET", {"seed": 2**40}, "seed"),
    "seed not a number": ("GET", {"seed": "abc"}, "seed"),
    "bad format": ("POST", {"format": "gif"}, "format"),
    "unknown field": ("POST", {"fmt": "png"}, "fmt"),
}


@pytest.mark.parametrize("case", list(BAD_GENERATE))
def test_generate_bad_input_is_422_naming_the_field(client: TestClient, case: str) -> None:
    method, params, field = BAD_GENERATE[case]
    if method == "GET":
        response = client.get("/generate", params=params)
    else:
        response = client.post("/generate", json=params)
    assert response.status_code == 422, response.text
    assert field in [err["loc"][-1] for err in response.json()["detail"]]
    assert client.get("/generate").status_code == 200


def test_generate_rejects_invalid_json_and_oversized_bodies(client: TestClient) -> None:
    broken = client.post(
        "/generate", content=b"{n: 1", headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 422
    huge = client.post("/generate", json={"n": 1, "pad": "x" * 100_000})
    assert huge.status_code == 413 and "too large" in huge.json()["detail"]


# --- API key ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "needle"),
    [({}, "missing API key"), ({"Authorization": "Bearer nope"}, "wrong API key")],
)
def test_api_key_guards_model_routes_only(
    client: TestClient, headers: dict[str, str], needle: str
) -> None:
    bare = httpx.Client(transport=client._transport, base_url=str(client.base_url))
    for method, path, kwargs in [
        ("POST", "/detect", {"files": {"file": ("a.png", image_bytes(), "image/png")}}),
        ("POST", "/generate", {"json": {}}),
        ("GET", "/generate", {}),
        ("GET", "/v1/models", {}),
    ]:
        response = bare.request(method, path, headers=headers, **kwargs)
        assert response.status_code == 401, (path, response.text)
        assert needle in response.json()["detail"]
        assert response.headers["WWW-Authenticate"] == "Bearer"
    for path in ("/healthz", "/readyz", "/metrics"):
        assert bare.get(path, headers=headers).status_code == 200


# --- /metrics --------------------------------------------------------------------------------


def test_metrics_parse_and_count_what_happened(client: TestClient) -> None:
    before = client.get("/metrics").text
    files = [("files", (f"{i}.png", image_bytes(seed=i), "image/png")) for i in range(2)]
    verdicts = client.post("/detect", files=files).json()["results"]
    only_vgg = client.post(f"/detect?model={VGG_NAME}", files=files[:1]).json()["results"]
    client.post("/generate", json={"n": 2, "format": "jpeg"})
    client.post("/detect", files={"file": ("t.png", b"text", "image/png")})
    after = client.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(after)}
    for name in (
        "dermafake_requests",
        "dermafake_request_duration_seconds",
        "dermafake_queue_wait_seconds",
        "dermafake_inference_duration_seconds",
        "dermafake_batch_size",
        "dermafake_queue_depth",
        "dermafake_verdicts",
        "dermafake_detector_verdicts",
        "dermafake_images_generated",
        "dermafake_model_info",
    ):
        assert name in families, name

    def delta(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    assert delta("dermafake_requests_total", endpoint="/detect", method="POST", status="200") == 2
    assert delta("dermafake_requests_total", endpoint="/detect", method="POST", status="415") == 1
    assert delta("dermafake_images_generated_total", format="jpeg") == 2
    assert delta("dermafake_batch_size_sum", model=VGG_NAME) == 3
    assert delta("dermafake_batch_size_sum", model=NPR_NAME) == 2  # not asked the second time
    assert delta("dermafake_queue_wait_seconds_count", model="generator") == 2
    assert delta("dermafake_queue_wait_seconds_count", model=NPR_NAME) == 2
    assert delta("dermafake_inference_duration_seconds_count", model=VGG_NAME) >= 1
    for label in ("real", "synthetic", "inconclusive"):  # each image once, by overall verdict
        expected = sum(v["label"] == label for v in verdicts + only_vgg)
        assert delta("dermafake_verdicts_total", label=label) == expected
        for model in (NPR_NAME, VGG_NAME):
            scores = [s for v in verdicts + only_vgg for s in v["scores"] if s["model"] == model]
            expected = sum(s["verdict"] == label for s in scores)
            assert delta("dermafake_detector_verdicts_total", model=model, label=label) == expected
    assert "inconclusive" in {s.labels["label"] for s in families["dermafake_verdicts"].samples}
    for model in (NPR_NAME, VGG_NAME, "generator"):
        assert metric_value(after, "dermafake_queue_depth", model=model) == 0
    assert metric_value(after, "dermafake_model_info", model=VGG_NAME, kind="detector") == 1
    assert (
        metric_value(after, "dermafake_model_info", model=NPR_NAME, kind="npr", dtype="fp32") == 1
    )
    client.get("/no/such/path")
    client.post("/generate", content=b"x" * 100_000, headers={"Content-Type": "application/json"})
    later = client.get("/metrics").text
    assert metric_value(later, "dermafake_requests_total", endpoint="unmatched", status="404") == 1
    # Refused by its Content-Length before a byte of body was read, counted under its route.
    assert metric_value(later, "dermafake_requests_total", endpoint="/generate", status="413") >= 1


def test_openapi_documents_the_routes(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/detect", "/generate", "/healthz", "/readyz", "/v1/models", "/metrics"} <= set(
        spec["paths"]
    )
    detect = spec["paths"]["/detect"]["post"]
    detect_body = detect["requestBody"]["content"]
    assert set(detect_body["multipart/form-data"]["schema"]["properties"]) == {"file", "files"}
    assert [p["name"] for p in detect["parameters"]] == ["explain", "model"]
    assert "404" in detect["responses"]
    schemas = spec["components"]["schemas"]
    assert set(schemas["ModelScore"]["properties"]) == {
        "model",
        "model_version",
        "probability_synthetic",
        "probability_half_scale",
        "threshold",
        "inconclusive_below",
        "verdict",
        "reason",
        "explanation",
    }
    assert "reason" in schemas["Verdict"]["required"]
    assert schemas["Verdict"]["properties"]["scores"]["items"]["$ref"].endswith("/ModelScore")
    label = schemas["Verdict"]["properties"]["label"]
    assert set(label.get("enum") or schemas[label["$ref"].split("/")[-1]]["enum"]) == {
        "synthetic",
        "real",
        "inconclusive",
    }
    card_fields = ("kind", "architecture", "inconclusive_below", "calibration", "sources")
    for card_field in (*card_fields, "half_scale_threshold", "evaluation"):
        assert card_field in schemas["ModelInfo"]["properties"]
    assert {p["name"] for p in spec["paths"]["/generate"]["get"]["parameters"]} >= {
        "n",
        "seed",
        "format",
    }
    assert client.get("/docs").status_code == 200


def test_metrics_pass_promtool(
    client: TestClient, tmp_path_factory: pytest.TempPathFactory
) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not on PATH (Debian package 'prometheus')")
    client.post("/generate", json={"n": 1})
    text = client.get("/metrics").text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
