"""Synthesis: exactly N readable PNGs at the generator's size, reproducible per image seed."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from PIL import Image

from app.api.routes.generate import seeds_for
from models.checkpoint import save_model
from models.noise import MAX_SEED, seed_noise
from models.preprocessing import GAN_MEAN, GAN_STD, PreprocessConfig
from models.sngan import Generator, GeneratorConfig
from training.synthesize import main, noise_for, parse_args


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A small generator whose BatchNorm statistics are not the defaults (as after training)."""
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(image_size=32, channels=8))
    with torch.no_grad():
        for _ in range(3):
            G(torch.randn(16, 128))  # train mode: moves the running statistics
    path = tmp_path_factory.mktemp("gen") / "generator.safetensors"
    save_model(path, G, PreprocessConfig(32, GAN_MEAN, GAN_STD), step=7)
    return path


def synth(checkpoint: Path, out: Path, *args: str) -> Path:
    return main(parse_args(["--checkpoint", str(checkpoint), "--out", str(out), "--quiet", *args]))


def read(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def test_writes_n_readable_pngs_and_a_manifest(checkpoint, tmp_path):
    manifest = synth(checkpoint, tmp_path / "a", "--n", "10", "--seed", "5", "--batch-size", "4")
    files = read(tmp_path / "a")
    assert len(files) == 10
    for name in files:
        with Image.open(tmp_path / "a" / name) as img:
            assert (img.format, img.mode, img.size) == ("PNG", "RGB", (32, 32))
    with manifest.open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["file"], int(r["seed"])) for r in rows] == [
        (f"{i:06d}.png", 5 + i) for i in range(10)
    ]
    assert len(set(files.values())) == 10  # ten different images, not one repeated


def test_same_seed_same_images_whatever_the_batch_size(checkpoint, tmp_path):
    synth(checkpoint, tmp_path / "a", "--n", "7", "--seed", "3", "--batch-size", "7")
    synth(checkpoint, tmp_path / "b", "--n", "7", "--seed", "3", "--batch-size", "2")
    synth(checkpoint, tmp_path / "c", "--n", "7", "--seed", "4", "--batch-size", "7")
    a, b, c = read(tmp_path / "a"), read(tmp_path / "b"), read(tmp_path / "c")
    assert a == b
    # seed 4 shifts the seeds by one: image i of c is image i+1 of a; image 6 is new.
    assert all(a[f"{i + 1:06d}.png"] == c[f"{i:06d}.png"] for i in range(6))
    assert c["000006.png"] not in a.values()


def test_noise_rows_depend_only_on_their_seed():
    whole = noise_for(range(0, 6), seed=11, z_dim=4)
    parts = torch.cat([noise_for(range(0, 2), 11, 4), noise_for(range(2, 6), 11, 4)])
    assert torch.equal(whole, parts)
    assert not torch.equal(whole[0], whole[1])


def test_seeds_wrap_past_the_largest_exactly_like_generate(checkpoint, tmp_path):
    """Past 2**32 - 1 the series goes on at 0, as /generate numbers it: the manifest lists seeds
    the service accepts, and each gives the image the service would give for it."""
    assert seeds_for(MAX_SEED - 1, 3) == [MAX_SEED - 1, MAX_SEED, 0]  # the service's rule
    z = noise_for(range(3), seed=MAX_SEED - 1, z_dim=4)
    assert torch.equal(z, seed_noise([MAX_SEED - 1, MAX_SEED, 0], 4))
    manifest = synth(checkpoint, tmp_path / "w", "--n", "3", "--seed", str(MAX_SEED - 1))
    with manifest.open() as f:
        assert [int(r["seed"]) for r in csv.DictReader(f)] == [MAX_SEED - 1, MAX_SEED, 0]
    synth(checkpoint, tmp_path / "zero", "--n", "1", "--seed", "0")
    assert read(tmp_path / "w")["000002.png"] == read(tmp_path / "zero")["000000.png"]


def test_refuses_to_mix_with_existing_images(checkpoint, tmp_path):
    synth(checkpoint, tmp_path / "a", "--n", "3")
    with pytest.raises(FileExistsError, match="--overwrite"):
        synth(checkpoint, tmp_path / "a", "--n", "2")
    synth(checkpoint, tmp_path / "a", "--n", "2", "--overwrite")
    assert len(read(tmp_path / "a")) == 2
