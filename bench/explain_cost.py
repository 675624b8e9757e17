"""What ``/detect?explain=true`` costs: one client, the same uploads with and without
explanations against a real ``python -m app``, p50 latency of each and their ratio, and the mean
time per saliency map and model from the service's own histogram.

    python -m bench.explain_cost --artifacts artifacts --images data/ham10000 --requests 20
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench import server
from bench.machine import cpu_name
from training.common import write_json


@dataclass
class Config:
    artifacts: Path = Path("artifacts")
    images: Path = Path("data/ham10000")
    requests: int = 20
    detectors: str | None = None
    compile: bool = False
    out: Path | None = None


def parse_args(argv: list[str] | None = None) -> Config:
    d = Config()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--artifacts", type=Path, default=d.artifacts, help="pipeline output to serve")
    p.add_argument("--images", type=Path, default=d.images, help="folder of .jpg/.png (recursive)")
    p.add_argument("--requests", type=int, default=d.requests, help="requests per mode")
    p.add_argument("--detectors", default=d.detectors, help="DERMAFAKE_DETECTORS (default: all)")
    p.add_argument("--compile", action="store_true", help="serve compiled (slower start-up)")
    p.add_argument("--out", type=Path, default=d.out, help="JSON results file")
    return Config(**vars(p.parse_args(argv)))


def map_seconds(metrics: str) -> dict[str, float]:
    """Mean seconds per saliency map, by model, from dermafake_explain_duration_seconds."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics):
        for s in family.samples:
            if s.name == "dermafake_explain_duration_seconds_sum":
                sums[s.labels["model"]] = s.value
            elif s.name == "dermafake_explain_duration_seconds_count":
                counts[s.labels["model"]] = s.value
    return {m: sums[m] / counts[m] for m in sums if counts.get(m)}


def main(cfg: Config) -> dict:
    uploads = [p.read_bytes() for p in server.images_under(cfg.images)[: cfg.requests]]
    env = server.artifacts_env(cfg.artifacts, cfg.detectors, cfg.compile)
    proc, base, _ = server.start(env, timeout_s=900)
    latencies: dict[str, list[float]] = {"plain": [], "explain": []}
    try:
        with httpx.Client(base_url=base, timeout=300) as client:
            client.post("/detect?explain=true", files={"file": ("w.jpg", uploads[0])})  # warm
            for i in range(cfg.requests):
                data = uploads[i % len(uploads)]
                for mode, query in (("plain", ""), ("explain", "?explain=true")):
                    start = time.perf_counter()
                    r = client.post(f"/detect{query}", files={"file": ("x.jpg", data)})
                    r.raise_for_status()
                    latencies[mode].append(time.perf_counter() - start)
            per_map = map_seconds(client.get("/metrics").text)
    finally:
        server.stop(proc)
    p50 = {mode: statistics.median(v) for mode, v in latencies.items()}
    result = {
        "machine": cpu_name(),
        "requests": cfg.requests,
        "p50_s": p50,
        "explain_vs_plain": p50["explain"] / p50["plain"],
        "seconds_per_map": per_map,
    }
    if cfg.out:
        write_json(cfg.out, result)
    print(
        f"p50 /detect {p50['plain'] * 1000:.0f} ms, with explain {p50['explain'] * 1000:.0f} ms "
        f"({result['explain_vs_plain']:.1f}x); per map: "
        + ", ".join(f"{m} {s * 1000:.0f} ms" for m, s in per_map.items())
    )
    return result


if __name__ == "__main__":
    main(parse_args())
