"""Download HAM10000 from its official source, Harvard Dataverse (doi:10.7910/DVN/DBW86T).

    python -m training.download --out ~/data/HAM10000

Fetches three files of the dataset (about 2.7 GB in all; the exact sizes are printed from the
Dataverse listing before anything is downloaded):

- HAM10000_images_part_1.zip, HAM10000_images_part_2.zip: 10,015 dermoscopic JPEGs, 600x450;
- HAM10000_metadata (tabular; fetched as its original CSV): lesion_id, image_id, dx, ...

Each download resumes where it stopped (HTTP Range on a ``.part`` file) and is verified against
the size and MD5 that the Dataverse listing gives, then the ZIPs are unpacked into the official
layout that ``training.data`` reads:

    OUT/HAM10000_images_part_1/ISIC_*.jpg
    OUT/HAM10000_images_part_2/ISIC_*.jpg
    OUT/HAM10000_metadata.csv

Got a copy another way (ISIC archive, Kaggle, a colleague)? Skip this program: pass ``--data DIR``
to the training programs, where DIR holds either that official layout or ``images/`` +
``HAM10000_metadata.csv``. ``--check DIR`` only verifies such a folder. The data is licensed
CC BY-NC 4.0 (Tschandl et al., Scientific Data 5, 180161, 2018).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torchvision.models import VGG16_Weights
from tqdm import tqdm

from training.data import DatasetError, load_index

SERVER = "https://dataverse.harvard.edu"
DOI = "doi:10.7910/DVN/DBW86T"
WANTED = {
    "HAM10000_images_part_1": "zip",
    "HAM10000_images_part_2": "zip",
    "HAM10000_metadata": "metadata",
}
CHUNK = 1 << 20
VGG16_URL = VGG16_Weights.IMAGENET1K_V1.url  # .../vgg16-397923af.pth, 528 MB


@dataclass(frozen=True)
class RemoteFile:
    """One file of the dataset as the Dataverse listing describes it."""

    name: str  # the stem, e.g. HAM10000_images_part_1
    file_id: int
    size: int
    md5: str
    tabular: bool  # ingested by Dataverse: fetch ``?format=original`` (the uploaded CSV)

    def url(self, server: str) -> str:
        return f"{server}/api/access/datafile/{self.file_id}" + (
            "?format=original" if self.tabular else ""
        )


@dataclass
class DownloadConfig:
    out: Path
    source: str = SERVER
    doi: str = DOI
    keep_zips: bool = False
    check: Path | None = None


def parse_args(argv: list[str] | None = None) -> DownloadConfig:
    p = argparse.ArgumentParser(
        prog="python -m training.download",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, help="folder to download and unpack into")
    p.add_argument(
        "--source", default=SERVER, help=f"Dataverse server (default {SERVER}) or a mirror of it"
    )
    p.add_argument("--doi", default=DOI, help=f"dataset persistent id (default {DOI})")
    p.add_argument(
        "--keep-zips", action="store_true", help="keep the ZIPs after unpacking (default: delete)"
    )
    p.add_argument(
        "--check", type=Path, metavar="DIR", help="only check that DIR is a usable HAM10000 copy"
    )
    args = p.parse_args(argv)
    if args.out is None and args.check is None:
        p.error("give --out DIR (download) or --check DIR (verify an existing copy)")
    return DownloadConfig(**vars(args))


def listing_url(server: str, doi: str) -> str:
    return f"{server}/api/datasets/:persistentId/?persistentId={doi}"


def select_files(listing: dict[str, Any]) -> list[RemoteFile]:
    """The files we need from a ``/api/datasets/:persistentId`` answer; error if any is absent."""
    files = listing.get("data", {}).get("latestVersion", {}).get("files", [])
    found: dict[str, RemoteFile] = {}
    for entry in files:
        df = entry.get("dataFile", {})
        tabular = bool(df.get("originalFileFormat"))
        name = df.get("originalFileName") if tabular else df.get("filename", "")
        stem = Path(name or df.get("filename", "")).name.split(".")[0]
        if stem not in WANTED:
            continue
        checksum = df.get("checksum") or {}
        md5 = df.get("md5") or (checksum.get("value") if checksum.get("type") == "MD5" else "")
        size = (
            int(df.get("originalFileSize") or df.get("filesize") or 0)
            if tabular
            else int(df.get("filesize") or 0)
        )
        found[stem] = RemoteFile(stem, int(df["id"]), size, md5 or "", tabular)
    missing = sorted(set(WANTED) - set(found))
    if missing:
        raise DatasetError(f"the Dataverse listing lacks {missing}; has the dataset changed?")
    return [found[name] for name in WANTED]


def md5_of(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, remote: RemoteFile) -> None:
    """Size and MD5 as listed; a mismatch is an error naming the file."""
    size = path.stat().st_size
    if remote.size and size != remote.size:
        raise DatasetError(f"{path}: {size} bytes, the listing says {remote.size}")
    if remote.md5 and md5_of(path) != remote.md5:
        raise DatasetError(f"{path}: MD5 differs from the listing ({remote.md5})")


def _verified(path: Path, remote: RemoteFile) -> Path:
    """``path`` once it matches the listing; a file that does not can only be fetched anew, so
    it is removed (it may sit in a volume the user cannot easily reach) and the error says so."""
    try:
        verify(path, remote)
    except DatasetError as exc:
        path.unlink()
        raise DatasetError(f"{exc}: removed it; run again to download it anew") from exc
    return path


def fetch(url: str, dest: Path, remote: RemoteFile) -> Path:
    """Download to ``dest`` via ``dest.part``, resuming with an HTTP Range request.

    A ``.part`` that is already whole (a run stopped while checking its MD5) is checked without
    asking the server again (and when the listing gives no size, a 416 for the bytes past it
    means the same); one longer than the listed size starts over; one that fails its check is
    removed. Network errors are a DatasetError that says the next run resumes.
    """
    if dest.is_file():
        return _verified(dest, remote)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    if remote.size and have > remote.size:
        have = 0
    if not (remote.size and have == remote.size):
        try:
            _download(url, part, have, remote.size, dest.name)
        except urllib.error.HTTPError as exc:
            if not (exc.code == 416 and have):  # 416: nothing past what we have, so check it
                raise _stopped(url, part, exc) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise _stopped(url, part, exc) from exc
    _verified(part, remote).replace(dest)
    return dest


def _stopped(url: str, part: Path, exc: Exception) -> DatasetError:
    reason = getattr(exc, "reason", None) or exc
    return DatasetError(
        f"downloading {url} into {part} stopped: {reason}. Run the same command again: it "
        "resumes from where it stopped"
    )


def _download(url: str, part: Path, have: int, size: int, label: str) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "dermafake-download/1"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    with urllib.request.urlopen(request, timeout=60) as response:
        if have and response.status != 206:  # server ignored Range: start over
            have = 0
        with (
            part.open("ab" if have else "wb") as f,
            tqdm(total=size or None, initial=have, unit="B", unit_scale=True, desc=label) as bar,
        ):
            while block := response.read(CHUNK):
                f.write(block)
                bar.update(len(block))


def unpack(zip_path: Path, folder: Path) -> int:
    """Extract the JPEGs of ``zip_path`` flat into ``folder`` (member paths are not trusted).

    Extracted into a sibling ``.unpacking`` folder that is renamed when complete, so ``folder``
    exists only whole: an unpack cut short is redone on the next run, never taken as done.
    """
    staging = folder.with_name(folder.name + ".unpacking")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    n = 0
    with zipfile.ZipFile(zip_path) as z:
        for info in z.infolist():
            name = Path(info.filename).name
            if info.is_dir() or not name.lower().endswith((".jpg", ".jpeg")):
                continue
            with z.open(info) as src, (staging / name).open("wb") as dst:
                shutil.copyfileobj(src, dst)
            n += 1
    if folder.exists():
        shutil.rmtree(folder)
    staging.replace(folder)
    return n


def hub_weights_path(url: str = VGG16_URL) -> Path:
    """Where torchvision keeps the file of ``url``: ``$TORCH_HOME/hub/checkpoints/<name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def fetch_weights(url: str = VGG16_URL, dest: Path | None = None, quiet: bool = False) -> Path:
    """Download a torchvision weights file into the hub cache, checked against the SHA-256
    prefix in its name (``vgg16-397923af.pth``) as torchvision checks it."""
    dest = dest or hub_weights_path(url)
    if dest.is_file():
        return dest
    match = re.search(r"-([a-f0-9]{6,})\.", Path(url).name)
    if match is None:
        raise DatasetError(f"{url}: no hash in the file name (NAME-<sha256 prefix>.pth) to check")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(
            url, str(dest), hash_prefix=match.group(1), progress=not quiet
        )
    except (OSError, RuntimeError) as exc:  # network errors, or "invalid hash value"
        raise DatasetError(f"could not fetch {url}: {exc}") from exc
    return dest


def check(root: Path) -> int:
    """Images ``training.data`` finds in ``root``; a DatasetError says what is wrong."""
    return len(load_index(root))


def main(config: DownloadConfig) -> Path:
    if config.check is not None:
        n = check(config.check)
        print(f"{config.check}: a usable HAM10000 copy with {n} images")
        return config.check
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    url = listing_url(config.source, config.doi)
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            remotes = select_files(json.load(r))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DatasetError(
            f"cannot read the dataset listing at {url}: {getattr(exc, 'reason', None) or exc}. "
            "Check the connection (or --source), then run again"
        ) from exc
    total = sum(f.size for f in remotes)
    print(f"fetching {len(remotes)} files, {total / 1e9:.2f} GB, from {config.source}")
    for remote in remotes:
        if WANTED[remote.name] == "metadata":
            fetch(remote.url(config.source), out / "HAM10000_metadata.csv", remote)
            continue
        folder = out / remote.name
        if folder.is_dir() and any(folder.iterdir()):
            print(f"{folder} already unpacked; skipping")
            continue
        zip_path = fetch(remote.url(config.source), out / f"{remote.name}.zip", remote)
        n = unpack(zip_path, folder)
        print(f"unpacked {n} images into {folder}")
        if not config.keep_zips:
            zip_path.unlink()
    n = check(out)
    print(f"done: {out} holds {n} images; train with --data {out}")
    return out


def cli(argv: list[str] | None = None) -> None:
    try:
        main(parse_args(argv))
    except DatasetError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    cli()
