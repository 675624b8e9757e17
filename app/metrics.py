"""Every Prometheus collector of the service, on a registry owned by one app instance.

Per-model series carry a ``model`` label: the detector's name (``vgg16-paper``, ``npr-general``;
see app/discovery.py) or ``generator``. ``dermafake_verdicts_total{label}`` counts each image
once, by its overall verdict; ``dermafake_detector_verdicts_total{model,label}`` counts each
detector's own verdicts.

A per-app :class:`~prometheus_client.CollectorRegistry` (not the global default) lets tests and
tools build several apps in one process without "duplicated timeseries" errors.

Several workers. Each uvicorn worker is its own process with its own models, batchers and
registry; ``uvicorn --workers N`` behind one port would make every scrape land on a random
worker and counters jump back and forth. Run one worker per process/container (one per GPU),
scale with more containers, and let Prometheus scrape each one as its own target; that is what
``python -m app`` does. If several workers behind one port are unavoidable, use
prometheus-client's multiprocess mode done right: set ``PROMETHEUS_MULTIPROC_DIR`` to an empty
directory *before* Python starts (and wipe it at every start), serve ``/metrics`` from a fresh
registry with ``MultiProcessCollector``, give every gauge a ``multiprocess_mode``, and call
``mark_process_dead`` when a worker exits. Info metrics and ``set_function`` gauges (queue depth,
GPU memory) are not supported there, which is why this service does not use that mode.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models.operating_point import VERDICTS

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The service's collectors; one instance per app."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "dermafake_requests_total",
            "HTTP requests by route template, method and status code.",
            ["endpoint", "method", "status"],
            registry=r,
        )
        self.request_latency = Histogram(
            "dermafake_request_duration_seconds",
            "Time from request start to the end of the response.",
            ["endpoint", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "dermafake_queue_wait_seconds",
            "Time an image waited in the batch queue before its forward pass started.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "dermafake_inference_duration_seconds",
            "Duration of one batched forward pass (including encoding for the generator).",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "dermafake_batch_size",
            "Images per forward pass; its _count is the number of forward passes.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "dermafake_queue_depth",
            "Images waiting for a forward pass.",
            ["model"],
            registry=r,
        )
        self.rejections = Counter(
            "dermafake_rejections_total",
            "Requests refused by a batcher: overloaded (503) or timed out (504).",
            ["model", "reason"],
            registry=r,
        )
        self.rate_limited = Counter(
            "dermafake_rate_limited_total",
            "Requests refused with 429 by the per-client rate limit.",
            ["endpoint"],
            registry=r,
        )
        self.admission_rejected = Counter(
            "dermafake_admission_rejected_total",
            "Model requests refused with 503 because max_inflight_requests were in flight.",
            registry=r,
        )
        self.in_flight = Gauge(
            "dermafake_inflight_requests",
            "Model requests admitted and not yet answered (reading, decoding, queued, running).",
            registry=r,
        )
        self.decode_rejected = Counter(
            "dermafake_decode_rejected_total",
            "/detect requests refused with 503 because max_decoding_images were being decoded.",
            registry=r,
        )
        self.decoding = Gauge(
            "dermafake_decoding_images",
            "Uploaded images admitted to decoding and not yet decoded (headers read first).",
            registry=r,
        )
        self.client_disconnects = Counter(
            "dermafake_client_disconnects_total",
            "Requests cancelled because the client closed the connection before the answer.",
            ["endpoint"],
            registry=r,
        )
        self.explanations = Histogram(
            "dermafake_explain_duration_seconds",
            "Time to compute one saliency map (one image, one model), off the batched path.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.explain_rejected = Counter(
            "dermafake_explain_rejected_total",
            "/detect?explain=true requests refused with 503: max_concurrent_explains in flight.",
            registry=r,
        )
        self.verdicts = Counter(
            "dermafake_verdicts_total",
            "Images answered by /detect, by overall verdict (all the models asked, combined).",
            ["label"],
            registry=r,
        )
        self.detector_verdicts = Counter(
            "dermafake_detector_verdicts_total",
            "Verdicts of each detector, at its own operating point.",
            ["model", "label"],
            registry=r,
        )
        self.images_generated = Counter(
            "dermafake_images_generated_total",
            "Images returned by /generate, by format.",
            ["format"],
            registry=r,
        )
        self.model_info = Info(
            "dermafake_model",
            "The served checkpoints: kind, architecture, version (weights SHA-256 prefix), step, "
            "device, dtype.",
            ["model"],
            registry=r,
        )
        self._gpu_memory: Gauge | None = None

    def init_verdicts(self, detectors: Sequence[str]) -> None:
        """Every verdict series at 0 from the start, so rates and ratios exist before traffic."""
        for label in VERDICTS:
            self.verdicts.labels(label)
            for name in detectors:
                self.detector_verdicts.labels(name, label)

    def batch_observer(self, model: str) -> BatchMetrics:
        return BatchMetrics(self, model)

    def track_queue(self, model: str, depth: Callable[[], float]) -> None:
        self.queue_depth.labels(model=model).set_function(depth)

    def track_gpu_memory(self, device: torch.device) -> None:
        """Allocated and reserved CUDA memory, read at scrape time; only when serving on CUDA."""
        if device.type != "cuda" or self._gpu_memory is not None:
            return
        self._gpu_memory = Gauge(
            "dermafake_gpu_memory_bytes",
            "CUDA memory held by PyTorch on the serving device.",
            ["device", "kind"],
            registry=self.registry,
        )
        name = str(device)
        self._gpu_memory.labels(name, "allocated").set_function(
            lambda: torch.cuda.memory_allocated(device)
        )
        self._gpu_memory.labels(name, "reserved").set_function(
            lambda: torch.cuda.memory_reserved(device)
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class BatchMetrics:
    """A :class:`app.batching.BatchObserver` that records one model's batches."""

    def __init__(self, metrics: Metrics, model: str) -> None:
        self._wait = metrics.queue_wait.labels(model=model)
        self._inference = metrics.inference.labels(model=model)
        self._size = metrics.batch_size.labels(model=model)

    def batch_done(self, size: int, queue_waits_s: Sequence[float], run_s: float) -> None:
        self._size.observe(size)
        self._inference.observe(run_s)
        for wait in queue_waits_s:
            self._wait.observe(wait)


def endpoint(scope: Scope) -> str:
    """The matched route's template (``/detect``), never the raw path (which a scanner or a
    proxy prefix makes unbounded), else ``unmatched``: the label for metrics, logs and limits.
    Routing fills it in, so it is known from the first read of the body on."""
    return getattr(scope.get("route"), "path", None) or "unmatched"


class RequestMetricsMiddleware:
    """Counts requests and times them, labelled by route template (never the raw path, so
    scanners probing random URLs cannot blow up label cardinality)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route, method = endpoint(scope), scope.get("method", "")
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.request_latency.labels(route, method).observe(time.perf_counter() - start)
