"""One command from a HAM10000 folder to the artifacts the service reads.

    python -m training.pipeline --data DIR --out artifacts --profile quick

Stages: ``gan`` (train the SNGAN on the ``gan_train`` lesions) -> ``synthetic`` (sample PNGs) ->
``fakes`` (the upsampler zoo and a DCGAN, also from ``gan_train`` lesions only) -> ``detector``
(the paper's VGG16 on the ``detector_*`` lesions vs the SNGAN's PNGs) -> ``general`` (the NPR
detector on the SNGAN + zoo sources, the DCGAN held out for model selection) -> optionally
``ablation`` (the VGG16 on the general detector's data: does the data or the architecture carry
the transfer?) -> ``evaluate`` (every detector side by side: held-out test, every source,
foreign generators, other real photos, resampling control, robustness) -> ``summary.md``.

Each stage records a fingerprint of its own config and of the stages it depends on in
``<stage>/stage.json``. A stage whose outputs exist with the same fingerprint is skipped; a
changed config reruns it and everything downstream. Profiles:

- ``quick``: sized for a 2-core CPU (64 px GAN, time-capped stages, 64 px detector inputs).
- ``paper``: 128 px SNGAN with the published recipe, 10,000 synthetic images, the paper's 128 px
  VGG16 with ImageNet weights, a larger zoo and DCGAN, the NPR detector at 128 px; for one GPU.
- ``smoke``: a few steps per stage on a handful of images, for tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from training import evaluate, fakes, synthesize, train_detector, train_gan
from training.augment import AugmentConfig
from training.common import jsonable, write_json
from training.detector_data import add_named_dirs, unique_named

STAGES = ("gan", "synthetic", "fakes", "detector", "general", "ablation", "evaluate")
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
            steps=100_000,
            time_limit_min=10.0,
            sample_every=500,
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
    ),
}


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


def _run_stage(
    name: str,
    stage_dir: Path,
    outputs: list[Path],
    config: Any,
    upstream: str,
    run: Callable[[], Any],
    cfg: PipelineConfig,
) -> str:
    """Run one stage unless up to date; return a token that changes whenever the stage reruns,
    so the stages downstream of a rerun (``--force`` included) rerun too."""
    fp = _fingerprint(config, upstream)
    marker = stage_dir / "stage.json"
    if name not in cfg.force and _done(stage_dir, outputs, fp):
        print(f"[pipeline] {name:9s} up to date ({stage_dir}), skipped", flush=True)
        return fp + json.loads(marker.read_text())["finished"]
    if stage_dir.exists():  # stale outputs of another config: start clean
        shutil.rmtree(stage_dir)
    start = time.perf_counter()
    run()
    finished = time.strftime("%Y-%m-%dT%H:%M:%S%z") + f".{time.time_ns() % 10**9}"
    write_json(marker, {"stage": name, "fingerprint": fp, "finished": finished, "config": config})
    print(
        f"[pipeline] {name:9s} done in {time.perf_counter() - start:7.1f} s -> {stage_dir}",
        flush=True,
    )
    return fp + finished


def main(cfg: PipelineConfig) -> dict[str, Any]:
    """Run the stages that are not up to date; return the evaluation report."""
    if cfg.profile not in PROFILES:
        raise ValueError(f"unknown profile {cfg.profile!r}; choose from {sorted(PROFILES)}")
    prof = PROFILES[cfg.profile]
    out = cfg.out
    common = dict(device=cfg.device, threads=cfg.threads, quiet=cfg.quiet)

    gan_cfg = train_gan.TrainGanConfig(
        data=cfg.data, out=out / "gan", seed=cfg.seed, **common, **prof.gan
    )
    generator = gan_cfg.out / "generator.safetensors"
    gan_fp = _run_stage(
        "gan", gan_cfg.out, [generator], gan_cfg, "", lambda: train_gan.main(gan_cfg), cfg
    )

    syn_cfg = synthesize.SynthesizeConfig(
        checkpoint=generator,
        out=out / "synthetic",
        seed=cfg.seed + 1,
        overwrite=True,
        **common,
        **prof.synthetic,
    )
    syn_fp = _run_stage(
        "synthetic",
        syn_cfg.out,
        [syn_cfg.out / "manifest.csv"],
        syn_cfg,
        gan_fp,
        lambda: synthesize.main(syn_cfg),
        cfg,
    )

    fakes_cfg = fakes.FakesConfig(
        data=cfg.data, out=out / "fakes", seed=cfg.seed, overwrite=True, **common, **prof.fakes
    )
    fakes_fp = _run_stage(
        "fakes",
        fakes_cfg.out,
        [fakes_cfg.out / "sources.json"],
        fakes_cfg,
        "",
        lambda: fakes.main(fakes_cfg),
        cfg,
    )
    train_sources, held_out = fake_sources(fakes_cfg.out, syn_cfg.out)

    det_cfg = train_detector.TrainConfig(
        data=cfg.data,
        fakes={"sngan": syn_cfg.out},
        out=out / "detector",
        seed=cfg.seed,
        **common,
        **prof.detector,
    )
    detector = det_cfg.out / "detector.safetensors"
    det_fp = _run_stage(
        "detector",
        det_cfg.out,
        [detector],
        det_cfg,
        syn_fp,
        lambda: train_detector.main(det_cfg),
        cfg,
    )

    gen_cfg = train_detector.TrainConfig(
        data=cfg.data,
        fakes=train_sources,
        held_out=held_out,
        out=out / "general",
        seed=cfg.seed,
        **common,
        **prof.general,
    )
    general = gen_cfg.out / "detector.safetensors"
    gen_fp = _run_stage(
        "general",
        gen_cfg.out,
        [general],
        gen_cfg,
        syn_fp + fakes_fp,
        lambda: train_detector.main(gen_cfg),
        cfg,
    )
    checkpoints, upstream = [detector, general], det_fp + gen_fp

    if cfg.ablation:
        abl_cfg = dataclasses.replace(
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
        ablation = abl_cfg.out / "detector.safetensors"
        upstream += _run_stage(
            "ablation",
            abl_cfg.out,
            [ablation],
            abl_cfg,
            syn_fp + fakes_fp,
            lambda: train_detector.main(abl_cfg),
            cfg,
        )
        checkpoints.append(ablation)

    eval_cfg = evaluate.EvalConfig(
        checkpoints=checkpoints,
        data=cfg.data,
        out=out / "evaluation",
        foreign=dict(cfg.foreign),
        real_extra=dict(cfg.real_extra),
        combine=(det_cfg.model_name, gen_cfg.model_name),
        seed=cfg.seed,
        **common,
        **prof.evaluate,
    )
    _run_stage(
        "evaluate",
        eval_cfg.out,
        [eval_cfg.out / "report.json"],
        eval_cfg,
        upstream,
        lambda: evaluate.main(eval_cfg),
        cfg,
    )

    report = json.loads((eval_cfg.out / "report.json").read_text())
    write_summary(out, cfg, report)
    write_json(out / "pipeline.json", replace(cfg, force=()))
    print(f"[pipeline] summary   -> {out / 'summary.md'}", flush=True)
    return report


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
        help="quick (CPU, minutes), paper (GPU, hours) or smoke (tests)",
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
    a = p.parse_args(argv)
    return PipelineConfig(
        data=a.data,
        out=a.out,
        profile=a.profile,
        seed=a.seed,
        foreign=unique_named(a.foreign, "--foreign"),
        real_extra=unique_named(a.real_extra, "--real-extra"),
        ablation=a.ablation,
        device=a.device,
        threads=a.threads,
        force=tuple(a.force),
        quiet=a.quiet,
    )


if __name__ == "__main__":
    main(parse_args())
