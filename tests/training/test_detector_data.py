import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.preprocessing import PreprocessConfig, load_uint8
from training.data import SplitConfig, list_images, load_splits, read_manifest
from training.detector_data import (
    DetectorData,
    ImageBank,
    Sources,
    detector_sets,
    manifest_key,
    parse_named_dir,
    split_synthetic,
    unique_named,
)

SPLITS = ("train", "val", "test")
LIMITS = {"train": 12, "val": 4, "test": 3}


def _write_pngs(folder: Path, prefix: str, n: int, size: tuple[int, int], seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        p = folder / f"{prefix}_{i:03d}.png"
        Image.fromarray(arr).save(p, compress_level=1)
        paths.append(p)
    return paths


# ---------------------------------------------------------------- Sources and flag parsing


def test_sources_refuse_a_name_both_trained_and_held_out() -> None:
    with pytest.raises(ValueError, match="both"):
        Sources({"a": Path("x"), "b": Path("y")}, {"b": Path("z")})


def test_sources_need_a_training_source() -> None:
    with pytest.raises(ValueError):
        Sources({}, {"b": Path("z")})
    with pytest.raises(ValueError):
        Sources()


def test_sources_round_trip_and_items() -> None:
    s = Sources({"ae": Path("/f/ae"), "gan": Path("/f/gan")}, {"dcgan": Path("/f/dcgan")})
    d = s.to_dict()
    assert d == {"train": {"ae": "/f/ae", "gan": "/f/gan"}, "held_out": {"dcgan": "/f/dcgan"}}
    assert Sources.from_dict(d) == s
    assert s.items() == [
        ("train", "ae", Path("/f/ae")),
        ("train", "gan", Path("/f/gan")),
        ("held_out", "dcgan", Path("/f/dcgan")),
    ]


def test_unique_named() -> None:
    pairs = [("a", Path("x")), ("b", Path("y"))]
    assert unique_named(pairs, "--fake") == {"a": Path("x"), "b": Path("y")}
    with pytest.raises(SystemExit, match="--fake"):
        unique_named([("a", Path("x")), ("a", Path("y"))], "--fake")


def test_parse_named_dir() -> None:
    assert parse_named_dir("sngan=runs/fakes") == ("sngan", Path("runs/fakes"))
    assert parse_named_dir("a=b=c") == ("a", Path("b=c"))
    for bad in ("noequals", "=dir", "name="):
        with pytest.raises(argparse.ArgumentTypeError, match="NAME=DIR"):
            parse_named_dir(bad)


def test_split_synthetic_is_by_name_and_stable(tmp_path: Path) -> None:
    names = [Path(f"/x/img_{i:03d}.png") for i in range(300)]
    parts = split_synthetic(names)
    assert sorted(p for s in SPLITS for p in parts[s]) == sorted(names)
    assert 0.6 < len(parts["train"]) / 300 < 0.8
    # adding files never moves the others; the folder does not matter, only the name
    more = split_synthetic([Path("/elsewhere") / p.name for p in names[:100]])
    for s in SPLITS:
        assert [p.name for p in more[s]] == [p.name for p in parts[s] if p in names[:100]]
    with pytest.raises(ValueError):
        split_synthetic(names, (0.5, 0.5, 0.5))


# ---------------------------------------------------------------- detector_sets on real data


@pytest.fixture(scope="module")
def fakes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fakes")
    _write_pngs(root / "ae", "ae", 60, (8, 8), seed=0)
    _write_pngs(root / "gan", "gan", 60, (8, 8), seed=1)
    return {"ae": root / "ae", "gan": root / "gan"}


@pytest.fixture(scope="module")
def built(ham_dir: Path, fakes: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    manifest = tmp_path_factory.mktemp("run") / "split.csv"
    sources = Sources({"ae": fakes["ae"]}, {"gan": fakes["gan"]})
    sets = detector_sets(ham_dir, sources, SplitConfig(), limits=LIMITS, seed=3, manifest=manifest)
    return sets, manifest


@pytest.fixture(scope="module")
def real_splits(ham_dir: Path):
    return load_splits(ham_dir, SplitConfig())


def test_held_out_source_only_in_val_and_test(built, fakes) -> None:
    sets, _ = built
    assert set(sets) == set(SPLITS)
    assert all(isinstance(d, DetectorData) for d in sets.values())
    assert sets["train"].of_source("gan") == []
    assert "gan" not in sets["train"].source
    assert len(sets["train"].of_source("ae")) > 0
    for split in ("val", "test"):
        assert len(sets[split].of_source("gan")) > 0
        assert len(sets[split].of_source("ae")) > 0
        assert all(p.parent == fakes["gan"] for p in sets[split].of_source("gan"))
    for d in sets.values():
        assert len(d.source) == len(d.synthetic)


def test_each_source_is_capped_per_split(built, fakes, real_splits) -> None:
    sets, _ = built
    for name, folder in fakes.items():
        parts = split_synthetic(list_images(folder))
        for split in SPLITS:
            got = sets[split].of_source(name)
            assert set(got) <= set(parts[split])
            if name == "gan" and split == "train":
                continue
            assert len(got) == min(LIMITS[split], len(parts[split]))
    # the caps bind somewhere (otherwise this test would prove nothing)
    assert len(split_synthetic(list_images(fakes["ae"]))["train"]) > LIMITS["train"]
    for split in SPLITS:
        assert len(sets[split].real) == LIMITS[split]
        assert len(real_splits[f"detector_{split}"]) > LIMITS[split]


def test_no_file_in_two_splits(built) -> None:
    sets, _ = built
    seen: dict[Path, str] = {}
    for split, d in sets.items():
        files = d.real + d.synthetic
        assert len(set(files)) == len(files), f"a file twice in {split}"
        for p in files:
            assert p not in seen, f"{p} in {seen[p]} and {split}"
            seen[p] = split


def test_real_images_only_from_detector_lesions(built, real_splits) -> None:
    sets, _ = built
    for split in SPLITS:
        allowed = {r.path for r in real_splits[f"detector_{split}"]}
        assert set(sets[split].real) <= allowed
    gan_train = {r.path for r in real_splits["gan_train"]}
    assert not gan_train & {p for d in sets.values() for p in d.real}
    # a real lesion stays on one side: no lesion id in two splits
    lesion_of = {r.path: r.lesion_id for recs in real_splits.values() for r in recs}
    lesions = {s: {lesion_of[p] for p in sets[s].real} for s in SPLITS}
    assert not lesions["train"] & lesions["val"]
    assert not lesions["train"] & lesions["test"]
    assert not lesions["val"] & lesions["test"]


def test_manifest_names_every_source_split(built, fakes) -> None:
    sets, manifest = built
    rows = read_manifest(manifest)
    for real in ("detector_train", "detector_val", "detector_test"):
        assert real in rows
    for name, folder in fakes.items():
        parts = split_synthetic(list_images(folder))
        role = "train" if name == "ae" else "held_out"
        for split in SPLITS:
            recs = rows[manifest_key(name, split)]
            assert [r.path for r in recs] == parts[split]
            used = {r.path for r in recs if r.dx != "unused"}
            assert used == set(sets[split].of_source(name))
            assert {r.dx for r in recs} <= {role, "unused"}
    # held out: every train row is there, marked unused
    held_train = rows[manifest_key("gan", "train")]
    assert len(held_train) > 0 and {r.dx for r in held_train} == {"unused"}
    assert {r.dx for r in rows[manifest_key("gan", "val")]} >= {"held_out"}


# ---------------------------------------------------------------- ImageBank


@pytest.fixture(scope="module")
def bank_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("bank")
    return (
        _write_pngs(root, "big", 3, (100, 90), seed=5)  # canvas 64x64
        + _write_pngs(root, "mid", 2, (40, 48), seed=6)  # canvas 40x40
        + _write_pngs(root, "exact", 1, (32, 32), seed=7)  # canvas = the input size
    )


def _windows(canvas: torch.Tensor, size: int) -> list[tuple[int, int]]:
    """Every (top, left) where ``crop`` could have come from in ``canvas``."""
    h, w = canvas.shape[1:]
    return [(t, le) for t in range(h - size + 1) for le in range(w - size + 1)]


def _offset_of(crop: torch.Tensor, canvas: torch.Tensor) -> tuple[int, int] | None:
    size = crop.shape[-1]
    for t, le in _windows(canvas, size):
        if torch.equal(canvas[:, t : t + size, le : le + size], crop):
            return t, le
    return None


def test_image_bank_native_crops_are_windows_of_the_canvas(bank_files: list[Path]) -> None:
    cfg = PreprocessConfig(image_size=32, crop="native")
    bank = ImageBank(bank_files, cfg, desc="test", quiet=True)
    assert len(bank) == len(bank_files)
    assert [tuple(im.shape) for im in bank.images] == [(3, 64, 64)] * 3 + [(3, 40, 40)] * 2 + [
        (3, 32, 32)
    ]
    assert all(im.dtype == torch.uint8 for im in bank.images)
    indices = torch.tensor([0, 1, 2, 3, 4, 5, 0, 0, 3])
    offsets: set[tuple[int, int]] = set()
    for seed in range(3):
        out = bank.batch(indices, torch.Generator().manual_seed(seed))
        assert out.shape == (len(indices), 3, 32, 32) and out.dtype == torch.uint8
        for j, i in enumerate(indices.tolist()):
            where = _offset_of(out[j], bank.images[i])
            assert where is not None, f"crop {j} is not a window of image {i}"
            if i in (0, 1, 2):
                offsets.add(where)
        assert torch.equal(out[5], bank.images[5])  # already 32x32: the whole image
    assert len(offsets) > 3  # random windows, not always the centre


def test_image_bank_same_seed_same_batch(bank_files: list[Path]) -> None:
    cfg = PreprocessConfig(image_size=32, crop="native")
    bank = ImageBank(bank_files, cfg, desc="t", quiet=True)
    idx = torch.tensor([0, 1, 2, 3, 4])
    a = bank.batch(idx, torch.Generator().manual_seed(11))
    b = bank.batch(idx, torch.Generator().manual_seed(11))
    c = bank.batch(idx, torch.Generator().manual_seed(12))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_image_bank_center_square_returns_stored_images(bank_files: list[Path]) -> None:
    cfg = PreprocessConfig(image_size=32)
    bank = ImageBank(bank_files, cfg, desc="t", quiet=True)
    for p, im in zip(bank_files, bank.images, strict=True):
        assert torch.equal(im, load_uint8(p, cfg))
    idx = torch.tensor([5, 0, 3, 0])
    out = bank.batch(idx, torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 32, 32)
    for j, i in enumerate(idx.tolist()):
        assert torch.equal(out[j], bank.images[i])
