"""HTTP throughput, latency and memory of the real service, against the raw models measured in
the same run.

1. Raw: the detector (batch ``--batch-size``) and the generator (n=16) alone, prepared exactly as
   the service prepares them (same precision, layout, compilation), no HTTP, no decoding;
   measured before and after the HTTP runs, the ratios use the mean.
2. ``python -m app`` on a free loopback port with batching on, then with ``max_batch_size=1``
   (one forward per request): a bounded number of ``/detect`` requests at each concurrency (p50,
   p99, images/s), and ``/generate?n=16`` with the same bound.
   With ``--compare-precision``, the batched runs and the raw detector again for each precision
   listed (e.g. the int8 service against today's fp32 one), ratios against the first.
3. Resident memory (VmRSS) of the service with both models loaded and warm, for each
   ``--memory-settings`` entry (precision/compile), after a few requests.

Every request loop is bounded in count and in time; loopback only. Prints the ratios, writes JSON.

    python -m bench.service_speed --artifacts artifacts --out bench/results/service.json
    python -m bench.service_speed --artifacts artifacts --precision int8 \
        --compare-precision fp32 bf16 --memory-settings --out bench/results/service_int8.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import torch
from prometheus_client.parser import text_string_to_metric_families

from app.backends import load_detector, torch_precision
from app.discovery import read_detector
from app.runners import GeneratorRunner, Runner
from app.settings import Settings
from bench import rawhttp, server
from bench.machine import describe, usable_cores
from bench.timing import timed
from models.preprocessing import encode, load_rgb, model_views, normalize, to_pil
from models.quantized import Gate
from models.runtime import InferenceOptions, bucket_sizes, resolve_device, resolve_dtype
from training.common import write_json


@dataclass
class Config:
    artifacts: Path = Path("artifacts")
    detector: Path | None = None
    generator: Path | None = None
    images: Path = Path("data/isic-uda1-originals")
    concurrency: list[int] = field(default_factory=lambda: [1, 8, 32])
    images_per_request: int = 1
    load_client: str = "httpx"
    requests: int = 96
    max_seconds: float = 120.0
    batch_size: int = 16
    max_wait_ms: float | None = None
    generate_n: int = 16
    precision: str = "auto"
    compare_precision: list[str] = field(default_factory=list)
    int8_min_agreement: float = Gate.min_agreement
    compile: bool = True
    memory_settings: list[str] = field(default_factory=lambda: ["fp32", "bf16"])
    raw_seconds: float = 10.0
    out: Path | None = None

    @property
    def detector_path(self) -> Path:
        return self.detector or self.artifacts / "detector" / "detector.safetensors"

    @property
    def generator_path(self) -> Path:
        return self.generator or self.artifacts / "gan" / "generator.safetensors"


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    a = p.add_argument
    a("--artifacts", type=Path, default=Config.artifacts, help="pipeline output folder")
    a("--detector", type=Path, default=None, help="detector checkpoint (default: in artifacts)")
    a("--generator", type=Path, default=None, help="generator checkpoint (default: in artifacts)")
    a("--images", type=Path, default=Config.images, help="folder of .jpg/.png upload images")
    a("--concurrency", type=int, nargs="+", default=[1, 8, 32], help="client concurrencies")
    a(
        "--images-per-request",
        type=int,
        default=Config.images_per_request,
        help="images per /detect request: 1 sends 'file', more send them together as 'files' "
        "(a client uploading a series at once; throughput is counted in images)",
    )
    a(
        "--load-client",
        choices=("httpx", "raw"),
        default=Config.load_client,
        help="/detect load generator: httpx, or a minimal HTTP/1.1 client (bench/rawhttp.py) "
        "that leaves more of a shared machine's CPU to the service",
    )
    a("--requests", type=int, default=Config.requests, help="requests per measurement (bound)")
    a("--max-seconds", type=float, default=Config.max_seconds, help="time bound per measurement")
    a("--batch-size", type=int, default=Config.batch_size, help="service max_batch_size when on")
    a("--max-wait-ms", type=float, default=None, help="service max_wait_ms (default: its own)")
    a("--generate-n", type=int, default=Config.generate_n, help="images per /generate request")
    a("--precision", default="auto", help="auto, fp32, bf16, fp16, int8 (DERMAFAKE_PRECISION)")
    a(
        "--compare-precision",
        nargs="*",
        default=[],
        help="precisions whose batched /detect and raw detector are measured too, same run",
    )
    a(
        "--int8-min-agreement",
        type=float,
        default=Gate.min_agreement,
        help="the service's int8 gate (lower it to time an int8 file the default gate refuses)",
    )
    a("--no-compile", dest="compile", action="store_false", help="serve eager, not compiled")
    a(
        "--memory-settings",
        nargs="*",
        default=["fp32", "bf16"],
        help="precisions to measure resident memory for; add _eager for compile off (bf16_eager)",
    )
    a("--raw-seconds", type=float, default=Config.raw_seconds, help="timed seconds per raw model")
    a("--out", type=Path, default=None, help="JSON results file")
    ns = p.parse_args(argv)
    max_files = Settings.model_fields["max_files"].default
    if not 1 <= ns.images_per_request <= max_files:
        p.error(f"--images-per-request must be in 1..{max_files} (the service's MAX_FILES)")
    return Config(**vars(ns))


def raw_models(
    cfg: Config, images: list[bytes], precision: str
) -> tuple[Callable[[], dict[str, float]], str]:
    """A measurement of the models alone, prepared (and compiled) once by the service's own
    runners with the service's options (call it before and after the HTTP runs), and the
    detector's backend (an int8 file refused by the default gate is served by torch)."""
    device = resolve_device("auto")
    dtype = resolve_dtype(torch_precision(precision), device)
    options = InferenceOptions(device, dtype, channels_last=True, compile=cfg.compile)
    spec = read_detector(cfg.detector_path)
    gate = Gate(min_agreement=cfg.int8_min_agreement)
    detector = load_detector(spec, options, [cfg.batch_size], precision, gate)
    pre, v = detector.preprocess, detector.operating_point.views
    # every view the service scores per image (two for a half-scale check), counted as one image
    batch = torch.stack(
        [
            model_views(load_rgb(images[i % len(images)], min_side=pre.decode_min_side), pre)[:v]
            for i in range(cfg.batch_size)
        ]
    )
    x = normalize(batch.flatten(0, 1).to(device), pre)
    generator = GeneratorRunner.from_checkpoint(cfg.generator_path, options, [cfg.generate_n])
    z = torch.randn(cfg.generate_n, int(generator.meta.config["z_dim"]), device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None

    def run(runner: Runner, inputs: torch.Tensor) -> Callable[[], None]:
        return lambda: (runner.forward(inputs), sync())

    def measure() -> dict[str, float]:
        return {
            "detector_images_per_s": timed(run(detector, x), cfg.raw_seconds, cfg.batch_size),
            "detector_cpu_ms_per_image": cpu_ms_per_item(run(detector, x), cfg.batch_size),
            "generator_images_per_s": timed(run(generator, z), cfg.raw_seconds, cfg.generate_n),
            "generator_with_png_images_per_s": timed(
                lambda: [
                    encode(to_pil(image), "png") for image in generator(list(range(cfg.generate_n)))
                ],
                cfg.raw_seconds,
                cfg.generate_n,
            ),
        }

    return measure, detector.info()["backend"]


def start_server(
    cfg: Config, batch_size: int, precision: str, compile: bool
) -> tuple[subprocess.Popen, str, float]:
    """``python -m app`` as a user would run it; returns once /readyz says ready."""
    settings = dict(
        DERMAFAKE_DETECTOR_PATH=str(cfg.detector_path),
        DERMAFAKE_GENERATOR_PATH=str(cfg.generator_path),
        DERMAFAKE_MAX_BATCH_SIZE=str(batch_size),
        DERMAFAKE_MAX_GENERATE_N=str(cfg.generate_n),
        DERMAFAKE_PRECISION=precision,
        DERMAFAKE_COMPILE=str(compile).lower(),
        DERMAFAKE_INT8_MIN_AGREEMENT=str(cfg.int8_min_agreement),
        DERMAFAKE_MAX_QUEUE_SIZE="1024",
        DERMAFAKE_REQUEST_TIMEOUT_S="600",
        DERMAFAKE_LOG_LEVEL="warning",
    )
    if cfg.max_wait_ms is not None:
        settings["DERMAFAKE_MAX_WAIT_MS"] = str(cfg.max_wait_ms)
    return server.start(settings, timeout_s=900)


def memory_mib(pid: int) -> dict[str, float]:
    """Resident now (VmRSS) and at its peak (VmHWM), from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return {"rss_mib": fields["VmRSS"], "peak_rss_mib": fields["VmHWM"]}


def cpu_ms_per_item(fn: Callable[[], object], items: int, calls: int = 4) -> float:
    """CPU time (every thread of this process) per item of ``fn``, after one warm call: what
    the model costs the cores whatever else runs on them (on CUDA: the host's share only).
    torch's OpenMP threads spin a while after each forward, which counts here: meaningful for
    ONNX Runtime (spinning off) and for forwards long against the spin, not for tiny ones."""
    fn()
    start = time.process_time()
    for _ in range(calls):
        fn()
    return 1000 * (time.process_time() - start) / (calls * items)


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU time of a process (all its threads), or of its thread ``tid``, from
    /proc (clock ticks)."""
    stat = Path(f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat")
    fields = stat.read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU time of a process by thread role, from /proc: ``main`` (the event loop: HTTP,
    routing, form parsing, responses), every thread the service named by its OS name without
    the pool index (app/threads.py: ``image`` decodes uploads, ``batch-NAME`` runs a model's
    forward passes; the kernel keeps 15 bytes of a name), and ``unnamed``: threads that kept
    the process's name, chiefly ONNX Runtime's and torch's worker pools (a native thread takes
    the name of the thread that started it)."""
    out: dict[str, float] = {}
    process_name = Path(f"/proc/{pid}/comm").read_text().strip()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            seconds = cpu_seconds(pid, int(task.name))
        except (OSError, ValueError):
            continue  # the thread ended meanwhile
        if int(task.name) == pid:
            role = "main"
        else:
            role = "unnamed" if name == process_name else re.sub(r"_\d*$", "", name)
        out[role] = out.get(role, 0.0) + seconds
    return out


def cpu_use(server_s: float, client_s: float, elapsed: float, images: int) -> dict[str, float]:
    """Where the cores went during a load run: the service's CPU per image, and the share of
    the machine's cores the service and this load generator (same machine) each took."""
    cores = usable_cores()
    return {
        "server_cpu_ms_per_image": round(1000 * server_s / max(images, 1), 2),
        "client_cpu_ms_per_image": round(1000 * client_s / max(images, 1), 2),
        "server_core_share": round(server_s / (elapsed * cores), 3),
        "client_core_share": round(client_s / (elapsed * cores), 3),
    }


def summarise(latencies: list[float], elapsed: float, items: int) -> dict[str, float]:
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {
        "requests": len(latencies),
        "images_per_s": round(len(latencies) * items / elapsed, 2),
        "p50_s": round(q[49], 3),
        "p99_s": round(q[98], 3),
    }


async def timed_clients(
    clients: Sequence[Callable[[int], Awaitable[object]]], n: int, max_s: float
) -> tuple[list[float], float]:
    """Each of ``clients`` makes calls with request numbers from one shared counter until ``n``
    are taken or ``max_s`` has passed; every call's latency, and the time it all took."""
    latencies: list[float] = []
    counter = iter(range(n))
    start = time.perf_counter()

    async def worker(call: Callable[[int], Awaitable[object]]) -> None:
        for i in counter:
            if time.perf_counter() - start > max_s:
                return
            t = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - t)

    await asyncio.gather(*(worker(call) for call in clients))
    return latencies, time.perf_counter() - start


async def bounded_load(
    send: Callable[[httpx.AsyncClient, int], object],
    concurrency: int,
    n: int,
    max_s: float,
) -> tuple[list[float], float]:
    """``n`` calls of ``send`` by ``concurrency`` httpx clients, stopping early after ``max_s``."""
    # One kept-alive connection per client, as behind a keep-alive proxy: httpx keeps 20 by
    # default, and beyond that requests would open and close TCP connections on the service.
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:

        async def call(i: int) -> None:
            (await send(client, i)).raise_for_status()

        return await timed_clients([call] * concurrency, n, max_s)


async def bounded_raw_load(
    url: str, request: Callable[[int], bytes], concurrency: int, n: int, max_s: float
) -> tuple[list[float], float]:
    """:func:`bounded_load` with bench/rawhttp.py: one kept-alive connection per client."""

    def client(connection: rawhttp.Connection) -> Callable[[int], Awaitable[None]]:
        async def call(i: int) -> None:
            status, body = await connection.request(request(i))
            if status != 200:
                raise rawhttp.RawHTTPError(f"HTTP {status}: {body[:200]!r}")

        return call

    connections: list[rawhttp.Connection] = []
    try:
        for _ in range(concurrency):
            connections.append(await rawhttp.Connection.open(url))
        return await timed_clients([client(c) for c in connections], n, max_s)
    finally:
        for connection in connections:
            await connection.close()


def detector_batches(url: str) -> tuple[float, float]:
    """(forward passes, images) so far, from the service's own batch-size histogram (every
    detector: the service labels each by its name, the generator ``generator``)."""
    text = httpx.get(url + "/metrics", timeout=10).text
    values = {"_count": 0.0, "_sum": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("model", "generator") != "generator":
                for suffix in values:
                    if sample.name == "dermafake_batch_size" + suffix:
                        values[suffix] = sample.value
    return values["_count"], values["_sum"]


def detect_load(url: str, images: list[bytes], concurrency: int, cfg: Config, pid: int) -> dict:
    k = cfg.images_per_request

    def picked(i: int) -> list[tuple[str, bytes]]:
        return [(f"{i * k + j}.jpg", images[(i * k + j) % len(images)]) for j in range(k)]

    def send(client: httpx.AsyncClient, i: int) -> object:
        files = {"file": picked(i)[0]} if k == 1 else [("files", f) for f in picked(i)]
        return client.post(url + "/detect", files=files)

    def request(i: int) -> bytes:
        field = "file" if k == 1 else "files"
        return rawhttp.multipart_post(url, "/detect", [(field, *f) for f in picked(i)])

    forwards, served = detector_batches(url)
    server_cpu, client_cpu = cpu_seconds(pid), time.process_time()
    before = thread_cpu_seconds(pid)
    if cfg.load_client == "raw":
        load = bounded_raw_load(url, request, concurrency, cfg.requests, cfg.max_seconds)
    else:
        load = bounded_load(send, concurrency, cfg.requests, cfg.max_seconds)
    lat, elapsed = asyncio.run(load)
    server_cpu, client_cpu = cpu_seconds(pid) - server_cpu, time.process_time() - client_cpu
    threads = {role: s - before.get(role, 0.0) for role, s in thread_cpu_seconds(pid).items()}
    forwards_after, served_after = detector_batches(url)
    mean_batch = (served_after - served) / max(forwards_after - forwards, 1)
    return {
        "concurrency": concurrency,
        "images_per_request": k,
        "load_client": cfg.load_client,
        **summarise(lat, elapsed, k),
        "mean_batch": round(mean_batch, 2),
        "served_images": int(served_after - served),  # the service's count (one detector)
        **cpu_use(server_cpu, client_cpu, elapsed, len(lat) * k),
        "server_cpu_ms_per_image_by_thread": {
            role: round(1000 * seconds / max(len(lat) * k, 1), 2)
            for role, seconds in sorted(threads.items(), key=lambda kv: -kv[1])
        },
    }


def generate_load(url: str, cfg: Config) -> dict:
    def send(client: httpx.AsyncClient, i: int) -> object:
        return client.get(url + "/generate", params={"n": cfg.generate_n, "seed": i})

    rounds = max(4, cfg.requests // 8)
    asyncio.run(bounded_load(send, 1, 1, cfg.max_seconds))  # first PNG encode etc.
    lat, elapsed = asyncio.run(bounded_load(send, 1, rounds, cfg.max_seconds))
    return {"n": cfg.generate_n, **summarise(lat, elapsed, cfg.generate_n)}


def compare(cfg: Config, images: list[bytes], precision: str) -> dict:
    """The batched service and its raw detector at another precision, for the ratios."""
    measure_raw, backend = raw_models(cfg, images, precision)
    raw = measure_raw()["detector_images_per_s"]
    del measure_raw
    proc, url, startup_s = start_server(cfg, cfg.batch_size, precision, cfg.compile)
    out: dict = {"backend": backend, "startup_s": round(startup_s, 1), "detect": []}
    try:
        for c in cfg.concurrency:
            out["detect"].append(detect_load(url, images, c, cfg, proc.pid))
            print(f"{precision:9s} /detect c={c:2d}: {out['detect'][-1]}", flush=True)
        out["memory"] = memory_mib(proc.pid)
    finally:
        server.stop(proc)
    out["raw_detector_images_per_s"] = round(raw, 2)
    return out


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def main(cfg: Config) -> dict:
    paths = sorted([*cfg.images.glob("*.jpg"), *cfg.images.glob("*.png")])[:32]
    if not paths:
        raise SystemExit(f"no .jpg or .png images in {cfg.images}: pass --images")
    images = [p.read_bytes() for p in paths]
    device = resolve_device("auto")
    result: dict = {
        "config": {k: str(v) for k, v in asdict(cfg).items()},
        "machine": describe(device),
        "served_buckets": list(bucket_sizes(cfg.batch_size)) if cfg.compile else [],
    }
    measure_raw, result["backend"] = raw_models(cfg, images, cfg.precision)
    raw_before = measure_raw()
    print("raw models (before):", {k: round(v, 2) for k, v in raw_before.items()}, flush=True)

    for mode, bs in (("batched", cfg.batch_size), ("unbatched", 1)):
        proc, url, startup_s = start_server(cfg, bs, cfg.precision, cfg.compile)
        result[mode] = {"startup_s": round(startup_s, 1), "detect": []}
        try:
            for c in cfg.concurrency:
                row = detect_load(url, images, c, cfg, proc.pid)
                result[mode]["detect"].append(row)
                print(f"{mode:9s} /detect c={c:2d}: {row}", flush=True)
            if mode == "batched":
                result[mode]["generate"] = generate_load(url, cfg)
                print(f"batched   /generate: {result[mode]['generate']}", flush=True)
            result[mode]["memory"] = memory_mib(proc.pid)
        finally:
            server.stop(proc)

    raw_after = measure_raw()
    print("raw models (after):", {k: round(v, 2) for k, v in raw_after.items()}, flush=True)
    # The model's speed drifts on a shared machine: the ratios use the mean of both.
    raw = {k: (raw_before[k] + raw_after[k]) / 2 for k in raw_before}
    result["raw"] = {k: round(v, 2) for k, v in raw.items()}
    result["raw_before"] = {k: round(v, 2) for k, v in raw_before.items()}
    result["raw_after"] = {k: round(v, 2) for k, v in raw_after.items()}
    del measure_raw

    result["compare"] = {p: compare(cfg, images, p) for p in cfg.compare_precision}

    result["memory"] = {}
    for name in cfg.memory_settings:
        precision, _, eager = name.partition("_")
        proc, url, startup_s = start_server(cfg, cfg.batch_size, precision, not eager)
        try:
            detect_load(url, images, 4, Config(requests=8, max_seconds=cfg.max_seconds), proc.pid)
            result["memory"][name] = {**memory_mib(proc.pid), "startup_s": round(startup_s, 1)}
            print(f"memory {name}: {result['memory'][name]}", flush=True)
        finally:
            server.stop(proc)

    top = max(cfg.concurrency)
    batched = next(r for r in result["batched"]["detect"] if r["concurrency"] == top)
    unbatched = next(r for r in result["unbatched"]["detect"] if r["concurrency"] == top)
    result["ratios"] = {
        f"detect_c{top}_vs_raw_model": ratio(batched["images_per_s"], raw["detector_images_per_s"]),
        f"model_share_of_service_cpu_c{top}": ratio(
            raw["detector_cpu_ms_per_image"], batched["server_cpu_ms_per_image"]
        ),
        f"detect_c{top}_batched_vs_unbatched": ratio(
            batched["images_per_s"], unbatched["images_per_s"]
        ),
        "generate_vs_raw_generator": ratio(
            result["batched"]["generate"]["images_per_s"], raw["generator_images_per_s"]
        ),
    }
    for p, other in result["compare"].items():
        row = next(r for r in other["detect"] if r["concurrency"] == top)
        result["ratios"] |= {
            f"detect_c{top}_vs_{p}": ratio(batched["images_per_s"], row["images_per_s"]),
            f"detect_c{top}_p99_vs_{p}": ratio(batched["p99_s"], row["p99_s"]),
            f"raw_detector_vs_{p}": ratio(
                raw["detector_images_per_s"], other["raw_detector_images_per_s"]
            ),
        }
    print("ratios:", result["ratios"], flush=True)
    if cfg.out:
        write_json(cfg.out, result)
    return result


if __name__ == "__main__":
    main(parse_args())
