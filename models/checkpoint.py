"""Self-describing checkpoints: safetensors weights + a JSON metadata block that rebuilds the model.

Served weights are ``.safetensors`` (no pickle anywhere). The metadata records the model kind, its
config, the preprocessing constants, the detector's decision threshold, the training step,
metrics, creation time, code version and a SHA-256 of the weights, so a truncated or corrupted
file is refused (a checksum catches corruption, not a deliberate edit: whoever can rewrite the
weights can rewrite their digest too; sign the files if that matters). Full training state for
resume is a separate ``torch.save`` file, only ever read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import subprocess
import time
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from models.dcgan import DCGANConfig, DCGANDiscriminator, DCGANGenerator
from models.detector import Detector, DetectorConfig
from models.lesion_features import LesionFeatures, LesionFeaturesConfig
from models.npr import NPRConfig, NPRDetector
from models.preprocessing import PreprocessConfig
from models.sngan import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig
from models.upsamplers import Autoencoder, UpsamplerConfig

FORMAT = "dermafake/1"
MODEL_KINDS: dict[str, tuple[type, type[nn.Module]]] = {
    "generator": (GeneratorConfig, Generator),
    "discriminator": (DiscriminatorConfig, Discriminator),
    "detector": (DetectorConfig, Detector),
    "npr": (NPRConfig, NPRDetector),
    "autoencoder": (UpsamplerConfig, Autoencoder),
    "dcgan_generator": (DCGANConfig, DCGANGenerator),
    "dcgan_discriminator": (DCGANConfig, DCGANDiscriminator),
    "lesion_features": (LesionFeaturesConfig, LesionFeatures),
}
# Every kind whose output is one P(synthetic) logit per image: what the service and evaluation
# accept as "a detector".
DETECTOR_KINDS = ("detector", "npr")
_PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(RuntimeError):
    """The file is missing, truncated, corrupted, or not the kind of model expected."""


@dataclass
class CheckpointMeta:
    kind: str
    config: dict[str, Any]
    preprocessing: dict[str, Any]
    threshold: float | None = None
    step: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    code_version: str = ""
    weights_sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def preprocess_config(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.preprocessing)


def model_name(path: str | Path, meta: CheckpointMeta) -> str:
    """The name a detector goes by in the service and in reports: ``extra["name"]`` as training
    wrote it, else the checkpoint's folder name (checkpoints from before names)."""
    name = (meta.extra or {}).get("name")
    return str(name) if name else Path(path).absolute().parent.name


def code_version() -> str:
    """Package version plus the git commit when running from a checkout."""
    try:
        version = importlib_metadata.version("dermafake")
    except importlib_metadata.PackageNotFoundError:
        version = "0+unknown"
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{version}+g{sha}" if sha else version


def clean_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip DDP (``module.``) and ``torch.compile`` (``_orig_mod.``) prefixes at any depth."""
    out = {}
    for key, value in state.items():
        parts = [p for p in key.split(".") if p not in ("module", "_orig_mod")]
        out[".".join(parts)] = value
    return out


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP and/or ``torch.compile`` wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def weights_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes: equal digests = bitwise equal weights."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def kind_of(model: nn.Module) -> str:
    for kind, (_, cls) in MODEL_KINDS.items():
        if isinstance(model, cls):
            return kind
    raise TypeError(f"no checkpoint kind for {type(model).__name__}")


def save_model(
    path: str | Path,
    model: nn.Module,
    preprocessing: PreprocessConfig,
    *,
    threshold: float | None = None,
    step: int = 0,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> CheckpointMeta:
    """Write ``model`` (unwrapped) to ``path`` as safetensors with a metadata block; atomic."""
    model = unwrap(model)
    tensors = {
        k: v.detach().to("cpu").contiguous().clone()
        for k, v in clean_state_dict(model.state_dict()).items()
    }
    meta = CheckpointMeta(
        kind=kind_of(model),
        config=dataclasses.asdict(model.config),
        preprocessing=dataclasses.asdict(preprocessing),
        threshold=threshold,
        step=step,
        metrics=metrics or {},
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        code_version=code_version(),
        weights_sha256=weights_digest(tensors),
        extra=extra or {},
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(
        tensors,
        str(tmp),
        metadata={"format": FORMAT, "dermafake": json.dumps(dataclasses.asdict(meta))},
    )
    # safetensors creates the file 0600; a service running as another (non-root) user must
    # still be able to read the weights it is handed, as with any other data file.
    tmp.chmod(0o644)
    tmp.replace(path)
    return meta


def read_meta(path: str | Path) -> CheckpointMeta:
    """The metadata block alone (cheap: the header, not the weights)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from exc
    if raw.get("format") != FORMAT or "dermafake" not in raw:
        raise CheckpointError(f"{path} is not a dermafake checkpoint (no {FORMAT} metadata)")
    try:
        fields = json.loads(raw["dermafake"])
        meta = CheckpointMeta(**fields)
    except (json.JSONDecodeError, TypeError) as exc:
        raise CheckpointError(f"{path} has damaged metadata ({exc})") from exc
    problem = _metadata_problem(meta)
    if problem:
        raise CheckpointError(f"{path} has invalid metadata: {problem}")
    return meta


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _metadata_problem(meta: CheckpointMeta) -> str | None:
    """What is wrong with the metadata's types and ranges, or None: checked before anything is
    built from it, so a bad file fails with a message instead of deep inside a model."""
    for name, kind in (
        ("kind", str),
        ("config", dict),
        ("preprocessing", dict),
        ("metrics", dict),
        ("extra", dict),
        ("step", int),
    ):
        if not isinstance(getattr(meta, name), kind):
            return f"{name} must be a {kind.__name__}, got {type(getattr(meta, name)).__name__}"
    if not _SHA256.fullmatch(str(meta.weights_sha256)):
        return "no weights SHA-256 recorded, so the weights cannot be verified; re-save the model"
    if meta.threshold is not None and not (
        isinstance(meta.threshold, int | float) and 0.0 <= meta.threshold <= 1.0
    ):
        return f"threshold must be a probability in [0, 1], got {meta.threshold!r}"
    pre = meta.preprocessing
    for key in ("mean", "std"):
        values = pre.get(key)
        if not (
            isinstance(values, list | tuple)
            and len(values) == 3
            and all(isinstance(v, int | float) for v in values)
        ):
            return f"preprocessing.{key} must be 3 numbers (R, G, B), got {values!r}"
    if any(v <= 0 for v in pre["std"]):
        return f"preprocessing.std must be positive, got {pre['std']!r}"
    try:
        config = PreprocessConfig.from_dict(pre)
    except (KeyError, TypeError, ValueError) as exc:
        return f"preprocessing: {exc}"
    model_size = meta.config.get("image_size")
    if model_size is not None and model_size != config.image_size:
        return (
            f"the model was built for {model_size} px but its preprocessing makes "
            f"{config.image_size} px inputs"
        )
    return None


def load_model(
    path: str | Path, expected_kind: str | None = None, *, map_location: str = "cpu"
) -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild the model the file describes, load its verified weights; eval mode."""
    path = Path(path)
    meta = read_meta(path)
    if expected_kind is not None and meta.kind != expected_kind:
        raise CheckpointError(f"{path} holds a {meta.kind}, expected a {expected_kind}")
    if meta.kind not in MODEL_KINDS:
        raise CheckpointError(f"{path} holds an unknown model kind {meta.kind!r}")
    config_cls, model_cls = MODEL_KINDS[meta.kind]
    try:
        config = config_cls(**meta.config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: config does not fit {config_cls.__name__} ({exc})") from exc
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iter)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} is truncated or damaged ({exc})") from exc
    if weights_digest(tensors) != meta.weights_sha256:
        raise CheckpointError(
            f"{path}: weights do not match their recorded SHA-256 (corrupted or partly written)"
        )
    model = model_cls(config)
    try:
        model.load_state_dict(clean_state_dict(tensors))
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the {meta.kind} config ({exc})") from exc
    model.to(map_location).eval()
    return model, meta


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Full training state (models, optimizers, step, RNG) for ``--resume``; atomic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a :func:`save_state` file without unpickling arbitrary objects."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"no training state at {path}") from exc
    except Exception as exc:  # pickle/zip errors have many types
        raise CheckpointError(f"cannot read training state {path} ({exc})") from exc
