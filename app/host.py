"""The models' life cycle behind the open port: load in the background, say why not ready, drain.

The port opens before any model loads, so an orchestrator sees a process that answers
(``/healthz`` 200) and is not ready yet (``/readyz`` 503 with the reason: loading and compiling,
or waiting for artifacts that a trainer has not written yet). A load that fails is retried when
the files it read change (a trainer finishing, an operator copying a checkpoint in), checked every
``load_retry_s``, so ``api`` started beside ``trainer`` picks the models up instead of crash
looping. While a trainer's marker (``models.artifacts``) is in a folder the load reads from
(:func:`run_folders`), nothing is loaded: the files beside it are unfinished, and a model loaded
now would be served for good; a load during which a marker appeared or files changed is redone.
On SIGTERM :meth:`ModelHost.drain` refuses new work at once (503 + Retry-After) while the
server lets requests in flight finish; :meth:`stop` then frees the models.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

from app.discovery import looks_like_path
from app.metrics import Metrics
from app.services import Services
from app.settings import Settings
from models import artifacts

logger = logging.getLogger(__name__)


def run_folders(settings: Settings) -> list[Path]:
    """Folders a trainer may be writing this load's files into, whose marker holds it back:
    the artifacts folder when detectors are found (or named) there, and the run folder of every
    file given by path (``OUT`` of ``OUT/<stage>/file``), the generator's included."""
    entries = [*(settings.detectors or [])]
    if settings.detector_path is not None:
        entries.append(str(settings.detector_path))
    folders = []
    if not entries or any(not looks_like_path(entry) for entry in entries):
        folders.append(settings.artifacts_dir)
    for path in [Path(e) for e in entries if looks_like_path(e)] + [settings.generator_checkpoint]:
        folders.append(path.parent if path.is_dir() else path.parent.parent)
    return list(dict.fromkeys(folders))


def training_in(settings: Settings) -> str | None:
    """Why a trainer's marker holds this load back, or None when none does."""
    for folder in run_folders(settings):
        info = artifacts.read_marker(folder)
        if info is not None:
            return artifacts.describe(folder, info)
    return None


def artifact_fingerprint(settings: Settings) -> tuple[tuple[str, int, int], ...]:
    """(path, size, mtime) of every file a load reads: a change means a retry may succeed."""
    candidates = [settings.generator_checkpoint, settings.artifacts_dir]
    if settings.detector_path is not None:
        candidates.append(settings.detector_path)
    for name in settings.detectors or []:
        candidates.append(Path(name))
    candidates += [artifacts.marker_path(folder) for folder in run_folders(settings)]
    if settings.artifacts_dir.is_dir():
        candidates += sorted(settings.artifacts_dir.glob("*/*.safetensors"))
        candidates.append(settings.artifacts_dir / "evaluation" / "report.json")
    out = []
    for path in candidates:
        try:
            st = path.stat()
        except OSError:
            continue
        out.append((str(path), st.st_size, st.st_mtime_ns))
    return tuple(out)


@dataclass
class Status:
    ready: bool
    reason: str  # why not ready; "ready" when it is


class ModelHost:
    """Owns :class:`Services` once loaded; routes ask it for them, probes ask it how it is."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.services: Services | None = None
        self.draining = False
        self._reason = "loading models"
        self._task: asyncio.Task[None] | None = None

    @property
    def status(self) -> Status:
        if self.draining:
            return Status(False, "shutting down: not taking new requests")
        services = self.services
        if services is None or not services.ready:
            return Status(False, self._reason)
        stopped = [b.name for b in services.batchers if not b.running]
        if stopped:
            return Status(False, f"batcher stopped: {', '.join(stopped)}")
        return Status(True, "ready")

    def hung(self) -> list[str]:
        """Models whose forward pass has run past ``liveness_timeout_s``."""
        if self.services is None:
            return []
        limit = self.settings.liveness_timeout_s
        return [b.name for b in self.services.batchers if b.busy_for_s > limit]

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._load(), name="model-loader")

    def drain(self) -> None:
        """Stop admitting: model routes answer 503 from now on and /readyz turns 503."""
        if not self.draining:
            logger.info("draining: refusing new requests, finishing those in flight")
        self.draining = True

    async def stop(self) -> None:
        self.draining = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.services is not None:
            await self.services.stop()

    async def _load(self) -> None:
        settings = self.settings
        last_error = None
        while True:
            seen = artifact_fingerprint(settings)
            training = training_in(settings)
            if training is not None:  # read again every retry: it may turn stale
                self._reason = training
                if training != last_error:
                    logger.warning("not loading the models: %s", training)
                    last_error = training
                await asyncio.sleep(settings.load_retry_s)
                continue
            self._reason = "loading models"
            try:
                services = await Services.start(settings, self.metrics, self._progress)
                if training_in(settings) is not None or artifact_fingerprint(settings) != seen:
                    # A trainer began (or files changed) while loading: what was read may be a
                    # mix of two runs. Start over.
                    logger.warning("the artifacts changed while loading; loading again")
                    await services.stop()
                    continue
                self.services = services
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)
                self._reason = f"cannot load the models: {message}"
                if message != last_error:  # once per distinct problem, not every retry
                    logger.error(
                        "%s; retrying when the artifacts change (checked every %g s)",
                        self._reason,
                        settings.load_retry_s,
                    )
                    last_error = message
                while artifact_fingerprint(settings) == seen:
                    await asyncio.sleep(settings.load_retry_s)
                continue
            return

    def _progress(self, step: str) -> None:
        self._reason = step
