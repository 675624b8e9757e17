"""The artifacts folder's one rule shared by the trainer and the service: a trainer at work says so.

``training.pipeline`` writes ``TRAINING_IN_PROGRESS.json`` into its output folder before its
first stage and removes it when the last one has finished. While it is there, the files beside it
are unfinished (a detector is rewritten at each validation gain, a generator at each sample), so
the service does not load them: it stays not ready and says which stage is running. Compose
orders ``api`` after ``trainer``; podman-compose ignores that order and starts both at once, and
a service that loaded what it found would serve a half-trained model for good.

A pipeline that fails or is interrupted (Ctrl-C, SIGTERM) leaves the marker with ``state:
failed`` and the error, for the same reason: a stage cut short leaves a half-written folder. A
trainer killed outright (SIGKILL, out of memory) cannot say so; its marker stops being refreshed
(every ``HEARTBEAT_S``), and a reader calls it stale.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MARKER = "TRAINING_IN_PROGRESS.json"
HEARTBEAT_S = 60.0
STALE_S = 5 * HEARTBEAT_S
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


def marker_path(artifacts_dir: str | Path) -> Path:
    return Path(artifacts_dir) / MARKER


def write_marker(artifacts_dir: str | Path, **fields: Any) -> Path:
    """Write (or update) the marker atomically: a reader never sees half a file."""
    path = marker_path(artifacts_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"host": socket.gethostname(), "pid": os.getpid(), **fields}
    info["updated"] = time.strftime(_TIME_FORMAT)
    tmp = path.with_name(f".{MARKER}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)
    return path


class TrainingRun:
    """The marker for the length of a ``with`` block: written on entry, refreshed every
    ``heartbeat_s`` by a daemon thread (a slow stage and a killed trainer look different),
    marked failed with the error when the block raises (KeyboardInterrupt and SystemExit
    included), removed when it ends well."""

    def __init__(self, folder: str | Path, heartbeat_s: float = HEARTBEAT_S, **fields: Any):
        self.folder = Path(folder)
        self.fields = {"state": "running", "started": time.strftime(_TIME_FORMAT), **fields}
        self._heartbeat_s = heartbeat_s
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="marker-heartbeat", daemon=True)

    def __enter__(self) -> TrainingRun:
        self._write()
        self._thread.start()
        return self

    def stage(self, name: str) -> None:
        self.fields["stage"] = name
        self._write()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any):
        self._done.set()
        self._thread.join()
        if exc is None:
            clear_marker(self.folder)
            return
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        self.fields.update(state="failed", error=error)
        self._write()

    def _write(self) -> None:
        with self._lock:
            write_marker(self.folder, **self.fields)

    def _beat(self) -> None:
        while not self._done.wait(self._heartbeat_s):
            self._write()


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
    age = seconds_since(info.get("updated"))
    if age is not None and age > STALE_S:
        return (
            f"the trainer writing {artifacts_dir} (stage {info.get('stage', '?')}, {where}) has "
            f"not refreshed {path} for {age / 60:.0f} min (it does every {HEARTBEAT_S:g} s): it "
            "was most likely killed, leaving that stage half written. Rerun the trainer "
            "(finished stages are kept), or delete the file to serve what is there"
        )
    return (
        f"waiting for the trainer writing {artifacts_dir}: stage {info.get('stage', '?')} "
        f"({info.get('profile', '?')} profile) {where}, since {info.get('started', '?')}; the "
        f"models load when it finishes. If no trainer is running (it was killed), delete {path}"
    )


def seconds_since(stamp: object) -> float | None:
    """Age of a marker timestamp; None when it is missing or unreadable."""
    try:
        then = datetime.strptime(str(stamp), _TIME_FORMAT)
    except ValueError:
        return None
    return (datetime.now(UTC) - then).total_seconds()
