"""A bounded soak of the real service: minutes of mixed valid and hostile traffic at high
concurrency, then the verdict an operator needs: no server errors, no request lost, memory that
stops growing.

``python -m app`` is started on a free loopback port with the given artifacts; ``--concurrency``
clients send requests back to back for ``--seconds``: valid ``/detect`` uploads (one or several
real images), ``/generate``, and a ``--hostile`` share of bad ones (not an image, a truncated
JPEG, a decompression-bomb header, sixteen flat 12 MP PNGs of 42 kB each (a pixel flood), a
GIF, an upload over the size limit, too many files, a wrong field, out-of-range parameters,
and clients that hang up mid-request). The service's resident memory (VmRSS) is sampled every
second.

Pass/fail (exit status 1 on failure, figures in the JSON either way):
- no 500/502/504 and no 503 without Retry-After (a 503 with it is the overload contract);
- no lost request: every request the client completed got an HTTP answer (hang-ups excepted);
- every hostile request refused with the status its kind must get (``HOSTILE_STATUS``) or a 503;
- RSS growth over the second half below ``--max-growth-mb`` (warm-up and first-batch
  allocations happen in the first half).

    python -m bench.soak --artifacts artifacts --seconds 180 --out bench/results/soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import struct
import sys
import time
import zlib
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from PIL import Image

from bench import server
from bench.machine import cpu_name
from training.common import write_json


@dataclass
class Config:
    artifacts: Path = Path("artifacts")
    images: Path = Path("data/ham10000")
    seconds: float = 180.0
    concurrency: int = 64
    hostile: float = 0.3
    max_growth_mb: float = 50.0
    detectors: str | None = None
    compile: bool = False
    seed: int = 0
    out: Path | None = None
    env: dict[str, str] = field(default_factory=dict)


def parse_args(argv: list[str] | None = None) -> Config:
    d = Config()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    a = p.add_argument
    a("--artifacts", type=Path, default=d.artifacts, help="pipeline output folder to serve")
    a(
        "--images",
        type=Path,
        default=d.images,
        help="folder with real .jpg/.png images (searched recursively)",
    )
    a("--seconds", type=float, default=d.seconds, help="how long the load runs")
    a("--concurrency", type=int, default=d.concurrency, help="clients sending back to back")
    a("--hostile", type=float, default=d.hostile, help="share of hostile requests (0-1)")
    a("--max-growth-mb", type=float, default=d.max_growth_mb, help="allowed RSS growth, 2nd half")
    a("--detectors", default=d.detectors, help="DERMAFAKE_DETECTORS (default: every detector)")
    a("--compile", action="store_true", help="serve compiled (slower start-up)")
    a("--seed", type=int, default=d.seed, help="seed of the request mix")
    a("--out", type=Path, default=d.out, help="JSON results file")
    args = p.parse_args(argv)
    if not 0 <= args.hostile <= 1:
        p.error("--hostile must be between 0 and 1")
    return Config(**{k: v for k, v in vars(args).items()}, env={})


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels and holds none: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buf, format="GIF")
    return buf.getvalue()


def _flat_png(width: int, height: int) -> bytes:
    """A real, decodable PNG of one colour: a few kB that cost a full decode of width x height."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (120, 90, 80)).save(buf, format="PNG")
    return buf.getvalue()


# What each hostile kind must get (a 503 with Retry-After is also right: a saturated server
# refuses before looking).
HOSTILE_STATUS = {
    "pixel flood": 413,
    "not an image": 415,
    "truncated jpeg": 422,
    "decompression bomb": 422,
    "gif": 415,
    "over the size limit": 413,
    "too many files": 413,
    "wrong field": 422,
    "bad n": 422,
    "bad seed": 422,
}


def hostile_requests(photo: bytes) -> dict[str, dict]:
    """Each hostile kind (``HOSTILE_STATUS``) as httpx request arguments."""
    flat = _flat_png(4000, 3000)  # 12 MP each, within the per-image limit; 16 are 192 MP
    return {
        "pixel flood": {"files": [("files", (f"{i}.png", flat)) for i in range(16)]},
        "not an image": {"files": {"file": ("a.png", b"hello " * 50)}},
        "truncated jpeg": {"files": {"file": ("cut.jpg", photo[: len(photo) // 3])}},
        "decompression bomb": {"files": {"file": ("bomb.png", png_header(60000, 60000))}},
        "gif": {"files": {"file": ("a.gif", _gif())}},
        "over the size limit": {"files": {"file": ("big.png", b"\0" * (21 * 1024 * 1024))}},
        "too many files": {"files": [("files", (f"{i}.jpg", photo)) for i in range(40)]},
        "wrong field": {"files": {"image": ("a.jpg", photo)}},
        "bad n": {"path": "/generate", "params": {"n": 10_000}},
        "bad seed": {"path": "/generate", "params": {"seed": -5}},
    }


@dataclass
class Tally:
    statuses: Counter = field(default_factory=Counter)
    by_kind: dict[str, Counter] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)  # hostile kinds not refused as they must be
    hangups: int = 0
    cut_off: int = 0
    requests: int = 0
    hostile_sent: int = 0

    def record(self, kind: str, response: httpx.Response) -> None:
        self.requests += 1
        status = response.status_code
        self.statuses[status] += 1
        self.by_kind.setdefault(kind, Counter())[status] += 1
        if kind in HOSTILE_STATUS and status not in (HOSTILE_STATUS[kind], 503):
            self.wrong.append(f"{kind}: {status}, expected {HOSTILE_STATUS[kind]}")
        if status in (500, 502, 504) or (status == 503 and "Retry-After" not in response.headers):
            self.bad.append(f"{kind}: {status} {response.text[:200]}")


async def _hang_up(base: str, photo: bytes) -> None:
    """Send the headers and half a body, then close the connection."""
    host, port = base.removeprefix("http://").split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    body = b"--b\r\nContent-Disposition: form-data; name=file; filename=a.jpg\r\n\r\n" + photo
    writer.write(
        b"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        + f"Content-Length: {len(body) + 8}\r\n\r\n".encode()
        + body[: len(body) // 2]
    )
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def _client(
    base: str,
    photos: list[bytes],
    hostile: dict[str, dict],
    cfg: Config,
    tally: Tally,
    deadline: float,
    rng: random.Random,
) -> None:
    kinds = [*hostile, "hang up"]
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        while time.monotonic() < deadline:
            roll = rng.random()
            if roll < cfg.hostile:  # the kinds in turn, all clients together: each one is sent
                kind = kinds[tally.hostile_sent % len(kinds)]
                tally.hostile_sent += 1
                if kind == "hang up":
                    await _hang_up(base, rng.choice(photos))
                    tally.hangups += 1
                    continue
                args = dict(hostile[kind])
                path = args.pop("path", "/detect")
                method = client.get if path == "/generate" else client.post
            elif roll < cfg.hostile + (1 - cfg.hostile) * 0.15:
                kind, path, method = "generate", "/generate", client.get
                args = {"params": {"n": rng.randint(1, 4), "seed": rng.randint(0, 2**32 - 1)}}
            else:
                kind, path, method = "detect", "/detect", client.post
                picks = rng.sample(photos, k=rng.choice([1, 1, 1, 2, 4]))
                args = {"files": [("files", (f"{i}.jpg", p)) for i, p in enumerate(picks)]}
            try:
                response = await method(path, **args)
            except httpx.HTTPError as exc:
                if kind == "over the size limit":
                    # The server answers 413 from the Content-Length alone and closes the
                    # connection while the client is still sending 21 MB: refused, not lost
                    # (a client using Expect: 100-continue would not send the body at all).
                    tally.cut_off += 1
                else:
                    tally.lost.append(f"{kind}: {type(exc).__name__}: {exc}")
                continue
            tally.record(kind, response)
            if response.status_code == 503:  # honour Retry-After, as a real client would
                await asyncio.sleep(float(response.headers.get("Retry-After", "1")))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _sample_rss(pid: int, samples: list[tuple[float, float]], deadline: float) -> None:
    start = time.monotonic()
    while time.monotonic() < deadline:
        samples.append((time.monotonic() - start, rss_mb(pid)))
        await asyncio.sleep(1)


async def soak(base: str, pid: int, cfg: Config) -> dict:
    files = server.images_under(cfg.images)
    rng = random.Random(cfg.seed)
    photos = [p.read_bytes() for p in rng.sample(files, k=min(64, len(files)))]
    tally, samples = Tally(), []
    hostile = hostile_requests(photos[0])  # once: the flood's PNG takes 0.2 s to encode
    deadline = time.monotonic() + cfg.seconds
    clients = [
        _client(base, photos, hostile, cfg, tally, deadline, random.Random(cfg.seed * 1000 + i))
        for i in range(cfg.concurrency)
    ]
    await asyncio.gather(_sample_rss(pid, samples, deadline), *clients)
    half = [mb for t, mb in samples if t >= cfg.seconds / 2]
    growth = max(half) - half[0] if half else float("nan")
    return {
        "requests": tally.requests,
        "hangups": tally.hangups,
        "oversized_cut_off": tally.cut_off,
        "statuses": dict(sorted(tally.statuses.items())),
        "by_kind": {k: dict(sorted(v.items())) for k, v in sorted(tally.by_kind.items())},
        "server_errors": tally.bad[:20],
        "server_error_count": len(tally.bad),
        "lost": tally.lost[:20],
        "lost_count": len(tally.lost),
        "wrongly_answered": tally.wrong[:20],
        "wrongly_answered_count": len(tally.wrong),
        "rss_mb": {
            "start": samples[0][1] if samples else None,
            "end": samples[-1][1] if samples else None,
            "max": max(mb for _, mb in samples) if samples else None,
            "second_half_growth": growth,
        },
        "rss_samples": samples[:: max(1, len(samples) // 60)],
    }


def main(cfg: Config) -> int:
    env = {**server.artifacts_env(cfg.artifacts, cfg.detectors, cfg.compile), **cfg.env}
    proc, base, ready_s = server.start(env, timeout_s=900)
    try:
        result = asyncio.run(soak(base, proc.pid, cfg))
        alive = httpx.get(f"{base}/readyz", timeout=10).status_code == 200
    finally:
        returncode = server.stop(proc)
    result |= {
        "config": {k: str(v) for k, v in asdict(cfg).items()},
        "machine": cpu_name(),
        "ready_s": round(ready_s, 1),
        "ready_after": alive,
        "exit_code": returncode,
    }
    growth = result["rss_mb"]["second_half_growth"]
    failures = [
        f"{result['server_error_count']} server errors" if result["server_error_count"] else "",
        f"{result['lost_count']} lost requests" if result["lost_count"] else "",
        f"{result['wrongly_answered_count']} hostile requests not refused as they must be"
        if result["wrongly_answered_count"]
        else "",
        f"RSS grew {growth:.0f} MB in the second half" if growth > cfg.max_growth_mb else "",
        "" if alive else "not ready after the soak",
    ]
    result["failures"] = [f for f in failures if f]
    if cfg.out:
        write_json(cfg.out, result)
    rss = result["rss_mb"]
    print(
        f"{result['requests']} requests (+{result['hangups']} hang-ups) at concurrency "
        f"{cfg.concurrency} for {cfg.seconds:g} s, {cfg.hostile:.0%} hostile: statuses "
        f"{result['statuses']}; server errors {result['server_error_count']}, lost "
        f"{result['lost_count']}; RSS {rss['start']:.0f} -> {rss['end']:.0f} MB (max "
        f"{rss['max']:.0f}, second-half growth {growth:.1f} MB)"
    )
    for failure in result["failures"]:
        print(f"FAIL: {failure}", file=sys.stderr)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
