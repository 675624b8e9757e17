"""``python -m app``: one uvicorn worker serving the app, configured by DERMAFAKE_* variables.

Logging is configured here (JSON lines by default, ``app/logs.py``). On SIGTERM or Ctrl-C the
service drains: model routes answer 503 + Retry-After and ``/readyz`` turns 503 at once, requests
already in flight finish (up to ``shutdown_timeout_s``), then the models are freed and the
process exits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from types import FrameType

import uvicorn

from app.logs import configure_logging
from app.main import create_app
from app.settings import Settings

logger = logging.getLogger("dermafake")


class DrainingServer(uvicorn.Server):
    """uvicorn's server, telling the models' host to stop admitting the moment a signal comes
    (uvicorn alone would only stop accepting connections, cutting off clients that connected a
    moment before), then waiting ``drain_s`` before uvicorn's own graceful shutdown."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None], drain_s: float) -> None:
        super().__init__(config)
        self._on_exit = on_exit
        self._drain_s = drain_s
        self._signalled = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_exit()
        if self._signalled or self._drain_s <= 0:
            super().handle_exit(sig, frame)
            return
        self._signalled = True
        logger.info("draining for %g s before closing the port", self._drain_s)
        # uvicorn's handlers run on the event loop (add_signal_handler), so this is safe.
        asyncio.get_event_loop().call_later(self._drain_s, super().handle_exit, sig, frame)


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        root_path=settings.root_path,
        log_config=None,  # ours (configure_logging), not uvicorn's
        access_log=False,  # one richer line per request: app/request_context.py
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
        workers=1,  # one worker per process: each holds its own models and metrics
    )
    logger.info("listening on http://%s:%d", settings.host, settings.port)
    DrainingServer(config, app.state.host.drain, settings.drain_s).run()


if __name__ == "__main__":
    main()
