"""HAM10000 index and lesion-level split.

HAM10000 holds several images of one lesion. Splitting by image would put the same lesion on
both sides of a split, so every split here is by ``lesion_id`` (stratified by diagnosis) with a
fixed seed, and the result is written as a CSV manifest beside every run.
"""

from __future__ import annotations

import argparse
import csv
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from models.preprocessing import InvalidImageError, PreprocessConfig, load_uint8

SPLITS = ("gan_train", "detector_train", "detector_val", "detector_test")
DEFAULT_FRACTIONS = {
    "gan_train": 0.5,
    "detector_train": 0.3,
    "detector_val": 0.1,
    "detector_test": 0.1,
}
# HAM10000's seven diagnoses (``dx``), in a fixed order: the classes of the lesion feature model.
DIAGNOSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")


class DatasetError(RuntimeError):
    """The data folder is not a usable HAM10000 copy; the message says what to fix."""


@dataclass(frozen=True)
class Record:
    image_id: str
    lesion_id: str
    dx: str
    path: Path


@dataclass(frozen=True)
class SplitConfig:
    fractions: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.fractions) - set(SPLITS)
        if unknown:
            raise ValueError(f"unknown split names {sorted(unknown)}; expected {SPLITS}")
        if any(f < 0 for f in self.fractions.values()):
            raise ValueError("split fractions must be >= 0")
        total = sum(self.fractions.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {total}")

    def same_as(self, other: SplitConfig) -> bool:
        """The same lesions in the same parts: equal fractions (as floats) and seed."""
        ours = ({k: float(v) for k, v in self.fractions.items()}, int(self.seed))
        return ours == ({k: float(v) for k, v in other.fractions.items()}, int(other.seed))


def parse_fractions(text: str) -> dict[str, float]:
    """``"0.5,0.3,0.1,0.1"`` -> {split: fraction}: the argparse type of --split-fractions."""
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if len(parts) != len(SPLITS):
        raise argparse.ArgumentTypeError(f"give {len(SPLITS)} fractions for {', '.join(SPLITS)}")
    return dict(zip(SPLITS, parts, strict=True))


def _metadata_file(root: Path) -> Path:
    for name in ("HAM10000_metadata.csv", "HAM10000_metadata"):
        if (root / name).is_file():
            return root / name
    raise DatasetError(
        f"no HAM10000_metadata.csv in {root}. Expected images/ + HAM10000_metadata.csv, or the "
        "official HAM10000_images_part_1/, HAM10000_images_part_2/ + HAM10000_metadata; "
        "fetch a copy with `python -m training.download --out DIR`."
    )


def _image_dirs(root: Path) -> list[Path]:
    dirs = [root / "images", root / "HAM10000_images_part_1", root / "HAM10000_images_part_2"]
    found = [d for d in dirs if d.is_dir()]
    if not found:
        raise DatasetError(
            f"no image folder in {root}: expected images/ or HAM10000_images_part_1/ and _2/"
        )
    return found


def load_index(root: str | Path) -> list[Record]:
    """Every metadata row whose image exists; missing images are an error that lists them."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data folder {root} does not exist")
    meta = _metadata_file(root)
    files: dict[str, Path] = {}
    for d in _image_dirs(root):
        for p in d.iterdir():
            if p.suffix.lower() in IMAGE_SUFFIXES:
                files[p.stem] = p
    records, missing = [], []
    with meta.open(newline="") as f:
        reader = csv.DictReader(f)
        need = {"lesion_id", "image_id", "dx"}
        if not need <= set(reader.fieldnames or ()):
            raise DatasetError(
                f"{meta} lacks columns {sorted(need - set(reader.fieldnames or ()))}"
            )
        for row in reader:
            path = files.get(row["image_id"])
            if path is None:
                missing.append(row["image_id"])
                continue
            records.append(Record(row["image_id"], row["lesion_id"], row["dx"], path))
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DatasetError(f"{len(missing)} images listed in {meta.name} are missing: {shown}")
    if not records:
        raise DatasetError(f"{meta} lists no images")
    return records


def split_by_lesion(records: Sequence[Record], config: SplitConfig) -> dict[str, list[Record]]:
    """Assign whole lesions to splits, stratified by diagnosis, reproducibly for a seed."""
    names = [s for s in SPLITS if s in config.fractions]
    return partition_lesions(records, {s: config.fractions[s] for s in names}, config.seed)


def partition_lesions(
    records: Sequence[Record], fractions: dict[str, float], seed: int
) -> dict[str, list[Record]]:
    """Whole lesions into named parts (in ``fractions``' order), stratified by diagnosis and
    seeded: the project split, and any sub-split of one of its parts (a training program's own
    train/validation lesions)."""
    lesions: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        lesions[r.lesion_id].append(r)
    by_dx: dict[str, list[str]] = defaultdict(list)
    for lesion_id, recs in sorted(lesions.items()):
        by_dx[recs[0].dx].append(lesion_id)
    rng = random.Random(seed)
    out: dict[str, list[Record]] = {s: [] for s in fractions}
    for dx in sorted(by_dx):
        ids = by_dx[dx]
        rng.shuffle(ids)
        bounds, acc = [], 0.0
        for s in fractions:
            acc += fractions[s]
            bounds.append(round(acc * len(ids)))
        start = 0
        for s, end in zip(fractions, bounds, strict=True):
            for lesion_id in ids[start:end]:
                out[s].extend(sorted(lesions[lesion_id], key=lambda r: r.image_id))
            start = end
    return out


def subsample(items: Sequence[Any], limit: int, seed: int) -> list[Any]:
    """A seeded random subset of at most ``limit`` items (0 = all), in the original order.
    (The lesion split is ordered by diagnosis, so "the first N" would be one diagnosis.)"""
    if limit <= 0 or len(items) <= limit:
        return list(items)
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]


def write_manifest(splits: dict[str, list[Record]], path: str | Path) -> Path:
    """CSV (split, image_id, lesion_id, dx, path): what a run trained and tested on."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["split", "image_id", "lesion_id", "dx", "path"])
        for split, recs in splits.items():
            for r in recs:
                w.writerow([split, r.image_id, r.lesion_id, r.dx, str(r.path)])
    return path


def read_manifest(path: str | Path) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = defaultdict(list)
    with Path(path).open(newline="") as f:
        for row in csv.DictReader(f):
            out[row["split"]].append(
                Record(row["image_id"], row["lesion_id"], row["dx"], Path(row["path"]))
            )
    return dict(out)


def load_splits(root: str | Path, config: SplitConfig) -> dict[str, list[Record]]:
    return split_by_lesion(load_index(root), config)


def list_images(folder: str | Path) -> list[Path]:
    """Image files in a folder (sorted, non-recursive), e.g. synthesised PNGs."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"image folder {folder} does not exist")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DatasetError(f"no images in {folder}")
    return paths


def preload(
    paths: Iterable[Path], config: PreprocessConfig, *, desc: str = "decoding", quiet: bool = False
) -> torch.Tensor:
    """Decode images once into a uint8 tensor (N, 3, S, S) through the shared preprocessing path.

    On a small CPU, decoding JPEGs every step costs more than the model; 10k images at 128 px
    take ~0.5 GB as uint8.
    """
    paths = list(paths)
    out = torch.empty((len(paths), 3, config.image_size, config.image_size), dtype=torch.uint8)
    for i, p in enumerate(tqdm(paths, desc=desc, unit="img", disable=quiet, leave=False)):
        try:
            out[i] = load_uint8(p, config)
        except InvalidImageError as exc:
            raise DatasetError(f"unreadable image {p}: {exc}") from exc
    return out
