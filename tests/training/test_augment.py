from pathlib import Path

import numpy as np
import pytest
import torch

from models.preprocessing import PreprocessConfig
from training.augment import PERTURBATIONS, Augment, AugmentConfig, gaussian_blur, jpeg, perturb
from training.data import load_index, preload
from training.metrics import roc_auc
from training.train_detector import training_batch


def _recompression_error(batch: torch.Tensor) -> np.ndarray:
    """A classic JPEG-history detector: an image already compressed at q75 barely changes when
    compressed at q75 again, one without that history changes more."""
    return np.array([(x.float() - jpeg(x, 75).float()).abs().mean().item() for x in batch])


@pytest.fixture(scope="module")
def lesions(ham_dir: Path) -> torch.Tensor:
    records = load_index(ham_dir)
    records = records[:: max(1, len(records) // 80)][:80]  # 80 spread over the set
    return preload([r.path for r in records], PreprocessConfig(image_size=128), quiet=True)


def test_format_bias_control_hides_the_jpeg_history(lesions: torch.Tensor) -> None:
    """The training input pipeline, fed "real" images that carry an extra JPEG history and
    "synthetic" ones that do not, must not let a JPEG-history feature tell the classes apart.
    Without the control the feature separates them perfectly."""
    real = torch.stack([jpeg(x, 75) for x in lesions[:40]])  # JPEG history, like HAM10000
    synthetic = lesions[40:]  # no fresh history, like a generator's PNG

    def feature_auc(config: AugmentConfig) -> float:
        images, labels = training_batch(
            real, synthetic, Augment(config), torch.Generator().manual_seed(0)
        )
        return roc_auc(labels.numpy(), _recompression_error(images))

    off = feature_auc(AugmentConfig(jpeg_prob=0.0, blur_prob=0.0))
    on = feature_auc(AugmentConfig())  # the training default
    assert off > 0.95, off
    # measured 0.64: what remains is the older history, visible when the fresh quality is ~90+
    assert on < 0.8, on
    assert off - on > 0.2


def test_augment_is_deterministic_and_keeps_shape(lesions: torch.Tensor) -> None:
    batch = lesions[:6]
    aug = Augment(AugmentConfig(blur_prob=0.5))
    a = aug(batch, torch.Generator().manual_seed(3))
    b = aug(batch, torch.Generator().manual_seed(3))
    c = aug(batch, torch.Generator().manual_seed(4))
    assert a.dtype == torch.uint8 and a.shape == batch.shape
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, batch)


def test_flips_and_identity() -> None:
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).view(2, 3, 4, 4)
    g = torch.Generator().manual_seed(0)
    none = AugmentConfig(hflip=0, vflip=0, blur_prob=0, jpeg_prob=0)
    assert torch.equal(Augment(none)(x, g), x)
    both = AugmentConfig(hflip=1, vflip=1, blur_prob=0, jpeg_prob=0)
    assert torch.equal(Augment(both)(x, g), x.flip(-1).flip(-2))
    assert torch.equal(gaussian_blur(x[0], 0.0), x[0])


def test_rescale_softens_either_class(lesions: torch.Tensor) -> None:
    x = lesions[:2]
    cfg = AugmentConfig(hflip=0, vflip=0, blur_prob=0, jpeg_prob=0, rescale_prob=1.0)
    out = Augment(cfg)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.equal(out, x)

    def hf(b: torch.Tensor) -> float:  # high-frequency energy
        return (b.float().diff(dim=-1).abs().mean()).item()

    assert hf(out) < hf(x)


def test_jpeg_quality_orders_the_error(lesions: torch.Tensor) -> None:
    x = lesions[0]
    err = {q: (jpeg(x, q).float() - x.float()).abs().mean().item() for q in (95, 75, 30)}
    assert err[95] < err[75] < err[30]


def test_perturbations_keep_shape_and_change_pixels(lesions: torch.Tensor) -> None:
    batch = lesions[:2]
    for name in PERTURBATIONS:
        out = perturb(batch, name)
        assert out.shape == batch.shape and out.dtype == torch.uint8, name
        assert not torch.equal(out, batch), name


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        AugmentConfig(jpeg_prob=1.5)
    with pytest.raises(ValueError):
        AugmentConfig(jpeg_quality_min=80, jpeg_quality_max=60)
