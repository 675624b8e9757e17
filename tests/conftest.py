"""Shared fixtures: where the shared data lives, and real images from it, or generated stand-ins
when it is absent (so every test also runs on a fresh machine)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.app.conftest import Checkpoints

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``$DERMAFAKE_SHARED_DATA`` or ``../shared/data`` beside the repository."""
    return Path(os.environ.get("DERMAFAKE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def ham_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared HAM10000 copy (200x150) when present; else a small HAM10000-shaped stand-in
    (generated lesion-like JPEGs, official layout and metadata, several images per lesion), so
    the training tests run on a fresh machine too."""
    real = shared_data_dir() / "ham10000-200x150"
    if (real / "HAM10000_metadata.csv").is_file():
        return real
    from tests.training.ham_like import write_ham_like

    return write_ham_like(
        tmp_path_factory.mktemp("ham_like"), lesions_per_dx=40, images_per_lesion=3
    )


@pytest.fixture(scope="session")
def clinic_photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The shared ISIC clinic photos (full-size JPEGs) when present; else a few lesion-like
    JPEGs of a clinic photo's size (tests/training/stand_ins.py)."""
    photos = sorted((shared_data_dir() / "isic-uda1-originals").glob("*.jpg"))
    if photos:
        return photos
    from tests.training.stand_ins import write_clinic_like

    return write_clinic_like(tmp_path_factory.mktemp("clinic_like"))


# Foreign generators' image folders in the shared data: name -> (folder, size, stand-in count).
FOREIGN_GANS = {"dcgan": ("dcgan-cannata-64", 64, 8), "stylegan": ("stylegan-hyper07-128", 128, 16)}


@pytest.fixture(scope="session")
def foreign_gans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Images of generators no detector trained on, by name: the shared generated-eval folders
    when present; else PNGs of randomly initialised SNGAN generators at the same sizes."""
    from tests.training.stand_ins import make_synthetic

    out = {}
    for seed, (name, (folder, size, n)) in enumerate(FOREIGN_GANS.items(), start=40):
        shared = shared_data_dir() / "generated-eval" / folder
        out[name] = (
            shared
            if any(shared.glob("*.png"))
            else make_synthetic(tmp_path_factory.mktemp(name), n=n, size=size, seed=seed)
        )
    return out


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Checkpoints:
    """The small SNGAN generator and the real VGG16 detector the service tests and the
    benchmark tests load, written by the project's own code (tests/app/conftest.py)."""
    from tests.app.conftest import write_checkpoints

    return write_checkpoints(tmp_path_factory.mktemp("checkpoints"))


@pytest.fixture(scope="session")
def int8_npr(ham_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small NPR checkpoint with its int8 file beside it, written by training.quantize
    (tests/app/conftest.py)."""
    from tests.app.conftest import write_int8_npr

    return write_int8_npr(tmp_path_factory.mktemp("int8"), ham_dir)
