"""HTTP throughput and latency of the real service, batched vs one forward per request, against
the raw model measured in the same run.

Starts ``python -m app`` on a free loopback port (twice: batching on, then
``max_batch_size=1``), sends a bounded number of ``/detect`` requests at each concurrency, and
``/generate`` with n=16. Loopback only; every loop is bounded in count and time.

    python -m bench.service_speed --artifacts artifacts --images ../shared/data/isic-uda1-originals
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import torch

from models.checkpoint import load_model
from models.preprocessing import load_uint8, normalize
from training.common import autocast, resolve_device, resolve_dtype


@dataclass
class Config:
    artifacts: Path = Path("artifacts")
    images: Path = Path("../shared/data/isic-uda1-originals")
    concurrency: list[int] = field(default_factory=lambda: [1, 8, 32])
    requests: int = 64
    max_seconds: float = 120.0
    batch_size: int = 16
    precision: str = "auto"
    out: Path | None = None


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--artifacts",
        type=Path,
        default=Config.artifacts,
        help="folder with detector/ and gan/ checkpoints (pipeline output)",
    )
    p.add_argument("--images", type=Path, default=Config.images, help="folder of upload images")
    p.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 8, 32],
        help="client concurrencies to measure",
    )
    p.add_argument("--requests", type=int, default=64, help="requests per measurement")
    p.add_argument(
        "--max-seconds",
        type=float,
        default=120.0,
        help="stop a measurement after this long even if requests remain",
    )
    p.add_argument("--batch-size", type=int, default=16, help="service max_batch_size when on")
    p.add_argument("--precision", default="auto", help="auto, fp32, bf16 or fp16")
    p.add_argument("--out", type=Path, default=None, help="JSON results file")
    return Config(**vars(p.parse_args(argv)))


def raw_throughput(cfg: Config, images: list[bytes], seconds: float = 10.0) -> float:
    """Images/s of the detector alone at the service's batch size, same precision/layout."""
    model, meta = load_model(cfg.artifacts / "detector" / "detector.safetensors", "detector")
    device = resolve_device("auto")
    dtype = resolve_dtype(cfg.precision, device)
    pre = meta.preprocess_config
    batch = torch.stack([load_uint8(images[i % len(images)], pre) for i in range(cfg.batch_size)])
    model = model.to(device, memory_format=torch.channels_last)
    x = normalize(batch.to(device), pre).contiguous(memory_format=torch.channels_last)
    n, start = 0, None
    with torch.inference_mode(), autocast(device, dtype):
        model(x)
        start = time.perf_counter()
        while time.perf_counter() - start < seconds or n < 2:
            model(x)
            n += 1
    return n * cfg.batch_size / (time.perf_counter() - start)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(cfg: Config, batch_size: int) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {
        **os.environ,
        "DERMAFAKE_ARTIFACTS_DIR": str(cfg.artifacts),
        "DERMAFAKE_PORT": str(port),
        "DERMAFAKE_HOST": "127.0.0.1",
        "DERMAFAKE_MAX_BATCH_SIZE": str(batch_size),
        "DERMAFAKE_PRECISION": cfg.precision,
        "DERMAFAKE_MAX_QUEUE_SIZE": "1024",
        "DERMAFAKE_REQUEST_TIMEOUT_S": "300",
        "DERMAFAKE_LOG_LEVEL": "warning",
    }
    proc = subprocess.Popen([sys.executable, "-m", "app"], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError("the service exited during start-up")
        time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("the service did not become ready in 300 s")


async def load(url: str, images: list[bytes], concurrency: int, n: int, max_s: float) -> dict:
    latencies: list[float] = []
    counter = iter(range(n))
    start = time.perf_counter()

    async def worker(client: httpx.AsyncClient) -> None:
        for i in counter:
            if time.perf_counter() - start > max_s:
                return
            t = time.perf_counter()
            r = await client.post(
                url + "/detect", files={"file": (f"{i}.jpg", images[i % len(images)])}
            )
            r.raise_for_status()
            latencies.append(time.perf_counter() - t)

    async with httpx.AsyncClient(timeout=600) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "images_per_s": round(len(latencies) / elapsed, 2),
        "p50_s": round(q[49], 3),
        "p99_s": round(q[98], 3),
    }


async def generate(url: str, n: int = 16, rounds: int = 8) -> float:
    async with httpx.AsyncClient(timeout=600) as client:
        await client.get(url + "/generate", params={"n": n, "seed": 0})
        start = time.perf_counter()
        for k in range(rounds):
            r = await client.get(url + "/generate", params={"n": n, "seed": k})
            r.raise_for_status()
    return n * rounds / (time.perf_counter() - start)


def main(cfg: Config) -> dict:
    paths = sorted(cfg.images.glob("*.jpg"))[:16]
    if not paths:
        raise SystemExit(f"no .jpg images in {cfg.images}")
    images = [p.read_bytes() for p in paths]
    raw = raw_throughput(cfg, images)
    print(f"raw detector, batch {cfg.batch_size}: {raw:.2f} img/s", flush=True)
    result: dict = {
        "config": {k: str(v) for k, v in asdict(cfg).items()},
        "raw_images_per_s": round(raw, 2),
        "batched": [],
        "unbatched": [],
    }
    for mode, bs in (("batched", cfg.batch_size), ("unbatched", 1)):
        proc, url = start_server(cfg, bs)
        try:
            for c in cfg.concurrency:
                row = asyncio.run(load(url, images, c, cfg.requests, cfg.max_seconds))
                result[mode].append(row)
                print(f"{mode:9s} c={c:2d}: {row}", flush=True)
            if mode == "batched":
                result["generate_n16_images_per_s"] = round(asyncio.run(generate(url)), 1)
                print(f"/generate n=16: {result['generate_n16_images_per_s']} img/s", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    top = max(cfg.concurrency)
    b = next(r for r in result["batched"] if r["concurrency"] == top)["images_per_s"]
    u = next(r for r in result["unbatched"] if r["concurrency"] == top)["images_per_s"]
    result["ratios"] = {
        f"batched_c{top}_vs_raw": round(b / raw, 3),
        f"batched_c{top}_vs_unbatched": round(b / u, 2),
    }
    print("ratios:", result["ratios"], flush=True)
    if cfg.out:
        cfg.out.parent.mkdir(parents=True, exist_ok=True)
        cfg.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main(parse_args())
