"""Shared fixtures: where the shared data lives, and small real images from it."""

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
def shared_data() -> Path:
    root = shared_data_dir()
    if not (root / "ham10000-200x150" / "HAM10000_metadata.csv").is_file():
        pytest.skip(
            f"shared data not found at {root}: set DERMAFAKE_SHARED_DATA to a folder holding "
            "ham10000-200x150/ (see README, 'Data')"
        )
    return root


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
def clinic_photos(shared_data: Path) -> list[Path]:
    photos = sorted((shared_data / "isic-uda1-originals").glob("*.jpg"))
    if not photos:
        pytest.skip(f"no clinic photos in {shared_data / 'isic-uda1-originals'}")
    return photos


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
