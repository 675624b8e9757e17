"""What the model host builds and the routes use: every detector and the generator, one batcher
per model, the image pool (decoding uploads, encoding generated images: never on a model's
thread, which only runs forward passes)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from app.backends import int8_gate, load_detector, torch_precision
from app.batching import Batcher, CallTiming
from app.discovery import find_detectors
from app.metrics import Metrics
from app.request_context import record_call
from app.runners import DetectorRunner, DetectorScore, GeneratorRunner, Runner
from app.settings import Settings
from app.threads import named_pool
from models.preprocessing import encode, to_pil
from models.runtime import InferenceOptions, dtype_name, resolve_device, resolve_dtype
from models.saliency import Saliency

logger = logging.getLogger(__name__)


class UnknownModel(LookupError):
    """A client asked for a detector this server does not serve."""

    def __init__(self, unknown: list[str], served: list[str]) -> None:
        names = ", ".join(repr(n) for n in unknown)
        super().__init__(f"unknown model {names}: this server serves {served}")
        self.unknown = unknown
        self.served = served


EVALUATION_KEYS = ("test", "per_source", "foreign", "real_photos", "resampling_control")


def read_evaluation(path: Path) -> dict[str, dict[str, Any]]:
    """Held-out figures per detector from the pipeline's ``evaluation/report.json``, keyed by
    the weights' SHA-256 so a card never shows another model's numbers; {} when absent."""
    try:
        report = json.loads(path.read_text())
        entries = report["detectors"].values()
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        if path.exists():
            logger.warning("ignoring %s: %s", path, exc)
        return {}
    return {
        e["weights_sha256"]: {k: e[k] for k in EVALUATION_KEYS if k in e}
        for e in entries
        if isinstance(e, dict) and e.get("weights_sha256")
    }


@dataclass
class Services:
    settings: Settings
    detectors: dict[str, DetectorRunner]  # by name, primary first
    generator: GeneratorRunner
    detect_batchers: dict[str, Batcher[torch.Tensor, DetectorScore]]  # one per detector
    generate_batcher: Batcher[int, torch.Tensor]  # seed -> uint8 image
    image_pool: ThreadPoolExecutor
    explain_pool: ThreadPoolExecutor  # saliency maps: off the batched path, one at a time
    metrics: Metrics
    ready: bool = field(default=False)

    @classmethod
    async def start(
        cls,
        settings: Settings,
        metrics: Metrics,
        progress: Callable[[str], None] = lambda step: None,
    ) -> Services:
        """Load every detector and the generator onto the device, warm each up, start one
        batcher per model; ``progress`` hears each step (what /readyz says meanwhile)."""
        device = resolve_device(settings.device)
        dtype = resolve_dtype(torch_precision(settings.precision), device)
        options = InferenceOptions(device, dtype, settings.channels_last, settings.compile)
        gate = int8_gate(settings)
        specs = await asyncio.to_thread(find_detectors, settings)  # headers only: fails fast
        progress(f"loading {len(specs)} detector(s) and the generator")
        *detectors, generator = await asyncio.gather(
            *(
                asyncio.to_thread(
                    load_detector, spec, options, settings.buckets, settings.precision, gate
                )
                for spec in specs
            ),
            asyncio.to_thread(
                GeneratorRunner.from_checkpoint,
                settings.generator_checkpoint,
                options,
                settings.buckets,
            ),
        )
        runners: list[Runner] = [*detectors, generator]
        evaluation = read_evaluation(settings.artifacts_dir / "evaluation" / "report.json")
        for detector in detectors:
            detector.evaluation = evaluation.get(detector.meta.weights_sha256)
        if settings.warmup or settings.compile:  # compiled graphs are built here, not under load
            start = time.perf_counter()
            logger.info("warming up (compile=%s, buckets %s)", settings.compile, settings.buckets)
            for runner in runners:
                progress(f"warming up {runner.name} (compile={settings.compile})")
                await asyncio.to_thread(runner.warmup)
            logger.info("warm-up done in %.1f s", time.perf_counter() - start)

        def batcher(name: str, fn: Callable[[list[Any]], list[Any]]) -> Batcher:
            b = Batcher(
                fn,
                name=name,
                max_batch_size=settings.max_batch_size,
                max_wait_s=settings.max_wait_ms / 1000,
                max_busy_wait_s=settings.max_busy_wait_ms / 1000,
                max_queue_size=settings.max_queue_size,
                timeout_s=settings.request_timeout_s,
                retry_after_s=settings.retry_after_s,
                observer=metrics.batch_observer(name),
            )
            metrics.track_queue(name, lambda: b.queue_depth)
            b.start()
            return b

        services = cls(
            settings=settings,
            detectors={d.name: d for d in detectors},
            generator=generator,
            detect_batchers={d.name: batcher(d.name, d) for d in detectors},
            generate_batcher=batcher(generator.name, generator),
            image_pool=named_pool(settings.decode_threads, "image"),
            explain_pool=named_pool(1, "explain"),
            metrics=metrics,
        )
        for runner in runners:
            info = runner.info()
            metrics.model_info.labels(model=runner.name).info(
                {
                    k: str(info[k])
                    for k in (
                        "kind",
                        "architecture",
                        "version",
                        "step",
                        "code_version",
                        "device",
                        "dtype",
                        "compile",
                    )
                }
            )
        metrics.init_verdicts([d.name for d in detectors])
        metrics.track_gpu_memory(device)
        services.ready = True
        logger.info(
            "serving detectors %s and generator %s on %s (%s, compile=%s)",
            ", ".join(f"{d.name} ({d.meta.kind}, {d.version})" for d in detectors),
            generator.version,
            device,
            dtype_name(dtype),
            generator.options.compile,
        )
        return services

    @property
    def batchers(self) -> list[Batcher]:
        return [*self.detect_batchers.values(), self.generate_batcher]

    @property
    def runners(self) -> list[Runner]:
        return [*self.detectors.values(), self.generator]

    def select(self, names: Sequence[str] | None = None) -> list[DetectorRunner]:
        """The detectors asked for, in the order asked (duplicates dropped); all when none are.
        :class:`UnknownModel` names the ones not served."""
        if not names:
            return list(self.detectors.values())
        wanted = list(dict.fromkeys(names))
        unknown = [n for n in wanted if n not in self.detectors]
        if unknown:
            raise UnknownModel(unknown, list(self.detectors))
        return [self.detectors[n] for n in wanted]

    async def detect(
        self, detectors: Sequence[DetectorRunner], images: Sequence[dict[Any, torch.Tensor]]
    ) -> list[list[DetectorScore]]:
        """Calibrated scores of every image from every detector, ``[model][image]``.

        ``images[i]`` maps each preprocessing config to that image's views. Every model's
        batcher gets the images at once, so the models run concurrently; if one fails (queue
        full, timeout), the others' queued work is cancelled and the error is raised.
        """
        tasks = [
            asyncio.ensure_future(
                self.detect_batchers[d.name].submit_many(
                    [im[d.preprocess] for im in images], timing=_recorder(d)
                )
            )
            for d in detectors
        ]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:
                task.cancel()  # no-op for those done; the rest leave their queue

    async def generate(self, seeds: Sequence[int], fmt: str) -> list[bytes]:
        """Images for the seeds, encoded in the image pool (not on the generator's thread, so
        the next forward pass does not wait for PNG compression)."""
        pixels = await self.generate_batcher.submit_many(
            list(seeds), timing=_recorder(self.generator)
        )
        loop = asyncio.get_running_loop()
        return list(
            await asyncio.gather(
                *(loop.run_in_executor(self.image_pool, _encode, p, fmt) for p in pixels)
            )
        )

    async def explain(
        self, detectors: Sequence[DetectorRunner], images: Sequence[dict[Any, torch.Tensor]]
    ) -> list[list[Saliency]]:
        """A saliency map per model and image, ``[model][image]``, one after another on the
        explain thread (each is a backward pass: never on a model's batching thread)."""
        loop = asyncio.get_running_loop()

        def timed(detector: DetectorRunner, views: torch.Tensor) -> Saliency:
            start = time.perf_counter()
            saliency = detector.explain(views)
            self.metrics.explanations.labels(detector.name).observe(time.perf_counter() - start)
            return saliency

        return [
            [
                await loop.run_in_executor(self.explain_pool, timed, d, im[d.preprocess])
                for im in images
            ]
            for d in detectors
        ]

    def room_for(self, detector: DetectorRunner) -> bool:
        """Whether this detector's queue has room for one more image now."""
        return self.detect_batchers[detector.name].has_room()

    async def stop(self) -> None:
        """Refuse new work (readyz turns 503); callers still waiting get 503; free the threads."""
        self.ready = False
        for batcher in self.batchers:
            await batcher.stop()
        for pool in (self.image_pool, self.explain_pool):
            await asyncio.to_thread(pool.shutdown, wait=True)


def _encode(pixels: torch.Tensor, fmt: str) -> bytes:
    return encode(to_pil(pixels), fmt)


def _recorder(runner: Runner) -> Callable[[CallTiming], None]:
    """Adds a batcher call's timing to the request being served (its log line)."""
    return lambda timing: record_call(runner.name, runner.version, timing)
