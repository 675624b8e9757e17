"""Train a real-vs-synthetic detector: the paper's VGG16 or the general NPR detector, one loop.

Architectures (``--arch``):

- ``vgg16``: Abbasi et al. 2024: ImageNet VGG16 + two Linear-4096 layers (``models.detector``),
  input centre-square-cropped and resized, threshold by Youden J on validation (the paper's row).
- ``npr``: Tan et al. 2024 (``models.npr``): a truncated ResNet on the neighbouring-pixel residual,
  trained from scratch on native-resolution crops (no resizing of either class), threshold at a
  target false-positive rate on real validation photos, with an inconclusive band.

Data (``training.detector_data``). Real images: the ``detector_*`` lesions only. Fakes: one or
more named sources (``--fake NAME=DIR``, e.g. the SNGAN's PNGs and the upsampler zoo of
``training.fakes``), and optionally sources held out of training (``--held-out NAME=DIR``, e.g. a
DCGAN): those choose the checkpoint and stop training (leave-one-source-out), so model selection
rewards transfer to a generator the model never trained on. Batches are class-balanced (half
real, half fake; the fake half drawn from all training sources pooled).

Pixels. Both classes take the same path: decode through ``models.preprocessing`` (the service's
path), then ``training.augment.Augment``, which never sees the labels; its JPEG re-encoding of
every training image of both classes at a random quality is the format-bias control.

Selection and operating point. Every ``--eval-every`` steps the model scores the validation
images. The selection score is the ROC-AUC of the held-out sources against the real validation
photos (all validation fakes when nothing is held out); ties go to the lower validation loss.
The best checkpoint is written to ``detector.safetensors`` with its operating point
(``training.scoring.choose_operating_point``: Platt calibration, threshold, inconclusive
band), chosen on validation images only. ``state.pt`` holds what ``--resume`` needs. DDP
through ``torchrun``: each rank takes its own slice of every class batch; rank 0 logs and saves.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from models.checkpoint import load_state, save_model, save_state, unwrap
from models.detector import Detector, DetectorConfig, load_imagenet_weights
from models.operating_point import OperatingPoint
from models.preprocessing import PreprocessConfig, normalize
from models.runtime import PRECISIONS, autocast, resolve_device, resolve_dtype
from training.augment import Augment, AugmentConfig
from training.common import (
    CsvLog,
    Dist,
    batch_indices,
    close_distributed,
    init_distributed,
    lr_factor,
    seed_everything,
    write_json,
)
from training.data import DEFAULT_FRACTIONS, SplitConfig, parse_fractions
from training.detector_data import (
    DEFAULT_SYNTHETIC_FRACTIONS,
    SYNTHETIC_SALT,
    DetectorData,
    ImageBank,
    Sources,
    add_named_dirs,
    detector_sets,
    load_views,
    perturbed_views,
    unique_named,
)
from training.metrics import binary_report, nan_to_none, roc_auc
from training.progress import Progress
from training.scoring import (
    CRITERIA,
    bce_from_logits,
    calibrated,
    choose_operating_point,
    predict_view_logits,
    sigmoid,
    verdict_shares,
)

ARCHITECTURES = ("vgg16", "npr")
CONTROL = "downscale_x0.5"  # training.augment.PERTURBATIONS: the resampling control
DEFAULT_NAMES = {"vgg16": "vgg16-paper", "npr": "npr-general"}
LOG_FIELDS = (
    "step",
    "epoch",
    "loss",
    "lr",
    "img_per_s",
    "val_selection",
    "val_control_flagged",
    "val_roc_auc",
    "val_loss",
    "val_balanced_accuracy",
    "threshold",
)


@dataclass
class TrainConfig:
    data: Path
    out: Path
    synthetic: Path | None = None  # shorthand for fakes={"sngan": synthetic}
    fakes: dict[str, Path] = field(default_factory=dict)
    held_out: dict[str, Path] = field(default_factory=dict)
    arch: str = "vgg16"
    name: str = ""
    epochs: int = 1
    steps: int = 0
    time_limit_min: float = 0.0
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 0
    pretrained: str = "imagenet"
    allow_download: bool = False
    image_size: int = 128
    dropout: float = 0.5
    npr_norm: str = "none"
    precision: str = "auto"
    device: str = "auto"
    channels_last: bool = True
    threads: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    eval_every: int = 0
    eval_batch_size: int = 32
    patience: int = 3
    threshold_criterion: str = "auto"
    target_fpr: float = 0.05
    inconclusive_fpr: float = 0.0
    split_fractions: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    split_seed: int = 0
    synthetic_fractions: tuple[float, float, float] = DEFAULT_SYNTHETIC_FRACTIONS
    limit_images: int = 0
    val_limit: int = 0
    seed: int = 0
    log_every: int = 10
    resume: bool = False
    quiet: bool = False

    @property
    def sources(self) -> Sources:
        fakes = dict(self.fakes)
        if self.synthetic is not None:
            fakes.setdefault("sngan", Path(self.synthetic))
        return Sources(fakes, dict(self.held_out))

    @property
    def criterion(self) -> str:
        """``auto``: the paper's Youden J for the VGG16, a target false-positive rate otherwise."""
        if self.threshold_criterion != "auto":
            return self.threshold_criterion
        return "youden" if self.arch == "vgg16" else "fpr"

    @property
    def model_name(self) -> str:
        return self.name or DEFAULT_NAMES[self.arch]


# ---------------------------------------------------------------- model


def preprocess_for(cfg: TrainConfig) -> PreprocessConfig:
    """The input path of each architecture (saved in the checkpoint, used by the service)."""
    crop = "native" if cfg.arch == "npr" else "center_square"
    return PreprocessConfig(image_size=cfg.image_size, crop=crop)


def build_model(cfg: TrainConfig) -> nn.Module:
    if cfg.arch == "npr":
        from models.npr import NPRConfig, NPRDetector

        return NPRDetector(NPRConfig(image_size=cfg.image_size, residual_norm=cfg.npr_norm))
    if cfg.arch != "vgg16":
        raise ValueError(f"unknown architecture {cfg.arch!r}; choose from {ARCHITECTURES}")
    model = Detector(DetectorConfig(image_size=cfg.image_size, dropout=cfg.dropout))
    if cfg.pretrained != "none":
        load_imagenet_weights(model, cfg.pretrained, allow_download=cfg.allow_download)
    return model


def training_batch(
    real: torch.Tensor, synthetic: torch.Tensor, augment: Augment, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One class-balanced uint8 batch and its labels (0 real, 1 synthetic).

    Both classes go through a single call of the same augmentation, which never sees the
    labels: this is where the format-bias control applies to real and synthetic alike.
    """
    images = augment(torch.cat([real, synthetic]), generator)
    labels = torch.cat([torch.zeros(real.shape[0]), torch.ones(synthetic.shape[0])])
    return images, labels


# ---------------------------------------------------------------- validation


@dataclass
class Validation:
    """Validation images as the service sees them (views (N, V, 3, S, S): the crop, and for
    native-crop models its half-scale view), labels, source names, and the resampling control:
    the real ones downscaled x0.5 and back (still real; watched, never used to set thresholds)."""

    views: torch.Tensor
    labels: np.ndarray
    source: np.ndarray  # "real" or the fake source's name
    held_out: tuple[str, ...]
    control: torch.Tensor

    @classmethod
    def load(
        cls, val: DetectorData, sources: Sources, pre: PreprocessConfig, quiet: bool
    ) -> Validation:
        canvases, views = load_views([*val.real, *val.synthetic], pre, desc="val", quiet=quiet)
        labels = np.array([0] * len(val.real) + [1] * len(val.synthetic))
        source = np.array(["real"] * len(val.real) + list(val.source))
        control = perturbed_views(canvases[: len(val.real)], pre, CONTROL)
        return cls(views, labels, source, tuple(sources.held_out), control)

    def report(
        self,
        logits: np.ndarray,
        criterion: str,
        target_fpr: float,
        band: float,
        control_logits: np.ndarray | None = None,
    ) -> tuple[dict[str, Any], OperatingPoint]:
        """Validation metrics at the operating point chosen on these same images; ``logits`` and
        ``control_logits`` are (N, V), one column per view."""
        real_mask = self.labels == 0
        point = choose_operating_point(
            self.labels,
            logits[:, 0],
            criterion,
            target_fpr,
            band if band > 0 else None,
            logits[real_mask, 1] if logits.shape[1] > 1 and criterion == "fpr" else None,
        )
        probs = calibrated(point, logits[:, 0])
        half = calibrated(point, logits[:, 1]) if point.views > 1 else None
        report = binary_report(self.labels, probs, point.threshold)
        report["loss"] = bce_from_logits(self.labels, logits[:, 0])
        report["ece_uncalibrated"] = binary_report(self.labels, sigmoid(logits[:, 0]), 0.5)["ece"]
        real = probs[real_mask]
        per_source = {}
        for name in sorted(set(self.source.tolist()) - {"real"}):
            mine = self.source == name
            y = np.r_[np.zeros(real.size), np.ones(int(mine.sum()))]
            per_source[name] = {
                "held_out": name in self.held_out,
                "roc_auc_vs_real": roc_auc(y, np.r_[real, probs[mine]]),
                **verdict_shares(probs[mine], point, None if half is None else half[mine]),
            }
        report["per_source"] = per_source
        report["real"] = verdict_shares(real, point, None if half is None else half[real_mask])
        held = [per_source[n]["roc_auc_vs_real"] for n in self.held_out if n in per_source]
        report["selection"] = float(np.mean(held)) if held else report["roc_auc"]
        report["selection_on"] = "held-out sources" if held else "all validation fakes"
        report["operating_point"] = point.to_dict()
        if control_logits is not None:
            c_half = calibrated(point, control_logits[:, 1]) if point.views > 1 else None
            report["resampling_control"] = verdict_shares(
                calibrated(point, control_logits[:, 0]), point, c_half
            )
        return report, point


def _validate(
    model: nn.Module,
    val: Validation,
    cfg: TrainConfig,
    preprocess: PreprocessConfig,
    device: torch.device,
    dtype: torch.dtype,
    ctx: Dist,
) -> tuple[dict[str, Any], OperatingPoint]:
    """Score the validation set (sharded over ranks, gathered), choose the operating point."""
    idx = np.arange(val.views.shape[0])[ctx.rank :: ctx.world_size]
    opts = dict(batch_size=cfg.eval_batch_size, channels_last=cfg.channels_last, desc="validation")
    quiet = cfg.quiet or not ctx.is_main
    views = val.views[torch.from_numpy(idx)]
    logits = predict_view_logits(model, views, preprocess, device, dtype, quiet=quiet, **opts)
    if ctx.enabled:
        parts: list[Any] = [None] * ctx.world_size
        dist.all_gather_object(parts, (idx, logits))
        full = np.zeros((val.views.shape[0], logits.shape[1]), dtype=np.float64)
        for i, lg in parts:
            full[i] = lg
        logits = full
    control = predict_view_logits(model, val.control, preprocess, device, dtype, quiet=True, **opts)
    return val.report(logits, cfg.criterion, cfg.target_fpr, cfg.inconclusive_fpr, control)


# ---------------------------------------------------------------- training


def _check_sets(sets: dict[str, DetectorData], sources: Sources) -> None:
    for name in ("train", "val"):
        s = sets[name]
        if not s.real or not s.synthetic:
            raise ValueError(
                f"the {name} split has {len(s.real)} real and {len(s.synthetic)} synthetic "
                "images; both classes are needed (more synthetic images or other fractions)"
            )
    for held in sources.held_out:
        if not sets["val"].of_source(held):
            raise ValueError(f"held-out source {held!r} has no validation images")


def main(cfg: TrainConfig) -> dict[str, Any]:
    """Train; returns the best validation report (the one saved in ``detector.safetensors``)."""
    if cfg.batch_size < 2 or cfg.batch_size % 2:
        raise ValueError("--batch-size must be even (half real, half synthetic) and >= 2")
    if cfg.arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {cfg.arch!r}; choose from {ARCHITECTURES}")
    sources = cfg.sources
    device = resolve_device(cfg.device)
    ctx = init_distributed(device)
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    dtype = resolve_dtype(cfg.precision, device)
    seed_everything(cfg.seed + ctx.rank)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    preprocess = preprocess_for(cfg)
    split = SplitConfig(dict(cfg.split_fractions), cfg.split_seed)
    limits = {"train": cfg.limit_images, "val": cfg.val_limit or cfg.limit_images}
    sets = detector_sets(
        cfg.data,
        sources,
        split,
        cfg.synthetic_fractions,
        limits,
        cfg.seed,
        manifest=out / "split.csv" if ctx.is_main else None,
    )
    _check_sets(sets, sources)
    train = sets["train"]
    if ctx.is_main:
        write_json(out / "config.json", {**dataclasses.asdict(cfg), "dtype": str(dtype)})
    quiet = cfg.quiet or not ctx.is_main
    real_bank = ImageBank(train.real, preprocess, desc="real train", quiet=quiet)
    fake_bank = ImageBank(train.synthetic, preprocess, desc="synthetic train", quiet=quiet)
    val = Validation.load(sets["val"], sources, preprocess, quiet)

    half = cfg.batch_size // 2
    per_step = half * ctx.world_size  # images of each class per optimiser step, all ranks
    steps_per_epoch = math.ceil(max(len(real_bank), len(fake_bank)) / per_step)
    total = cfg.epochs * steps_per_epoch
    if cfg.steps > 0:
        total = min(total, cfg.steps)
    eval_every = cfg.eval_every or steps_per_epoch

    model = build_model(cfg).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, best_score, best_loss, bad_evals, best_report = 0, -1.0, math.inf, 0, {}
    state_path = out / "state.pt"
    if cfg.resume and state_path.is_file():
        state = load_state(state_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        best_score, best_loss = float(state["best_score"]), float(state["best_loss"])
        bad_evals = int(state["bad_evals"])
        best_report = dict(state.get("best_report", {}))
        torch.set_rng_state(state["torch_rng"][ctx.rank % len(state["torch_rng"])])
        cuda_rng = state.get("cuda_rng") or []
        if device.type == "cuda" and cuda_rng:  # dropout masks on the GPU continue too
            torch.cuda.set_rng_state(cuda_rng[ctx.rank % len(cuda_rng)], device)
        if ctx.is_main:
            print(f"resumed from {state_path} at step {step}", file=sys.stderr)
    train_model: nn.Module = model
    if ctx.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    log = CsvLog(out / "log.csv", LOG_FIELDS, resume_step=step) if ctx.is_main else None
    augment = Augment(cfg.augment)
    loss_fn = nn.BCEWithLogitsLoss()
    sources_info = sources.to_dict()
    train_counts = {"real": len(real_bank), "synthetic": len(fake_bank)}
    train_counts.update({f"source:{n}": len(train.of_source(n)) for n in sources.train})

    def save_checkpoint(report: dict[str, Any], point: OperatingPoint) -> None:
        save_model(
            out / "detector.safetensors",
            model,
            preprocess,
            threshold=float(point.threshold),
            step=step,
            metrics={"validation": nan_to_none(report)},
            extra={
                "name": cfg.model_name,
                "architecture": cfg.arch,
                "operating_point": point.to_dict(),
                "sources": sources_info,
                "split": {"fractions": split.fractions, "seed": split.seed},
                "synthetic_split": {
                    "fractions": list(cfg.synthetic_fractions),
                    "salt": SYNTHETIC_SALT,
                },
                "threshold_criterion": cfg.criterion,
                "augment": dataclasses.asdict(cfg.augment),
                "data": str(cfg.data),
                "train_counts": train_counts,
            },
        )

    def save_training_state() -> None:
        rng = [torch.get_rng_state()]
        cuda_rng = [torch.cuda.get_rng_state(device)] if device.type == "cuda" else []
        if ctx.enabled:
            rng = [None] * ctx.world_size  # type: ignore[list-item]
            dist.all_gather_object(rng, torch.get_rng_state())
            if cuda_rng:
                cuda_rng = [None] * ctx.world_size  # type: ignore[list-item]
                dist.all_gather_object(cuda_rng, torch.cuda.get_rng_state(device))
        if ctx.is_main:
            save_state(
                state_path,
                {
                    "model": unwrap(model).state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "step": step,
                    "best_score": best_score,
                    "best_loss": best_loss,
                    "bad_evals": bad_evals,
                    "best_report": nan_to_none(best_report),
                    "torch_rng": rng,
                    "cuda_rng": cuda_rng,
                },
            )

    train_model.train()
    progress = Progress(total, step, 60 * cfg.time_limit_min, quiet, desc="detector")

    def set_lr() -> float:
        fraction = progress.elapsed() / progress.limit_s if progress.limit_s > 0 else 0.0
        lr = cfg.lr * lr_factor(step, total, cfg.warmup_steps, fraction)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    t0, seen, loss_sum, n_loss = time.perf_counter(), 0, 0.0, 0
    stop_reason = ""
    while step < total:
        lr = set_lr()
        ri = batch_indices(step, len(real_bank), per_step, cfg.seed)
        si = batch_indices(step, len(fake_bank), per_step, cfg.seed + 7919)
        mine = slice(ctx.rank * half, (ctx.rank + 1) * half)
        g = torch.Generator().manual_seed((cfg.seed * 1_000_003 + step) * 64 + ctx.rank)
        batch, y = training_batch(
            real_bank.batch(ri[mine], g), fake_bank.batch(si[mine], g), augment, g
        )
        x = normalize(batch.to(device), preprocess)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, dtype):
            logits = train_model(x)
        loss = loss_fn(logits.float(), y.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        seen += batch.shape[0] * ctx.world_size
        loss_sum += float(loss.detach())
        n_loss += 1
        progress.update(step, loss=f"{float(loss.detach()):.4f}")
        out_of_time = progress.out_of_time()
        last = step == total or out_of_time
        row: dict[str, Any] = {}
        if step % cfg.log_every == 0 or last or step % eval_every == 0:
            dt = time.perf_counter() - t0
            row = {
                "step": step,
                "epoch": f"{step / steps_per_epoch:.3f}",
                "loss": loss_sum / max(1, n_loss),
                "lr": lr,
                "img_per_s": seen / dt if dt > 0 else 0.0,
            }
            t0, seen, loss_sum, n_loss = time.perf_counter(), 0, 0.0, 0
        if step % eval_every == 0 or last:
            report, point = _validate(model, val, cfg, preprocess, device, dtype, ctx)
            score = report["selection"] if math.isfinite(report["selection"]) else 0.0
            improved = score > best_score + 1e-9 or (
                abs(score - best_score) <= 1e-9 and report["loss"] < best_loss
            )
            if improved:
                best_score, best_loss, bad_evals, best_report = score, report["loss"], 0, report
                if ctx.is_main:
                    save_checkpoint(report, point)
            else:
                bad_evals += 1
            row.update(
                val_selection=report["selection"],
                val_control_flagged=report["resampling_control"]["flagged_synthetic"],
                val_roc_auc=report["roc_auc"],
                val_loss=report["loss"],
                val_balanced_accuracy=report["balanced_accuracy"],
                threshold=point.threshold,
            )
            if ctx.is_main:
                progress.write(
                    f"step {step}: selection ({report['selection_on']}) ROC-AUC "
                    f"{report['selection']:.4f}, all val ROC-AUC {report['roc_auc']:.4f} "
                    f"loss {report['loss']:.4f} threshold {point.threshold:.4g}, resampled "
                    f"real flagged {report['resampling_control']['flagged_synthetic']:.1%}"
                    + (" (best)" if improved else "")
                )
            save_training_state()
            if bad_evals >= cfg.patience and step < total:
                stop_reason = f"no better selection score in {cfg.patience} evaluations"
        if out_of_time and not stop_reason and step < total:
            stop_reason = f"time limit of {cfg.time_limit_min:g} min reached"
        if log is not None and row:
            log.write(row)
        if stop_reason:
            if ctx.is_main:
                progress.write(f"stopped at step {step}: {stop_reason}")
            break
    progress.close()
    if ctx.is_main:
        write_json(
            out / "train_summary.json",
            nan_to_none(
                {
                    "step": step,
                    "total_steps": total,
                    "steps_per_epoch": steps_per_epoch,
                    "stopped_early": bool(stop_reason),
                    "stop_reason": stop_reason,
                    "best_validation": best_report,
                    "counts": {
                        "train": train_counts,
                        "val": {
                            "real": len(sets["val"].real),
                            "synthetic": int((val.labels == 1).sum()),
                        },
                    },
                }
            ),
        )
    close_distributed(ctx)
    return best_report


# ---------------------------------------------------------------- command line


def _synthetic_fractions(text: str) -> tuple[float, float, float]:
    values = tuple(float(v) for v in text.split(","))
    if len(values) != 3:
        raise argparse.ArgumentTypeError("need 3 comma-separated fractions (train,val,test)")
    return values  # type: ignore[return-value]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.train_detector",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = p.add_argument
    a("--data", type=Path, required=True, help="HAM10000 folder (images/ + metadata CSV)")
    a("--out", type=Path, required=True, help="run folder: checkpoint, state, config, log, split")
    a("--arch", choices=ARCHITECTURES, default="vgg16", help="vgg16 (the paper) or npr (general)")
    a("--name", default="", help="model name in the service and reports (default per --arch)")
    add_named_dirs(
        p,
        "--fake",
        "a fake source to train on (repeatable): training.synthesize or training.fakes "
        "output; its train split trains, its val split validates",
        dest="fakes",
    )
    a("--synthetic", type=Path, default=None, help="shorthand for --fake sngan=DIR")
    add_named_dirs(
        p,
        "--held-out",
        "a fake source never trained on (repeatable): its val split chooses the checkpoint "
        "and stops training (leave-one-source-out)",
    )
    a("--epochs", type=int, default=1, help="passes over the larger class (default 1)")
    a("--steps", type=int, default=0, help="cap on optimiser steps (0 = no cap)")
    a("--time-limit-min", type=float, default=0.0, help="stop after N minutes (0 = no limit)")
    a("--batch-size", type=int, default=16, help="per-rank batch, half real half synthetic")
    a("--lr", type=float, default=1e-4, help="AdamW peak learning rate (default 1e-4)")
    a("--weight-decay", type=float, default=1e-4, help="AdamW weight decay (default 1e-4)")
    a("--warmup-steps", type=int, default=0, help="linear warm-up steps before the cosine decay")
    a(
        "--pretrained",
        default="imagenet",
        help="vgg16 backbone init: 'imagenet' (torch hub cache, as the paper), 'none' (from "
        "scratch) or a path to a vgg16-397923af.pth-style state dict; npr always from scratch",
    )
    a("--allow-download", action="store_true", help="let --pretrained imagenet download weights")
    a("--image-size", type=int, default=128, help="input size in px (paper: 128)")
    a("--dropout", type=float, default=0.5, help="dropout in the vgg16 head (default 0.5)")
    a(
        "--npr-norm",
        choices=("none", "rms"),
        default="none",
        help="npr: divide each image's residual by its RMS so that sharpness is no cue "
        "(default none, as the paper)",
    )
    a("--precision", choices=PRECISIONS, default="auto", help="auto: bf16 only where native")
    a("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    a("--no-channels-last", dest="channels_last", action="store_false", help="NCHW tensors")
    a("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    a("--hflip", type=float, default=0.5, help="probability of a horizontal flip")
    a("--vflip", type=float, default=0.5, help="probability of a vertical flip")
    a("--blur-prob", type=float, default=0.1, help="probability of Gaussian blur (CNNDetection)")
    a("--blur-sigma-max", type=float, default=3.0, help="blur sigma drawn uniformly in [0, max]")
    a(
        "--jpeg-prob",
        type=float,
        default=1.0,
        help="probability of JPEG re-encoding, the same for both classes; 1.0 (default) is the "
        "format-bias control, 0 turns it off (ablation only)",
    )
    a("--jpeg-quality-min", type=int, default=30, help="lowest JPEG quality drawn (default 30)")
    a("--jpeg-quality-max", type=int, default=100, help="highest JPEG quality drawn (default 100)")
    a(
        "--rescale-prob",
        type=float,
        default=0.0,
        help="probability of downscaling an image (either class) and back: hides the "
        "soft-upscaled look of a low-resolution generator (default 0)",
    )
    a("--rescale-min", type=float, default=0.5, help="smallest rescale factor (default 0.5)")
    a("--eval-every", type=int, default=0, help="validate every N steps (0 = once per epoch)")
    a("--eval-batch-size", type=int, default=32, help="batch size for validation scoring")
    a("--patience", type=int, default=3, help="early stop after N evaluations without gain")
    a(
        "--threshold-criterion",
        choices=("auto", *CRITERIA),
        default="auto",
        help="how validation sets the threshold: fpr (target false-positive rate on real "
        "photos, with an inconclusive band), youden or accuracy; auto = youden for vgg16 "
        "(the paper), fpr otherwise",
    )
    a(
        "--target-fpr",
        type=float,
        default=0.05,
        help="share of real validation photos the threshold may flag (fpr criterion; 0.05)",
    )
    a(
        "--inconclusive-fpr",
        type=float,
        default=0.0,
        help="lower edge of the inconclusive band, as the share of real validation photos "
        "at or above it (0 = twice --target-fpr)",
    )
    a(
        "--split-fractions",
        type=parse_fractions,
        default=dict(DEFAULT_FRACTIONS),
        help="lesion fractions gan_train,detector_train,detector_val,detector_test "
        "(default 0.5,0.3,0.1,0.1; keep the GAN's values so its lesions stay out)",
    )
    a("--split-seed", type=int, default=0, help="lesion split seed (keep the GAN's)")
    a(
        "--synthetic-fractions",
        type=_synthetic_fractions,
        default=DEFAULT_SYNTHETIC_FRACTIONS,
        help="fake train,val,test fractions by file-name hash (default 0.7,0.15,0.15)",
    )
    a(
        "--limit-images",
        type=int,
        default=0,
        help="cap on real images and on each source's images per split, seeded (0 = all)",
    )
    a("--val-limit", type=int, default=0, help="the same cap on validation (0 = --limit-images)")
    a("--seed", type=int, default=0, help="seed for init, sampling and augmentation")
    a("--log-every", type=int, default=10, help="log.csv row every N steps")
    a("--resume", action="store_true", help="continue from RUN_DIR/state.pt if present")
    a("--quiet", action="store_true", help="no progress bars")
    return p


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    ns = build_parser().parse_args(argv)
    augment = AugmentConfig(
        hflip=ns.hflip,
        vflip=ns.vflip,
        blur_prob=ns.blur_prob,
        blur_sigma_max=ns.blur_sigma_max,
        jpeg_prob=ns.jpeg_prob,
        jpeg_quality_min=ns.jpeg_quality_min,
        jpeg_quality_max=ns.jpeg_quality_max,
        rescale_prob=ns.rescale_prob,
        rescale_min=ns.rescale_min,
    )
    if not ns.fakes and ns.synthetic is None:
        raise SystemExit("give at least one fake source: --fake NAME=DIR (or --synthetic DIR)")
    fakes = unique_named(ns.fakes, "--fake")
    held_out = unique_named(ns.held_out, "--held-out")
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"augment", "fakes", "held_out"}
    return TrainConfig(
        augment=augment,
        fakes=fakes,
        held_out=held_out,
        **{k: v for k, v in vars(ns).items() if k in fields},
    )


if __name__ == "__main__":
    main(parse_args())
