"""Which int8 recipe keeps a detector's verdicts: calibration method, calibration images and the
output correction, each measured by ``training.quantize`` itself.

Every recipe quantizes a copy of the checkpoint (in a temporary folder, so the int8 file beside
the real checkpoint is never touched) with ``training.quantize``'s own code and flags, and
reports what that run measured on the held-out test set: verdict agreement with fp32, images
that differ, mean |dp| and the ROC-AUC drop. Recipes are ``method:images:correct`` (``correct``
is ``yes`` or ``no``; a fourth part ``fp32head`` keeps the logit's layer in fp32).

    python -m bench.int8_recipes --checkpoint artifacts/detector/detector.safetensors \\
        --data data/ham10000-200x150 --out bench/results/int8_recipes.json
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.machine import describe
from training import quantize
from training.common import write_json

DEFAULT_RECIPES = [
    "minmax:64:no",  # the first int8 files (issue 16's first session)
    "minmax:64:yes",
    "percentile:64:no",
    "percentile:256:no",
    "percentile:256:yes",  # training.quantize's default
]


@dataclass
class Config:
    checkpoint: Path
    data: Path
    recipes: list[str] = field(default_factory=lambda: list(DEFAULT_RECIPES))
    sensitivity_images: int = quantize.QuantizeConfig.sensitivity_images
    test_limit: int = 0
    out: Path | None = None


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help="detector .safetensors file")
    p.add_argument("--data", type=Path, required=True, help="HAM10000 folder it trained on")
    p.add_argument(
        "--recipes",
        nargs="+",
        default=DEFAULT_RECIPES,
        help="method:calibration-images:correct[:fp32head], e.g. percentile:256:yes (method "
        "minmax or percentile; correct yes or no; fp32head keeps the logit's layer fp32)",
    )
    p.add_argument(
        "--sensitivity-images",
        type=int,
        default=Config.sensitivity_images,
        help="validation images per class that fit the output correction (training.quantize)",
    )
    p.add_argument(
        "--test-limit", type=int, default=0, help="test images per class and source (0: all)"
    )
    p.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    cfg = Config(**vars(p.parse_args(argv)))
    for recipe in cfg.recipes:
        try:
            parse_recipe(recipe)
        except ValueError as exc:
            p.error(str(exc))
    return cfg


def parse_recipe(recipe: str) -> list[str]:
    """``percentile:256:yes[:fp32head]`` -> training.quantize flags."""
    parts = recipe.split(":")
    if (
        len(parts) not in (3, 4)
        or parts[0] not in quantize.CALIBRATION_METHODS
        or parts[2] not in {"yes", "no"}
        or parts[3:] not in ([], ["fp32head"])
    ):
        raise ValueError(f"recipe {recipe!r}: expected METHOD:IMAGES:yes|no[:fp32head]")
    if not parts[1].isdigit() or int(parts[1]) < 1:
        raise ValueError(f"recipe {recipe!r}: calibration images must be a positive count")
    flags = ["--calibration-method", parts[0], "--calibration-images", parts[1]]
    flags += ["--no-correct-logits"] if parts[2] == "no" else []
    return flags + (["--fp32-head"] if parts[3:] else [])


def main(cfg: Config) -> dict[str, Any]:
    """Each recipe's held-out agreement figures (and the JSON report, with ``--out``)."""
    results = {}
    with tempfile.TemporaryDirectory(prefix="int8-recipes-") as tmp:
        checkpoint = Path(tmp) / "detector.safetensors"
        shutil.copy(cfg.checkpoint, checkpoint)
        for recipe in cfg.recipes:
            args = ["--checkpoint", str(checkpoint), "--data", str(cfg.data), "--quiet"]
            args += ["--sensitivity-images", str(cfg.sensitivity_images)]
            args += ["--test-limit", str(cfg.test_limit)]
            (meta,) = quantize.main(quantize.parse_args([*args, *parse_recipe(recipe)]))
            a = meta.agreement
            results[recipe] = {
                "verdict_agreement": a["verdict_agreement"],
                "verdicts_differing": a["verdicts_differing"],
                "images": a["images"],
                "mean_abs_probability_diff": a["mean_abs_probability_diff"],
                "roc_auc_drop": a["roc_auc_drop"],
                "output_correction": meta.toolchain["output_correction"],
            }
            print(
                f"{recipe:22s} agreement {a['verdict_agreement']:.2%} "
                f"({a['verdicts_differing']} of {a['images']} differ), "
                f"mean |dp| {a['mean_abs_probability_diff']:.4f}, "
                f"ROC-AUC drop {a['roc_auc_drop']:+.4f}",
                flush=True,
            )
    report = {"config": asdict(cfg), "machine": describe(torch.device("cpu")), "recipes": results}
    if cfg.out is not None:
        write_json(cfg.out, report)
    return report


if __name__ == "__main__":
    main(parse_args())
