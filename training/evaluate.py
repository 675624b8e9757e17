"""Evaluate a trained detector on held-out data, under perturbations, and on foreign generators.

Test data: the real images of the ``detector_test`` lesions (the split recorded in the checkpoint)
and the synthetic images the file-name hash puts in ``test`` (``train_detector.split_synthetic``):
neither was used for training or for choosing the threshold. The decision threshold is the one
saved in the checkpoint (chosen on validation); it is never tuned here.

Robustness: the same metrics after JPEG re-encoding at quality 95/75/50, downscaling x0.5 and
back, and Gaussian blur sigma 1, applied identically to both classes after the shared
preprocessing (``training.augment.PERTURBATIONS``). Cross-generator: for each ``--foreign``
folder (images from generators the detector never saw), the share flagged synthetic and the
ROC-AUC against the clean real test images.

Writes ``report.json``, ``report.md`` (tables with the paper's figures beside ours),
``confusion_matrix.png``, ``roc.png``, ``examples.png`` (a few test images with their scores),
``scores.csv`` (every test image's P(synthetic)) and ``config.json``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.checkpoint import CheckpointError, CheckpointMeta, load_model
from models.runtime import PRECISIONS, resolve_device, resolve_dtype
from training.augment import PERTURBATIONS, perturb
from training.common import write_json
from training.data import SplitConfig, list_images, preload
from training.metrics import binary_report, nan_to_none, roc_auc, roc_curve
from training.train_detector import DetectorData, detector_sets, predict_logits, sigmoid

# Abbasi et al. 2024, VGG16 detector on SNGAN-generated vs real HAM10000 lesions (test set).
PAPER = {"accuracy": 0.9982, "sensitivity": 0.9965, "specificity": 0.9995, "f1": 0.9980}
METRIC_ROWS = ("accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc", "ece")


@dataclass
class EvalConfig:
    checkpoint: Path
    data: Path
    synthetic: Path
    out: Path
    foreign: dict[str, Path] = field(default_factory=dict)
    limit: int = 0
    robustness: bool = True
    batch_size: int = 32
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    threads: int = 0
    seed: int = 0
    quiet: bool = False


def _score(model, images, meta, device, dtype, cfg: EvalConfig, desc: str) -> np.ndarray:
    logits = predict_logits(
        model,
        images,
        meta.preprocess_config,
        device,
        dtype,
        batch_size=cfg.batch_size,
        channels_last=cfg.channels_last,
        desc=desc,
        quiet=cfg.quiet,
    )
    return sigmoid(logits)


def held_out_test(
    meta: CheckpointMeta, data: Path, synthetic: Path, limit: int = 0, seed: int = 0
) -> DetectorData:
    """The test images the checkpoint never saw: the lesion-level split and the synthetic split
    recorded in its metadata, rebuilt from the same folders."""
    extra = meta.extra or {}
    split_info = extra.get("split", {})
    split = SplitConfig(
        dict(split_info["fractions"]) if "fractions" in split_info else SplitConfig().fractions,
        int(split_info.get("seed", 0)),
    )
    syn_fractions = tuple(extra.get("synthetic_split", {}).get("fractions", (0.7, 0.15, 0.15)))
    test = detector_sets(data, synthetic, split, syn_fractions, {"test": limit}, seed)["test"]
    if not test.real or not test.synthetic:
        raise ValueError(
            f"test set has {len(test.real)} real and {len(test.synthetic)} synthetic images"
        )
    return test


def main(cfg: EvalConfig) -> dict[str, Any]:
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.precision, device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    model, meta = load_model(cfg.checkpoint, "detector", map_location=str(device))
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if meta.threshold is None:
        raise CheckpointError(f"{cfg.checkpoint} has no decision threshold in its metadata")
    threshold = float(meta.threshold)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", cfg)
    test = held_out_test(meta, cfg.data, cfg.synthetic, cfg.limit, cfg.seed)
    pre = meta.preprocess_config
    images = torch.cat(
        [
            preload(test.real, pre, desc="real test", quiet=cfg.quiet),
            preload(test.synthetic, pre, desc="synthetic test", quiet=cfg.quiet),
        ]
    )
    labels = np.array([0] * len(test.real) + [1] * len(test.synthetic))
    paths = [*test.real, *test.synthetic]

    clean = _score(model, images, meta, device, dtype, cfg, "clean")
    report: dict[str, Any] = {
        "checkpoint": str(cfg.checkpoint),
        "step": meta.step,
        "threshold": threshold,
        "threshold_source": "validation (saved in the checkpoint)",
        "validation": meta.metrics.get("validation", {}),
        "test": binary_report(labels, clean, threshold),
        "robustness": {},
        "foreign": {},
        "paper": PAPER,
    }
    curves = {"clean": roc_curve(labels, clean)}
    scores_rows = [
        {"set": "test", "file": str(p), "label": int(y), "clean": float(s)}
        for p, y, s in zip(paths, labels, clean, strict=True)
    ]
    if cfg.robustness:
        for name in PERTURBATIONS:
            probs = _score(model, perturb(images, name), meta, device, dtype, cfg, name)
            report["robustness"][name] = binary_report(labels, probs, threshold)
            curves[name] = roc_curve(labels, probs)
            for row, s in zip(scores_rows, probs, strict=True):
                row[name] = float(s)
    real_clean = clean[labels == 0]
    for name, folder in cfg.foreign.items():
        files = list_images(folder)
        probs = _score(
            model, preload(files, pre, desc=name, quiet=cfg.quiet), meta, device, dtype, cfg, name
        )
        both = np.concatenate([real_clean, probs])
        y = np.concatenate([np.zeros(real_clean.size), np.ones(probs.size)])
        report["foreign"][name] = {
            "folder": str(folder),
            "count": int(probs.size),
            "flagged_synthetic": float(np.mean(probs >= threshold)),
            "mean_p_synthetic": float(np.mean(probs)),
            "roc_auc_vs_real_test": roc_auc(y, both),
        }
        scores_rows += [
            {"set": f"foreign:{name}", "file": str(p), "label": 1, "clean": float(s)}
            for p, s in zip(files, probs, strict=True)
        ]
    report = nan_to_none(report)
    write_json(out / "report.json", report)
    _write_scores(out / "scores.csv", scores_rows)
    plot_confusion(report["test"]["confusion_matrix"], out / "confusion_matrix.png")
    plot_roc(curves, report, out / "roc.png")
    plot_examples(images, labels, clean, threshold, out / "examples.png")
    (out / "report.md").write_text(render_markdown(report))
    if not cfg.quiet:
        print((out / "report.md").read_text())
    return report


def _write_scores(path: Path, rows: list[dict[str, Any]]) -> None:
    fields = ["set", "file", "label", "clean", *PERTURBATIONS]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


# ---------------------------------------------------------------- figures and report.md


def plot_confusion(cm: dict[str, int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.array([[cm["tn"], cm["fp"]], [cm["fn"], cm["tp"]]])
    fig, ax = plt.subplots(figsize=(3.6, 3.2), dpi=100)
    ax.imshow(grid, cmap="Blues")
    for (i, j), v in np.ndenumerate(grid):
        ax.text(j, i, str(v), ha="center", va="center", color="black", fontsize=12)
    ax.set_xticks([0, 1], ["real", "synthetic"])
    ax.set_yticks([0, 1], ["real", "synthetic"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Test confusion matrix")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_examples(
    images: torch.Tensor,
    labels: np.ndarray,
    probs: np.ndarray,
    threshold: float,
    path: Path,
    per_class: int = 6,
) -> None:
    """A row of real and a row of synthetic test images with their P(synthetic): what the
    detector was asked to separate (the first images of each class, not a chosen few)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [np.flatnonzero(labels == c)[:per_class] for c in (0, 1)]
    fig, axes = plt.subplots(2, per_class, figsize=(1.5 * per_class, 3.5), dpi=80, squeeze=False)
    for r, (idx, name) in enumerate(zip(rows, ("real", "synthetic"), strict=True)):
        for c in range(per_class):
            ax = axes[r][c]
            ax.axis("off")
            if c < idx.size:
                i = idx[c]
                ax.imshow(images[i].permute(1, 2, 0).numpy())
                flag = "S" if probs[i] >= threshold else "R"
                ax.set_title(f"{name}: p={probs[i]:.2f} {flag}", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_roc(curves: dict[str, tuple], report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.2), dpi=100)
    for name, (fpr, tpr, _) in curves.items():
        auc = (report["test"] if name == "clean" else report["robustness"][name])["roc_auc"]
        label = f"{name} (AUC {auc:.3f})" if auc is not None else name
        ax.plot(fpr, tpr, lw=2 if name == "clean" else 1, label=label)
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    ax.set_xlabel("false positive rate (real flagged)")
    ax.set_ylabel("true positive rate (synthetic caught)")
    ax.set_title("ROC on held-out test images")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def render_markdown(report: dict[str, Any]) -> str:
    t = report["test"]
    cm = t["confusion_matrix"]
    lines = [
        "# Detector evaluation",
        "",
        f"Checkpoint `{report['checkpoint']}` (step {report['step']}); decision threshold "
        f"P(synthetic) >= {report['threshold']:.6g}, chosen on validation.",
        f"Test set: {t['counts']['real']} real images (detector_test lesions) and "
        f"{t['counts']['synthetic']} held-out synthetic images.",
        "",
        "## Clean test set, beside the paper",
        "",
        "| metric | paper (Abbasi et al. 2024) | this run |",
        "| --- | ---: | ---: |",
    ]
    for m in METRIC_ROWS:
        paper = _pct(PAPER[m]) if m in PAPER else "not reported"
        ours = _num(t[m]) if m in ("roc_auc", "ece") else _pct(t[m])
        lines.append(f"| {m} | {paper} | {ours} |")
    lines += [
        "",
        f"Confusion matrix: TP {cm['tp']}, FP {cm['fp']}, TN {cm['tn']}, FN {cm['fn']} "
        "(positive = synthetic).",
        "",
    ]
    if report["robustness"]:
        lines += [
            "## Robustness (both classes perturbed the same way; threshold unchanged)",
            "",
            "| condition | accuracy | sensitivity | specificity | F1 | ROC-AUC | ECE |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, r in [("clean", t), *report["robustness"].items()]:
            lines.append(
                f"| {name} | {_pct(r['accuracy'])} | {_pct(r['sensitivity'])} | "
                f"{_pct(r['specificity'])} | {_pct(r['f1'])} | {_num(r['roc_auc'])} | "
                f"{_num(r['ece'])} |"
            )
        lines.append("")
    if report["foreign"]:
        lines += [
            "## Cross-generator (never seen in training)",
            "",
            "| generator | images | flagged synthetic | mean P(synthetic) | ROC-AUC vs real test |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for name, r in report["foreign"].items():
            lines.append(
                f"| {name} | {r['count']} | {_pct(r['flagged_synthetic'])} | "
                f"{_num(r['mean_p_synthetic'])} | {_num(r['roc_auc_vs_real_test'])} |"
            )
        lines.append("")
    v = report.get("validation") or {}
    if v:
        lines += [
            "## Validation (where the threshold came from)",
            "",
            f"ROC-AUC {_num(v.get('roc_auc'))}, balanced accuracy "
            f"{_pct(v.get('balanced_accuracy'))}, criterion {v.get('threshold_criterion')}, "
            f"{v.get('counts', {}).get('real')} real / {v.get('counts', {}).get('synthetic')} "
            "synthetic images.",
            "",
        ]
    return "\n".join(lines)


# ---------------------------------------------------------------- command line


def parse_foreign(text: str) -> tuple[str, Path]:
    """``NAME=DIR`` -> (NAME, DIR), for --foreign flags."""
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {text!r}")
    return name, Path(folder)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = p.add_argument
    a("--checkpoint", type=Path, required=True, help="RUN_DIR/detector.safetensors")
    a("--data", type=Path, required=True, help="HAM10000 folder the detector was trained from")
    a(
        "--synthetic",
        type=Path,
        required=True,
        help="synthetic folder the detector was trained from",
    )
    a("--out", type=Path, required=True, help="folder for report.json, report.md and figures")
    a(
        "--foreign",
        type=parse_foreign,
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="a folder of images from another generator (repeatable); evaluation only",
    )
    a("--limit", type=int, default=0, help="cap per class on the test set, seeded (0 = all)")
    a("--no-robustness", dest="robustness", action="store_false", help="skip perturbations")
    a("--batch-size", type=int, default=32, help="scoring batch size")
    a("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    a("--precision", choices=PRECISIONS, default="auto", help="auto: bf16 only where native")
    a("--no-channels-last", dest="channels_last", action="store_false", help="NCHW tensors")
    a("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    a("--seed", type=int, default=0, help="seed of the --limit subset")
    a("--quiet", action="store_true", help="no progress bars, no report printed")
    return p


def parse_args(argv: Sequence[str] | None = None) -> EvalConfig:
    ns = build_parser().parse_args(argv)
    foreign = dict(ns.foreign)
    if len(foreign) != len(ns.foreign):
        raise SystemExit("--foreign names must be unique")
    fields = {f.name for f in dataclasses.fields(EvalConfig)} - {"foreign"}
    return EvalConfig(foreign=foreign, **{k: v for k, v in vars(ns).items() if k in fields})


if __name__ == "__main__":
    try:
        main(parse_args())
    except (CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
