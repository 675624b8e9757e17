"""The ``native`` crop mode: power-of-two reduction, then a crop at native resolution."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from models.preprocessing import (
    PreprocessConfig,
    load_rgb,
    load_uint8,
    model_pixels,
    native_crop,
    reduce_pow2,
    square_resize,
    to_uint8_tensor,
)

NATIVE = PreprocessConfig(image_size=64, crop="native")


def _random(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _gradient(width: int, height: int) -> np.ndarray:
    """A smooth image whose colour says where a pixel came from (scale shows up at once)."""
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    b = 127.5 + 100 * np.sin(x / 40) * np.cos(y / 60)
    return np.stack([x, y, b], axis=-1).round().astype(np.uint8)


def _encode(arr: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).numpy()


def _centre(arr: np.ndarray, side: int) -> np.ndarray:
    h, w = arr.shape[:2]
    top, left = (h - side) // 2, (w - side) // 2
    return arr[top : top + side, left : left + side]


def test_small_photo_is_cropped_without_resampling() -> None:
    arr = _random(200, 150)
    png = _encode(arr, "PNG")
    out = load_uint8(png, NATIVE)
    assert out.shape == (3, 64, 64) and out.dtype == torch.uint8
    # exactly the centre 64x64 window: rows 43..106, columns 68..131
    np.testing.assert_array_equal(_hwc(out), arr[43:107, 68:132])
    np.testing.assert_array_equal(
        _hwc(model_pixels(Image.fromarray(arr), NATIVE)), arr[43:107, 68:132]
    )


def test_600x450_is_halved_by_box_averaging_then_cropped() -> None:
    arr = _random(600, 450, seed=1)
    out = _hwc(load_uint8(_encode(arr, "PNG"), NATIVE)).astype(int)
    # 2x2 means, rounded half up as Pillow's Image.reduce does: 300x225
    halved = np.floor(arr.astype(float).reshape(225, 2, 300, 2, 3).mean(axis=(1, 3)) + 0.5)
    expected = _centre(halved, 64)
    assert out.shape == expected.shape == (64, 64, 3)
    assert np.abs(out - expected).max() <= 1
    # not a crop of the unreduced image, nor of a 4x reduction
    assert np.abs(out - _centre(arr, 64).astype(int)).mean() > 30


@pytest.mark.parametrize(
    ("size", "min_side", "expected"),
    [
        ((200, 150), 128, (200, 150)),
        ((600, 450), 128, (300, 225)),
        ((1600, 1200), 128, (200, 150)),
        ((3072, 2304), 128, (192, 144)),
        ((256, 256), 128, (128, 128)),
        ((255, 300), 128, (255, 300)),
    ],
)
def test_reduce_pow2_sizes(size: tuple[int, int], min_side: int, expected: tuple) -> None:
    img = Image.new("RGB", size, (10, 20, 30))
    out = reduce_pow2(img, min_side)
    assert out.size == expected
    assert min(out.size) >= min_side or out.size == size


def test_large_jpeg_reaches_the_model_at_the_png_scale() -> None:
    arr = _gradient(1600, 1200)
    jpeg, png = _encode(arr, "JPEG", quality=95), _encode(arr, "PNG")
    # the JPEG is reduced 8x in the DCT domain while decoding, the PNG 8x by box averages
    assert load_rgb(jpeg, min_side=NATIVE.decode_min_side).size == (200, 150)
    assert reduce_pow2(Image.fromarray(arr), NATIVE.decode_min_side).size == (200, 150)
    a = _hwc(load_uint8(jpeg, NATIVE)).astype(float)
    b = _hwc(load_uint8(png, NATIVE)).astype(float)
    assert a.shape == b.shape == (64, 64, 3)
    assert np.abs(a - b).mean() < 3.0
    # the gradient spans the expected range: 64 of 200 columns of a 0..255 ramp
    span = b[:, :, 0].max() - b[:, :, 0].min()
    assert span == pytest.approx(255 * 63 / 199, abs=4)


@pytest.mark.parametrize("size", [(50, 40), (30, 100), (63, 64), (10, 10)])
def test_smaller_than_crop_is_enlarged_to_exactly_s(size: tuple[int, int]) -> None:
    arr = _random(*size, seed=2)
    out = load_uint8(_encode(arr, "PNG"), NATIVE)
    assert out.shape == (3, 64, 64)
    assert abs(float(out.float().mean()) - float(arr.mean())) < 15


def test_native_crop_canvas() -> None:
    cfg = NATIVE
    big = native_crop(Image.fromarray(_random(200, 150, seed=3)), cfg, canvas=128)
    assert big.size == (128, 128)
    np.testing.assert_array_equal(np.asarray(big), _centre(_random(200, 150, seed=3), 128))
    # the canvas is limited by the image's short side...
    mid = native_crop(Image.fromarray(_random(100, 80, seed=4)), cfg, canvas=128)
    assert mid.size == (80, 80)
    np.testing.assert_array_equal(np.asarray(mid), _centre(_random(100, 80, seed=4), 80))
    # ...and a 64 px image is returned as it is, not enlarged to the canvas
    small = _random(64, 64, seed=5)
    out = native_crop(Image.fromarray(small), cfg, canvas=128)
    assert out.size == (64, 64)
    np.testing.assert_array_equal(np.asarray(out), small)
    # without a canvas: the model size
    assert native_crop(Image.fromarray(_random(200, 150)), cfg).size == (64, 64)


def test_unknown_crop_raises() -> None:
    with pytest.raises(ValueError, match="crop"):
        PreprocessConfig(crop="bogus")


@pytest.mark.parametrize("size", [32, 64, 128, 224])
def test_decode_min_side_is_twice_the_image_size(size: int) -> None:
    for crop in ("native", "center_square"):
        assert PreprocessConfig(image_size=size, crop=crop).decode_min_side == 2 * size


def test_crop_mode_survives_from_dict() -> None:
    d = {"image_size": 64, "mean": [0.5] * 3, "std": [0.5] * 3, "crop": "native"}
    assert PreprocessConfig.from_dict(d).crop == "native"
    del d["crop"]  # checkpoints written before the mode existed
    assert PreprocessConfig.from_dict(d).crop == "center_square"


def test_default_center_square_mode_still_resizes() -> None:
    cfg = PreprocessConfig(image_size=64)
    assert cfg.crop == "center_square"
    arr = _random(200, 150, seed=6)
    out = load_uint8(_encode(arr, "PNG"), cfg)
    assert out.shape == (3, 64, 64)
    # centre 150x150 square, then an antialiased bicubic resize to 64x64
    square = Image.fromarray(arr[:, 25:175])
    expected = square.resize((64, 64), Image.Resampling.BICUBIC, reducing_gap=None)
    np.testing.assert_array_equal(_hwc(out), np.asarray(expected))
    assert torch.equal(out, to_uint8_tensor(square_resize(Image.fromarray(arr), cfg)))
    # which is not the native crop
    assert not torch.equal(out, load_uint8(_encode(arr, "PNG"), NATIVE))
