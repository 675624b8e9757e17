import pytest
import torch

from models.detector import (
    PARAMETER_COUNT,
    Detector,
    PretrainedWeightsUnavailable,
    load_imagenet_weights,
)


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector().eval()


def test_parameter_count_matches_paper_architecture(detector: Detector) -> None:
    assert sum(p.numel() for p in detector.parameters()) == PARAMETER_COUNT == 159_259_433


def test_head_layout(detector: Detector) -> None:
    kinds = [type(m).__name__ for m in detector.head]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Dropout"] * 2 + ["Linear"]
    assert detector.head[0].in_features == 1000 and detector.head[-1].out_features == 1
    assert isinstance(detector.backbone.avgpool, torch.nn.AdaptiveAvgPool2d)
    assert detector.backbone.avgpool.output_size == (7, 7)


def test_one_logit_per_image(detector: Detector) -> None:
    with torch.no_grad():
        out = detector(torch.randn(2, 3, 128, 128))
    assert out.shape == (2,) and torch.isfinite(out).all()


def test_pretrained_from_local_file(tmp_path, detector: Detector) -> None:
    donor = Detector().backbone.state_dict()
    path = tmp_path / "vgg16-local.pth"
    torch.save(donor, path)
    model = Detector()
    assert load_imagenet_weights(model, path) == path
    assert torch.equal(model.backbone.features[0].weight, donor["features.0.weight"])


def test_pretrained_missing_file_says_what_to_do(tmp_path) -> None:
    with pytest.raises(PretrainedWeightsUnavailable, match="no VGG16 weights file"):
        load_imagenet_weights(Detector(), tmp_path / "nope.pth")


def test_imagenet_not_cached_and_no_download(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(PretrainedWeightsUnavailable, match="--pretrained none"):
        load_imagenet_weights(Detector(), "imagenet", allow_download=False)
