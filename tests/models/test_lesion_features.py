"""The lesion feature model: shapes, its config's checks, and a checkpoint that rebuilds it."""

from __future__ import annotations

import pytest
import torch

from models.checkpoint import load_model, save_model
from models.lesion_features import LesionFeatures, LesionFeaturesConfig
from models.preprocessing import GAN_MEAN, GAN_STD, PreprocessConfig


def test_logits_and_embedding_shapes() -> None:
    model = LesionFeatures(LesionFeaturesConfig(image_size=32, widths=(8, 16), embed_dim=24))
    x = torch.randn(5, 3, 32, 32)
    assert model(x).shape == (5, 7)
    features = model.eval().features(x)
    assert features.shape == (5, 24)
    assert (features >= 0).all()  # pooled after a ReLU, as Inception's pool3


def test_size_must_survive_every_pool() -> None:
    with pytest.raises(ValueError, match="divisible"):
        LesionFeaturesConfig(image_size=36, widths=(8, 16, 32))


def test_checkpoint_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    model = LesionFeatures(LesionFeaturesConfig(image_size=32, widths=(8, 16), embed_dim=16))
    with torch.no_grad():
        model(torch.randn(8, 3, 32, 32))  # train mode: BatchNorm statistics move
    model.eval()
    path = tmp_path / "lesion_features.safetensors"
    save_model(path, model, PreprocessConfig(32, GAN_MEAN, GAN_STD), metrics={"bacc": 0.5})
    loaded, meta = load_model(path, "lesion_features")
    assert loaded.config == model.config and loaded.config.widths == (8, 16)  # not a JSON list
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(loaded.features(x), model.features(x))
    assert meta.metrics == {"bacc": 0.5}
