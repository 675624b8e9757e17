"""Small stand-ins for what a fresh host downloads, built in the test: a HAM10000-shaped dataset
(official ZIPs + metadata CSV, several images per lesion), a VGG16-shaped ImageNet weights file,
and a local HTTP server shaped like Harvard Dataverse's API (listing + files, HTTP Range)."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision.models import vgg16

DX = ("nv", "mel", "bkl")


def lesion_jpeg(rng: np.random.Generator, size: tuple[int, int] = (200, 150)) -> bytes:
    """A skin-toned JPEG with a darker blotch and noise, like a downscaled dermoscopy photo."""
    w, h = size
    skin = rng.integers(170, 230, 3)
    base = np.clip(skin + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(base)
    draw = ImageDraw.Draw(image)
    cx, cy = rng.integers(w // 3, 2 * w // 3), rng.integers(h // 3, 2 * h // 3)
    rx, ry = rng.integers(w // 8, w // 4), rng.integers(h // 8, h // 4)
    tone = tuple(int(c) for c in rng.integers(60, 140, 3))
    draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=tone)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def ham_archive(lesions_per_dx: int = 10, images_per_lesion: int = 2) -> dict[str, bytes]:
    """The three files of the Dataverse record: two ZIPs of JPEGs and the metadata CSV."""
    rng = np.random.default_rng(0)
    rows, parts = ["lesion_id,image_id,dx,dx_type,age,sex,localization"], [[], []]
    k = 0
    for dx in DX:
        for lesion in range(lesions_per_dx):
            lesion_id = f"HAM_{dx}{lesion:04d}"
            for _ in range(images_per_lesion):
                image_id = f"ISIC_{k:07d}"
                rows.append(f"{lesion_id},{image_id},{dx},histo,50.0,female,back")
                parts[k % 2].append((image_id, lesion_jpeg(rng)))
                k += 1
    files = {"HAM10000_metadata.csv": ("\n".join(rows) + "\n").encode()}
    for i, part in enumerate(parts, start=1):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for image_id, data in part:
                z.writestr(f"HAM10000_images_part_{i}/{image_id}.jpg", data)
        files[f"HAM10000_images_part_{i}.zip"] = buf.getvalue()
    return files


def vgg16_shaped_weights(seed: int = 0) -> bytes:
    """A state dict with torchvision VGG16's exact keys and shapes, saved with ``torch.save``.

    Each tensor is one random row broadcast along its first dimension (a stride-0 view), so the
    file is ~100 KB instead of 528 MB while loading exactly as the real file does.
    """
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, t in vgg16(weights=None).state_dict().items():
        row = torch.randn((1, *t.shape[1:]), generator=g) * 0.01
        state[key] = row.expand(t.shape)
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def weights_name(data: bytes) -> str:
    """``vgg16-<sha256 prefix>.pth``: the name torchvision's hash check reads."""
    return f"vgg16-{hashlib.sha256(data).hexdigest()[:8]}.pth"


def dataverse_listing(files: dict[str, bytes]) -> dict:
    """``/api/datasets/:persistentId`` as Dataverse answers it (metadata ingested as tabular)."""
    entries = []
    for i, (name, data) in enumerate(sorted(files.items()), start=1):
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        df = {"id": i, "filename": name, "filesize": len(data), "md5": md5}
        if name.endswith(".csv"):
            df.update(
                filename=name.replace(".csv", ".tab"),
                filesize=len(data) // 2,
                originalFileFormat="text/csv",
                originalFileName=name,
                originalFileSize=len(data),
            )
        entries.append({"dataFile": df})
    return {"status": "OK", "data": {"latestVersion": {"files": entries}}}


@dataclass
class Server:
    url: str
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, Range


@contextmanager
def serve(files: dict[str, bytes], extra: dict[str, bytes] | None = None) -> Iterator[Server]:
    """A Dataverse-shaped server for ``files`` (by file id, HTTP Range honoured) plus ``extra``
    files by name (e.g. the weights), on 127.0.0.1 and a free port."""
    listing = dataverse_listing(files)
    by_path = {
        f"/api/access/datafile/{e['dataFile']['id']}": files[
            e["dataFile"].get("originalFileName") or e["dataFile"]["filename"]
        ]
        for e in listing["data"]["latestVersion"]["files"]
    }
    by_path.update({f"/{name}": data for name, data in (extra or {}).items()})
    log: list[tuple[str, str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def _body(self) -> tuple[int, bytes, dict[str, str]]:
            path = self.path.split("?")[0]
            if path.startswith("/api/datasets/"):
                return 200, json.dumps(listing).encode(), {"Content-Type": "application/json"}
            data = by_path.get(path)
            if data is None:
                return 404, b"not found", {}
            ranged = self.headers.get("Range", "")
            if ranged.startswith("bytes="):
                start = int(ranged[6:].split("-")[0])
                if start >= len(data):  # as real servers answer a range past the end
                    return 416, b"", {"Content-Range": f"bytes */{len(data)}"}
                headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
                return 206, data[start:], headers
            return 200, data, {}

        def _answer(self, with_body: bool) -> None:
            log.append((self.command, self.path, self.headers.get("Range", "")))
            status, body, headers = self._body()
            self.send_response(status)
            for k, v in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(k, v)
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_GET(self) -> None:
            self._answer(True)

        def do_HEAD(self) -> None:
            self._answer(False)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.server_address[1]}", log)
    finally:
        httpd.shutdown()
        httpd.server_close()


def write_ham_like(root: Path, lesions_per_dx: int = 10, images_per_lesion: int = 2) -> Path:
    """The same dataset unpacked in the official layout (for tests that need no server)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, data in ham_archive(lesions_per_dx, images_per_lesion).items():
        if name.endswith(".zip"):
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                for info in z.infolist():
                    target = root / info.filename
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(z.read(info))
        else:
            (root / name).write_bytes(data)
    return root
