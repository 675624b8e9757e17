"""``python -m app``: one uvicorn worker serving the app, configured by DERMAFAKE_* variables."""

from __future__ import annotations

import uvicorn

from app.main import create_app
from app.settings import Settings


def main() -> None:
    settings = Settings()
    # One worker per process: each holds its own models and metrics (see app/metrics.py).
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        workers=1,
    )


if __name__ == "__main__":
    main()
