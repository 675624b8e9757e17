import shutil
from pathlib import Path

import pytest

from training.data import (
    DatasetError,
    SplitConfig,
    list_images,
    load_index,
    partition_lesions,
    read_manifest,
    split_by_lesion,
    write_manifest,
)


def test_split_is_by_lesion_disjoint_and_complete(ham_dir: Path, tmp_path: Path) -> None:
    records = load_index(ham_dir)
    listed = len((ham_dir / "HAM10000_metadata.csv").read_text().strip().splitlines()) - 1
    assert len(records) == listed  # 10015 for HAM10000
    splits = split_by_lesion(records, SplitConfig(seed=0))
    lesion_sets = {name: {r.lesion_id for r in recs} for name, recs in splits.items()}
    names = list(lesion_sets)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not lesion_sets[a] & lesion_sets[b], f"a lesion is in both {a} and {b}"
    assert sum(len(v) for v in splits.values()) == len(records)
    # roughly the configured fractions of lesions
    n_lesions = len({r.lesion_id for r in records})
    tolerance = 0.02 if n_lesions > 1000 else 0.15  # a hash split of a small stand-in is coarse
    assert abs(len(lesion_sets["gan_train"]) / n_lesions - 0.5) < tolerance
    # the manifest reproduces the split
    back = read_manifest(write_manifest(splits, tmp_path / "split.csv"))
    assert {k: [r.image_id for r in v] for k, v in back.items()} == {
        k: [r.image_id for r in v] for k, v in splits.items()
    }


def test_split_is_reproducible_and_seed_dependent(ham_dir: Path) -> None:
    records = load_index(ham_dir)
    a = split_by_lesion(records, SplitConfig(seed=1))
    b = split_by_lesion(records, SplitConfig(seed=1))
    c = split_by_lesion(records, SplitConfig(seed=2))
    assert a == b
    assert a["detector_test"] != c["detector_test"]


def test_partition_of_a_split_keeps_lesions_whole_and_is_seeded(ham_dir: Path) -> None:
    gan_train = split_by_lesion(load_index(ham_dir), SplitConfig(seed=0))["gan_train"]
    parts = partition_lesions(gan_train, {"train": 0.8, "val": 0.2}, seed=3)
    assert sorted(r.image_id for p in parts.values() for r in p) == sorted(
        r.image_id for r in gan_train
    )
    assert not {r.lesion_id for r in parts["train"]} & {r.lesion_id for r in parts["val"]}
    assert {r.dx for r in parts["val"]} == {r.dx for r in gan_train}  # stratified by diagnosis
    assert parts == partition_lesions(gan_train, {"train": 0.8, "val": 0.2}, seed=3)
    assert parts != partition_lesions(gan_train, {"train": 0.8, "val": 0.2}, seed=4)


def test_official_layout_and_missing_files(ham_dir: Path, tmp_path: Path) -> None:
    meta = (ham_dir / "HAM10000_metadata.csv").read_text().splitlines()
    rows = meta[:7]
    paths = {r.image_id: r.path for r in load_index(ham_dir)}
    root = tmp_path / "official"
    for part in ("HAM10000_images_part_1", "HAM10000_images_part_2"):
        (root / part).mkdir(parents=True)
    (root / "HAM10000_metadata").write_text("\n".join(rows) + "\n")
    for i, row in enumerate(rows[1:]):
        image_id = row.split(",")[1]
        part = "HAM10000_images_part_1" if i % 2 else "HAM10000_images_part_2"
        shutil.copy(paths[image_id], root / part / f"{image_id}.jpg")
    assert len(load_index(root)) == 6
    next((root / "HAM10000_images_part_1").iterdir()).unlink()
    with pytest.raises(DatasetError, match=r"1 images listed .* are missing"):
        load_index(root)


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_index(tmp_path / "nope")
    with pytest.raises(DatasetError, match=r"training\.download"):
        load_index(tmp_path)
    with pytest.raises(DatasetError, match="no images"):
        list_images(tmp_path)
    with pytest.raises(ValueError, match="sum to 1"):
        SplitConfig(fractions={"gan_train": 0.5, "detector_test": 0.2})


def test_same_split_survives_a_json_round_trip_and_tells_splits_apart() -> None:
    """A split read back from a run's config.json (or written with integer fractions) is the
    same split; another seed or other fractions are not."""
    import json

    ours = SplitConfig()
    back = json.loads(json.dumps({"fractions": ours.fractions, "seed": ours.seed}))
    assert SplitConfig(back["fractions"], back["seed"]).same_as(ours)
    whole = {"gan_train": 1, "detector_train": 0, "detector_val": 0, "detector_test": 0}
    assert SplitConfig(whole).same_as(SplitConfig({k: float(v) for k, v in whole.items()}))
    assert not SplitConfig(ours.fractions, 1).same_as(ours)
    other = {**ours.fractions, "gan_train": 0.4, "detector_train": 0.4}
    assert not SplitConfig(other, ours.seed).same_as(ours)
