"""Service configuration: one pydantic-settings object, read from ``DERMAFAKE_*`` variables.

Built once (by :func:`app.main.create_app` or ``python -m app``) and injected everywhere else, so
tests can build apps with different settings side by side and nothing else reads the environment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from models.runtime import bucket_sizes

Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16", "fp16", "int8"]
LogFormat = Literal["json", "text"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DERMAFAKE_", extra="ignore", env_ignore_empty=True
    )

    # Models. Detectors: every ARTIFACTS_DIR/*/detector.safetensors of a detector kind unless
    # `detectors` lists checkpoint paths or names (comma-separated or a JSON list); a lone
    # `detector_path` serves that file alone, and with `detectors` it is added (app/discovery.py).
    artifacts_dir: Path = Path("artifacts")
    detectors: Annotated[list[str] | None, NoDecode] = None
    detector_path: Path | None = None
    generator_path: Path | None = None
    device: Device = "auto"
    # auto: bf16 where native (CUDA, AVX-512 BF16/AMX CPUs), else fp32; reduced precision casts
    # the weights (half the memory). Defaults measured: docs/BENCHMARKS.md.
    # int8: each detector's int8 file (detector.int8.onnx beside it, from training.quantize) on
    # ONNX Runtime, on the CPU, if it passes the gate below; a detector whose file is missing or
    # fails is served in fp32 and the log and /v1/models say why. auto does the same on a CPU
    # for the detectors that have a passing int8 file (int8 measured fastest on every CPU tried)
    # and picks bf16/fp32 as above for the rest. The generator is never int8 (fp32 under int8).
    precision: Precision = "auto"
    # The gate: an int8 file is served only if it came from the served checkpoint's weights
    # (SHA-256) and its held-out verdicts agreed with fp32's this often, ROC-AUC within this.
    int8_min_agreement: float = Field(0.995, ge=0, le=1)
    int8_max_auc_drop: float = Field(0.002, ge=0)
    channels_last: bool = True
    compile: bool = True  # torch.compile + inductor freezing; compiles every bucket at start-up
    batch_buckets: list[int] | None = None  # None: 1, 2, 4, ... up to max_batch_size if compiled
    warmup: bool = True

    # Server (python -m app); one worker per process: see app/metrics.py on why.
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    root_path: str = ""  # the path prefix a reverse proxy serves the app under, e.g. /dermafake
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    log_format: LogFormat = "json"  # one JSON object per line (request lines included), or text

    # Life cycle. Models load in the background: the port opens at once, /readyz says why it is
    # not ready yet (loading, compiling, waiting for artifacts) and the service picks the
    # artifacts up when they appear, looking every `load_retry_s`.
    load_retry_s: float = Field(5.0, gt=0)
    # /healthz fails when a forward pass has run this long: a hung model is a dead process.
    liveness_timeout_s: float = Field(120.0, gt=0)
    # SIGTERM: stop admitting at once (model routes and /readyz answer 503), keep the port open
    # for `drain_s` so a load balancer sees /readyz fail and stops sending (Kubernetes: about
    # its readiness period), then close it and let requests in flight finish for up to
    # `shutdown_timeout_s`, then exit. A second signal skips the wait.
    drain_s: float = Field(0.0, ge=0)
    shutdown_timeout_s: float = Field(30.0, ge=0)

    # Dynamic batching, per model. Queue sizes count images, not requests.
    max_batch_size: int = Field(16, ge=1)
    # After a batch that served one caller: 0, a lone client never waits for company (a 5 ms
    # wait cost the NPR detector 30% of a lone request: docs/BENCHMARKS.md). Concurrent
    # clients still share batches: they queue up during the forward pass in flight, and after
    # a batch of several callers the wait is max_busy_wait_ms (see app/batching.py).
    max_wait_ms: float = Field(0.0, ge=0)
    max_busy_wait_ms: float = Field(100.0, ge=0)  # after a batch of several (see batching.py)
    max_queue_size: int = Field(128, ge=1)
    request_timeout_s: float = Field(30.0, gt=0)
    retry_after_s: int = Field(1, ge=0)
    decode_threads: int = Field(2, ge=1)
    # /detect?explain=true runs saliency maps outside the batched path (one fp32 eager backward
    # pass per image and model, on its own thread); this many such requests at once, then 503.
    max_concurrent_explains: int = Field(2, ge=1)

    # Admission: requests to /detect and /generate in flight at once (reading, decoding, queued
    # or running); one more is a 503 with Retry-After before its body is read.
    max_inflight_requests: int = Field(64, ge=1)
    # Rate limit per API key (or client address when no key is set): a token bucket refilled at
    # `rate_limit_per_s` requests per second, holding up to `rate_limit_burst`; 0 turns it off.
    rate_limit_per_s: float = Field(0.0, ge=0)
    rate_limit_burst: int = Field(20, ge=1)

    # Limits on what a client may send or ask for.
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1)  # whole /detect request body
    max_body_bytes: int = Field(64 * 1024, ge=1)  # every other request body (JSON)
    # Pixels per image, read from the header before decoding: 12 MP takes a 4000x3000 phone
    # photo; the models need 256 px, so more would only cost decode time and memory.
    max_pixels: int = Field(12_000_000, ge=1)
    # Pixels per request, all its images' headers summed before any is decoded: decode time
    # follows pixels, not bytes (a 42 kB uniform 4000x3000 PNG takes ~0.3 s to decode), so 16
    # small files must not buy seconds of CPU. 48 MP: a series of 16 dermatoscope photos of
    # 3 MP, or four 12 MP phone photos; the models need 256 px a side of each.
    max_request_pixels: int = Field(48_000_000, ge=1)
    # Images being decoded at once, all requests together (the decode pool's backlog); a
    # request whose images do not fit is a 503 with Retry-After before any is decoded. 64: a
    # burst of max_inflight_requests single-image requests decodes; a burst of 16-image
    # requests is held to four at once.
    max_decoding_images: int = Field(64, ge=1)
    max_files: int = Field(16, ge=1)
    max_generate_n: int = Field(16, ge=1)

    api_key: SecretStr | None = None  # when set: "Authorization: Bearer <key>" on model routes

    @field_validator("detectors", mode="before")
    @classmethod
    def _split_detectors(cls, value: Any) -> Any:
        """``a,b`` or ``["a", "b"]`` from the environment; a list as it is."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"detectors: not a JSON list ({exc})") from exc
        return [part.strip() for part in text.split(",") if part.strip()]

    @model_validator(mode="after")
    def _limits_fit_queue(self) -> Self:
        # One request's images are queued together; a request larger than the queue could
        # never be served and would look like overload.
        if max(self.max_files, self.max_generate_n) > self.max_queue_size:
            raise ValueError(
                f"max_files ({self.max_files}) and max_generate_n ({self.max_generate_n}) "
                f"must not exceed max_queue_size ({self.max_queue_size})"
            )
        return self

    @model_validator(mode="after")
    def _decode_limits_fit_a_request(self) -> Self:
        # A request of max_files images, or one image at max_pixels, must be admissible.
        if self.max_files > self.max_decoding_images:
            raise ValueError(
                f"max_files ({self.max_files}) must not exceed max_decoding_images "
                f"({self.max_decoding_images})"
            )
        if self.max_pixels > self.max_request_pixels:
            raise ValueError(
                f"max_pixels ({self.max_pixels}) must not exceed max_request_pixels "
                f"({self.max_request_pixels})"
            )
        return self

    @model_validator(mode="after")
    def _buckets_cover_batches(self) -> Self:
        # A batch larger than every bucket would run unpadded and compile a new graph under load.
        if self.batch_buckets is not None and (
            min(self.batch_buckets, default=1) < 1
            or max(self.batch_buckets, default=0) < self.max_batch_size
        ):
            raise ValueError(
                f"batch_buckets {self.batch_buckets} must be positive and include one at least "
                f"as large as max_batch_size ({self.max_batch_size})"
            )
        return self

    @property
    def buckets(self) -> tuple[int, ...]:
        """Batch sizes that batches are padded to: only needed (and used) when compiling."""
        if not self.compile:
            return ()
        if self.batch_buckets is not None:
            return tuple(sorted(set(self.batch_buckets)))
        return bucket_sizes(self.max_batch_size)

    @property
    def generator_checkpoint(self) -> Path:
        return self.generator_path or self.artifacts_dir / "gan" / "generator.safetensors"
