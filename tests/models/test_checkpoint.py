import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from models.checkpoint import (
    DETECTOR_KINDS,
    MODEL_KINDS,
    CheckpointError,
    clean_state_dict,
    load_model,
    load_state,
    read_meta,
    save_model,
    save_state,
)
from models.dcgan import DCGANConfig, DCGANDiscriminator, DCGANGenerator
from models.detector import Detector
from models.npr import NPRConfig, NPRDetector
from models.preprocessing import GAN_MEAN, GAN_STD, PreprocessConfig
from models.sngan import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig
from models.upsamplers import Autoencoder, UpsamplerConfig

GAN_PRE = PreprocessConfig(image_size=32, mean=GAN_MEAN, std=GAN_STD)


@pytest.fixture(scope="module")
def detector_file(tmp_path_factory) -> tuple[Path, Detector]:
    torch.manual_seed(0)
    model = Detector().eval()
    path = tmp_path_factory.mktemp("ckpt") / "detector.safetensors"
    save_model(path, model, PreprocessConfig(), threshold=0.37, step=12, metrics={"auc": 0.9})
    return path, model


def test_detector_round_trip_identical_outputs(detector_file) -> None:
    path, model = detector_file
    loaded, meta = load_model(path, "detector")
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert meta.threshold == 0.37 and meta.step == 12 and meta.metrics == {"auc": 0.9}
    assert meta.preprocess_config == PreprocessConfig()
    assert meta.code_version and meta.created
    assert path.stat().st_mode & 0o044 == 0o044  # readable by a non-root service user


def test_generator_and_discriminator_round_trip(tmp_path: Path) -> None:
    g = Generator(GeneratorConfig(image_size=32, channels=8)).eval()
    d = Discriminator(DiscriminatorConfig(image_size=32, channels=8))
    d(torch.randn(2, 3, 32, 32))  # advance spectral-norm power iteration state
    d.eval()
    save_model(tmp_path / "g.safetensors", g, GAN_PRE)
    save_model(tmp_path / "d.safetensors", d, GAN_PRE)
    g2, meta = load_model(tmp_path / "g.safetensors", "generator")
    d2, _ = load_model(tmp_path / "d.safetensors", "discriminator")
    z = torch.randn(3, 128)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(g(z), g2(z))
        assert torch.equal(d(x), d2(x))
    assert meta.config == {"image_size": 32, "z_dim": 128, "channels": 8}


def test_compiled_and_ddp_prefixes_stripped() -> None:
    sd = {"module._orig_mod.fc.weight": torch.zeros(1), "_orig_mod.fc.bias": torch.ones(1)}
    assert set(clean_state_dict(sd)) == {"fc.weight", "fc.bias"}


def test_wrong_kind(detector_file) -> None:
    with pytest.raises(CheckpointError, match="holds a detector, expected a generator"):
        load_model(detector_file[0], "generator")


def test_truncated_file(tmp_path: Path, detector_file) -> None:
    data = detector_file[0].read_bytes()
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated or damaged|not a readable"):
        load_model(bad)


def test_corrupted_weights(tmp_path: Path) -> None:
    g = Generator(GeneratorConfig(image_size=32, channels=8))
    path = tmp_path / "g.safetensors"
    save_model(path, g, GAN_PRE)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # flip bits inside the last tensor
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_model(path)


def test_foreign_safetensors_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not a dermafake checkpoint"):
        read_meta(path)


def test_missing_and_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "absent.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_text("not a checkpoint")
    with pytest.raises(CheckpointError):
        load_model(junk)


def test_config_that_does_not_fit(tmp_path: Path) -> None:
    g = Generator(GeneratorConfig(image_size=32, channels=8))
    path = tmp_path / "g.safetensors"
    meta = save_model(path, g, GAN_PRE)
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    fields = json.loads(json.dumps(meta.__dict__))
    fields["config"]["channels"] = 16
    save_file(
        tensors, str(path), metadata={"format": "dermafake/1", "dermafake": json.dumps(fields)}
    )
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(path)


def test_training_state_round_trip(tmp_path: Path) -> None:
    g = Generator(GeneratorConfig(image_size=32, channels=8))
    opt = torch.optim.Adam(g.parameters())
    g(torch.randn(2, 128)).mean().backward()
    opt.step()
    state = {"step": 5, "g": g.state_dict(), "opt": opt.state_dict(), "rng": torch.get_rng_state()}
    save_state(tmp_path / "state.pt", state)
    back = load_state(tmp_path / "state.pt")
    assert back["step"] == 5
    assert torch.equal(back["opt"]["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    with pytest.raises(CheckpointError, match="no training state"):
        load_state(tmp_path / "absent.pt")


NEW_KINDS = {
    "npr": (NPRDetector(NPRConfig(image_size=32, layers=(1, 2), width=8)), (2, 3, 32, 32)),
    "autoencoder": (Autoencoder(UpsamplerConfig("pixel_shuffle", 2, width=4)), (2, 3, 24, 32)),
    "dcgan_generator": (DCGANGenerator(DCGANConfig(32, z_dim=8, g_channels=4)), (2, 8)),
    "dcgan_discriminator": (DCGANDiscriminator(DCGANConfig(32, d_channels=4)), (2, 3, 32, 32)),
}


@pytest.mark.parametrize("kind", sorted(NEW_KINDS))
def test_new_kinds_round_trip(tmp_path: Path, kind: str) -> None:
    torch.manual_seed(0)
    model, shape = NEW_KINDS[kind]
    if any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()):
        with torch.no_grad():
            model.train()(torch.randn(shape))  # running statistics away from their defaults
    model.eval()
    path = tmp_path / f"{kind}.safetensors"
    meta = save_model(path, model, GAN_PRE, threshold=0.5 if kind in DETECTOR_KINDS else None)
    loaded, meta2 = load_model(path, kind)
    assert type(loaded) is type(model) and meta.kind == meta2.kind == kind
    assert loaded.config == model.config  # tuples survive JSON (which gives lists back)
    x = torch.randn(shape)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_detector_kinds_are_registered_and_give_one_logit() -> None:
    assert set(DETECTOR_KINDS) <= set(MODEL_KINDS) and "npr" in DETECTOR_KINDS
    assert not {"generator", "autoencoder", "dcgan_generator"} & set(DETECTOR_KINDS)


def test_config_its_class_refuses_is_a_checkpoint_error(tmp_path: Path) -> None:
    """A config value the model's own validation rejects (ValueError) reads as a damaged
    checkpoint, not as a crash of the loader."""
    from models.npr import NPRConfig, NPRDetector

    path = tmp_path / "npr.safetensors"
    meta = save_model(path, NPRDetector(NPRConfig(image_size=32, width=8)), GAN_PRE)
    from safetensors.torch import load_file

    fields = json.loads(json.dumps(meta.__dict__))
    fields["config"]["residual_norm"] = "bogus"
    save_file(
        load_file(str(path)),
        str(path),
        metadata={"format": "dermafake/1", "dermafake": json.dumps(fields)},
    )
    with pytest.raises(CheckpointError, match="residual_norm"):
        load_model(path)


def _rewrite_meta(path: Path, **changes: object) -> None:
    """The same weights under edited metadata, as a damaged or hand-edited file would have."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    fields = json.loads(read_meta_raw(path))
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        target = fields
        for key in parents:
            target = target[key]
        target[leaf] = value
    save_file(
        tensors, str(path), metadata={"format": "dermafake/1", "dermafake": json.dumps(fields)}
    )


def read_meta_raw(path: Path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata()["dermafake"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"weights_sha256": ""}, "no weights SHA-256 recorded"),
        ({"threshold": 1.5}, r"threshold must be a probability in \[0, 1\]"),
        ({"threshold": "high"}, "threshold must be a probability"),
        ({"preprocessing__mean": [0.5, 0.5]}, "preprocessing.mean must be 3 numbers"),
        ({"preprocessing__std": [0.5, 0.0, 0.5]}, "preprocessing.std must be positive"),
        ({"preprocessing__image_size": 64}, "built for 32 px but its preprocessing makes 64 px"),
        ({"step": "ten"}, "step must be a int"),
        ({"config": [1, 2]}, "config must be a dict"),
    ],
)
def test_invalid_metadata_is_refused_naming_the_field(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    """An unverifiable or inconsistent header fails at read time with a message, not later
    inside a model (an empty SHA-256 used to skip verification altogether)."""
    path = tmp_path / "g.safetensors"
    generator = Generator(GeneratorConfig(image_size=32, channels=8))
    save_model(path, generator, PreprocessConfig(32, GAN_MEAN, GAN_STD), threshold=0.5)
    _rewrite_meta(path, **changes)
    with pytest.raises(CheckpointError, match=message):
        load_model(path)
