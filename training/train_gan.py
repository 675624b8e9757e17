"""Train the SNGAN on the ``gan_train`` lesions of HAM10000.

    python -m training.train_gan --data data/ham10000-200x150 --out runs/gan \\
        --image-size 64 --steps 5000

Recipe (Miyato et al. 2018, "standard CNN" with hinge loss): Adam lr 2e-4, betas (0.0, 0.9),
n_dis = 5 discriminator updates per generator update, batch 64, z 128. ``--steps`` counts
generator updates, as the paper does. Sampling uses an exponential moving average of G.

Writes into ``--out``: ``config.json``, ``split_manifest.csv``, ``log.csv``, ``state.pt`` (full
state for ``--resume``), ``generator.safetensors`` (EMA weights, loadable alone by
``models.checkpoint.load_model``), ``samples/step_XXXXXX.png`` at every checkpoint and
``loss_curves.png`` at the end. Under ``torchrun`` every rank trains on its own shard of the
data with its own noise; gradients are averaged by DDP and rank 0 writes the files.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from models.checkpoint import (
    CheckpointError,
    load_state,
    save_model,
    save_state,
    unwrap,
    weights_digest,
)
from models.preprocessing import GAN_MEAN, GAN_STD, PreprocessConfig, normalize, to_uint8
from models.runtime import PRECISIONS, autocast, resolve_device, resolve_dtype
from models.sngan import (
    SUPPORTED_SIZES,
    Discriminator,
    DiscriminatorConfig,
    Generator,
    GeneratorConfig,
)
from training.common import (
    CsvLog,
    Dist,
    batch_indices,
    close_distributed,
    init_distributed,
    seed_everything,
    write_json,
)
from training.data import (
    DEFAULT_FRACTIONS,
    SPLITS,
    SplitConfig,
    load_splits,
    parse_fractions,
    preload,
)
from training.data import write_manifest as write_split_manifest
from training.diffaugment import diff_augment, parse_policy
from training.gan_watch import BEST_FILE, QualityWatch, metrics_of
from training.losses import LOSSES, GanLoss, get_loss
from training.plots import plot_curves, save_grid
from training.progress import Progress

LOG_FIELDS = ("step", "d_loss", "g_loss", "d_real", "d_fake", "images_per_s", "elapsed_s")
DIGEST_ENV = "DERMAFAKE_WEIGHT_DIGEST_DIR"  # set by tests: every rank writes its weight digest


@dataclass
class TrainGanConfig:
    data: Path
    out: Path
    image_size: int = 64
    steps: int = 100_000
    batch_size: int = 64
    n_dis: int = 5
    seed: int = 0
    resume: bool = False
    z_dim: int = 128
    g_channels: int = 64
    d_channels: int = 64
    loss: str = "hinge"
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.0
    beta2: float = 0.9
    ema_decay: float = 0.999
    diffaugment: str = "none"
    flips: bool = True
    precision: str = "auto"
    device: str = "auto"
    threads: int = 0
    log_every: int = 10
    sample_every: int = 500
    num_samples: int = 64
    time_limit_min: float = 0.0
    limit_images: int = 0
    split_fractions: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    split_seed: int = 0
    features: Path | None = None  # lesion feature model: score the generator while it trains
    quality_every: int = 0  # G steps between scorings; 0 = at every checkpoint
    quality_n: int = 1000  # generated images per scoring (one fixed noise sample)
    quality_real_n: int = 2000  # gan_train lesions in the real reference (a seeded subset)
    quiet: bool = False


def parse_args(argv: list[str] | None = None) -> TrainGanConfig:
    d = TrainGanConfig(data=Path(), out=Path())
    p = argparse.ArgumentParser(
        prog="python -m training.train_gan",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", type=Path, required=True, help="HAM10000 folder (either layout)")
    p.add_argument("--out", type=Path, required=True, help="run folder for every output")
    p.add_argument(
        "--image-size",
        type=int,
        default=d.image_size,
        choices=SUPPORTED_SIZES,
        help="generated image side in px (the detector upsamples 32/64 to its 128)",
    )
    p.add_argument(
        "--steps", type=int, default=d.steps, help="total generator updates (paper order: 100k)"
    )
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per process")
    p.add_argument("--n-dis", type=int, default=d.n_dis, help="D updates per G update (paper 5)")
    p.add_argument("--seed", type=int, default=d.seed, help="model init, data order and noise")
    p.add_argument(
        "--resume", action="store_true", help="continue from --out/state.pt up to --steps"
    )
    p.add_argument("--z-dim", type=int, default=d.z_dim, help="latent size")
    p.add_argument("--g-channels", type=int, default=d.g_channels, help="G width at full size")
    p.add_argument("--d-channels", type=int, default=d.d_channels, help="D width at full size")
    p.add_argument("--loss", default=d.loss, choices=sorted(LOSSES), help="GAN loss")
    p.add_argument("--lr-g", type=float, default=d.lr_g, help="Adam learning rate of G")
    p.add_argument("--lr-d", type=float, default=d.lr_d, help="Adam learning rate of D")
    p.add_argument("--beta1", type=float, default=d.beta1, help="Adam beta1 (paper 0.0)")
    p.add_argument("--beta2", type=float, default=d.beta2, help="Adam beta2 (paper 0.9)")
    p.add_argument(
        "--ema-decay",
        type=float,
        default=d.ema_decay,
        help="EMA of G weights used for samples and generator.safetensors (0 = no averaging)",
    )
    p.add_argument(
        "--diffaugment",
        default=d.diffaugment,
        help="DiffAugment policy for D inputs, e.g. color,translation,cutout; none = off",
    )
    p.add_argument(
        "--no-flips",
        dest="flips",
        action="store_false",
        help="disable random horizontal/vertical flips of real images",
    )
    p.add_argument(
        "--precision",
        default=d.precision,
        choices=PRECISIONS,
        help="autocast dtype; auto = bf16 on CUDA or CPUs with native bf16, else fp32",
    )
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda")
    p.add_argument(
        "--threads",
        type=int,
        default=d.threads,
        help="CPU threads (0 = torch default); on a shared CPU 1 thread can be faster",
    )
    p.add_argument("--log-every", type=int, default=d.log_every, help="G steps per log.csv row")
    p.add_argument(
        "--sample-every",
        "--checkpoint-every",
        dest="sample_every",
        type=int,
        default=d.sample_every,
        help="G steps between checkpoints (state, generator, sample grid)",
    )
    p.add_argument("--num-samples", type=int, default=d.num_samples, help="tiles per grid")
    p.add_argument(
        "--time-limit-min",
        type=float,
        default=d.time_limit_min,
        help="stop cleanly (with a checkpoint) after this many minutes; 0 = no limit",
    )
    p.add_argument(
        "--limit-images", type=int, default=d.limit_images, help="use the first N (0 = all)"
    )
    p.add_argument(
        "--split",
        dest="split_fractions",
        type=parse_fractions,
        default=",".join(str(v) for v in DEFAULT_FRACTIONS.values()),
        help=f"lesion-level split fractions for {', '.join(SPLITS)}",
    )
    p.add_argument("--split-seed", type=int, default=d.split_seed, help="seed of the split")
    p.add_argument(
        "--features",
        type=Path,
        default=None,
        help="lesion feature model (python -m training.train_features, same --split): score the "
        "EMA generator (FD, KID, precision, recall vs the gan_train lesions) while training, "
        "log quality.csv, plot quality.png and keep the best-FD generator as "
        "generator_best.safetensors beside the last one",
    )
    p.add_argument(
        "--quality-every",
        type=int,
        default=d.quality_every,
        help="G steps between scorings (with --features); 0 = at every checkpoint",
    )
    p.add_argument(
        "--quality-n",
        type=int,
        default=d.quality_n,
        help="generated images per scoring, from one fixed noise sample",
    )
    p.add_argument(
        "--quality-real-n",
        type=int,
        default=d.quality_real_n,
        help="gan_train lesions in the real reference (seeded subset; 0 = all)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if isinstance(args.split_fractions, str):
        args.split_fractions = parse_fractions(args.split_fractions)
    cfg = TrainGanConfig(**vars(args))
    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.n_dis < 1:
        p.error("--steps, --batch-size and --n-dis must be >= 1")
    if cfg.features is not None and (cfg.quality_n < 2 or cfg.quality_every < 0):
        p.error("--quality-n must be >= 2 and --quality-every >= 0")
    parse_policy(cfg.diffaugment)
    return cfg


# ---------------------------------------------------------------------------------------------
# Pieces


def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema = decay * ema + (1 - decay) * model for parameters; buffers (BN stats) are copied."""
    with torch.no_grad():
        for e, m in zip(ema.parameters(), model.parameters(), strict=True):
            e.lerp_(m, 1.0 - decay)
        for e, m in zip(ema.buffers(), model.buffers(), strict=True):
            e.copy_(m)


def ema_decay_at(step: int, decay: float) -> float:
    """Warm-up so that a short run's EMA is not dominated by the random init (as TF's EMA)."""
    return min(decay, (1.0 + step) / (10.0 + step))


def random_flips(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Flip each image horizontally and/or vertically with p = 0.5 (dermoscopy has no up)."""
    n = x.shape[0]
    h = torch.rand(n, generator=g, device=x.device) < 0.5
    v = torch.rand(n, generator=g, device=x.device) < 0.5
    x = torch.where(h.view(n, 1, 1, 1), x.flip(3), x)
    return torch.where(v.view(n, 1, 1, 1), x.flip(2), x)


def weight_digest(*modules: nn.Module) -> str:
    """One SHA-256 over the models' parameters and buffers: equal digests = bitwise equal."""
    return weights_digest(
        {
            f"{i}.{key}": t.detach().cpu()
            for i, module in enumerate(modules)
            for key, t in unwrap(module).state_dict().items()
        }
    )


@dataclass
class Run:
    """Models, optimisers, noise stream and step; ``d_step``/``g_step`` are one update each.

    ``state_dict`` is what ``--resume`` restores. The benchmark (``bench/gan_speed.py``) times
    these same two methods.
    """

    G: nn.Module
    D: nn.Module
    G_ema: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    noise: torch.Generator
    loss: GanLoss
    device: torch.device
    dtype: torch.dtype = torch.float32
    policy: tuple[str, ...] = ()
    step: int = 0

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, self.policy, self.noise) if self.policy else x

    def z(self, n: int) -> torch.Tensor:
        z_dim = unwrap(self.G).config.z_dim
        return torch.randn(n, z_dim, generator=self.noise, device=self.device)

    def d_step(self, real: torch.Tensor) -> tuple[float, float, float]:
        """One D update on a real batch vs as many (detached) fakes: (loss, D(real), D(fake))."""
        bs = real.shape[0]
        with torch.no_grad(), autocast(self.device, self.dtype):
            fake = self.G(self.z(bs)).float()
        # One forward over real+fake: D has no batch statistics, and DDP wants one forward per
        # backward.
        with autocast(self.device, self.dtype):
            scores = self.D(self.augment(torch.cat([real, fake]))).float()
        s_real, s_fake = scores[:bs], scores[bs:]
        loss = self.loss.discriminator(s_real, s_fake)
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        return loss.item(), s_real.mean().item(), s_fake.mean().item()

    def g_step(self, batch_size: int) -> float:
        """One G update through a frozen D (called unwrapped: no DDP sync for D's weights)."""
        D = unwrap(self.D)
        D.requires_grad_(False)
        try:
            with autocast(self.device, self.dtype):
                loss = self.loss.generator(D(self.augment(self.G(self.z(batch_size)))).float())
            self.opt_g.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_g.step()
        finally:
            D.requires_grad_(True)
        return loss.item()

    def state_dict(self, config: TrainGanConfig) -> dict[str, Any]:
        return {
            "step": self.step,
            "G": unwrap(self.G).state_dict(),
            "D": unwrap(self.D).state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "noise_rng": self.noise.get_state(),
            "torch_rng": torch.get_rng_state(),
            "config": {
                k: (str(v) if isinstance(v, Path) else v)
                for k, v in dataclasses.asdict(config).items()
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unwrap(self.G).load_state_dict(state["G"])
        unwrap(self.D).load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.noise.set_state(state["noise_rng"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])


_MUST_MATCH = ("image_size", "z_dim", "g_channels", "d_channels")


def check_resumable(saved: dict[str, Any], config: TrainGanConfig) -> None:
    diffs = [k for k in _MUST_MATCH if saved.get(k) != getattr(config, k)]
    if diffs:
        shown = ", ".join(f"{k}: saved {saved.get(k)} vs now {getattr(config, k)}" for k in diffs)
        raise CheckpointError(f"cannot resume: the model shape changed ({shown})")


# ---------------------------------------------------------------------------------------------
# The loop


def build_run(config: TrainGanConfig, device: torch.device, rank: int = 0) -> Run:
    """Models (identical init on every rank: same seed), optimisers and this rank's noise."""
    dtype = resolve_dtype(config.precision, device)
    if dtype == torch.float16:
        raise ValueError("fp16 needs loss scaling, which this GAN loop does not do: use bf16")
    seed_everything(config.seed)
    G = Generator(GeneratorConfig(config.image_size, config.z_dim, config.g_channels))
    D = Discriminator(DiscriminatorConfig(config.image_size, config.d_channels))
    G = G.to(device, memory_format=torch.channels_last)
    D = D.to(device, memory_format=torch.channels_last)
    G_ema = copy.deepcopy(G).train()
    for p in G_ema.parameters():
        p.requires_grad_(False)
    betas = (float(config.beta1), float(config.beta2))
    return Run(
        G=G,
        D=D,
        G_ema=G_ema,
        opt_g=torch.optim.Adam(G.parameters(), lr=config.lr_g, betas=betas),
        opt_d=torch.optim.Adam(D.parameters(), lr=config.lr_d, betas=betas),
        noise=torch.Generator(device=device).manual_seed(config.seed + 7919 * (rank + 1)),
        loss=get_loss(config.loss),
        device=device,
        dtype=dtype,
        policy=parse_policy(config.diffaugment),
    )


def _checkpoint(
    run: Run,
    config: TrainGanConfig,
    pre: PreprocessConfig,
    fixed_z: torch.Tensor,
    metrics: dict[str, float],
    basis: dict[str, Any] | None,
) -> None:
    out = config.out
    save_state(out / "state.pt", run.state_dict(config))
    save_generator(out / "generator.safetensors", run, config, pre, metrics, basis)
    run.G_ema.eval()
    with torch.no_grad():
        images = to_uint8(run.G_ema(fixed_z))
    run.G_ema.train()
    scale = max(1, 64 // config.image_size)
    save_grid(images, out / "samples" / f"step_{run.step:06d}.png", scale=scale)


def save_generator(
    path: Path,
    run: Run,
    config: TrainGanConfig,
    pre: PreprocessConfig,
    metrics: dict[str, float],
    basis: dict[str, Any] | None,
) -> None:
    """The EMA generator with its training metrics and, when it was scored, what the score
    was measured with (``basis``, from the quality watch)."""
    extra: dict[str, Any] = {"ema_decay": config.ema_decay, "loss": config.loss}
    extra["n_dis"] = config.n_dis
    if "fd" in metrics and basis is not None:
        extra["quality"] = basis
    save_model(path, run.G_ema, pre, step=run.step, metrics=metrics, extra=extra)


def broadcast_buffers(ctx: Dist, *modules: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics), as DDP does before a forward.

    BatchNorm's running statistics are updated from each rank's own batch after DDP's
    broadcast, and the EMA copies them; before anything is saved or compared, rank 0's win.
    """
    if not ctx.enabled:
        return
    for module in modules:
        for buf in unwrap(module).buffers():
            torch.distributed.broadcast(buf, src=0)


def _out_of_time(config: TrainGanConfig, elapsed: float, ctx: Dist, device: torch.device) -> bool:
    """Past ``--time-limit-min``; under torchrun rank 0 decides for all, so no rank is left
    waiting in a collective for one that stopped."""
    if config.time_limit_min <= 0:
        return False
    flag = torch.tensor([float(elapsed > config.time_limit_min * 60)], device=device)
    if ctx.enabled:
        torch.distributed.broadcast(flag, src=0)
    return bool(flag.item())


def main(config: TrainGanConfig) -> Path:
    """Train; returns the path of ``generator.safetensors``."""
    device = resolve_device(config.device)
    ctx: Dist = init_distributed(device)
    try:
        return _train(config, device, ctx)
    finally:
        close_distributed(ctx)


def _train(config: TrainGanConfig, device: torch.device, ctx: Dist) -> Path:
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    if device.type == "cuda":
        torch.cuda.set_device(ctx.local_rank)
        device = torch.device("cuda", ctx.local_rank)
    out = config.out
    state_path = out / "state.pt"
    if config.resume and not state_path.is_file():
        raise CheckpointError(f"--resume given but there is no {state_path}")
    if not config.resume and state_path.is_file():
        raise CheckpointError(f"{out} already holds a run: pass --resume or choose another --out")

    # Data: the gan_train lesions only, decoded once.
    splits = load_splits(config.data, SplitConfig(config.split_fractions, config.split_seed))
    records = splits["gan_train"]
    if config.limit_images > 0:
        records = records[: config.limit_images]
    pre = PreprocessConfig(image_size=config.image_size, mean=GAN_MEAN, std=GAN_STD)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(
            out / "config.json", {**dataclasses.asdict(config), "world_size": ctx.world_size}
        )
        write_split_manifest(splits, out / "split_manifest.csv")
    shard = records[ctx.rank :: ctx.world_size]
    images = preload(
        [r.path for r in shard], pre, desc=f"decoding rank {ctx.rank}", quiet=config.quiet
    )

    run = build_run(config, device, ctx.rank)
    if config.resume:
        state = load_state(state_path)
        check_resumable(state.get("config", {}), config)
        run.load_state_dict(state)
        if ctx.rank > 0:  # only rank 0's noise stream is saved; the others re-derive theirs
            run.noise.manual_seed(config.seed + 7919 * (ctx.rank + 1) + 104_729 * run.step)
        if ctx.is_main:
            print(f"resumed from {state_path} at step {run.step}", file=sys.stderr)
    watch = None
    if ctx.is_main and config.features is not None:  # before training: a bad file fails at once
        watch = QualityWatch(
            config.features,
            records,
            SplitConfig(config.split_fractions, config.split_seed),
            out=out,
            n=config.quality_n,
            real_n=config.quality_real_n,
            z_dim=config.z_dim,
            seed=config.seed,
            device=device,
            resume_step=run.step,
            quiet=config.quiet,
        )
    if ctx.enabled:
        ids = [ctx.local_rank] if device.type == "cuda" else None
        run.G = DistributedDataParallel(run.G, device_ids=ids)
        run.D = DistributedDataParallel(run.D, device_ids=ids)
    fixed_z = torch.randn(
        config.num_samples,
        config.z_dim,
        generator=torch.Generator().manual_seed(config.seed),
    ).to(device)
    log = CsvLog(out / "log.csv", LOG_FIELDS, resume_step=run.step) if ctx.is_main else None
    data_seed = config.seed * 101 + ctx.rank
    n_img, bs = images.shape[0], config.batch_size

    def real_batch(k: int) -> torch.Tensor:
        x = images[batch_indices(k, n_img, bs, data_seed)].to(device, non_blocking=True)
        x = normalize(x, pre)
        if config.flips:
            x = random_flips(x, run.noise)
        return x.contiguous(memory_format=torch.channels_last)

    acc = {"d_loss": 0.0, "g_loss": 0.0, "d_real": 0.0, "d_fake": 0.0}
    n_d = n_g = 0
    last: dict[str, float] = {}
    quality: dict[str, float] = {}  # the latest scoring, carried by every checkpoint after it
    quality_every = (config.quality_every or config.sample_every) if config.features else 0
    t_log = t_start = time.perf_counter()
    images_since_log = 0
    progress = Progress(
        config.steps,
        run.step,
        60 * config.time_limit_min,
        quiet=config.quiet or not ctx.is_main,
        desc="SNGAN",
    )
    shown: dict[str, str] = {}
    start_step = run.step
    stopped_early = False
    while run.step < config.steps:
        # --- discriminator: n_dis updates on real vs (detached) fake --------------------------
        for j in range(config.n_dis):
            d_loss, d_real, d_fake = run.d_step(real_batch(run.step * config.n_dis + j))
            acc["d_loss"] += d_loss
            acc["d_real"] += d_real
            acc["d_fake"] += d_fake
            n_d += 1
            images_since_log += bs
        # --- generator: one update through a frozen D ------------------------------------------
        acc["g_loss"] += run.g_step(bs)
        ema_update(run.G_ema, unwrap(run.G), ema_decay_at(run.step, config.ema_decay))
        n_g += 1
        run.step += 1

        elapsed = time.perf_counter() - t_start
        out_of_time = _out_of_time(config, elapsed, ctx, device)
        final = run.step >= config.steps or out_of_time
        if run.step % config.log_every == 0 or final:
            dt = max(time.perf_counter() - t_log, 1e-9)
            last = {
                "d_loss": acc["d_loss"] / n_d,
                "g_loss": acc["g_loss"] / n_g,
                "d_real": acc["d_real"] / n_d,
                "d_fake": acc["d_fake"] / n_d,
                "images_per_s": images_since_log * ctx.world_size / dt,
            }
            if log is not None:
                log.write({"step": run.step, **last, "elapsed_s": round(elapsed, 1)})
            shown = {
                "D": f"{last['d_loss']:.3f}",
                "G": f"{last['g_loss']:.3f}",
                "real": f"{last['d_real']:+.2f}",
                "fake": f"{last['d_fake']:+.2f}",
            }
            acc = dict.fromkeys(acc, 0.0)
            n_d = n_g = images_since_log = 0
            t_log = time.perf_counter()
        scoring = quality_every > 0 and (run.step % quality_every == 0 or final)
        if run.step % config.sample_every == 0 or final or scoring:
            broadcast_buffers(ctx, run.G, run.G_ema)  # a collective: every rank takes part
        if watch is not None and scoring:
            scores = watch.score(run.G_ema)
            quality = metrics_of(scores)
            if watch.record(run.step, scores, time.perf_counter() - t_start):
                save_generator(out / BEST_FILE, run, config, pre, {**last, **quality}, watch.basis)
            shown["FD"] = f"{scores.fd:.2f}"
        progress.update(run.step, **shown)
        if ctx.is_main and (run.step % config.sample_every == 0 or final):
            basis = watch.basis if watch is not None else None
            _checkpoint(run, config, pre, fixed_z, {**last, **quality}, basis)
        if out_of_time:
            stopped_early = run.step < config.steps
            break
    progress.close()

    digest_dir = os.environ.get(DIGEST_ENV)
    if digest_dir:
        Path(digest_dir).mkdir(parents=True, exist_ok=True)
        digest = weight_digest(run.G, run.D, run.G_ema)
        (Path(digest_dir) / f"rank{ctx.rank}.txt").write_text(digest + "\n")
    if ctx.is_main:
        if run.step == start_step:  # nothing to do (already at --steps): still leave a checkpoint
            _checkpoint(run, config, pre, fixed_z, last, None)
        plot_curves(out / "log.csv", out / "loss_curves.png", title=f"SNGAN {config.image_size}px")
        if watch is not None and run.step > start_step:
            watch.plot(f"SNGAN {config.image_size}px: quality in the lesion feature space")
            print(f"best FD {watch.best_fd:.3f}: {out / BEST_FILE}", file=sys.stderr)
        rate = (run.step - start_step) / max(time.perf_counter() - t_start, 1e-9)
        note = " (time limit reached)" if stopped_early else ""
        print(
            f"done at step {run.step}/{config.steps}{note}: {rate:.3f} G steps/s, "
            f"generator at {out / 'generator.safetensors'}",
            file=sys.stderr,
        )
    return out / "generator.safetensors"


def cli(argv: list[str] | None = None) -> None:
    main(parse_args(argv))


if __name__ == "__main__":
    cli()
