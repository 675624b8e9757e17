"""Train the paper's detector (VGG16 + two-layer head) on real vs synthetic skin lesions.

Data. Real images come only from the ``detector_train`` / ``detector_val`` lesions of
``training.data.split_by_lesion`` (same defaults as the GAN, so the lesions the generator was
trained on never reach the detector). Synthetic PNGs from ``training.synthesize`` are split into
train/val/test by a hash of their file name (:func:`split_synthetic`), so adding files never
moves the others and ``training.evaluate`` finds the same held-out set. Both lists go into
``RUN_DIR/split.csv``. Positive class = synthetic.

Pixels. Every image, of either class, is decoded once through ``models.preprocessing.load_uint8``
(decode -> centre square crop -> resize, 128 px by default) and kept as uint8; each step applies
``training.augment.Augment``, which never sees the labels, then ImageNet normalisation. The
format-bias control (every training image of both classes re-encoded as JPEG at a random quality
30-100, see ``training/augment.py``) is on by default (``--jpeg-prob 1``).

Batches are class-balanced: each step takes ``batch_size/2`` real and ``batch_size/2``
synthetic images per rank (the smaller class cycles faster); an epoch is one pass over the
larger class. Loss: BCEWithLogits. Optimiser: AdamW (lr 1e-4, weight decay 1e-4) with linear
warm-up then cosine decay to 0 over the run. Every ``--eval-every`` steps (default: each epoch)
the model is scored on the validation images; the checkpoint with the best validation ROC-AUC
(ties: lower validation loss) is written to ``detector.safetensors`` with the decision threshold
chosen on those validation scores (Youden J); training stops after ``--patience`` evaluations
without improvement. ``state.pt`` holds everything ``--resume`` needs. DDP through ``torchrun``:
each rank takes its own slice of every class batch; rank 0 logs and saves.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
import random
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
from tqdm import tqdm

from models.checkpoint import load_state, save_model, save_state, unwrap
from models.detector import Detector, DetectorConfig, load_imagenet_weights
from models.preprocessing import PreprocessConfig, normalize
from models.runtime import PRECISIONS, autocast, resolve_device, resolve_dtype
from training.augment import Augment, AugmentConfig
from training.common import (
    CsvLog,
    Dist,
    close_distributed,
    init_distributed,
    seed_everything,
    write_json,
)
from training.data import (
    DEFAULT_FRACTIONS,
    SPLITS,
    Record,
    SplitConfig,
    list_images,
    load_splits,
    preload,
    write_manifest,
)
from training.metrics import (
    THRESHOLD_CRITERIA,
    binary_report,
    nan_to_none,
    select_threshold,
)

SYNTHETIC_SPLITS = ("train", "val", "test")
DEFAULT_SYNTHETIC_FRACTIONS = (0.7, 0.15, 0.15)
SYNTHETIC_SALT = "dermafake-synthetic-split"
LOG_FIELDS = (
    "step",
    "epoch",
    "loss",
    "lr",
    "img_per_s",
    "val_roc_auc",
    "val_loss",
    "val_balanced_accuracy",
    "threshold",
)


@dataclass
class TrainConfig:
    data: Path
    synthetic: Path
    out: Path
    epochs: int = 1
    steps: int = 0
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 0
    pretrained: str = "imagenet"
    allow_download: bool = False
    image_size: int = 128
    dropout: float = 0.5
    precision: str = "auto"
    device: str = "auto"
    channels_last: bool = True
    threads: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    eval_every: int = 0
    eval_batch_size: int = 32
    patience: int = 3
    threshold_criterion: str = "youden"
    split_fractions: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    split_seed: int = 0
    synthetic_fractions: tuple[float, float, float] = DEFAULT_SYNTHETIC_FRACTIONS
    limit_images: int = 0
    val_limit: int = 0
    seed: int = 0
    log_every: int = 10
    resume: bool = False
    quiet: bool = False


# ---------------------------------------------------------------- data


def split_synthetic(
    paths: Sequence[Path], fractions: Sequence[float] = DEFAULT_SYNTHETIC_FRACTIONS
) -> dict[str, list[Path]]:
    """Deterministic train/val/test split of synthetic files by a SHA-256 of the file name."""
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"synthetic fractions must be three numbers summing to 1: {fractions}")
    bounds = np.cumsum(fractions)
    out: dict[str, list[Path]] = {s: [] for s in SYNTHETIC_SPLITS}
    for p in sorted(paths):
        h = hashlib.sha256(f"{SYNTHETIC_SALT}:{p.name}".encode()).digest()
        u = int.from_bytes(h[:8], "big") / 2**64
        idx = int(np.searchsorted(bounds, u, side="right"))
        out[SYNTHETIC_SPLITS[min(idx, 2)]].append(p)
    return out


def subsample(items: Sequence[Any], limit: int, seed: int) -> list[Any]:
    """A seeded random subset of at most ``limit`` items (0 = all), in the original order.
    (The lesion split is ordered by diagnosis, so "the first N" would be one diagnosis.)"""
    if limit <= 0 or len(items) <= limit:
        return list(items)
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]


@dataclass
class DetectorData:
    """Real and synthetic paths of one split, and the split record for the manifest."""

    real: list[Path]
    synthetic: list[Path]


def detector_sets(
    data: Path,
    synthetic: Path,
    split: SplitConfig,
    synthetic_fractions: Sequence[float],
    limits: dict[str, int],
    seed: int,
    manifest: Path | None = None,
) -> dict[str, DetectorData]:
    """{"train","val","test"} -> real detector_* paths and synthetic paths (seeded limits)."""
    splits = load_splits(data, split)
    syn = split_synthetic(list_images(synthetic), synthetic_fractions)
    sets: dict[str, DetectorData] = {}
    for name in SYNTHETIC_SPLITS:
        real = subsample(splits.get(f"detector_{name}", []), limits.get(name, 0), seed)
        fake = subsample(syn[name], limits.get(name, 0), seed + 1)
        sets[name] = DetectorData([r.path for r in real], fake)
    if manifest is not None:
        rows: dict[str, list[Record]] = dict(splits)
        for name in SYNTHETIC_SPLITS:
            used = set(sets[name].synthetic)
            rows[f"synthetic_{name}"] = [
                Record(p.stem, "", "synthetic" if p in used else "synthetic_unused", p)
                for p in syn[name]
            ]
        write_manifest(rows, manifest)
    return sets


class _PermCache:
    """An endless stream of seeded per-epoch permutations of ``range(n)``; batch ``step`` is
    items ``[step*k, step*k+k)``, a function of the step alone, so ``--resume`` continues the
    exact stream without saving sampler state."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.cache = n, seed, {}

    def take(self, k: int, step: int) -> torch.Tensor:
        out = []
        for j in range(step * k, step * k + k):
            epoch, pos = divmod(j, self.n)
            if epoch not in self.cache:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                self.cache = {epoch: torch.randperm(self.n, generator=g)}
            out.append(int(self.cache[epoch][pos]))
        return torch.tensor(out, dtype=torch.long)


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


# ---------------------------------------------------------------- model


def build_model(cfg: TrainConfig) -> Detector:
    model = Detector(DetectorConfig(image_size=cfg.image_size, dropout=cfg.dropout))
    if cfg.pretrained != "none":
        load_imagenet_weights(model, cfg.pretrained, allow_download=cfg.allow_download)
    return model


@torch.inference_mode()
def predict_logits(
    model: nn.Module,
    images: torch.Tensor,
    preprocess: PreprocessConfig,
    device: torch.device,
    dtype: torch.dtype,
    *,
    batch_size: int = 32,
    channels_last: bool = True,
    desc: str = "scoring",
    quiet: bool = False,
) -> np.ndarray:
    """Logits (float64) for a uint8 batch (N, 3, S, S) with the model in eval mode."""
    was_training = model.training
    model.eval()
    out = []
    starts = range(0, images.shape[0], batch_size)
    for i in tqdm(starts, desc=desc, unit="batch", disable=quiet, leave=False):
        x = normalize(images[i : i + batch_size].to(device), preprocess)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, dtype):
            out.append(model(x).float().cpu())
    model.train(was_training)
    if not out:
        return np.zeros(0, dtype=np.float64)
    return torch.cat(out).double().numpy()


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """P(synthetic) in float64 (keeps resolution where float32 would round to exactly 1.0)."""
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def bce_from_logits(labels: np.ndarray, logits: np.ndarray) -> float:
    t = torch.from_numpy(np.asarray(logits, dtype=np.float64))
    y = torch.from_numpy(np.asarray(labels, dtype=np.float64))
    return float(nn.functional.binary_cross_entropy_with_logits(t, y))


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


# ---------------------------------------------------------------- training


def _validate(
    model: nn.Module,
    val_images: torch.Tensor,
    val_labels: np.ndarray,
    cfg: TrainConfig,
    preprocess: PreprocessConfig,
    device: torch.device,
    dtype: torch.dtype,
    ctx: Dist,
) -> dict[str, Any]:
    """Score the validation set (sharded over ranks, gathered), pick the threshold, report."""
    idx = np.arange(val_images.shape[0])[ctx.rank :: ctx.world_size]
    logits = predict_logits(
        model,
        val_images[torch.from_numpy(idx)],
        preprocess,
        device,
        dtype,
        batch_size=cfg.eval_batch_size,
        channels_last=cfg.channels_last,
        desc="validation",
        quiet=cfg.quiet or not ctx.is_main,
    )
    if ctx.enabled:
        parts: list[Any] = [None] * ctx.world_size
        dist.all_gather_object(parts, (idx, logits))
        full = np.zeros(val_images.shape[0], dtype=np.float64)
        for i, lg in parts:
            full[i] = lg
        logits = full
    probs = sigmoid(logits)
    threshold, j = select_threshold(val_labels, probs, cfg.threshold_criterion)
    report = binary_report(val_labels, probs, threshold)
    report["loss"] = bce_from_logits(val_labels, logits)
    report["threshold_criterion"] = cfg.threshold_criterion
    report["threshold_criterion_value"] = j
    return report


def main(cfg: TrainConfig) -> dict[str, Any]:
    """Train; returns the best validation report (the one saved in ``detector.safetensors``)."""
    if cfg.batch_size < 2 or cfg.batch_size % 2:
        raise ValueError("--batch-size must be even (half real, half synthetic) and >= 2")
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
    preprocess = PreprocessConfig(image_size=cfg.image_size)
    split = SplitConfig(dict(cfg.split_fractions), cfg.split_seed)
    limits = {"train": cfg.limit_images, "val": cfg.val_limit or cfg.limit_images}
    sets = detector_sets(
        cfg.data,
        cfg.synthetic,
        split,
        cfg.synthetic_fractions,
        limits,
        cfg.seed,
        manifest=out / "split.csv" if ctx.is_main else None,
    )
    train, val = sets["train"], sets["val"]
    for name, s in (("train", train), ("val", val)):
        if not s.real or not s.synthetic:
            raise ValueError(
                f"the {name} split has {len(s.real)} real and {len(s.synthetic)} synthetic "
                "images; both classes are needed (more synthetic images or other fractions)"
            )
    if ctx.is_main:
        write_json(out / "config.json", {**dataclasses.asdict(cfg), "dtype": str(dtype)})
    quiet = cfg.quiet or not ctx.is_main
    real_x = preload(train.real, preprocess, desc="real train", quiet=quiet)
    syn_x = preload(train.synthetic, preprocess, desc="synthetic train", quiet=quiet)
    val_x = torch.cat(
        [
            preload(val.real, preprocess, desc="real val", quiet=quiet),
            preload(val.synthetic, preprocess, desc="synthetic val", quiet=quiet),
        ]
    )
    val_y = np.array([0] * len(val.real) + [1] * len(val.synthetic))

    half = cfg.batch_size // 2
    per_step = half * ctx.world_size  # images of each class per optimiser step, all ranks
    steps_per_epoch = math.ceil(max(len(train.real), len(train.synthetic)) / per_step)
    total = cfg.epochs * steps_per_epoch
    if cfg.steps > 0:
        total = min(total, cfg.steps)
    eval_every = cfg.eval_every or steps_per_epoch

    model = build_model(cfg).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total, cfg.warmup_steps)
    )
    step, best_auc, best_loss, bad_evals, best_report = 0, -1.0, math.inf, 0, {}
    state_path = out / "state.pt"
    if cfg.resume and state_path.is_file():
        state = load_state(state_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step = int(state["step"])
        best_auc, best_loss = float(state["best_auc"]), float(state["best_loss"])
        bad_evals = int(state["bad_evals"])
        best_report = dict(state.get("best_report", {}))
        torch.set_rng_state(state["torch_rng"][ctx.rank % len(state["torch_rng"])])
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
    real_perm, syn_perm = (
        _PermCache(len(train.real), cfg.seed),
        _PermCache(len(train.synthetic), cfg.seed + 7919),
    )

    def save_checkpoint(report: dict[str, Any]) -> None:
        save_model(
            out / "detector.safetensors",
            model,
            preprocess,
            threshold=float(report["threshold"]),
            step=step,
            metrics={"validation": nan_to_none(report)},
            extra={
                "split": {"fractions": split.fractions, "seed": split.seed},
                "synthetic_split": {
                    "fractions": list(cfg.synthetic_fractions),
                    "salt": SYNTHETIC_SALT,
                },
                "threshold_criterion": cfg.threshold_criterion,
                "augment": dataclasses.asdict(cfg.augment),
                "data": str(cfg.data),
                "synthetic": str(cfg.synthetic),
                "train_counts": {"real": len(train.real), "synthetic": len(train.synthetic)},
            },
        )

    def save_training_state() -> None:
        rng = [torch.get_rng_state()]
        if ctx.enabled:
            rng = [None] * ctx.world_size  # type: ignore[list-item]
            dist.all_gather_object(rng, torch.get_rng_state())
        if ctx.is_main:
            save_state(
                state_path,
                {
                    "model": unwrap(model).state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "step": step,
                    "best_auc": best_auc,
                    "best_loss": best_loss,
                    "bad_evals": bad_evals,
                    "best_report": nan_to_none(best_report),
                    "torch_rng": rng,
                },
            )

    train_model.train()
    bar = tqdm(total=total, initial=step, desc="detector", unit="step", disable=quiet)
    t0, seen, loss_sum, n_loss = time.perf_counter(), 0, 0.0, 0
    stopped_early = False
    while step < total:
        ri = real_perm.take(per_step, step)[ctx.rank * half : (ctx.rank + 1) * half]
        si = syn_perm.take(per_step, step)[ctx.rank * half : (ctx.rank + 1) * half]
        g = torch.Generator().manual_seed((cfg.seed * 1_000_003 + step) * 64 + ctx.rank)
        batch, y = training_batch(real_x[ri], syn_x[si], augment, g)
        x = normalize(batch.to(device), preprocess)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, dtype):
            logits = train_model(x)
        loss = loss_fn(logits.float(), y.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1
        seen += batch.shape[0] * ctx.world_size
        loss_sum += float(loss.detach())
        n_loss += 1
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        row: dict[str, Any] = {}
        if step % cfg.log_every == 0 or step == total or step % eval_every == 0:
            dt = time.perf_counter() - t0
            row = {
                "step": step,
                "epoch": f"{step / steps_per_epoch:.3f}",
                "loss": loss_sum / max(1, n_loss),
                "lr": scheduler.get_last_lr()[0],
                "img_per_s": seen / dt if dt > 0 else 0.0,
            }
            t0, seen, loss_sum, n_loss = time.perf_counter(), 0, 0.0, 0
        if step % eval_every == 0 or step == total:
            report = _validate(model, val_x, val_y, cfg, preprocess, device, dtype, ctx)
            auc = report["roc_auc"] if math.isfinite(report["roc_auc"]) else 0.0
            improved = auc > best_auc + 1e-9 or (
                abs(auc - best_auc) <= 1e-9 and report["loss"] < best_loss
            )
            if improved:
                best_auc, best_loss, bad_evals, best_report = auc, report["loss"], 0, report
                if ctx.is_main:
                    save_checkpoint(report)
            else:
                bad_evals += 1
            row.update(
                val_roc_auc=report["roc_auc"],
                val_loss=report["loss"],
                val_balanced_accuracy=report["balanced_accuracy"],
                threshold=report["threshold"],
            )
            if ctx.is_main:
                bar.write(
                    f"step {step}: val ROC-AUC {report['roc_auc']:.4f} "
                    f"loss {report['loss']:.4f} bal.acc {report['balanced_accuracy']:.4f} "
                    f"threshold {report['threshold']:.4g}" + (" (best)" if improved else "")
                )
            save_training_state()
            if bad_evals >= cfg.patience and step < total:
                stopped_early = True
        if log is not None and row:
            log.write(row)
        if stopped_early:
            if ctx.is_main:
                bar.write(
                    f"early stop at step {step}: no better validation ROC-AUC in "
                    f"{cfg.patience} evaluations"
                )
            break
    bar.close()
    if ctx.is_main:
        write_json(
            out / "train_summary.json",
            nan_to_none(
                {
                    "step": step,
                    "total_steps": total,
                    "steps_per_epoch": steps_per_epoch,
                    "stopped_early": stopped_early,
                    "best_validation": best_report,
                    "counts": {
                        "train": {"real": len(train.real), "synthetic": len(train.synthetic)},
                        "val": {"real": len(val.real), "synthetic": len(val.synthetic)},
                    },
                }
            ),
        )
    close_distributed(ctx)
    return best_report


# ---------------------------------------------------------------- command line


def _fractions(text: str) -> dict[str, float]:
    values = [float(v) for v in text.split(",")]
    if len(values) != len(SPLITS):
        raise argparse.ArgumentTypeError(f"need {len(SPLITS)} comma-separated fractions")
    return dict(zip(SPLITS, values, strict=True))


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
    a(
        "--synthetic",
        type=Path,
        required=True,
        help="folder of synthetic PNGs (training.synthesize)",
    )
    a("--out", type=Path, required=True, help="run folder: checkpoint, state, config, log, split")
    a("--epochs", type=int, default=1, help="passes over the larger class (default 1)")
    a("--steps", type=int, default=0, help="cap on optimiser steps (0 = no cap)")
    a("--batch-size", type=int, default=16, help="per-rank batch, half real half synthetic")
    a("--lr", type=float, default=1e-4, help="AdamW peak learning rate (default 1e-4)")
    a("--weight-decay", type=float, default=1e-4, help="AdamW weight decay (default 1e-4)")
    a("--warmup-steps", type=int, default=0, help="linear warm-up steps before the cosine decay")
    a(
        "--pretrained",
        default="imagenet",
        help="backbone init: 'imagenet' (torch hub cache, as the paper), 'none' (from scratch) "
        "or a path to a vgg16-397923af.pth-style state dict",
    )
    a("--allow-download", action="store_true", help="let --pretrained imagenet download weights")
    a("--image-size", type=int, default=128, help="input size in px (paper: 128)")
    a("--dropout", type=float, default=0.5, help="dropout in the head (default 0.5)")
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
        choices=THRESHOLD_CRITERIA,
        default="youden",
        help="how the validation scores choose the decision threshold",
    )
    a(
        "--split-fractions",
        type=_fractions,
        default=dict(DEFAULT_FRACTIONS),
        help="lesion fractions gan_train,detector_train,detector_val,detector_test "
        "(default 0.5,0.3,0.1,0.1; keep the GAN's values so its lesions stay out)",
    )
    a("--split-seed", type=int, default=0, help="lesion split seed (keep the GAN's)")
    a(
        "--synthetic-fractions",
        type=_synthetic_fractions,
        default=DEFAULT_SYNTHETIC_FRACTIONS,
        help="synthetic train,val,test fractions by file-name hash (default 0.7,0.15,0.15)",
    )
    a("--limit-images", type=int, default=0, help="cap per class per split, seeded (0 = all)")
    a("--val-limit", type=int, default=0, help="cap per class on validation (0 = --limit-images)")
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
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"augment"}
    return TrainConfig(augment=augment, **{k: v for k, v in vars(ns).items() if k in fields})


if __name__ == "__main__":
    main(parse_args())
