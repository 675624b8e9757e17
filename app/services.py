"""What the lifespan builds and the routes use: runners, their batchers, the decode pool."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

from app.batching import Batcher
from app.metrics import Metrics
from app.runners import DetectorRunner, GenerateItem, GeneratorRunner
from app.settings import Settings
from models.runtime import InferenceOptions, dtype_name, resolve_device, resolve_dtype

logger = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    detector: DetectorRunner
    generator: GeneratorRunner
    detect_batcher: Batcher[torch.Tensor, float]
    generate_batcher: Batcher[GenerateItem, bytes]
    decode_pool: ThreadPoolExecutor
    ready: bool = field(default=False)

    @classmethod
    async def start(cls, settings: Settings, metrics: Metrics) -> Services:
        """Load both checkpoints onto the device, warm them up, start the batchers."""
        device = resolve_device(settings.device)
        dtype = resolve_dtype(settings.precision, device)
        options = InferenceOptions(device, dtype, settings.channels_last, settings.compile)
        detector, generator = await asyncio.gather(
            asyncio.to_thread(
                DetectorRunner.from_checkpoint,
                settings.detector_checkpoint,
                options,
                settings.buckets,
            ),
            asyncio.to_thread(
                GeneratorRunner.from_checkpoint,
                settings.generator_checkpoint,
                options,
                settings.buckets,
            ),
        )
        if settings.warmup or settings.compile:  # compiled graphs are built here, not under load
            start = time.perf_counter()
            logger.info("warming up (compile=%s, buckets %s)", settings.compile, settings.buckets)
            await asyncio.to_thread(detector.warmup)
            await asyncio.to_thread(generator.warmup)
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
            detector=detector,
            generator=generator,
            detect_batcher=batcher("detector", detector),
            generate_batcher=batcher("generator", generator),
            decode_pool=ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode"),
        )
        for runner in (detector, generator):
            info = runner.info()
            metrics.model_info.labels(model=runner.kind).info(
                {
                    k: str(info[k])
                    for k in ("version", "step", "code_version", "device", "dtype", "compile")
                }
            )
        metrics.track_gpu_memory(device)
        services.ready = True
        logger.info(
            "serving detector %s and generator %s on %s (%s, compile=%s)",
            detector.version,
            generator.version,
            device,
            dtype_name(dtype),
            detector.options.compile,
        )
        return services

    async def stop(self) -> None:
        """Refuse new work (readyz turns 503); callers still waiting get 503; free the threads."""
        self.ready = False
        await self.detect_batcher.stop()
        await self.generate_batcher.stop()
        await asyncio.to_thread(self.decode_pool.shutdown, wait=True)
