"""Fake sources: a tiny real run on HAM10000, its files, its split discipline, its seeds."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from models.checkpoint import load_model
from models.preprocessing import GAN_MEAN, GAN_STD, PreprocessConfig
from models.upsamplers import Autoencoder, UpsamplerConfig
from training.data import SplitConfig, load_splits, subsample
from training.fakes import (
    DEFAULT_ZOO,
    MANIFEST_FIELDS,
    Budget,
    main,
    parse_args,
    parse_zoo_variant,
    rebuild,
    train_until,
)

ZOO = ("transposed-2", "pixel_shuffle-1")
LIMIT = 24
SEED = 0  # the default --seed, which also seeds the --limit-images subset
TINY = [
    "--zoo-steps", "3", "--zoo-seconds", "0", "--zoo-width", "4", "--zoo-batch-size", "8",
    "--dcgan-size", "32", "--dcgan-steps", "3", "--dcgan-seconds", "0",
    "--dcgan-batch-size", "8", "--limit-images", str(LIMIT), "--per-source", "4",
    "--threads", "1", "--quiet",
]  # fmt: skip


def run(ham_dir: Path, out: Path, zoo: tuple[str, ...] = ZOO, *extra: str) -> Path:
    argv = ["--data", str(ham_dir), "--out", str(out), "--zoo", ",".join(zoo), *TINY, *extra]
    return main(parse_args(argv))


def manifest(folder: Path) -> list[dict[str, str]]:
    with (folder / "manifest.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def pngs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


@pytest.fixture(scope="module")
def built(ham_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fakes")
    run(ham_dir, out)
    return out


def test_every_source_has_its_folder_files_and_checkpoint(built: Path) -> None:
    listing = json.loads((built / "sources.json").read_text())
    names = [s["name"] for s in listing["sources"]]
    assert names == ["zoo-transposed-2", "zoo-pixel_shuffle-1", "dcgan-32"]
    assert json.loads((built / "config.json").read_text())["zoo"] == list(ZOO)
    for entry in listing["sources"]:
        folder = built / entry["folder"]
        info = json.loads((folder / "source.json").read_text())
        assert info["name"] == entry["name"] and info["images"] == 4
        assert info["family"] == ("gan" if entry["name"].startswith("dcgan") else "zoo")
        assert info["split"]["name"] == "gan_train" and info["split"]["images"] == LIMIT
        assert info["train"]["steps"] == 3 and info["train"]["stopped_by"] == "steps"
        assert info["train"]["final_loss"] and info["train"]["seconds"] > 0
        model, meta = load_model(folder / info["checkpoint"], info["kind"])
        assert meta.step == 3 and meta.extra["source"] == entry["name"]
        assert info["model"] == meta.config == dataclasses.asdict(model.config)
        rows = manifest(folder)
        assert list(rows[0]) == list(MANIFEST_FIELDS)
        assert len(rows) == 4 and {r["source"] for r in rows} == {entry["name"]}
        assert sorted(r["file"] for r in rows) == sorted(pngs(folder))
    dcgan = manifest(built / "dcgan-32")
    assert [int(r["seed"]) for r in dcgan] == [0, 1, 2, 3]
    for r in dcgan:
        with Image.open(built / "dcgan-32" / r["file"]) as img:
            assert (img.format, img.mode, img.size) == ("PNG", "RGB", (32, 32))


def test_zoo_rebuilds_gan_train_photos_only_at_native_size(ham_dir: Path, built: Path) -> None:
    splits = load_splits(ham_dir, SplitConfig())
    # the seeded subset --limit-images takes (all diagnoses, not the first N rows)
    by_id = {r.image_id: r for r in subsample(splits["gan_train"], LIMIT, SEED)}
    held_out = {r.image_id for s in splits if s != "gan_train" for r in splits[s]}
    for variant in ZOO:
        folder = built / f"zoo-{variant}"
        rows = manifest(folder)
        parents = {r["parent_image_id"] for r in rows}
        assert len(parents) == 4
        assert parents <= set(by_id), "a zoo image was rebuilt from outside the training images"
        assert not parents & held_out, "a detector-split photo leaked into the fake sources"
        for r in rows:
            parent = by_id[r["parent_image_id"]]
            assert r["parent_lesion_id"] == parent.lesion_id and r["family"] == "zoo"
            with Image.open(folder / r["file"]) as img, Image.open(parent.path) as original:
                assert (img.format, img.size) == ("PNG", original.size)  # native, no resize


def test_same_config_same_images_and_sources_independent(ham_dir: Path, built: Path, tmp_path):
    # Only one of the zoo variants this time: its source seed depends on its name alone.
    run(ham_dir, tmp_path, ("pixel_shuffle-1",))
    for name in ("zoo-pixel_shuffle-1", "dcgan-32"):
        assert pngs(tmp_path / name) == pngs(built / name), name
    assert pngs(built / "zoo-transposed-2") != pngs(built / "zoo-pixel_shuffle-1")
    assert not (tmp_path / "zoo-transposed-2").exists()


def test_refuses_existing_sources_before_training(ham_dir: Path, built: Path) -> None:
    with pytest.raises(FileExistsError, match="--overwrite"):
        run(ham_dir, built)


def test_rebuild_pads_and_crops_back_to_any_native_size() -> None:
    torch.manual_seed(0)
    model = Autoencoder(UpsamplerConfig("nearest_conv", 3, width=4)).eval()
    images = torch.randint(0, 256, (2, 3, 150, 200), dtype=torch.uint8)  # 150 % 8 != 0
    out = rebuild(model, images, PreprocessConfig(64, GAN_MEAN, GAN_STD))
    assert out.shape == images.shape and out.dtype == torch.uint8


def test_budget_stops_by_steps_or_time() -> None:
    calls: list[int] = []
    result = train_until(Budget(steps=5), lambda k: calls.append(k) or {"l": float(k)}, "t", True)
    assert calls == [0, 1, 2, 3, 4] and result.steps == 5 and result.stopped_by == "steps"
    assert result.first == {"l": 2.0} and result.final == {"l": 2.0}
    result = train_until(Budget(seconds=0.05), lambda k: {"l": 0.0}, "t", True)
    assert result.stopped_by == "seconds" and result.seconds >= 0.05 and result.steps >= 1
    with pytest.raises(ValueError, match="cap"):
        Budget()


def test_flags_and_their_validation(tmp_path: Path) -> None:
    cfg = parse_args(["--data", str(tmp_path), "--out", str(tmp_path / "o")])
    assert cfg.zoo == DEFAULT_ZOO and cfg.sources == ("zoo", "dcgan") and cfg.per_source == 600
    assert (cfg.crop, cfg.zoo_seconds, cfg.dcgan_seconds, cfg.dcgan_size) == (64, 45, 240, 64)
    assert cfg.split_fractions["gan_train"] == 0.5
    assert parse_zoo_variant("bilinear_conv-3") == UpsamplerConfig("bilinear_conv", 3)
    none = parse_args(["--data", ".", "--out", "o", "--zoo", "", "--sources", "zoo"])
    assert none.zoo == ()
    for bad in (["--zoo", "bicubic-2"], ["--zoo", "transposed-4"], ["--sources", "gan"],
                ["--zoo-seconds", "0"], ["--split-fractions", "0.5,0.5"]):  # fmt: skip
        with pytest.raises(SystemExit):
            parse_args(["--data", ".", "--out", "o", *bad])
    with pytest.raises(ValueError, match="nothing to build"):
        main(none)
