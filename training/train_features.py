"""Train the lesion feature model (``models.lesion_features``) to classify HAM10000 diagnoses.

    python -m training.train_features --data data/ham10000-200x150 \\
        --out runs/features --time-limit-min 5 --threads 1

Its embedding is the feature space of ``training.gan_metrics``. Data: the ``gan_train`` lesions
only (the project's lesion split), themselves split by lesion, stratified and seeded, into this
model's own train and validation parts (``--val-fraction``). The ``detector_*`` lesions are never
read, so a held-out real reference (``detector_val``) stays independent of the feature space.

67% of HAM10000 is ``nv``: the loss weighs each class by the inverse of its share of the training
images, and the figure reported is the balanced accuracy (mean per-class recall) on the
validation lesions. Augmentation is light and exact: flips and transposes (a lesion has no up),
+-10% brightness and contrast; no blur and no hue shift, which the metrics must notice.

The model saved is the last one (the cosine learning rate has decayed to zero by the step or time
limit), not the best on validation, so its validation figure is not chosen on those same images.

Writes into ``--out``: ``config.json``, ``split_manifest.csv`` (the two parts), ``log.csv`` and
``lesion_features.safetensors`` (metrics: validation balanced accuracy and per-class recall;
extra: classes, the project split and the sub-split).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.checkpoint import save_model
from models.lesion_features import LesionFeatures, LesionFeaturesConfig
from models.preprocessing import GAN_MEAN, GAN_STD, PreprocessConfig, normalize
from models.runtime import resolve_device
from training.common import CsvLog, batch_indices, lr_factor, seed_everything, write_json
from training.data import (
    DEFAULT_FRACTIONS,
    DIAGNOSES,
    SPLITS,
    DatasetError,
    Record,
    SplitConfig,
    load_splits,
    parse_fractions,
    partition_lesions,
    preload,
    subsample,
    write_manifest,
)
from training.progress import Progress

CHECKPOINT = "lesion_features.safetensors"
LOG_FIELDS = (
    "step",
    "epoch",
    "loss",
    "lr",
    "img_per_s",
    "val_loss",
    "val_accuracy",
    "val_balanced_accuracy",
    "elapsed_s",
)


@dataclass
class TrainFeaturesConfig:
    data: Path
    out: Path
    image_size: int = 64
    widths: tuple[int, ...] = (16, 32, 64, 128)
    embed_dim: int = 256
    dropout: float = 0.2
    epochs: int = 30
    steps: int = 0
    time_limit_min: float = 0.0
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 5e-4
    warmup_steps: int = 50
    jitter: float = 0.1
    val_fraction: float = 0.15
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    log_every: int = 20
    eval_every: int = 200
    eval_batch_size: int = 256
    limit_images: int = 0
    split_fractions: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    split_seed: int = 0
    quiet: bool = False


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError("give one or more positive widths, e.g. 16,32,64,128")
    return widths


def build_parser() -> argparse.ArgumentParser:
    d = TrainFeaturesConfig(data=Path(), out=Path())
    p = argparse.ArgumentParser(
        prog="python -m training.train_features",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    a = p.add_argument
    a("--data", type=Path, required=True, help="HAM10000 folder (either layout)")
    a("--out", type=Path, required=True, help="run folder for every output")
    a("--image-size", type=int, default=d.image_size, help="input side in px (square)")
    a(
        "--widths",
        type=_widths,
        default=",".join(map(str, d.widths)),
        help="channels of each conv block (one 2x2 pool per block)",
    )
    a("--embed-dim", type=int, default=d.embed_dim, help="size of the pooled embedding")
    a("--dropout", type=float, default=d.dropout, help="dropout before the diagnosis head")
    a("--epochs", type=int, default=d.epochs, help="passes over the training part")
    a("--steps", type=int, default=d.steps, help="optimiser steps (0 = from --epochs)")
    a(
        "--time-limit-min",
        type=float,
        default=d.time_limit_min,
        help="stop after N minutes, the learning rate decayed by then (0 = no limit)",
    )
    a("--batch-size", type=int, default=d.batch_size, help="images per step")
    a("--lr", type=float, default=d.lr, help="AdamW peak learning rate")
    a("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay")
    a("--warmup-steps", type=int, default=d.warmup_steps, help="linear warm-up before the cosine")
    a(
        "--jitter",
        type=float,
        default=d.jitter,
        help="brightness and contrast factors drawn in [1-j, 1+j] (0 = off)",
    )
    a(
        "--val-fraction",
        type=float,
        default=d.val_fraction,
        help="share of the gan_train lesions held out to validate this model",
    )
    a("--seed", type=int, default=d.seed, help="init, sub-split, data order and augmentation")
    a("--device", default=d.device, help="auto, cpu or cuda")
    a("--threads", type=int, default=d.threads, help="CPU threads (0 = torch default)")
    a("--log-every", type=int, default=d.log_every, help="steps per log.csv row")
    a(
        "--eval-every",
        type=int,
        default=d.eval_every,
        help="steps between validations (0 = only at the end)",
    )
    a("--eval-batch-size", type=int, default=d.eval_batch_size, help="images per val forward")
    a(
        "--limit-images",
        type=int,
        default=d.limit_images,
        help="a seeded subset of N gan_train images (0 = all; for quick trials)",
    )
    a(
        "--split",
        dest="split_fractions",
        type=parse_fractions,
        default=",".join(str(v) for v in DEFAULT_FRACTIONS.values()),
        help=f"project lesion split fractions for {', '.join(SPLITS)} (the GAN's)",
    )
    a("--split-seed", type=int, default=d.split_seed, help="seed of the project split (the GAN's)")
    a("--quiet", action="store_true", help="no progress bars")
    return p


def parse_args(argv: list[str] | None = None) -> TrainFeaturesConfig:
    p = build_parser()
    args = p.parse_args(argv)
    for key, parse in (("split_fractions", parse_fractions), ("widths", _widths)):
        if isinstance(getattr(args, key), str):
            setattr(args, key, parse(getattr(args, key)))
    cfg = TrainFeaturesConfig(**vars(args))
    if not 0 < cfg.val_fraction < 1:
        p.error("--val-fraction must be in (0, 1)")
    if cfg.batch_size < 2 or cfg.epochs < 1 or cfg.log_every < 1 or cfg.eval_every < 0:
        p.error("--batch-size must be >= 2; --epochs and --log-every >= 1; --eval-every >= 0")
    return cfg


# ---------------------------------------------------------------------------------------------
# Pieces


def labels_of(records: list[Record]) -> torch.Tensor:
    """Diagnosis indices into :data:`training.data.DIAGNOSES`."""
    unknown = sorted({r.dx for r in records} - set(DIAGNOSES))
    if unknown:
        raise DatasetError(f"unknown diagnoses {unknown}; expected {DIAGNOSES}")
    return torch.tensor([DIAGNOSES.index(r.dx) for r in records], dtype=torch.long)


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """n / (K * n_c) for the K classes present (0 for absent ones): every class weighs as much
    in the loss as any other, whatever its share."""
    counts = torch.bincount(labels, minlength=num_classes).double()
    present = counts > 0
    weights = torch.zeros(num_classes, dtype=torch.float64)
    weights[present] = counts.sum() / (int(present.sum()) * counts[present])
    return weights.float()


def augment(images: torch.Tensor, generator: torch.Generator, jitter: float) -> torch.Tensor:
    """uint8 (N, 3, S, S) -> uint8: random flips, transposes (the 8 symmetries of a square) and
    brightness/contrast factors in [1 - jitter, 1 + jitter], each drawn per image."""
    n = images.shape[0]

    def coin() -> torch.Tensor:
        return (torch.rand(n, generator=generator) < 0.5).view(n, 1, 1, 1)

    x = torch.where(coin(), images.flip(3), images)
    x = torch.where(coin(), x.flip(2), x)
    x = torch.where(coin(), x.transpose(2, 3), x)
    if jitter <= 0:
        return x.contiguous()
    f = x.float()
    mean = f.mean(dim=(1, 2, 3), keepdim=True)
    contrast = 1 + jitter * (2 * torch.rand(n, 1, 1, 1, generator=generator) - 1)
    brightness = 1 + jitter * (2 * torch.rand(n, 1, 1, 1, generator=generator) - 1)
    f = ((f - mean) * contrast + mean) * brightness
    return f.round().clamp(0, 255).to(torch.uint8)


def per_class_recall(labels: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Recall of each diagnosis present in ``labels``."""
    return {
        DIAGNOSES[c]: float(np.mean(predicted[labels == c] == c))
        for c in sorted(set(labels.tolist()))
    }


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    pre: PreprocessConfig,
    device: torch.device,
    batch_size: int,
) -> dict[str, Any]:
    """Loss, accuracy, balanced accuracy and per-class recall on uint8 images (eval mode)."""
    was_training = model.training
    model.eval()
    logits = torch.cat(
        [
            model(normalize(images[i : i + batch_size].to(device), pre)).float().cpu()
            for i in range(0, images.shape[0], batch_size)
        ]
    )
    model.train(was_training)
    predicted = logits.argmax(1).numpy()
    y = labels.numpy()
    recall = per_class_recall(y, predicted)
    return {
        "loss": float(F.cross_entropy(logits, labels)),
        "accuracy": float(np.mean(predicted == y)),
        "balanced_accuracy": float(np.mean(list(recall.values()))),
        "recall": recall,
        "images": int(y.size),
    }


# ---------------------------------------------------------------------------------------------
# The loop


def main(config: TrainFeaturesConfig) -> dict[str, Any]:
    """Train; returns the saved model's validation report."""
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    seed_everything(config.seed)
    out = config.out
    out.mkdir(parents=True, exist_ok=True)

    split = SplitConfig(config.split_fractions, config.split_seed)
    gan_train = load_splits(config.data, split)["gan_train"]
    gan_train = subsample(gan_train, config.limit_images, config.seed)
    val_part = config.val_fraction
    parts = partition_lesions(
        gan_train, {"features_train": 1 - val_part, "features_val": val_part}, config.seed
    )
    train_recs, val_recs = parts["features_train"], parts["features_val"]
    if not train_recs or not val_recs:
        raise DatasetError(
            f"{len(gan_train)} gan_train images give {len(train_recs)} training and "
            f"{len(val_recs)} validation images: use more images or another --val-fraction"
        )
    write_json(out / "config.json", dataclasses.asdict(config))
    write_manifest(parts, out / "split_manifest.csv")

    pre = PreprocessConfig(image_size=config.image_size, mean=GAN_MEAN, std=GAN_STD)
    x_train = preload([r.path for r in train_recs], pre, desc="train", quiet=config.quiet)
    x_val = preload([r.path for r in val_recs], pre, desc="val", quiet=config.quiet)
    y_train, y_val = labels_of(train_recs), labels_of(val_recs)
    weights = class_weights(y_train, len(DIAGNOSES)).to(device)

    model_config = LesionFeaturesConfig(
        config.image_size, config.widths, config.embed_dim, len(DIAGNOSES), config.dropout
    )
    model = LesionFeatures(model_config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n, bs = x_train.shape[0], config.batch_size
    steps_per_epoch = math.ceil(n / bs)
    total = config.steps or config.epochs * steps_per_epoch
    limit_s = 60 * config.time_limit_min
    log = CsvLog(out / "log.csv", LOG_FIELDS)
    progress = Progress(total, 0, limit_s, quiet=config.quiet, desc="lesion features")
    noise = torch.Generator().manual_seed(config.seed + 1)
    data_seed = config.seed * 101
    acc_loss, acc_n, t_log, t0 = 0.0, 0, time.perf_counter(), time.perf_counter()
    report: dict[str, Any] = {}
    shown: dict[str, str] = {}
    step = 0
    model.train()
    while step < total:
        lr = config.lr * lr_factor(
            step, total, config.warmup_steps, progress.elapsed() / limit_s if limit_s else 0.0
        )
        for group in opt.param_groups:
            group["lr"] = lr
        idx = batch_indices(step, n, bs, data_seed)
        x = normalize(augment(x_train[idx], noise, config.jitter).to(device), pre)
        loss = F.cross_entropy(model(x), y_train[idx].to(device), weight=weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        acc_loss, acc_n = acc_loss + loss.item(), acc_n + 1
        final = step >= total or progress.out_of_time()
        validate = final or (config.eval_every > 0 and step % config.eval_every == 0)
        if step % config.log_every == 0 or validate or final:
            row: dict[str, Any] = {
                "step": step,
                "epoch": round(step / steps_per_epoch, 3),
                "loss": acc_loss / acc_n,
                "lr": lr,
                "img_per_s": acc_n * bs / max(time.perf_counter() - t_log, 1e-9),
                "elapsed_s": round(time.perf_counter() - t0, 1),
            }
            shown["loss"] = f"{row['loss']:.3f}"
            if validate:
                report = evaluate(model, x_val, y_val, pre, device, config.eval_batch_size)
                row.update(
                    val_loss=report["loss"],
                    val_accuracy=report["accuracy"],
                    val_balanced_accuracy=report["balanced_accuracy"],
                )
                shown["val_bal_acc"] = f"{report['balanced_accuracy']:.3f}"
            log.write(row)
            acc_loss, acc_n, t_log = 0.0, 0, time.perf_counter()
        progress.update(step, **shown)
        if final:
            break
    progress.close()

    elapsed = time.perf_counter() - t0
    metrics = {
        "val_balanced_accuracy": report["balanced_accuracy"],
        "val_accuracy": report["accuracy"],
        "val_loss": report["loss"],
        "val_recall": report["recall"],
        "epochs": round(step / steps_per_epoch, 3),
        "train_seconds": round(elapsed, 1),
    }
    save_model(
        out / CHECKPOINT,
        model,
        pre,
        step=step,
        metrics=metrics,
        extra={
            "name": "lesion-features",
            "classes": list(DIAGNOSES),
            "split": {"fractions": dict(split.fractions), "seed": split.seed},
            "subsplit": {
                "of": "gan_train",
                "val_fraction": config.val_fraction,
                "seed": config.seed,
                "limit_images": config.limit_images,
                "train_images": len(train_recs),
                "val_images": len(val_recs),
                "train_lesions": len({r.lesion_id for r in train_recs}),
                "val_lesions": len({r.lesion_id for r in val_recs}),
                "train_counts": dict(Counter(r.dx for r in train_recs)),
                "val_counts": dict(Counter(r.dx for r in val_recs)),
            },
        },
    )
    print(
        f"step {step} ({metrics['epochs']} epochs) in {elapsed:.0f} s: validation balanced "
        f"accuracy {report['balanced_accuracy']:.3f} (accuracy {report['accuracy']:.3f}) on "
        f"{report['images']} images; {out / CHECKPOINT}",
        file=sys.stderr,
    )
    return {**report, "step": step}


def cli(argv: list[str] | None = None) -> None:
    main(parse_args(argv))


if __name__ == "__main__":
    cli()
