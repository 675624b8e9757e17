"""One command from a HAM10000 folder to the artifacts the service reads.

    python -m training.pipeline --data DIR --out artifacts --profile quick

Stages: ``features`` (the lesion feature model the GAN is scored in, ``gan_train`` lesions only)
-> ``gan`` (train the SNGAN on the ``gan_train`` lesions, scored as it trains; its card in
``/v1/models`` shows the score) -> ``synthetic`` (sample PNGs) ->
``fakes`` (the upsampler zoo and a DCGAN, also from ``gan_train`` lesions only) -> ``detector``
(the paper's VGG16 on the ``detector_*`` lesions vs the SNGAN's PNGs) -> ``general`` (the NPR
detector on the SNGAN + zoo sources, the DCGAN held out for model selection) -> optionally
``ablation`` (the VGG16 on the general detector's data: does the data or the architecture carry
the transfer?) -> ``evaluate`` (every detector side by side: held-out test, every source,
foreign generators, other real photos, resampling control, robustness) -> ``summary.md``.

Before the first stage, a preflight (``training.preflight``) checks what the stages that will
run need: the data folder, ImageNet weights for the VGG16 stages, a writable output folder, the
device the profile is sized for, disk space. It stops within seconds with one message per
problem and the command that fixes it (``--check`` runs only the preflight). ``--download``
fetches what is missing and public first: HAM10000 from Harvard Dataverse into ``--data`` and
torchvision's ImageNet VGG16 weights into the torch hub cache. Each stage prints its expected
duration on this machine before it starts (``training.estimate``). While stages run, the output
folder holds ``TRAINING_IN_PROGRESS.json`` (``models.artifacts``): a service reading that folder
waits for it to go instead of serving half-trained models; a failed run leaves it saying so.

Each stage records a fingerprint of its own config and of the stages it depends on in
``<stage>/stage.json``. A stage whose outputs exist with the same fingerprint is skipped; a
changed config reruns it and everything downstream. Profiles:

- ``quick``: sized for a 2-core CPU (64 px GAN, time-capped stages, 64 px detector inputs).
- ``cpu-long``: the quick profile with a 90-minute GAN and a 10-minute feature model: about two
  hours on a 2-core CPU, for a generator that draws better lesions (``--until gan`` stops there).
- ``paper``: 128 px SNGAN with the published recipe, 10,000 synthetic images, the paper's 128 px
  VGG16 with ImageNet weights, a larger zoo and DCGAN, the NPR detector at 128 px; for one GPU.
- ``paper-rehearsal``: the paper profile with its sizes shrunk, for a CPU (``make rehearse``).
- ``smoke``: a few steps per stage on a handful of images, for tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image

from models import artifacts
from models.detector import IMAGENET_FILENAME, imagenet_cache_path
from training import (
    download,
    estimate,
    evaluate,
    fakes,
    synthesize,
    train_detector,
    train_features,
    train_gan,
)
from training import preflight as preflight_
from training.augment import AugmentConfig
from training.common import jsonable, write_json
from training.data import DatasetError, load_index
from training.detector_data import add_named_dirs, unique_named
from training.download import SERVER as DATAVERSE
from training.download import VGG16_URL

STAGES = ("features", "gan", "synthetic", "fakes", "detector", "general", "ablation", "evaluate")
GPU_PROFILES = ("paper",)  # sized for a GPU: auto on a CPU-only host is a preflight problem
SERVED = ("detector", "general")  # folders whose detector.safetensors the service loads
GENERAL_AUGMENT = AugmentConfig(
    blur_prob=0.1, blur_sigma_max=1.0, jpeg_prob=1.0, jpeg_quality_min=60, jpeg_quality_max=100
)
_NOT_IDENTITY = {"quiet", "threads", "device", "overwrite"}  # change how, not what, is computed


@dataclass(frozen=True)
class Profile:
    gan: dict[str, Any]
    synthetic: dict[str, Any]
    fakes: dict[str, Any]
    detector: dict[str, Any]
    general: dict[str, Any]
    evaluate: dict[str, Any] = field(default_factory=dict)
    features: dict[str, Any] = field(default_factory=dict)  # empty: no feature model, no scoring


TINY_FEATURES = dict(
    image_size=32, widths=(8, 16), embed_dim=16, batch_size=4, steps=2, limit_images=16,
    eval_every=0, warmup_steps=1,
)  # fmt: skip
PROFILES: dict[str, Profile] = {
    "quick": Profile(
        gan=dict(
            image_size=64,
            g_channels=16,
            d_channels=16,
            batch_size=16,
            n_dis=1,
            lr_d=4e-4,
            lr_g=1e-4,
            ema_decay=0.995,  # FD 10.9 against 19.6 with 0.999 in 10 minutes (docs/TRAINING.md)
            steps=100_000,
            time_limit_min=10.0,
            sample_every=500,
            quality_every=500,
        ),
        synthetic=dict(n=2000, batch_size=64),
        fakes=dict(zoo_seconds=40.0, dcgan_seconds=180.0, per_source=600),
        detector=dict(
            image_size=64,
            epochs=2,  # validation reached 99% balanced accuracy by step 120 of 264
            batch_size=32,
            lr=1e-4,
            pretrained="none",
            limit_images=1400,
            val_limit=200,
            eval_every=40,
            patience=3,
            augment=AugmentConfig(rescale_prob=0.5),
        ),
        general=dict(
            arch="npr",
            npr_norm="rms",  # without it the held-out DCGAN scored ROC-AUC 0.47 (docs/RESULTS.md)
            image_size=64,
            epochs=1000,
            time_limit_min=6.0,
            batch_size=64,
            lr=1e-3,
            weight_decay=1e-4,
            warmup_steps=50,
            val_limit=300,
            eval_every=100,
            patience=4,
            augment=GENERAL_AUGMENT,
        ),
        evaluate=dict(limit=300),
        features=dict(time_limit_min=3.0),  # balanced accuracy ~0.5 (docs/TRAINING.md)
    ),
    "paper": Profile(
        gan=dict(
            image_size=128,
            g_channels=64,
            d_channels=64,
            batch_size=64,
            n_dis=5,
            steps=100_000,
            sample_every=5000,
            quality_n=5000,
            quality_real_n=0,
        ),
        synthetic=dict(n=10_000, batch_size=256),
        fakes=dict(zoo_seconds=300.0, dcgan_seconds=1800.0, per_source=2500, zoo_width=64),
        detector=dict(
            image_size=128,
            epochs=20,
            batch_size=64,
            lr=1e-4,
            pretrained="imagenet",
            eval_every=0,
            patience=3,
        ),
        general=dict(
            arch="npr",
            npr_norm="rms",
            image_size=128,
            epochs=50,
            batch_size=64,
            lr=2e-4,
            warmup_steps=500,
            eval_every=0,
            patience=5,
            augment=GENERAL_AUGMENT,
        ),
        evaluate=dict(),
        features=dict(epochs=30),
    ),
    "smoke": Profile(
        gan=dict(
            image_size=32,
            g_channels=8,
            d_channels=8,
            batch_size=4,
            n_dis=1,
            steps=2,
            limit_images=16,
            sample_every=2,
            num_samples=4,
            quality_n=8,
            quality_real_n=16,
        ),
        synthetic=dict(n=24, batch_size=8),
        fakes=dict(
            zoo=("transposed-1", "nearest_conv-2"),
            zoo_steps=2,
            zoo_seconds=0.0,
            dcgan_size=32,
            dcgan_steps=2,
            dcgan_seconds=0.0,
            per_source=24,
            limit_images=16,
        ),
        detector=dict(
            image_size=32,
            epochs=1,
            steps=2,
            batch_size=4,
            pretrained="none",
            limit_images=12,
            val_limit=6,
            eval_every=0,
            patience=1,
        ),
        general=dict(
            arch="npr",
            image_size=32,
            epochs=1,
            steps=2,
            batch_size=4,
            limit_images=12,
            val_limit=6,
            patience=1,
        ),
        evaluate=dict(limit=6, robustness=True),
        features=TINY_FEATURES,
    ),
}


def rehearsal(prof: Profile) -> Profile:
    """A profile's code path with its sizes shrunk (steps, images, batch, widths, image sizes)
    so that a CPU runs it in about a minute: every stage, the published recipe's settings
    (n_dis, learning rates, per-epoch validation, the whole zoo) and the ImageNet-weights branch
    stay as they are."""
    small = dict(image_size=32, batch_size=4, limit_images=12, val_limit=6)
    return Profile(
        gan={
            **prof.gan,
            "image_size": 32,
            "g_channels": 8,
            "d_channels": 8,
            "batch_size": 4,
            "steps": 2,
            "sample_every": 2,
            "num_samples": 4,
            "limit_images": 16,
            "quality_n": 8,
            "quality_real_n": 16,
        },
        synthetic={**prof.synthetic, "n": 24, "batch_size": 8},
        fakes={
            **prof.fakes,
            "zoo_width": 8,
            "zoo_steps": 2,
            "zoo_seconds": 0.0,
            "dcgan_size": 32,
            "dcgan_steps": 2,
            "dcgan_seconds": 0.0,
            "per_source": 24,  # the DCGAN held out needs validation images
            "limit_images": 16,
        },
        detector={**prof.detector, **small, "epochs": 1, "steps": 2},
        general={**prof.general, **small, "epochs": 1, "steps": 2, "warmup_steps": 1},
        evaluate={**prof.evaluate, "limit": 6},
        features={**prof.features, **TINY_FEATURES} if prof.features else {},
    )


PROFILES["paper-rehearsal"] = rehearsal(PROFILES["paper"])
PROFILES["cpu-long"] = replace(
    PROFILES["quick"],
    # scored every 500 steps as in quick: FD swings by 2-4 between checkpoints 500 steps apart,
    # and the best one is kept (docs/TRAINING.md, "What more CPU buys")
    gan={**PROFILES["quick"].gan, "time_limit_min": 90.0, "sample_every": 2000},
    features={**PROFILES["quick"].features, "time_limit_min": 10.0},
)


@dataclass(frozen=True)
class PipelineConfig:
    data: Path
    out: Path
    profile: str = "quick"
    seed: int = 0
    foreign: dict[str, Path] = field(default_factory=dict)
    real_extra: dict[str, Path] = field(default_factory=dict)
    ablation: bool = False
    device: str = "auto"
    threads: int = 0
    force: tuple[str, ...] = ()
    quiet: bool = False
    download: bool = False
    data_source: str = DATAVERSE
    weights_url: str = VGG16_URL
    check_only: bool = False
    until: str | None = None  # stop after this stage


def _fingerprint(config: Any, upstream: str = "") -> str:
    """Hash of a stage's config and of the token of the stage it reads from."""
    identity = {k: v for k, v in jsonable(config).items() if k not in _NOT_IDENTITY}
    blob = json.dumps(identity, sort_keys=True, default=str) + upstream
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _done(stage_dir: Path, outputs: list[Path], fingerprint: str) -> bool:
    marker = stage_dir / "stage.json"
    if not marker.is_file() or not all(p.exists() for p in outputs):
        return False
    return json.loads(marker.read_text()).get("fingerprint") == fingerprint


@dataclass
class Stage:
    """One step of the chain. ``config`` is built when asked: the general detector's sources
    come from the fakes stage's output."""

    name: str
    folder: Path
    outputs: list[Path]
    deps: tuple[str, ...]
    config: Callable[[], Any]
    run: Callable[[Any], Any]
    estimate: Callable[[Any], estimate.Estimate]


def config_changes(st: Stage) -> list[str]:
    """What differs between the config a stage's last run recorded and the one it would run
    with now, as ``key: old -> new``; empty when it never ran or only non-identity keys differ."""
    marker = st.folder / "stage.json"
    if not marker.is_file():
        return []
    before = json.loads(marker.read_text()).get("config") or {}
    now = json.loads(json.dumps(jsonable(st.config()), default=str))
    keys = sorted((set(before) | set(now)) - _NOT_IDENTITY)
    differ = [k for k in keys if before.get(k) != now.get(k)]
    return [f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in differ]


def plan(stages: list[Stage], force: tuple[str, ...] = ()) -> dict[str, bool]:
    """stage -> will it run: forced, not up to date, or downstream of one that runs."""
    tokens: dict[str, str] = {}
    runs: dict[str, bool] = {}
    for st in stages:
        if st.name in force or any(runs[d] for d in st.deps):
            runs[st.name] = True
            continue
        fp = _fingerprint(st.config(), "".join(tokens[d] for d in st.deps))
        runs[st.name] = not _done(st.folder, st.outputs, fp)
        if not runs[st.name]:
            tokens[st.name] = fp + json.loads((st.folder / "stage.json").read_text())["finished"]
    return runs


def _run_stage(st: Stage, upstream: str, cfg: PipelineConfig) -> str:
    """Run one stage unless up to date; return a token that changes whenever the stage reruns,
    so the stages downstream of a rerun (``--force`` included) rerun too."""
    config = st.config()
    fp = _fingerprint(config, upstream)
    marker = st.folder / "stage.json"
    if st.name not in cfg.force and _done(st.folder, st.outputs, fp):
        print(f"[pipeline] {st.name:9s} up to date ({st.folder}), skipped", flush=True)
        return fp + json.loads(marker.read_text())["finished"]
    print(f"[pipeline] {st.name:9s} starts: {st.estimate(config)}", flush=True)
    if st.folder.exists():  # stale outputs of another config: start clean
        shutil.rmtree(st.folder)
    start = time.perf_counter()
    st.run(config)
    finished = time.strftime("%Y-%m-%dT%H:%M:%S%z") + f".{time.time_ns() % 10**9}"
    write_json(
        marker, {"stage": st.name, "fingerprint": fp, "finished": finished, "config": config}
    )
    print(
        f"[pipeline] {st.name:9s} done in {time.perf_counter() - start:7.1f} s -> {st.folder}",
        flush=True,
    )
    return fp + finished


def pretrained_source(cfg: PipelineConfig) -> str:
    """``imagenet`` (torchvision's file in the hub cache) or, for a mirror whose file has
    another name, that file's path in the hub cache."""
    path = download.hub_weights_path(cfg.weights_url)
    return "imagenet" if path.name == IMAGENET_FILENAME else str(path)


def weights_file(pretrained: str) -> Path | None:
    if pretrained == "none":
        return None
    return imagenet_cache_path() if pretrained == "imagenet" else Path(pretrained)


def build_stages(cfg: PipelineConfig, prof: Profile, n_images: int = 0) -> list[Stage]:
    """The chain for a profile, in order (``n_images`` in the data folder, for estimates)."""
    out = cfg.out
    common = dict(device=cfg.device, threads=cfg.threads, quiet=cfg.quiet)
    detector_opts = dict(prof.detector)
    if detector_opts.get("pretrained") == "imagenet":
        detector_opts["pretrained"] = pretrained_source(cfg)

    feat_cfg = train_features.TrainFeaturesConfig(
        data=cfg.data, out=out / "features", seed=cfg.seed, **common, **prof.features
    )
    feature_model = feat_cfg.out / train_features.CHECKPOINT if prof.features else None
    gan_cfg = train_gan.TrainGanConfig(
        data=cfg.data, out=out / "gan", seed=cfg.seed, features=feature_model, **common, **prof.gan
    )
    generator = gan_cfg.out / "generator.safetensors"
    syn_cfg = synthesize.SynthesizeConfig(
        checkpoint=generator,
        out=out / "synthetic",
        seed=cfg.seed + 1,
        overwrite=True,
        **common,
        **prof.synthetic,
    )
    fakes_cfg = fakes.FakesConfig(
        data=cfg.data, out=out / "fakes", seed=cfg.seed, overwrite=True, **common, **prof.fakes
    )
    det_cfg = train_detector.TrainConfig(
        data=cfg.data,
        fakes={"sngan": syn_cfg.out},
        out=out / "detector",
        seed=cfg.seed,
        **common,
        **detector_opts,
    )

    def general_config() -> train_detector.TrainConfig:
        train_sources, held_out = fake_sources(fakes_cfg.out, syn_cfg.out)
        return train_detector.TrainConfig(
            data=cfg.data,
            fakes=train_sources,
            held_out=held_out,
            out=out / "general",
            seed=cfg.seed,
            **common,
            **prof.general,
        )

    def ablation_config() -> train_detector.TrainConfig:
        train_sources, held_out = fake_sources(fakes_cfg.out, syn_cfg.out)
        return dataclasses.replace(
            det_cfg,
            fakes=train_sources,
            held_out=held_out,
            out=out / "ablation" / "vgg16-multisource",
            name="vgg16-multisource",
            time_limit_min=prof.general.get("time_limit_min", 0.0),
            epochs=prof.general.get("epochs", det_cfg.epochs),
            eval_every=prof.general.get("eval_every", 0),
            val_limit=prof.general.get("val_limit", det_cfg.val_limit),
        )

    checkpoints = [det_cfg.out / "detector.safetensors", out / "general" / "detector.safetensors"]
    if cfg.ablation:
        checkpoints.append(out / "ablation" / "vgg16-multisource" / "detector.safetensors")
    general_name = train_detector.DEFAULT_NAMES[prof.general.get("arch", "vgg16")]
    eval_cfg = evaluate.EvalConfig(
        checkpoints=checkpoints,
        data=cfg.data,
        out=out / "evaluation",
        foreign=dict(cfg.foreign),
        real_extra=dict(cfg.real_extra),
        combine=(det_cfg.model_name, prof.general.get("name") or general_name),
        seed=cfg.seed,
        **common,
        **prof.evaluate,
    )
    n_real = n_images

    def real_train(c: train_detector.TrainConfig) -> int:
        n = round(n_real * c.split_fractions.get("detector_train", 0.0))
        return min(n, c.limit_images) if c.limit_images > 0 else n

    def detector_estimate(c: train_detector.TrainConfig) -> estimate.Estimate:
        fake_train = round(syn_cfg.n * c.synthetic_fractions[0])
        return estimate.detector(c, max(real_train(c), fake_train))

    def general_estimate(c: train_detector.TrainConfig) -> estimate.Estimate:
        per_source = {"sngan": syn_cfg.n}
        fake_train = round(sum(per_source.get(k, fakes_cfg.per_source) for k in c.fakes))
        return estimate.detector(c, max(real_train(c), round(fake_train * 0.7)))

    not_timed = "not estimated: inference passes only, short next to training"
    stages = [
        Stage(
            "features",
            feat_cfg.out,
            [feat_cfg.out / train_features.CHECKPOINT],
            (),
            lambda: feat_cfg,
            train_features.main,
            estimate.features,
        ),
        Stage(
            "gan",
            gan_cfg.out,
            [generator],
            ("features",) if prof.features else (),
            lambda: gan_cfg,
            train_gan.main,
            estimate.gan,
        ),
        Stage(
            "synthetic",
            syn_cfg.out,
            [syn_cfg.out / "manifest.csv"],
            ("gan",),
            lambda: syn_cfg,
            synthesize.main,
            lambda c: estimate.Estimate(None, f"{c.n:,} images, {not_timed}"),
        ),
        Stage(
            "fakes",
            fakes_cfg.out,
            [fakes_cfg.out / "sources.json"],
            (),
            lambda: fakes_cfg,
            fakes.main,
            estimate.fakes,
        ),
        Stage(
            "detector",
            det_cfg.out,
            [checkpoints[0]],
            ("synthetic",),
            lambda: det_cfg,
            train_detector.main,
            detector_estimate,
        ),
        Stage(
            "general",
            out / "general",
            [checkpoints[1]],
            ("synthetic", "fakes"),
            general_config,
            train_detector.main,
            general_estimate,
        ),
    ]
    if not prof.features:
        stages = stages[1:]
    if cfg.ablation:
        stages.append(
            Stage(
                "ablation",
                out / "ablation" / "vgg16-multisource",
                [checkpoints[2]],
                ("synthetic", "fakes"),
                ablation_config,
                train_detector.main,
                general_estimate,
            )
        )
    stages.append(
        Stage(
            "evaluate",
            eval_cfg.out,
            [eval_cfg.out / "report.json"],
            tuple(s.name for s in stages if s.name in ("detector", "general", "ablation")),
            lambda: eval_cfg,
            evaluate.main,
            lambda c: estimate.Estimate(None, not_timed),
        )
    )
    return stages


def disk_bytes(prof: Profile, runs: dict[str, bool], image_pixels: int) -> int:
    """What the stages that will run write, roughly: PNGs at ~2 bytes per pixel (measured: the
    quick run's 64 px SNGAN PNGs 8 KB, zoo rebuilds of 200x150 photos 30-40 KB; the zoo rebuilds
    photos at their native size), 2.4 GB per VGG16 stage (weights + optimiser state, measured),
    0.5 GB for the rest."""
    png = 2
    total = 500_000_000
    if runs.get("synthetic"):
        total += prof.synthetic["n"] * png * prof.gan["image_size"] ** 2
    if runs.get("fakes"):
        f = fakes.FakesConfig(data=Path(), out=Path(), **prof.fakes)
        n_zoo = len(f.zoo) if "zoo" in f.sources else 0
        total += f.per_source * n_zoo * png * image_pixels
        total += f.per_source * ("dcgan" in f.sources) * png * f.dcgan_size**2
    vgg = [s for s in ("detector", "ablation") if runs.get(s)]
    vgg += ["general"] if runs.get("general") and prof.general.get("arch") == "vgg16" else []
    return total + len(vgg) * 2_400_000_000


def _image_pixels(data: Path) -> int:
    """Pixels of one image of the data folder (the zoo rebuilds photos at their own size)."""
    for folder in ("images", "HAM10000_images_part_1"):
        for path in sorted((data / folder).glob("*.jp*g"))[:1]:
            with Image.open(path) as im:
                return im.width * im.height
    return 600 * 450  # HAM10000's size, for a folder yet to be downloaded


def preflight(cfg: PipelineConfig, prof: Profile, stages: list[Stage]) -> preflight_.Report:
    """Check what the stages that will run need; raise PreflightFailed listing every problem."""
    runs = plan(stages, cfg.force)
    weights: dict[str, Path] = {}
    for st in stages:
        if runs[st.name] and st.name in ("detector", "ablation"):
            path = weights_file(str(st.config().pretrained))
            if path is not None:
                weights[st.name] = path
    request = preflight_.Request(
        data=cfg.data,
        out=cfg.out,
        device=cfg.device,
        profile=cfg.profile,
        needs_gpu=cfg.profile in GPU_PROFILES,
        weights=weights,
        weights_url=cfg.weights_url,
        download=cfg.download,
        data_source=cfg.data_source,
        out_bytes=disk_bytes(prof, runs, _image_pixels(cfg.data)) if any(runs.values()) else 0,
        needs_data=any(runs.values()),
    )
    report = preflight_.check(request)
    if report.problems:
        raise preflight_.PreflightFailed(report.problems)
    todo = [s for s, r in runs.items() if r]
    done = [s for s, r in runs.items() if not r]
    print(
        f"[pipeline] preflight passed ({cfg.profile} profile): to run {', '.join(todo) or '-'}"
        + (f"; up to date {', '.join(done)}" if done else ""),
        flush=True,
    )
    for st in stages:  # a finished stage about to be replaced: say why, before it is gone
        first = runs[st.name] and st.name not in cfg.force and not any(runs[d] for d in st.deps)
        if first and (changes := config_changes(st)):
            print(
                f"[pipeline] {st.name}: its config differs from the run in {st.folder} "
                f"({'; '.join(changes)}): that run is replaced, and every stage after it "
                "reruns. Stop now (Ctrl-C) to keep it, or pass the same options as before.",
                flush=True,
            )
    return report


def until(stages: list[Stage], last: str | None) -> list[Stage]:
    """The stages up to and including ``last`` (all when None)."""
    if last is None:
        return stages
    names = [s.name for s in stages]
    if last not in names:
        raise ValueError(f"--until {last}: this run's stages are {', '.join(names)}")
    return stages[: names.index(last) + 1]


def fetch_inputs(cfg: PipelineConfig, report: preflight_.Report) -> None:
    """``--download``: what the preflight found missing and reachable."""
    if report.download_data:
        print(f"[pipeline] download  HAM10000 from {cfg.data_source} into {cfg.data}", flush=True)
        download.main(download.DownloadConfig(out=cfg.data, source=cfg.data_source))
    for path in report.download_weights:
        print(f"[pipeline] download  {cfg.weights_url} -> {path}", flush=True)
        download.fetch_weights(cfg.weights_url, path, quiet=cfg.quiet)


def main(cfg: PipelineConfig) -> dict[str, Any]:
    """Check every input, fetch what ``--download`` allows, run the stages that are not up to
    date; return the evaluation report. Raises PreflightFailed before any stage when inputs
    are missing."""
    if cfg.profile not in PROFILES:
        raise ValueError(f"unknown profile {cfg.profile!r}; choose from {sorted(PROFILES)}")
    prof = PROFILES[cfg.profile]
    report = preflight(cfg, prof, until(build_stages(cfg, prof), cfg.until))
    if cfg.check_only:
        return {}
    # A service reading cfg.out waits while this runs, and after a failure (models.artifacts).
    with artifacts.TrainingRun(cfg.out, profile=cfg.profile, stage="download") as run:
        fetch_inputs(cfg, report)
        n_images = len(load_index(cfg.data)) if report.download_data else report.n_images
        stages = until(build_stages(cfg, prof, n_images), cfg.until)
        tokens: dict[str, str] = {}
        for st in stages:
            run.stage(st.name)
            tokens[st.name] = _run_stage(st, "".join(tokens[d] for d in st.deps), cfg)
        return _finish(cfg, stages[-1].name)


def _finish(cfg: PipelineConfig, last: str) -> dict[str, Any]:
    """The evaluation report, ``summary.md`` and ``pipeline.json`` ({} after ``--until``)."""
    if last != "evaluate":
        print(f"[pipeline] stopped after {last} (--until)", flush=True)
        return {}
    out = cfg.out
    result = json.loads((out / "evaluation" / "report.json").read_text())
    write_summary(out, cfg, result)
    write_json(out / "pipeline.json", replace(cfg, force=(), check_only=False))
    print(f"[pipeline] summary   -> {out / 'summary.md'}", flush=True)
    return result


def fake_sources(fakes_dir: Path, synthetic: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """(train, held_out) sources of the general detector: the SNGAN's PNGs and the upsampler
    zoo are trained on; every other GAN that ``training.fakes`` built is held out."""
    listed = json.loads((fakes_dir / "sources.json").read_text())["sources"]
    train = {"sngan": synthetic}
    held_out = {}
    for s in listed:
        (train if s["family"] == "zoo" else held_out)[s["name"]] = fakes_dir / s["folder"]
    return train, held_out


def _latest_grid(gan_dir: Path) -> Path | None:
    grids = sorted((gan_dir / "samples").glob("step_*.png"))
    return grids[-1] if grids else None


def write_summary(out: Path, cfg: PipelineConfig, report: dict[str, Any]) -> Path:
    """``summary.md``: what was served and how it scored (the evaluation's tables), figures."""
    served = ", ".join(f"`{d}/detector.safetensors`" for d in SERVED)
    lines = [
        f"# dermafake pipeline summary ({cfg.profile} profile)",
        "",
        f"Data: `{cfg.data}`. Seed {cfg.seed}. Served detectors: {served}; generator "
        "`gan/generator.safetensors`. Positive class = synthetic.",
        "",
        evaluate.render_markdown(report).split("\n", 1)[1],
    ]
    grid = _latest_grid(out / "gan")
    if grid:
        lines += [f"![generator samples]({grid.relative_to(out)})", ""]
    if (out / "evaluation" / "roc.png").is_file():
        lines += ["![roc](evaluation/roc.png)", ""]
    path = out / "summary.md"
    path.write_text("\n".join(lines))
    return path


def parse_args(argv: list[str] | None = None) -> PipelineConfig:
    p = argparse.ArgumentParser(
        prog="python -m training.pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help="HAM10000 folder (images/ + HAM10000_metadata.csv, or the official "
        "layout); fetch one with `python -m training.download`",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("artifacts"),
        help="artifacts folder; the service reads it by default (default: artifacts)",
    )
    p.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="quick",
        help="quick (CPU, ~38 minutes), cpu-long (CPU, ~2 hours: a 90-minute GAN), paper (GPU, "
        "hours), paper-rehearsal (the paper path shrunk, CPU, a minute) or smoke (tests)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for every stage (default: 0)")
    add_named_dirs(
        p,
        "--foreign",
        "images of a generator never trained on, for the evaluation; repeatable",
    )
    add_named_dirs(
        p,
        "--real-extra",
        "real photos from another source (e.g. full-size clinic photos), for the "
        "evaluation's false-positive rates; repeatable",
    )
    p.add_argument(
        "--ablation",
        action="store_true",
        help="also train the VGG16 on the general detector's multi-source data (not served)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument(
        "--force",
        nargs="+",
        choices=STAGES,
        default=[],
        help="rerun these stages (and what depends on them) even if up to date",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--until",
        choices=STAGES,
        default=None,
        help="stop after this stage (e.g. gan: train only the generator and its feature model)",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="fetch what the preflight finds missing and public before the first stage: "
        "HAM10000 into --data from Harvard Dataverse (2.7 GB, resumable, MD5-checked) and "
        "torchvision's ImageNet VGG16 weights into the torch hub cache (528 MB, hash-checked)",
    )
    p.add_argument(
        "--data-source",
        default=download.SERVER,
        help=f"Dataverse server --download fetches HAM10000 from (default: {download.SERVER})",
    )
    p.add_argument(
        "--weights-url",
        default=download.VGG16_URL,
        help="where --download fetches the ImageNet VGG16 weights (a file named "
        "NAME-<sha256 prefix>.pth; default: torchvision's)",
    )
    p.add_argument(
        "--check",
        dest="check_only",
        action="store_true",
        help="only run the preflight (inputs, weights, output, device, disk) and exit",
    )
    a = p.parse_args(argv)

    def absolute(named: dict[str, Path]) -> dict[str, Path]:
        return {name: path.expanduser().resolve() for name, path in named.items()}

    # Absolute paths: stage fingerprints hold them, and `data/x` and `./data/x` or `/abs/data/x`
    # must not look like another config (which would retrain and replace every stage).
    return PipelineConfig(
        data=a.data.expanduser().resolve(),
        out=a.out.expanduser().resolve(),
        profile=a.profile,
        seed=a.seed,
        foreign=absolute(unique_named(a.foreign, "--foreign")),
        real_extra=absolute(unique_named(a.real_extra, "--real-extra")),
        ablation=a.ablation,
        device=a.device,
        threads=a.threads,
        force=tuple(a.force),
        quiet=a.quiet,
        download=a.download,
        data_source=a.data_source,
        weights_url=a.weights_url,
        check_only=a.check_only,
        until=a.until,
    )


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(f"[pipeline] stopped by signal {signum} (SIGTERM)")


def cli(argv: list[str] | None = None) -> None:
    """Exit 1 with every preflight problem (or a download error), without a traceback.
    SIGTERM (``docker compose stop``, a Kubernetes eviction) unwinds like Ctrl-C, so the
    trainer's marker says the run failed instead of claiming a trainer that is gone."""
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        main(parse_args(argv))
    except (preflight_.PreflightFailed, DatasetError) as exc:
        sys.exit(f"[pipeline] {exc}")


if __name__ == "__main__":
    cli()
