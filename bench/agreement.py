"""Does the served fast path say what fp32 eager says? Over a checkpoint's whole held-out test set.

The reference is the detector in fp32, eager, contiguous layout. Each ``--paths`` entry is served
the way ``app`` serves it (``app.runners.DetectorRunner``: weights cast, channels_last,
``torch.compile`` with every bucket warmed first) and fed batches of varying sizes, 1 to
``--max-batch-size``, as the dynamic batcher forms them, so padding to buckets is exercised.
Prints and writes verdict agreement, the largest probability difference and each path's accuracy.

    python -m bench.agreement --checkpoint artifacts/detector/detector.safetensors \\
        --data data/ham10000-200x150 --synthetic artifacts/synthetic
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from app.runners import DetectorRunner
from bench.machine import describe
from models.checkpoint import read_meta
from models.runtime import DTYPES, InferenceOptions, bucket_sizes, resolve_device
from training.common import write_json
from training.data import preload
from training.detector_data import held_out_test


@dataclass
class Config:
    checkpoint: Path = Path("artifacts/detector/detector.safetensors")
    data: Path = Path("data/ham10000-200x150")
    synthetic: Path = Path("artifacts/synthetic")
    paths: list[str] = field(default_factory=lambda: ["compile_fp32", "bf16"])
    limit: int = 0
    max_batch_size: int = 16
    seed: int = 0
    out: Path | None = None


def parse_args(argv: list[str] | None = None) -> Config:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    a = p.add_argument
    a("--checkpoint", type=Path, default=Config.checkpoint, help="detector .safetensors")
    a("--data", type=Path, default=Config.data, help="HAM10000 folder the checkpoint trained on")
    a("--synthetic", type=Path, default=Config.synthetic, help="its synthetic image folder")
    a(
        "--paths",
        nargs="+",
        default=["compile_fp32", "bf16"],
        help="served paths to compare: [compile_]fp32|bf16|fp16, all channels_last",
    )
    a("--limit", type=int, default=0, help="at most this many images per class (0: all)")
    a("--max-batch-size", type=int, default=Config.max_batch_size, help="as the service's")
    a("--seed", type=int, default=0, help="seed of the batch-size sequence")
    a("--out", type=Path, default=None, help="JSON results file")
    return Config(**vars(p.parse_args(argv)))


def score(
    runner: DetectorRunner,
    images: torch.Tensor | Sequence[torch.Tensor],
    sizes: Sequence[int],
    desc: str = "scoring",
) -> np.ndarray:
    """P(synthetic) per image, fed in batches of ``sizes`` (cycled) as the batcher forms them
    under varying load, so bucket padding is exercised."""
    out: list[float] = []
    i, k = 0, 0
    with tqdm(total=len(images), desc=desc, leave=False) as bar:
        while i < len(images):
            n = sizes[k % len(sizes)]
            out += [score.probability for score in runner(list(images[i : i + n]))]
            i, k = i + n, k + 1
            bar.update(n)
    return np.array(out)


def main(cfg: Config) -> dict:
    device = resolve_device("auto")
    meta = read_meta(cfg.checkpoint)
    test = held_out_test(meta, cfg.data, cfg.synthetic, cfg.limit, cfg.seed)
    pre = meta.preprocess_config
    images = torch.cat([preload(test.real, pre), preload(test.synthetic, pre)])
    labels = np.array([0] * len(test.real) + [1] * len(test.synthetic))
    rng = random.Random(cfg.seed)
    sizes = [rng.randint(1, cfg.max_batch_size) for _ in range(256)]

    reference = DetectorRunner.from_checkpoint(cfg.checkpoint, InferenceOptions(device))
    threshold = reference.threshold
    want = score(reference, images, [cfg.max_batch_size], "fp32 eager")
    result: dict = {
        "config": {k: str(v) for k, v in asdict(cfg).items()},
        "machine": describe(device),
        "images": {"real": len(test.real), "synthetic": len(test.synthetic)},
        "threshold": threshold,
        "reference": {
            "path": "fp32 eager",
            "accuracy": float(((want >= threshold) == labels).mean()),
        },
        "paths": {},
    }
    for name in cfg.paths:
        compile_ = name.startswith("compile_")
        options = InferenceOptions(device, DTYPES[name.removeprefix("compile_")], True, compile_)
        buckets = bucket_sizes(cfg.max_batch_size) if compile_ else ()
        start = time.perf_counter()
        runner = DetectorRunner.from_checkpoint(cfg.checkpoint, options, buckets)
        runner.warmup()
        warm_s = time.perf_counter() - start
        got = score(runner, images, sizes, name)
        agree = (want >= threshold) == (got >= threshold)
        diff = np.abs(want - got)
        result["paths"][name] = {
            **runner.options.describe(),
            "buckets": list(runner.buckets),
            "verdict_agreement": float(agree.mean()),
            "verdicts_differing": int((~agree).sum()),
            "max_abs_probability_diff": float(diff.max()),
            "mean_abs_probability_diff": float(diff.mean()),
            "accuracy": float(((got >= threshold) == labels).mean()),
            "warmup_s": round(warm_s, 1),
        }
        print(f"{name}: {result['paths'][name]}", flush=True)
    if cfg.out:
        write_json(cfg.out, result)
    return result


if __name__ == "__main__":
    main(parse_args())
