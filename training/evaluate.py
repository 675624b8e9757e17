"""Evaluate detectors side by side on held-out data, unseen generators and other real photos.

Every detector is scored on the same images, each through its own preprocessing (the service's
path) and with the operating point saved in its checkpoint (calibration, threshold and
inconclusive band, all chosen on validation; nothing is tuned here).

- **Test**: the real images of the ``detector_test`` lesions against the test split of each fake
  source (``training.detector_data``). The headline row of a detector pools the sources it was
  trained on (for the paper's VGG16: its own SNGAN, as in the paper).
- **Per source**: share flagged and inconclusive at the operating point, and ROC-AUC against the
  real test photos, for every source, each marked trained / held out (validation) / unseen.
- **Foreign** (``--foreign NAME=DIR``): images of generators no detector was trained or tuned on.
- **Real photos** (``--real-extra NAME=DIR``): full-size photos from another source, decoded the
  way the service decodes uploads: the false-positive rate a user meets.
- **Resampling control**: the real test photos re-encoded as JPEG 95/75/50 and downscaled x0.5
  and back: still real, and must stay real (or at worst inconclusive).
- **Robustness**: the same perturbations applied to both classes of the headline test set.
- **Combined**: the service's overall verdict (``models.operating_point.overall_verdict``).

Writes ``report.json``, ``report.md``, ``roc.png``, ``confusion_<model>.png``,
``examples.png``, ``scores.csv`` and ``config.json``.
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

from models.checkpoint import (
    DETECTOR_KINDS,
    CheckpointError,
    CheckpointMeta,
    load_model,
    model_name,
    read_meta,
)
from models.operating_point import OperatingPoint, overall_verdict
from models.preprocessing import PreprocessConfig
from models.runtime import PRECISIONS, resolve_device, resolve_dtype
from training.augment import PERTURBATIONS
from training.common import write_json
from training.data import list_images
from training.detector_data import (
    Sources,
    add_named_dirs,
    detector_sets,
    load_views,
    parse_named_dir,
    perturbed_views,
    split_of,
    unique_named,
)
from training.metrics import binary_report, nan_to_none, roc_auc, roc_curve
from training.scoring import calibrated, predict_view_logits, verdict_shares, verdicts

# Abbasi et al. 2024, VGG16 detector on SNGAN-generated vs real HAM10000 lesions (test set).
PAPER = {"accuracy": 0.9982, "sensitivity": 0.9965, "specificity": 0.9995, "f1": 0.9980}
METRIC_ROWS = ("accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc", "ece")
CONTROLS = ("jpeg_q95", "jpeg_q75", "jpeg_q50", "downscale_x0.5")


@dataclass
class EvalConfig:
    checkpoints: list[Path]
    data: Path
    out: Path
    sources: dict[str, Path] = field(default_factory=dict)
    foreign: dict[str, Path] = field(default_factory=dict)
    real_extra: dict[str, Path] = field(default_factory=dict)
    combine: tuple[str, ...] = ()  # models whose overall verdict is reported (default: all)
    limit: int = 0
    robustness: bool = True
    batch_size: int = 32
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    threads: int = 0
    seed: int = 0
    quiet: bool = False


@dataclass
class Loaded:
    name: str
    path: Path
    model: torch.nn.Module
    meta: CheckpointMeta
    point: OperatingPoint

    @property
    def sources(self) -> Sources | None:
        info = (self.meta.extra or {}).get("sources")
        return Sources.from_dict(info) if info else None

    def role(self, source: str) -> str:
        s = self.sources
        if s is not None and source in s.train:
            return "trained"
        if s is not None and source in s.held_out:
            return "held out (validation)"
        return "unseen"


def all_sources(detectors: list[Loaded], extra: dict[str, Path]) -> dict[str, Path]:
    """Every fake source any detector knows (train or held out), plus ``--source`` ones."""
    out: dict[str, Path] = {}
    for d in detectors:
        s = d.sources
        if s is None:  # a checkpoint from before named sources: its SNGAN folder
            syn = (d.meta.extra or {}).get("synthetic")
            if syn:
                out.setdefault("sngan", Path(syn))
            continue
        for _, name, folder in s.items():
            out.setdefault(name, folder)
    out.update(extra)
    if not out:
        raise ValueError("no fake sources: the checkpoints name none; pass --source NAME=DIR")
    return out


@dataclass
class Scores:
    """Calibrated P(synthetic) of a set of images, and of their half-scale views when the
    detector's operating point checks them."""

    p: np.ndarray
    half: np.ndarray | None = None

    def shares(self, point: OperatingPoint) -> dict[str, Any]:
        return verdict_shares(self.p, point, self.half)

    def verdicts(self, point: OperatingPoint) -> list[str]:
        return verdicts(point, self.p, self.half)

    def head(self, n: int) -> Scores:
        return Scores(self.p[:n], None if self.half is None else self.half[:n])


class Scorer:
    """Decodes each image set once per preprocessing (canvases and the views the service would
    score) and scores it with each detector."""

    def __init__(self, cfg: EvalConfig, device: torch.device, dtype: torch.dtype) -> None:
        self.cfg, self.device, self.dtype = cfg, device, dtype
        self.cache: dict[tuple[str, PreprocessConfig], tuple[list[torch.Tensor], torch.Tensor]] = {}

    def load(
        self, key: str, paths: list[Path], pre: PreprocessConfig
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(canvases, views (N, V, 3, S, S)) of a set, decoded once per preprocessing."""
        if (key, pre) not in self.cache:
            self.cache[(key, pre)] = load_views(paths, pre, desc=key, quiet=self.cfg.quiet)
        return self.cache[(key, pre)]

    def score(self, d: Loaded, views: torch.Tensor, desc: str) -> Scores:
        logits = predict_view_logits(
            d.model,
            views,
            d.meta.preprocess_config,
            self.device,
            self.dtype,
            batch_size=self.cfg.batch_size,
            channels_last=self.cfg.channels_last,
            desc=f"{d.name}: {desc}",
            quiet=self.cfg.quiet,
        )
        has_half = d.point.views > 1 and logits.shape[1] > 1
        half = calibrated(d.point, logits[:, 1]) if has_half else None
        return Scores(calibrated(d.point, logits[:, 0]), half)


def load_detectors(cfg: EvalConfig, device: torch.device) -> list[Loaded]:
    loaded = []
    for path in cfg.checkpoints:
        meta = read_meta(path)
        if meta.kind not in DETECTOR_KINDS:
            raise CheckpointError(f"{path} holds a {meta.kind}, not a detector")
        model, meta = load_model(path, meta.kind, map_location=str(device))
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        point = OperatingPoint.from_metadata(meta.threshold, meta.extra)
        loaded.append(Loaded(model_name(path, meta), path, model, meta, point))
    names = [d.name for d in loaded]
    if len(set(names)) != len(names):
        raise ValueError(f"two checkpoints share a name: {names}")
    return loaded


def main(cfg: EvalConfig) -> dict[str, Any]:
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.precision, device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if not cfg.checkpoints:
        raise ValueError("no checkpoints to evaluate (--checkpoint PATH)")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", cfg)
    detectors = load_detectors(cfg, device)
    split, fractions = split_of(detectors[0].meta)
    sources = all_sources(detectors, cfg.sources)
    names = list(sources)
    test = detector_sets(
        cfg.data, Sources(sources), split, fractions, {"test": cfg.limit}, cfg.seed
    )["test"]
    source_paths = {n: test.of_source(n) for n in names}
    empty = [n for n, p in source_paths.items() if not p]
    if not test.real or empty:
        raise ValueError(f"test set has {len(test.real)} real images; sources without: {empty}")
    foreign = {n: list_images(f) for n, f in cfg.foreign.items()}
    real_extra = {n: list_images(f) for n, f in cfg.real_extra.items()}
    scorer = Scorer(cfg, device, dtype)

    report: dict[str, Any] = {
        "paper": PAPER,
        "counts": {
            "real_test": len(test.real),
            **{f"source:{n}": len(p) for n, p in source_paths.items()},
            **{f"foreign:{n}": len(p) for n, p in foreign.items()},
            **{f"real:{n}": len(p) for n, p in real_extra.items()},
        },
        "detectors": {},
    }
    called: dict[str, dict[str, list[str]]] = {}  # set -> model -> verdict per image
    curves: dict[str, tuple] = {}
    score_rows: list[dict[str, Any]] = []
    first_pair: tuple[torch.Tensor, np.ndarray, np.ndarray, float] | None = None
    for d in detectors:
        pre = d.meta.preprocess_config
        real_c, real_v = scorer.load("real test", test.real, pre)
        real = scorer.score(d, real_v, "real test")
        sets: dict[str, Scores] = {"real:test": real}
        per_source, src = {}, {}
        for n in names:
            src[n] = scorer.load(f"source {n}", source_paths[n], pre)
            sets[f"source:{n}"] = scorer.score(d, src[n][1], n)
            per_source[n] = {
                "role": d.role(n),
                **sets[f"source:{n}"].shares(d.point),
                "roc_auc_vs_real_test": _auc(real.p, sets[f"source:{n}"].p),
            }
        trained = [n for n in names if d.role(n) == "trained"] or names
        fake_p = np.concatenate([sets[f"source:{n}"].p for n in trained])
        labels = np.r_[np.zeros(real.p.size), np.ones(fake_p.size)]
        clean = np.r_[real.p, fake_p]
        entry: dict[str, Any] = {
            "checkpoint": str(d.path),
            "kind": d.meta.kind,
            "weights_sha256": d.meta.weights_sha256,
            "architecture": (d.meta.extra or {}).get("architecture", d.meta.kind),
            "step": d.meta.step,
            "operating_point": d.point.to_dict(),
            "headline_sources": trained,
            "validation": d.meta.metrics.get("validation", {}),
            "test": binary_report(labels, clean, d.point.threshold),
            "test_verdicts": {
                "real": real.shares(d.point),
                "fake": Scores(
                    fake_p,
                    None
                    if real.half is None
                    else np.concatenate([sets[f"source:{n}"].half for n in trained]),
                ).shares(d.point),
            },
            "per_source": per_source,
            "foreign": {},
            "real_photos": {"detector_test": real.shares(d.point)},
            "resampling_control": {},
            "robustness": {},
        }
        curves[d.name] = roc_curve(labels, clean)
        if first_pair is None:
            fake_x = torch.cat([src[n][1][:, 0] for n in trained])
            first_pair = (torch.cat([real_v[:, 0], fake_x]), labels, clean, d.point.threshold)
        for n, paths in foreign.items():
            sc = scorer.score(d, scorer.load(f"foreign {n}", paths, pre)[1], n)
            sets[f"foreign:{n}"] = sc
            entry["foreign"][n] = {**sc.shares(d.point), "roc_auc_vs_real_test": _auc(real.p, sc.p)}
        for n, paths in real_extra.items():
            sc = scorer.score(d, scorer.load(f"real {n}", paths, pre)[1], n)
            sets[f"real:{n}"] = sc
            entry["real_photos"][n] = sc.shares(d.point)
        if cfg.robustness:
            fake_c = [c for n in trained for c in src[n][0]]
            for cond in PERTURBATIONS:
                views = perturbed_views([*real_c, *fake_c], pre, cond)
                sc = scorer.score(d, views, cond)
                entry["robustness"][cond] = binary_report(labels, sc.p, d.point.threshold)
                if cond in CONTROLS:
                    control = sc.head(real.p.size)
                    entry["resampling_control"][cond] = control.shares(d.point)
                    sets[f"control:{cond}"] = control
        for key, sc in sets.items():
            called.setdefault(key, {})[d.name] = sc.verdicts(d.point)
        score_rows += [
            {
                "model": d.name,
                "set": key,
                "index": i,
                "p_synthetic": float(v),
                "p_half_scale": "" if sc.half is None else float(sc.half[i]),
            }
            for key, sc in sets.items()
            for i, v in enumerate(sc.p)
        ]
        report["detectors"][d.name] = entry
    report["order"] = [d.name for d in detectors]
    unknown = set(cfg.combine) - set(report["order"])
    if unknown:
        raise ValueError(f"--combine names {sorted(unknown)} are not among {report['order']}")
    combine = list(cfg.combine) or report["order"]
    points = {d.name: d.point for d in detectors}
    report["combined"] = _combined(called, combine, [points[n].controlled for n in combine])
    report = nan_to_none(report)
    write_json(out / "report.json", report)
    _write_scores(out / "scores.csv", score_rows)
    for name, entry in report["detectors"].items():
        plot_confusion(entry["test"]["confusion_matrix"], out / f"confusion_{name}.png", name)
    plot_roc(curves, report, out / "roc.png")
    if first_pair is not None:
        plot_examples(*first_pair, out / "examples.png")
    (out / "report.md").write_text(render_markdown(report))
    if not cfg.quiet:
        print((out / "report.md").read_text())
    return report


def _auc(real: np.ndarray, fake: np.ndarray) -> float:
    y = np.r_[np.zeros(real.size), np.ones(fake.size)]
    return roc_auc(y, np.r_[real, fake])


def _combined(
    verdicts: dict[str, dict[str, list[str]]], models: list[str], controlled: list[bool]
) -> dict[str, Any]:
    """Shares of the service's overall verdict per image set (every model scored every image)."""
    out = {}
    for key, per_model in verdicts.items():
        if not set(models) <= set(per_model):
            continue
        columns = zip(*(per_model[m] for m in models), strict=True)
        overall = [overall_verdict(list(v), controlled) for v in columns]
        n = len(overall)
        out[key] = {
            "count": n,
            **{
                f"{v}_share": (overall.count(v) / n if n else None)
                for v in ("synthetic", "inconclusive", "real")
            },
        }
    return {"models": models, "sets": out}


def _write_scores(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["model", "set", "index", "p_synthetic", "p_half_scale"])
        w.writeheader()
        for r in rows:
            half = r["p_half_scale"]
            w.writerow(
                {
                    **r,
                    "p_synthetic": f"{r['p_synthetic']:.6g}",
                    "p_half_scale": half if half == "" else f"{half:.6g}",
                }
            )


# ---------------------------------------------------------------- figures and report.md


def plot_confusion(cm: dict[str, int], path: Path, title: str = "") -> None:
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
    ax.set_title(f"Test confusion matrix {title}".strip(), fontsize=9)
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
        auc = report["detectors"][name]["test"]["roc_auc"]
        label = f"{name} (AUC {auc:.3f})" if auc is not None else name
        ax.plot(fpr, tpr, lw=1.5, label=label)
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    ax.set_xlabel("false positive rate (real flagged)")
    ax.set_ylabel("true positive rate (synthetic caught)")
    ax.set_title("ROC on held-out test images (trained sources)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |",
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
    ]


def _flag_cell(r: dict[str, Any]) -> str:
    return f"{_pct(r['flagged_synthetic'])} (+{_pct(r['inconclusive'])} inc.)"


def _fake_cell(r: dict[str, Any]) -> str:
    role = f" ({r['role']})" if "role" in r else ""
    return f"{_flag_cell(r)}, AUC {_num(r['roc_auc_vs_real_test'])}{role}"


def render_markdown(report: dict[str, Any]) -> str:
    names = report.get("order") or list(report["detectors"])
    dets = {n: report["detectors"][n] for n in names}
    lines = [
        "# Detector evaluation",
        "",
        "Each detector at the operating point saved in its checkpoint (chosen on validation; "
        "nothing here is tuned on test or foreign images). Cells with two figures: share "
        "flagged synthetic (+ share inconclusive).",
        "",
        "## Operating points",
        "",
    ]
    rows = []
    for n, e in dets.items():
        op = OperatingPoint(**e["operating_point"])
        target = f" ({_pct(op.target_fpr)})" if op.target_fpr else ""
        rows.append(
            [
                n,
                str(e["architecture"]),
                op.criterion + target,
                f"{op.threshold:.4g}",
                f"{op.band_low:.4g}",
                "—" if op.half_scale_threshold is None else f"{op.half_scale_threshold:.4g}",
                f"{op.temperature:.3g} / {op.bias:+.3g}",
                ", ".join(e["headline_sources"]),
            ]
        )
    header = ["model", "architecture", "criterion", "threshold", "inconclusive from", "half scale"]
    lines += _table([*header, "temperature / bias", "trained on"], rows)
    lines += ["## Held-out test set (trained sources pooled), beside the paper", ""]
    rows = []
    for m in METRIC_ROWS:
        paper = _pct(PAPER[m]) if m in PAPER else "—"
        cells = [
            (_num(e["test"][m]) if m in ("roc_auc", "ece") else _pct(e["test"][m]))
            for e in dets.values()
        ]
        rows.append([m, paper, *cells])
    lines += _table(["metric", "paper", *names], rows)
    lines += ["## Fake sources (test split) and generators never trained on", ""]
    rows = []
    first = next(iter(dets.values()))
    for n in first["per_source"]:
        rows.append([f"source {n}"] + [_fake_cell(e["per_source"][n]) for e in dets.values()])
    for n in first["foreign"]:
        rows.append([f"**foreign {n}**"] + [_fake_cell(e["foreign"][n]) for e in dets.values()])
    lines += _table(["images", *names], rows)
    lines += ["## Real photos: false positives a user meets", ""]
    rows = []
    for n in next(iter(dets.values()))["real_photos"]:
        rows.append([f"real {n}"] + [_flag_cell(e["real_photos"][n]) for e in dets.values()])
    for n in next(iter(dets.values()))["resampling_control"]:
        rows.append(
            [f"real test, {n}"] + [_flag_cell(e["resampling_control"][n]) for e in dets.values()]
        )
    lines += _table(["real images", *names], rows)
    if any(e["robustness"] for e in dets.values()):
        lines += ["## Robustness (both classes perturbed alike; ROC-AUC / accuracy)", ""]
        conds = list(next(iter(dets.values()))["robustness"])
        rows = [
            ["clean"]
            + [
                f"{_num(e['test']['roc_auc'])} / {_pct(e['test']['accuracy'])}"
                for e in dets.values()
            ]
        ]
        rows += [
            [c]
            + [
                f"{_num(e['robustness'][c]['roc_auc'])} / {_pct(e['robustness'][c]['accuracy'])}"
                for e in dets.values()
            ]
            for c in conds
        ]
        lines += _table(["condition", *names], rows)
    comb = report.get("combined", {}).get("sets", {})
    if comb and len(report["combined"]["models"]) > 1:
        lines += [
            "## The service's overall verdict",
            "",
            "Synthetic when a model whose threshold holds a known false-positive rate says so; "
            "a paper-style model that disagrees makes it inconclusive; real only when every "
            "model says real (`models.operating_point.overall_verdict`).",
            "",
            f"Models: {', '.join(report['combined']['models'])}.",
            "",
        ]
        lines += _table(
            ["images", "synthetic", "inconclusive", "real"],
            [
                [
                    k,
                    _pct(v["synthetic_share"]),
                    _pct(v["inconclusive_share"]),
                    _pct(v["real_share"]),
                ]
                for k, v in comb.items()
            ],
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- command line


def parse_foreign(text: str) -> tuple[str, Path]:
    """``NAME=DIR`` -> (NAME, DIR), for --foreign flags (kept for callers of the old name)."""
    return parse_named_dir(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = p.add_argument
    a(
        "--checkpoint",
        type=Path,
        action="append",
        required=True,
        dest="checkpoints",
        help="a detector checkpoint (RUN_DIR/detector.safetensors); repeat to compare several",
    )
    a("--data", type=Path, required=True, help="HAM10000 folder the detectors were trained from")
    add_named_dirs(
        p,
        "--source",
        "a fake source to test on besides those the checkpoints name (repeatable)",
    )
    a("--synthetic", type=Path, default=None, help="shorthand for --source sngan=DIR")
    a("--out", type=Path, required=True, help="folder for report.json, report.md and figures")
    add_named_dirs(
        p,
        "--foreign",
        "images of a generator never trained or tuned on (repeatable); evaluation only",
    )
    add_named_dirs(
        p,
        "--real-extra",
        "real photos from another source (repeatable), decoded as the service decodes "
        "uploads: their flagged share is the false-positive rate users meet",
    )
    a(
        "--limit",
        type=int,
        default=0,
        help="cap on real test images and per source, seeded (0 = all)",
    )
    a(
        "--combine",
        nargs="+",
        default=[],
        metavar="NAME",
        help="models whose overall verdict (as the service combines them) is reported "
        "(default: all)",
    )
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
    sources = unique_named(ns.source, "--source")
    if ns.synthetic is not None:
        sources.setdefault("sngan", ns.synthetic)
    named = {"sources", "foreign", "real_extra", "combine"}
    fields = {f.name for f in dataclasses.fields(EvalConfig)} - named
    return EvalConfig(
        sources=sources,
        foreign=unique_named(ns.foreign, "--foreign"),
        real_extra=unique_named(ns.real_extra, "--real-extra"),
        combine=tuple(ns.combine),
        **{k: v for k, v in vars(ns).items() if k in fields},
    )


if __name__ == "__main__":
    try:
        main(parse_args())
    except (CheckpointError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
