"""What every detector trains, validates and is tested on: real lesions and named fake sources.

Real images come only from the ``detector_train`` / ``detector_val`` / ``detector_test`` lesions
of ``training.data.split_by_lesion`` (the GAN's and the fake sources' ``gan_train`` lesions never
reach a detector). Each fake source is a folder of images (``training.synthesize``,
``training.fakes``) split into train/val/test by a hash of the file name
(:func:`split_synthetic`), so adding files never moves the others and the evaluation finds the
same held-out images. Sources have roles:

- ``train`` sources: their train split is trained on, their val split validates;
- ``held_out`` sources (leave-one-source-out): never trained on; their val split chooses the
  checkpoint and stops training, their test split measures transfer to a generator the model
  never saw.

Everything goes into ``RUN_DIR/split.csv`` (fake rows labelled by :func:`manifest_key`).
Positive class = synthetic.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from models.checkpoint import CheckpointMeta
from models.preprocessing import (
    InvalidImageError,
    PreprocessConfig,
    load_rgb,
    model_canvas,
    to_pil,
    to_uint8_tensor,
    views_from_canvas,
)
from training.augment import perturb
from training.data import (
    DatasetError,
    Record,
    SplitConfig,
    list_images,
    load_splits,
    subsample,
    write_manifest,
)

SYNTHETIC_SPLITS = ("train", "val", "test")
DEFAULT_SYNTHETIC_FRACTIONS = (0.7, 0.15, 0.15)
SYNTHETIC_SALT = "dermafake-synthetic-split"
ROLES = ("train", "held_out")


def parse_named_dir(text: str) -> tuple[str, Path]:
    """``NAME=DIR`` -> (NAME, DIR), for --fake, --held-out, --foreign and --real-extra flags."""
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {text!r}")
    return name, Path(folder)


def add_named_dirs(parser: argparse.ArgumentParser, flag: str, help: str, **kwargs: Any) -> None:
    """A repeatable ``NAME=DIR`` flag (a list of pairs; :func:`unique_named` makes it a dict)."""
    parser.add_argument(
        flag,
        type=parse_named_dir,
        action="append",
        default=[],
        metavar="NAME=DIR",
        help=help,
        **kwargs,
    )


def unique_named(pairs: list[tuple[str, Path]], flag: str) -> dict[str, Path]:
    """NAME=DIR pairs as a dict; a repeated name is a usage error naming the flag."""
    named = dict(pairs)
    if len(named) != len(pairs):
        raise SystemExit(f"{flag} names must be unique")
    return named


def split_synthetic(
    paths: Sequence[Path], fractions: Sequence[float] = DEFAULT_SYNTHETIC_FRACTIONS
) -> dict[str, list[Path]]:
    """Deterministic train/val/test split of synthetic files by a SHA-256 of the file name."""
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"synthetic fractions must be three numbers summing to 1: {fractions}")
    bounds = np.cumsum(fractions)
    out: dict[str, list[Path]] = {s: [] for s in SYNTHETIC_SPLITS}
    for p in sorted(paths):
        h = hashlib.sha256(f"{SYNTHETIC_SALT}:{p.name}".encode()).digest()
        u = int.from_bytes(h[:8], "big") / 2**64
        idx = int(np.searchsorted(bounds, u, side="right"))
        out[SYNTHETIC_SPLITS[min(idx, 2)]].append(p)
    return out


@dataclass(frozen=True)
class Sources:
    """Named fake-source folders by role; the names travel in checkpoints and reports."""

    train: dict[str, Path] = field(default_factory=dict)
    held_out: dict[str, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        both = set(self.train) & set(self.held_out)
        if both:
            raise ValueError(f"sources {sorted(both)} are both trained on and held out")
        if not self.train:
            raise ValueError("need at least one fake source to train on (--fake NAME=DIR)")

    def items(self) -> list[tuple[str, str, Path]]:
        """(role, name, folder) for every source, trained ones first."""
        return [("train", n, f) for n, f in self.train.items()] + [
            ("held_out", n, f) for n, f in self.held_out.items()
        ]

    def to_dict(self) -> dict[str, dict[str, str]]:
        return {
            "train": {n: str(f) for n, f in self.train.items()},
            "held_out": {n: str(f) for n, f in self.held_out.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sources:
        return cls(
            {n: Path(f) for n, f in d.get("train", {}).items()},
            {n: Path(f) for n, f in d.get("held_out", {}).items()},
        )


@dataclass
class DetectorData:
    """Real and synthetic paths of one split, with the source name of every synthetic image."""

    real: list[Path]
    synthetic: list[Path]
    source: list[str] = field(default_factory=list)

    def of_source(self, name: str) -> list[Path]:
        return [p for p, s in zip(self.synthetic, self.source, strict=True) if s == name]


def detector_sets(
    data: Path,
    sources: Sources,
    split: SplitConfig,
    synthetic_fractions: Sequence[float] = DEFAULT_SYNTHETIC_FRACTIONS,
    limits: dict[str, int] | None = None,
    seed: int = 0,
    manifest: Path | None = None,
) -> dict[str, DetectorData]:
    """{"train","val","test"} -> real ``detector_*`` paths and the sources' synthetic paths.

    ``limits`` caps the real images of a split and the images of each source in it (seeded).
    Held-out sources contribute nothing to ``train``.
    """
    limits = limits or {}
    splits = load_splits(data, split)
    sets = {
        name: DetectorData(
            [
                r.path
                for r in subsample(splits.get(f"detector_{name}", []), limits.get(name, 0), seed)
            ],
            [],
        )
        for name in SYNTHETIC_SPLITS
    }
    rows: dict[str, list[Record]] = dict(splits)
    for k, (role, source, folder) in enumerate(sources.items()):
        parts = split_synthetic(list_images(folder), synthetic_fractions)
        for name in SYNTHETIC_SPLITS:
            chosen = [] if role == "held_out" and name == "train" else parts[name]
            chosen = subsample(chosen, limits.get(name, 0), seed + 1 + k)
            sets[name].synthetic += chosen
            sets[name].source += [source] * len(chosen)
            used = set(chosen)
            rows[manifest_key(source, name)] = [
                Record(p.stem, "", f"{role}" if p in used else "unused", p) for p in parts[name]
            ]
    if manifest is not None:
        write_manifest(rows, manifest)
    return sets


def manifest_key(source: str, split: str) -> str:
    """The split.csv label of a fake source's split: ``fake:<source>:<split>``, which no real
    split (``gan_train``, ``detector_*``) can collide with whatever the source is called."""
    return f"fake:{source}:{split}"


def load_canvas(path: Path, config: PreprocessConfig) -> torch.Tensor:
    """uint8 (3, H, W): ``models.preprocessing.model_canvas`` of an image file, decoded once."""
    try:
        img = load_rgb(path, min_side=config.decode_min_side)
    except InvalidImageError as exc:
        raise DatasetError(f"unreadable image {path}: {exc}") from exc
    return to_uint8_tensor(model_canvas(img, config))


def views_of(canvas: torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    """uint8 (V, 3, S, S) from a :func:`load_canvas` tensor (perturbed or not): the views the
    model scores, exactly as ``models.preprocessing.model_views`` cuts them from an upload."""
    return views_from_canvas(to_pil(canvas), config)


def perturbed_views(
    canvases: Sequence[torch.Tensor], config: PreprocessConfig, condition: str
) -> torch.Tensor:
    """Views (N, V, 3, S, S) after a ``training.augment.PERTURBATIONS`` condition applied to each
    whole canvas: a resize or re-encoding happens to the photo, before any crop."""
    return torch.stack([views_of(perturb(c[None], condition)[0], config) for c in canvases])


def load_views(
    paths: Sequence[Path], config: PreprocessConfig, *, desc: str = "decoding", quiet: bool = False
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(canvases, views (N, V, 3, S, S)) of many images, for validation and evaluation."""
    canvases = [load_canvas(p, config) for p in tqdm(paths, desc=desc, disable=quiet, leave=False)]
    if not canvases:
        return [], torch.empty((0, 1, 3, config.image_size, config.image_size), dtype=torch.uint8)
    return canvases, torch.stack([views_of(c, config) for c in canvases])


class ImageBank:
    """Training images decoded once, kept as uint8, cut to the model's input size per batch.

    ``center_square`` models get exactly what the service gives them (decode, crop, resize).
    ``native`` models keep a canvas up to twice their input size and take a random crop at
    native resolution each time: more views of each image, and no resampling of either class.
    """

    def __init__(self, paths: Sequence[Path], config: PreprocessConfig, *, desc: str, quiet: bool):
        self.config = config
        self.images = [
            load_canvas(p, config) for p in tqdm(paths, desc=desc, disable=quiet, leave=False)
        ]

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, indices: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """uint8 (k, 3, S, S): a random S x S window of each chosen image (the whole image when
        it is already S x S)."""
        size = self.config.image_size
        out = torch.empty((len(indices), 3, size, size), dtype=torch.uint8)
        for j, i in enumerate(indices.tolist()):
            img = self.images[i]
            h, w = img.shape[1:]
            top = int(torch.randint(0, h - size + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - size + 1, (1,), generator=generator))
            out[j] = img[:, top : top + size, left : left + size]
        return out


def split_of(meta: CheckpointMeta) -> tuple[SplitConfig, tuple[float, ...]]:
    """The lesion split and the fake sources' split fractions a checkpoint was trained with,
    from its metadata (defaults for checkpoints from before they were recorded)."""
    extra = meta.extra or {}
    info = extra.get("split", {})
    split = SplitConfig(
        dict(info["fractions"]) if "fractions" in info else SplitConfig().fractions,
        int(info.get("seed", 0)),
    )
    fractions = tuple(
        extra.get("synthetic_split", {}).get("fractions", DEFAULT_SYNTHETIC_FRACTIONS)
    )
    return split, fractions


def held_out_test(
    meta: CheckpointMeta, data: Path, synthetic: Path | None = None, limit: int = 0, seed: int = 0
) -> DetectorData:
    """The test images a checkpoint never saw: its lesion split's ``detector_test`` photos and
    the test split of every source it names (plus ``synthetic`` as ``sngan``, for checkpoints
    from before named sources)."""
    return checkpoint_sets(meta, data, synthetic, {"test": limit}, seed)["test"]


def checkpoint_sets(
    meta: CheckpointMeta,
    data: Path,
    synthetic: Path | None = None,
    limits: dict[str, int] | None = None,
    seed: int = 0,
) -> dict[str, DetectorData]:
    """The train/val/test images of a checkpoint's own split (real lesions and every fake
    source it names), rebuilt from its metadata; ``limits`` caps each split per class."""
    info = (meta.extra or {}).get("sources")
    named = dict(Sources.from_dict(info).train) if info else {}
    if info:
        named.update(Sources.from_dict(info).held_out)
    if synthetic is not None:
        named.setdefault("sngan", synthetic)
    if not named:
        raise ValueError("the checkpoint names no fake sources: pass the synthetic folder")
    split, fractions = split_of(meta)
    return detector_sets(data, Sources(named), split, fractions, limits, seed)
