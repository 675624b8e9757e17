"""training.download without the internet: listing parsing, verification, unpacking, layout,
resuming and failing against a local Dataverse-shaped server."""

from __future__ import annotations

import hashlib
import io
import shutil
import zipfile

import pytest
from PIL import Image

from training.data import DatasetError
from training.download import (
    DownloadConfig,
    RemoteFile,
    check,
    parse_args,
    select_files,
    unpack,
    verify,
)
from training.download import main as download_main

LISTING = {
    "data": {
        "latestVersion": {
            "files": [
                {"dataFile": {"id": 1, "filename": "HAM10000_images_part_1.zip",
                              "filesize": 100, "md5": "a" * 32}},
                {"dataFile": {"id": 2, "filename": "HAM10000_images_part_2.zip",
                              "filesize": 200, "checksum": {"type": "MD5", "value": "b" * 32}}},
                {"dataFile": {"id": 3, "filename": "HAM10000_metadata.tab", "filesize": 50,
                              "originalFileFormat": "text/csv", "originalFileSize": 60,
                              "originalFileName": "HAM10000_metadata.csv", "md5": "c" * 32}},
                {"dataFile": {"id": 4, "filename": "ISIC2018_Task3_Test_Images.zip",
                              "filesize": 999}},
            ]
        }
    }
}  # fmt: skip


def test_select_files_reads_the_dataverse_listing():
    files = select_files(LISTING)
    assert [f.name for f in files] == [
        "HAM10000_images_part_1",
        "HAM10000_images_part_2",
        "HAM10000_metadata",
    ]
    assert files[1].md5 == "b" * 32
    meta = files[2]
    assert (meta.tabular, meta.size) == (True, 60)  # the original CSV, not the .tab rendering
    assert meta.url("https://x").endswith("/api/access/datafile/3?format=original")
    assert files[0].url("https://x") == "https://x/api/access/datafile/1"
    with pytest.raises(DatasetError, match="lacks"):
        select_files(
            {"data": {"latestVersion": {"files": LISTING["data"]["latestVersion"]["files"][:2]}}}
        )


def test_verify_checks_size_and_md5(tmp_path):
    f = tmp_path / "x.zip"
    f.write_bytes(b"hello")
    good = RemoteFile("x", 1, 5, hashlib.md5(b"hello").hexdigest(), False)
    verify(f, good)
    with pytest.raises(DatasetError, match="bytes"):
        verify(f, RemoteFile("x", 1, 6, good.md5, False))
    with pytest.raises(DatasetError, match="MD5"):
        verify(f, RemoteFile("x", 1, 5, "0" * 32, False))


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 120, 90)).save(buf, format="JPEG")
    return buf.getvalue()


def test_unpack_into_the_official_layout_that_training_data_reads(tmp_path):
    for part, ids in (("1", ["ISIC_0000001"]), ("2", ["ISIC_0000002", "ISIC_0000003"])):
        zpath = tmp_path / f"HAM10000_images_part_{part}.zip"
        with zipfile.ZipFile(zpath, "w") as z:
            for image_id in ids:
                z.writestr(f"../evil/{image_id}.jpg", _jpeg())  # flattened: no path traversal
            z.writestr("readme.txt", "not an image")
        assert unpack(zpath, tmp_path / "out" / f"HAM10000_images_part_{part}") == len(ids)
    assert not (tmp_path / "evil").exists()
    root = tmp_path / "out"
    with pytest.raises(DatasetError, match="metadata"):
        check(root)
    (root / "HAM10000_metadata.csv").write_text(
        "lesion_id,image_id,dx\nHAM_1,ISIC_0000001,nv\nHAM_1,ISIC_0000002,nv\nHAM_2,ISIC_0000003,mel\n"
    )
    assert check(root) == 3


def test_arguments():
    assert parse_args(["--out", "d"]).source == "https://dataverse.harvard.edu"
    assert str(parse_args(["--check", "d"]).check) == "d"
    with pytest.raises(SystemExit):
        parse_args([])


def test_fetch_resumes_a_partial_download_and_checks_md5(tmp_path):
    from tests.training.ham_like import dataverse_listing, ham_archive, serve
    from training.download import fetch

    files = ham_archive(lesions_per_dx=2)
    remote = next(
        f for f in select_files(dataverse_listing(files)) if f.name == "HAM10000_images_part_1"
    )
    data = files["HAM10000_images_part_1.zip"]
    dest = tmp_path / "HAM10000_images_part_1.zip"
    (tmp_path / (dest.name + ".part")).write_bytes(data[: len(data) // 2])  # an interrupted run
    with serve(files) as server:
        fetch(remote.url(server.url), dest, remote)
    assert dest.read_bytes() == data
    assert server.requests[-1][2] == f"bytes={len(data) // 2}-"  # only the rest was asked for
    assert not (tmp_path / (dest.name + ".part")).exists()
    dest.unlink()
    (tmp_path / (dest.name + ".part")).write_bytes(b"garbage" + data[7:])  # a corrupt part
    with serve(files) as server, pytest.raises(DatasetError, match=r"MD5.*removed it; run again"):
        fetch(remote.url(server.url), dest, remote)
    assert not (tmp_path / (dest.name + ".part")).exists()  # the next run starts over
    with serve(files) as server:
        fetch(remote.url(server.url), dest, remote)
    assert dest.read_bytes() == data


def test_fetch_weights_checks_the_hash_in_the_file_name(tmp_path):
    from tests.training.ham_like import serve, vgg16_shaped_weights, weights_name
    from training.download import fetch_weights

    weights = vgg16_shaped_weights()
    good, bad = weights_name(weights), "vgg16-00000000.pth"
    with serve({}, extra={good: weights, bad: weights}) as server:
        path = fetch_weights(f"{server.url}/{good}", tmp_path / good, quiet=True)
        assert path.read_bytes() == weights
        with pytest.raises(DatasetError, match="hash"):
            fetch_weights(f"{server.url}/{bad}", tmp_path / bad, quiet=True)
    assert not (tmp_path / bad).exists()


def test_a_whole_part_is_checked_without_asking_again(tmp_path):
    """A run stopped while checking the MD5 of a finished download: the next run must not ask
    for the bytes past the end (a real server answers 416) but check and keep what it has."""
    from tests.training.ham_like import dataverse_listing, ham_archive, serve
    from training.download import fetch

    files = ham_archive(lesions_per_dx=2)
    remote = next(f for f in select_files(dataverse_listing(files)) if f.name.endswith("_1"))
    data = files["HAM10000_images_part_1.zip"]
    dest = tmp_path / "HAM10000_images_part_1.zip"
    (tmp_path / (dest.name + ".part")).write_bytes(data)
    with serve(files) as server:
        fetch(remote.url(server.url), dest, remote)
    assert dest.read_bytes() == data and server.requests == []


def test_without_a_listed_size_a_416_means_the_part_is_whole(tmp_path):
    """A listing without sizes: the whole .part asks for the bytes past its end, the server
    answers 416, and the file is checked (MD5) instead of the error looping on every run."""
    from tests.training.ham_like import dataverse_listing, ham_archive, serve
    from training.download import fetch

    files = ham_archive(lesions_per_dx=2)
    listed = next(f for f in select_files(dataverse_listing(files)) if f.name.endswith("_1"))
    remote = RemoteFile(listed.name, listed.file_id, 0, listed.md5, False)
    data = files["HAM10000_images_part_1.zip"]
    dest = tmp_path / "HAM10000_images_part_1.zip"
    (tmp_path / (dest.name + ".part")).write_bytes(data)
    with serve(files) as server:
        fetch(remote.url(server.url), dest, remote)
    assert dest.read_bytes() == data
    assert [r[2] for r in server.requests] == [f"bytes={len(data)}-"]


def test_a_network_error_says_the_next_run_resumes(tmp_path):
    from training.download import fetch

    remote = RemoteFile("HAM10000_images_part_1", 1, 10, "", False)
    with pytest.raises(DatasetError, match="Run the same command again: it resumes"):
        fetch("http://127.0.0.1:9/api/access/datafile/1", tmp_path / "x.zip", remote)
    with pytest.raises(DatasetError, match="cannot read the dataset listing"):
        download_main(DownloadConfig(out=tmp_path / "out", source="http://127.0.0.1:9"))


def test_an_unpack_cut_short_is_redone_not_taken_as_done(tmp_path, monkeypatch):
    zpath = tmp_path / "HAM10000_images_part_1.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for i in range(3):
            z.writestr(f"ISIC_000000{i}.jpg", _jpeg())
    folder = tmp_path / "out" / "HAM10000_images_part_1"
    copies = []
    real_copy = shutil.copyfileobj

    def copy_then_fail(src, dst):  # the disk fills (or Ctrl-C) after the first image
        if copies:
            raise OSError("No space left on device")
        copies.append(1)
        real_copy(src, dst)

    monkeypatch.setattr(shutil, "copyfileobj", copy_then_fail)
    with pytest.raises(OSError, match="No space"):
        unpack(zpath, folder)
    assert not folder.exists()  # `main` would otherwise say "already unpacked; skipping"
    monkeypatch.setattr(shutil, "copyfileobj", real_copy)
    assert unpack(zpath, folder) == 3
    assert sorted(p.name for p in folder.iterdir()) == [f"ISIC_000000{i}.jpg" for i in range(3)]
    assert not folder.with_name(folder.name + ".unpacking").exists()
