"""Check every input of a pipeline run before its first stage starts.

A missing input found by a stage is found hours late: the paper profile's VGG16 asked for
ImageNet weights only after the GAN had trained. :func:`check` looks at everything the stages
that will run need, in seconds, and returns one :class:`Problem` per missing thing, each with
the command or the file placement that fixes it:

- the data folder (layout, metadata, every listed image present), or with ``--download`` the
  Dataverse server reachable and the folder writable;
- ImageNet VGG16 weights for the stages that start from them (cached, or with ``--download`` the
  file reachable and the cache writable);
- the output folder writable;
- the device the profile is sized for (the paper profile on a CPU would take weeks);
- free disk space for the outputs (synthetic and fake images, checkpoints) and the download.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import torch

from training.data import DatasetError, load_index
from training.download import DOI, SERVER, listing_url, select_files

GB = 1e9
DATAVERSE_PAGE = "https://dataverse.harvard.edu/dataset.xhtml?persistentId=" + DOI
REACH_TIMEOUT_S = 10.0
WEIGHTS_BYTES = 600_000_000  # torchvision's VGG16 file is 528 MB


@dataclass(frozen=True)
class Problem:
    """One missing input, what is wrong and how to fix it."""

    what: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"- {self.what}: {self.message}\n    fix: {self.fix}"


class PreflightFailed(RuntimeError):
    """Inputs are missing; nothing was trained."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        n = len(problems)
        lines = [f"preflight found {n} problem{'s' * (n != 1)}; nothing was trained:"]
        super().__init__("\n".join(lines + [str(p) for p in problems]))


@dataclass(frozen=True)
class Request:
    """What the stages that will run need."""

    data: Path
    out: Path
    device: str = "auto"
    profile: str = "quick"
    needs_gpu: bool = False  # the profile is sized for a GPU
    weights: dict[str, Path] = field(default_factory=dict)  # stage -> weights file it loads
    weights_url: str = ""
    download: bool = False
    data_source: str = SERVER
    doi: str = DOI
    out_bytes: int = 0  # what the stages will write
    needs_data: bool = True


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    n_images: int = 0  # in the data folder (0 when it is to be downloaded)
    download_data: bool = False  # the data folder is to be fetched
    download_weights: list[Path] = field(default_factory=list)
    download_bytes: int = 0  # into the data folder


def existing_ancestor(path: Path) -> Path:
    """The nearest folder at or above ``path`` that exists (what a mkdir would write into)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def writable(path: Path) -> bool:
    """True when ``path`` exists as a writable folder or could be created."""
    base = existing_ancestor(path)
    return base.is_dir() and os.access(base, os.W_OK | os.X_OK)


def _reachable(url: str, method: str = "GET") -> tuple[bytes | None, str]:
    request = urllib.request.Request(
        url, method=method, headers={"User-Agent": "dermafake-preflight/1"}
    )
    try:
        with urllib.request.urlopen(request, timeout=REACH_TIMEOUT_S) as response:
            return (response.read() if method == "GET" else b""), ""
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return None, str(getattr(exc, "reason", exc))


class Probes:
    """Reachability checks run side by side, all within one ``REACH_TIMEOUT_S`` deadline.

    urlopen's timeout does not cover name resolution, and a black-holed network would make two
    probes in a row cost two timeouts: each runs in a daemon thread, and one still running at
    the deadline is abandoned (reported unreachable), never waited for at exit.
    """

    def __init__(self, timeout_s: float = REACH_TIMEOUT_S) -> None:
        self._timeout_s = timeout_s
        self._deadline = time.monotonic() + timeout_s
        self._threads: dict[tuple[str, str], threading.Thread] = {}
        self._results: dict[tuple[str, str], tuple[bytes | None, str]] = {}

    def start(self, url: str, method: str = "GET") -> None:
        key = (url, method)
        if key in self._threads:
            return

        def probe() -> None:
            self._results[key] = _reachable(url, method)

        thread = threading.Thread(target=probe, name="preflight-probe", daemon=True)
        self._threads[key] = thread
        thread.start()

    def result(self, url: str, method: str = "GET") -> tuple[bytes | None, str]:
        self.start(url, method)
        self._threads[(url, method)].join(max(0.0, self._deadline - time.monotonic()))
        return self._results.get((url, method), (None, f"no answer within {self._timeout_s:g} s"))


def index_data(data: Path) -> tuple[int, str | None]:
    """(images in the data folder, None), or (0, what is wrong with it)."""
    try:
        return len(load_index(data)), None
    except DatasetError as exc:
        return 0, str(exc)


def check_data(req: Request, report: Report, probes: Probes, problem: str) -> None:
    """The data folder is not usable (``problem``): how to fix it, or what --download fetches."""
    layout = (
        f"{req.data}/HAM10000_images_part_1/*.jpg, {req.data}/HAM10000_images_part_2/*.jpg and "
        f"{req.data}/HAM10000_metadata.csv (the three files of {DATAVERSE_PAGE}, ZIPs unpacked), "
        f"or {req.data}/images/*.jpg + {req.data}/HAM10000_metadata.csv"
    )
    if not req.download:
        report.problems.append(
            Problem(
                "data",
                problem,
                "rerun with --download (make: DOWNLOAD=1; fetches HAM10000, 2.7 GB, from "
                f"Harvard Dataverse into {req.data}), or "
                f"`python -m training.download --out {req.data}`, or point "
                f"--data at a copy; offline, place {layout}",
            )
        )
        return
    if not writable(req.data):
        report.problems.append(
            Problem(
                "data",
                f"{problem}; --download cannot write into {req.data} "
                f"({existing_ancestor(req.data)} is not writable)",
                f"make {req.data} writable by uid {os.getuid()} (a container's /data volume: "
                "mount it read-write), or point --data at a writable folder",
            )
        )
        return
    body, why = probes.result(listing_url(req.data_source, req.doi))
    if body is None:
        report.problems.append(
            Problem(
                "data",
                f"{problem}; --download cannot reach {req.data_source} ({why})",
                f"on a host with internet run `python -m training.download --out DIR` and copy "
                f"DIR here; offline, place {layout}",
            )
        )
        return
    try:
        remotes = select_files(json.loads(body))
    except (DatasetError, ValueError, KeyError) as exc:
        report.problems.append(
            Problem("data", f"the Dataverse listing at {req.data_source} is unusable: {exc}", "")
        )
        return
    report.download_data = True
    sizes = [f.size for f in remotes]
    report.download_bytes += sum(sizes) + max(sizes)  # unpacked images + the ZIP being unpacked


def check_weights(req: Request, report: Report, probes: Probes) -> None:
    missing: dict[Path, list[str]] = {}
    for stage, path in req.weights.items():
        if not path.is_file():
            missing.setdefault(path, []).append(stage)
    for path, stages in missing.items():
        who = (
            "the "
            + " and ".join(stages)
            + (" stages start" if len(stages) > 1 else " stage starts")
        )
        message = f"{who} from ImageNet VGG16 weights, which are not at {path}"
        place = f"mkdir -p {path.parent} && curl -L -o {path} {req.weights_url}"
        if not req.download:
            report.problems.append(
                Problem(
                    "ImageNet weights",
                    message,
                    "rerun with --download (make: DOWNLOAD=1; 528 MB into the torch hub cache, "
                    f"hash-checked), or "
                    f"`{place}`, or set TORCH_HOME to a folder holding hub/checkpoints/"
                    f"{path.name}",
                )
            )
            continue
        if not writable(path.parent):
            report.problems.append(
                Problem(
                    "ImageNet weights",
                    f"{message}; --download cannot write into {path.parent}",
                    "set TORCH_HOME to a writable folder",
                )
            )
            continue
        _, why = probes.result(req.weights_url, method="HEAD")
        if why:
            report.problems.append(
                Problem(
                    "ImageNet weights",
                    f"{message}; --download cannot reach {req.weights_url} ({why})",
                    f"on a host with internet: `curl -L -o {path.name} {req.weights_url}`, then "
                    f"copy it to {path}",
                )
            )
            continue
        report.download_weights.append(path)  # 528 MB, charged to its own folder (TORCH_HOME)


def check_output(req: Request, report: Report) -> None:
    if not writable(req.out):
        report.problems.append(
            Problem(
                "output",
                f"cannot write into {req.out} ({existing_ancestor(req.out)} is not writable)",
                f"choose a writable --out, or make it writable by uid {os.getuid()}",
            )
        )


def check_device(req: Request, report: Report) -> None:
    wanted = req.device
    if wanted == "auto":
        if req.needs_gpu and not torch.cuda.is_available():
            report.problems.append(
                Problem(
                    "device",
                    f"the {req.profile} profile is sized for a GPU (hours there, weeks on a CPU) "
                    "and no CUDA GPU is visible",
                    "on a GPU host check `nvidia-smi` and that the container gets the GPU "
                    "(compose's deploy.resources, `docker run --gpus all`, podman "
                    "`--device nvidia.com/gpu=all`); or run on the CPU anyway with --device "
                    "cpu, or choose --profile quick (a 2-core CPU, about 38 minutes)",
                )
            )
        return
    try:
        device = torch.device(wanted)
    except RuntimeError as exc:
        report.problems.append(Problem("device", str(exc), "--device auto, cpu, cuda or cuda:N"))
        return
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count <= (device.index or 0):
            report.problems.append(
                Problem(
                    "device",
                    f"--device {wanted} asked for, {count} CUDA GPU(s) visible",
                    "check `nvidia-smi` and the container's GPU access, or use --device cpu",
                )
            )


def check_disk(req: Request, report: Report) -> None:
    needs: dict[Path, int] = {}
    wanted = [(req.out, req.out_bytes), (req.data, report.download_bytes)]
    wanted += [(path.parent, WEIGHTS_BYTES) for path in report.download_weights]
    for path, n in wanted:
        base = existing_ancestor(path)
        needs[base] = needs.get(base, 0) + n
    for base, need in needs.items():
        if need <= 0 or not base.exists():
            continue
        free = shutil.disk_usage(base).free
        if free < need:
            report.problems.append(
                Problem(
                    "disk",
                    f"about {need / GB:.1f} GB needed under {base}, {free / GB:.1f} GB free",
                    "free some space, or choose --out/--data (or TORCH_HOME) on a larger volume",
                )
            )


def check(req: Request) -> Report:
    """Every problem at once (nothing is created, nothing is trained)."""
    report = Report()
    probes = Probes()
    report.n_images, data_problem = index_data(req.data) if req.needs_data else (0, None)
    if req.download:  # both servers at once: offline, the preflight costs one timeout, not two
        if any(not path.is_file() for path in req.weights.values()):
            probes.start(req.weights_url, "HEAD")
        if data_problem:
            probes.start(listing_url(req.data_source, req.doi))
    if data_problem:
        check_data(req, report, probes, data_problem)
    check_weights(req, report, probes)
    check_output(req, report)
    check_device(req, report)
    check_disk(req, report)
    return report
