"""The artifacts folder's one rule shared by the trainer and the service: a trainer at work says so.

``training.pipeline`` writes ``TRAINING_IN_PROGRESS.json`` into its output folder before its
first stage and removes it when the last one has finished. While it is there, the files beside it
are unfinished (a detector is rewritten at each validation gain, a generator at each sample), so
the service does not load them: it stays not ready and says which stage is running. Compose
orders ``api`` after ``trainer``; podman-compose ignores that order and starts both at once, and
a service that loaded what it found would serve a half-trained model for good.

A pipeline that fails or is interrupted leaves the marker with ``state: failed`` and the error,
for the same reason: a stage cut short leaves a half-written folder.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

MARKER = "TRAINING_IN_PROGRESS.json"


def marker_path(artifacts_dir: str | Path) -> Path:
    return Path(artifacts_dir) / MARKER


def write_marker(artifacts_dir: str | Path, **fields: Any) -> Path:
    """Write (or update) the marker atomically: a reader never sees half a file."""
    path = marker_path(artifacts_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"host": socket.gethostname(), "pid": os.getpid(), **fields}
    info["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    tmp = path.with_name(f".{MARKER}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)
    return path


def clear_marker(artifacts_dir: str | Path) -> None:
    marker_path(artifacts_dir).unlink(missing_ok=True)


def read_marker(artifacts_dir: str | Path) -> dict[str, Any] | None:
    """The marker's fields, or None when no trainer has said it is at work here."""
    path = marker_path(artifacts_dir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return {"state": "unreadable", "error": str(exc)}
    try:
        info = json.loads(text)
    except json.JSONDecodeError:
        return {"state": "unreadable", "error": "not JSON"}
    return info if isinstance(info, dict) else {"state": "unreadable", "error": "not an object"}


def describe(artifacts_dir: str | Path, info: dict[str, Any]) -> str:
    """Why a service waits, in words, with what to do when no trainer is actually running."""
    path = marker_path(artifacts_dir)
    where = f"on {info.get('host', '?')} (pid {info.get('pid', '?')})"
    state = info.get("state")
    if state == "failed":
        return (
            f"the training run in {artifacts_dir} failed at stage {info.get('stage', '?')} "
            f"{where}: {info.get('error', 'no reason recorded')}. Its files may be half written: "
            f"rerun `python -m training.pipeline --out {artifacts_dir} ...` (finished stages are "
            f"kept), or delete {path} to serve what is there"
        )
    if state == "unreadable":
        return f"{path} cannot be read ({info.get('error')}); delete it if no trainer is running"
    return (
        f"waiting for the trainer writing {artifacts_dir}: stage {info.get('stage', '?')} "
        f"({info.get('profile', '?')} profile) {where}, since {info.get('started', '?')}; the "
        f"models load when it finishes. If no trainer is running (it was killed), delete {path}"
    )
