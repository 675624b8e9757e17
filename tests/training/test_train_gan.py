"""SNGAN training: a few real steps on real HAM10000 images, resume, and DDP under torchrun."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from models.checkpoint import CheckpointError, load_model, load_state
from models.sngan import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig
from tests.conftest import REPO
from training.common import batch_indices, read_csv
from training.train_gan import (
    DIGEST_ENV,
    TrainGanConfig,
    build_run,
    ema_update,
    main,
    parse_args,
    weight_digest,
)

TINY = [
    "--image-size", "32", "--g-channels", "8", "--d-channels", "8", "--batch-size", "4",
    "--n-dis", "2", "--limit-images", "16", "--log-every", "1", "--sample-every", "1",
    "--threads", "1", "--quiet",
]  # fmt: skip


def tiny(ham_dir: Path, out: Path, steps: int, *extra: str) -> TrainGanConfig:
    return parse_args(
        ["--data", str(ham_dir), "--out", str(out), "--steps", str(steps), *TINY, *extra]
    )


def test_defaults_follow_the_sngan_paper(tmp_path):
    cfg = parse_args(["--data", str(tmp_path), "--out", str(tmp_path / "run")])
    assert (cfg.loss, cfg.n_dis, cfg.batch_size, cfg.z_dim) == ("hinge", 5, 64, 128)
    assert (cfg.lr_g, cfg.lr_d, cfg.beta1, cfg.beta2) == (2e-4, 2e-4, 0.0, 0.9)
    assert cfg.split_fractions["gan_train"] == 0.5


def test_batches_are_a_pure_function_of_their_index():
    seen = torch.cat([batch_indices(k, 10, 3, seed=5) for k in range(3)])  # one epoch: 3 batches
    assert len(set(seen.tolist())) == 9  # no repeats within an epoch
    assert torch.equal(batch_indices(4, 10, 3, seed=5), batch_indices(4, 10, 3, seed=5))
    assert not torch.equal(batch_indices(0, 10, 3, seed=5), batch_indices(3, 10, 3, seed=5))


def test_ema_averages_parameters_and_copies_buffers():
    ema, model = torch.nn.BatchNorm1d(2), torch.nn.BatchNorm1d(2)
    with torch.no_grad():
        ema.weight.fill_(0.0)
        model.weight.fill_(1.0)
        model.running_mean.fill_(3.0)
    ema_update(ema, model, decay=0.75)
    assert torch.allclose(ema.weight, torch.full((2,), 0.25))
    assert torch.equal(ema.running_mean, model.running_mean)


def test_few_steps_write_every_file_and_resume_exactly(ham_dir, tmp_path):
    run_dir = tmp_path / "run"
    cfg = tiny(ham_dir, run_dir, 2)
    main(cfg)

    for name in ("config.json", "split_manifest.csv", "log.csv", "state.pt",
                 "generator.safetensors", "loss_curves.png"):  # fmt: skip
        assert (run_dir / name).is_file(), name
    for step in (1, 2):
        grid = Image.open(run_dir / "samples" / f"step_{step:06d}.png")
        assert grid.size[0] > 64  # 8x8 tiles of 32 px, shown at 2x
    assert json.loads((run_dir / "config.json").read_text())["image_size"] == 32
    with (run_dir / "split_manifest.csv").open() as f:
        splits = {row["split"] for row in csv.DictReader(f)}
    assert splits == {"gan_train", "detector_train", "detector_val", "detector_test"}
    log = read_csv(run_dir / "log.csv")
    assert [int(r["step"]) for r in log] == [1, 2]
    assert set(log[0]) >= {"d_loss", "g_loss", "d_real", "d_fake", "images_per_s"}

    # The generator file stands alone, holds the EMA weights, and they moved from the init.
    G, meta = load_model(run_dir / "generator.safetensors", "generator")
    assert meta.step == 2 and meta.preprocessing["mean"] == [0.5, 0.5, 0.5]
    assert G(torch.zeros(1, 128)).shape == (1, 3, 32, 32)
    init = build_run(cfg, torch.device("cpu"))
    state = load_state(run_dir / "state.pt")
    assert state["step"] == 2
    for key in ("G", "D"):
        start = getattr(init, key).state_dict()
        moved = [k for k, v in state[key].items() if v.is_floating_point() and
                 not torch.equal(v, start[k])]  # fmt: skip
        assert moved, f"{key} weights did not change"
    assert torch.equal(G.state_dict()["fc.weight"], state["G_ema"]["fc.weight"])

    # Starting over an existing run is refused; --resume continues at the saved step.
    with pytest.raises(CheckpointError, match="--resume"):
        main(cfg)
    resumed = build_run(cfg, torch.device("cpu"))
    resumed.load_state_dict(state)
    assert resumed.step == 2
    for opt in ("opt_g", "opt_d"):
        a, b = getattr(resumed, opt).state_dict(), state[opt]
        assert a["param_groups"] == b["param_groups"]
        for i, s in b["state"].items():
            assert all(torch.equal(a["state"][i][k], s[k]) for k in s), opt
    main(replace(tiny(ham_dir, run_dir, 4), resume=True))
    assert [int(r["step"]) for r in read_csv(run_dir / "log.csv")] == [1, 2, 3, 4]
    assert load_state(run_dir / "state.pt")["step"] == 4

    # 2 steps + resume + 2 steps is the same run as 4 steps straight: data order, noise,
    # optimiser moments and EMA all carried over.
    straight = tmp_path / "straight"
    main(tiny(ham_dir, straight, 4))
    a, b = load_state(run_dir / "state.pt"), load_state(straight / "state.pt")
    for key in ("G", "D", "G_ema"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), f"{key}.{k} differs after resume"


def test_resume_refuses_a_different_model_or_missing_state(ham_dir, tmp_path):
    with pytest.raises(CheckpointError, match=r"no training state|there is no"):
        main(replace(tiny(ham_dir, tmp_path / "empty", 1), resume=True))
    run_dir = tmp_path / "run"
    main(tiny(ham_dir, run_dir, 1))
    wider = tiny(ham_dir, run_dir, 2, "--g-channels", "16", "--resume")
    with pytest.raises(CheckpointError, match="g_channels"):
        main(wider)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_ranks_hold_identical_weights(ham_dir, tmp_path):
    run_dir, digests = tmp_path / "ddp", tmp_path / "digests"
    env = {**os.environ, DIGEST_ENV: str(digests), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
        "-m", "training.train_gan", "--data", str(ham_dir), "--out", str(run_dir),
        "--steps", "2", *TINY,
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0 = (digests / "rank0.txt").read_text().strip()
    rank1 = (digests / "rank1.txt").read_text().strip()
    assert rank0 == rank1, "ranks diverged: gradients or buffers were not synchronised"

    # ...and that common state is what rank 0 saved, after real training.
    state = load_state(run_dir / "state.pt")
    assert state["step"] == 2
    G = Generator(GeneratorConfig(32, 128, 8))
    D = Discriminator(DiscriminatorConfig(32, 8))
    G_ema = Generator(GeneratorConfig(32, 128, 8))
    G.load_state_dict(state["G"])
    D.load_state_dict(state["D"])
    G_ema.load_state_dict(state["G_ema"])
    assert weight_digest(G, D, G_ema) == rank0
    assert json.loads((run_dir / "config.json").read_text())["world_size"] == 2
    assert [int(r["step"]) for r in read_csv(run_dir / "log.csv")] == [1, 2]
