"""Which detector checkpoints the service loads, and under what names (headers only, no weights).

- ``DERMAFAKE_DETECTORS`` set: those entries, in that order. An entry with a path separator or a
  ``.safetensors`` suffix is a file (or a folder holding ``detector.safetensors``); any other
  entry is the name of a checkpoint found under ``ARTIFACTS_DIR``. ``DERMAFAKE_DETECTOR_PATH``,
  if also set, is added unless already listed.
- Only ``DERMAFAKE_DETECTOR_PATH`` set: that file alone (what the single-detector service did).
- Neither: every ``ARTIFACTS_DIR/*/detector.safetensors`` whose kind is a detector kind, sorted
  by name.

A model's name is ``extra["name"]`` in its checkpoint, else its folder's name. Names label the
API's scores and the metrics, so two checkpoints with one name are refused at start-up, as is
the name ``generator`` (the generator's own label).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from app.settings import Settings
from models.checkpoint import (
    DETECTOR_KINDS,
    CheckpointError,
    CheckpointMeta,
    model_name,
    read_meta,
)

CHECKPOINT_FILE = "detector.safetensors"
RESERVED_NAMES = ("generator",)
logger = logging.getLogger(__name__)


class DetectorSetupError(RuntimeError):
    """The detectors to serve cannot be determined: none found, unknown name, duplicate name."""


@dataclass(frozen=True)
class DetectorSpec:
    name: str
    path: Path
    meta: CheckpointMeta


def read_detector(path: str | Path) -> DetectorSpec:
    """The spec of one detector checkpoint; an error naming the file if it is not one."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    meta = read_meta(path)
    if meta.kind not in DETECTOR_KINDS:
        raise CheckpointError(
            f"{path} holds a {meta.kind}, expected a detector (kinds {', '.join(DETECTOR_KINDS)})"
        )
    return DetectorSpec(model_name(path, meta), path, meta)


def discover(artifacts_dir: Path) -> list[DetectorSpec]:
    """Every ``artifacts_dir/*/detector.safetensors`` holding a detector, sorted by name."""
    found = []
    for path in sorted(Path(artifacts_dir).glob(f"*/{CHECKPOINT_FILE}")):
        meta = read_meta(path)  # a damaged file is an error, not a silently missing model
        if meta.kind not in DETECTOR_KINDS:
            logger.warning("skipping %s: it holds a %s, not a detector", path, meta.kind)
            continue
        found.append(DetectorSpec(model_name(path, meta), path, meta))
    return sorted(found, key=lambda spec: spec.name)


def looks_like_path(entry: str) -> bool:
    return "/" in entry or "\\" in entry or entry.endswith(".safetensors")


def find_detectors(settings: Settings) -> list[DetectorSpec]:
    """The detectors to serve, primary first (see the module docstring); never empty."""
    if settings.detectors is None and settings.detector_path is None:
        specs = discover(settings.artifacts_dir)
        if not specs:
            raise DetectorSetupError(
                f"no detector to serve: no {settings.artifacts_dir}/*/{CHECKPOINT_FILE} holds a "
                f"detector (kinds {', '.join(DETECTOR_KINDS)}). Train them with "
                f"`python -m training.pipeline --data DIR --out {settings.artifacts_dir}`, or "
                "point DERMAFAKE_DETECTORS (paths or names) at existing checkpoints."
            )
    else:
        specs = []
        discovered: list[DetectorSpec] | None = None
        for entry in settings.detectors or []:
            if looks_like_path(entry):
                specs.append(read_detector(entry))
                continue
            if discovered is None:
                discovered = discover(settings.artifacts_dir)
            match = [spec for spec in discovered if spec.name == entry]
            if not match:
                names = [spec.name for spec in discovered]
                raise DetectorSetupError(
                    f"unknown detector {entry!r} in DERMAFAKE_DETECTORS: no checkpoint under "
                    f"{settings.artifacts_dir} is named so (found: {names}); give one of those "
                    "names or a path to a .safetensors file"
                )
            specs.extend(match)
        if settings.detector_path is not None:
            extra = read_detector(settings.detector_path)
            if all(spec.path.resolve() != extra.path.resolve() for spec in specs):
                specs.append(extra)
        if not specs:
            raise DetectorSetupError("DERMAFAKE_DETECTORS is an empty list: name one detector")
    _check_names(specs)
    return specs


def _check_names(specs: list[DetectorSpec]) -> None:
    seen: dict[str, Path] = {}
    for spec in specs:
        if spec.name in RESERVED_NAMES:
            raise DetectorSetupError(
                f"{spec.path}: a detector may not be named {spec.name!r} (the generator's label); "
                "rename its folder or its extra['name']"
            )
        if spec.name in seen:
            raise DetectorSetupError(
                f"two detectors are named {spec.name!r}: {seen[spec.name]} and {spec.path}; "
                "names label the API's scores and the metrics, so each must be unique "
                "(rename a folder, or set extra['name'] when training)"
            )
        seen[spec.name] = spec.path
