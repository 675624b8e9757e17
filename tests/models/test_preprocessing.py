import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.preprocessing import (
    GAN_MEAN,
    GAN_STD,
    InvalidImageError,
    PreprocessConfig,
    UnsupportedFormatError,
    encode,
    images_to_bytes,
    load_rgb,
    load_uint8,
    normalize,
    preprocess,
    square_resize,
    to_uint8,
    to_uint8_tensor,
)
from training.data import load_index

CFG = PreprocessConfig(image_size=128)


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header claims ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_real_ham_image(ham_dir: Path) -> None:
    path = load_index(ham_dir)[0].path
    x = preprocess(path, CFG)
    assert x.shape == (3, 128, 128) and x.dtype == torch.float32
    # bytes and path give the same tensor
    assert torch.equal(x, preprocess(path.read_bytes(), CFG))


def test_full_size_clinic_photo(clinic_photos: list[Path]) -> None:
    biggest = max(clinic_photos, key=lambda p: p.stat().st_size)
    u8 = load_uint8(biggest, CFG)
    assert u8.shape == (3, 128, 128) and u8.dtype == torch.uint8
    assert 10 < u8.float().mean() < 245  # a photo, not a blank


def test_large_jpegs_decode_at_reduced_scale_small_ones_exactly(
    clinic_photos: list[Path], ham_dir: Path
) -> None:
    """DCT-domain downscaling of big uploads, never below 2x the model size; the training
    images (HAM10000, 200x150) take exactly the full-decode path."""
    photo = clinic_photos[0]
    assert min(Image.open(photo).size) >= 4 * CFG.image_size  # big enough to be reduced
    assert min(load_rgb(photo, min_side=2 * CFG.image_size).size) >= 2 * CFG.image_size
    assert load_rgb(photo, min_side=2 * CFG.image_size).size < load_rgb(photo).size
    full = square_resize(load_rgb(photo), CFG)
    fast = load_uint8(photo, CFG)
    diff = np.abs(np.asarray(full, dtype=np.int16) - fast.permute(1, 2, 0).numpy().astype(np.int16))
    assert diff.mean() < 2.0 and np.percentile(diff, 99) < 12  # the same picture
    ham = next(ham_dir.rglob("*.jpg"))  # images/ or the official part folders
    exact = to_uint8_tensor(square_resize(load_rgb(ham), CFG))
    assert torch.equal(load_uint8(ham, CFG), exact)


def test_center_square_crop_keeps_middle() -> None:
    arr = np.zeros((100, 300, 3), np.uint8)
    arr[:, 100:200] = 255  # the central square is white, the sides black
    out = load_uint8(_encoded(Image.fromarray(arr), "PNG"), PreprocessConfig(image_size=32))
    assert out.shape == (3, 32, 32) and out.min() == 255


def test_exif_orientation_applied() -> None:
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    rgb = load_rgb(_encoded(img, "JPEG", exif=exif.tobytes()))
    assert rgb.size == (20, 40)


@pytest.mark.parametrize(
    "mode,value",
    [("L", 128), ("P", 3), ("RGBA", (10, 200, 30, 255)), ("CMYK", (0, 0, 0, 0)), ("I;16", 65535)],
)
def test_any_mode_becomes_rgb(mode: str, value) -> None:
    img = Image.new(mode, (16, 16), value)
    fmt = "TIFF" if mode in ("CMYK", "I;16") else "PNG"
    rgb = load_rgb(_encoded(img, fmt))
    assert rgb.mode == "RGB" and rgb.size == (16, 16)
    if mode == "I;16":
        assert rgb.getpixel((0, 0)) == (255, 255, 255)  # rescaled, not clipped garbage


def test_animation_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255)]]
    data = _encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    r, _g, b = load_rgb(data).getpixel((4, 4))
    assert r > 200 and b < 50


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF"])
def test_formats_accepted(fmt: str) -> None:
    out = load_uint8(_encoded(Image.new("RGB", (50, 40), (1, 2, 3)), fmt), CFG)
    assert out.shape == (3, 128, 128)


def test_empty_bytes() -> None:
    with pytest.raises(InvalidImageError, match="0 bytes"):
        load_rgb(b"")


def test_text_is_not_an_image() -> None:
    with pytest.raises(InvalidImageError, match="not a supported image"):
        load_rgb(b"hello, this is plainly text\n" * 10)


def test_truncated_jpeg() -> None:
    data = _encoded(Image.effect_noise((256, 256), 50).convert("RGB"), "JPEG")
    with pytest.raises(InvalidImageError, match="truncated"):
        load_rgb(data[: len(data) // 2])


def test_decompression_bomb_stops_before_allocation() -> None:
    bomb = _png_header_only(30000, 30000)
    assert len(bomb) < 200
    with pytest.raises(InvalidImageError, match="too large"):
        load_rgb(bomb, max_pixels=50_000_000)


def test_pixel_limit_is_configurable() -> None:
    data = _encoded(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(InvalidImageError, match="10000 pixels, limit 9999"):
        load_rgb(data, max_pixels=9999)


@pytest.mark.parametrize("fmt", ["ICO", "GIF", "TGA", "PPM", "PCX"])
def test_formats_pillow_reads_but_we_do_not_accept_are_refused(fmt: str) -> None:
    """Only JPEG, PNG, WebP, BMP and TIFF reach a decoder; every other Pillow plugin is off."""
    data = _encoded(Image.new("RGB", (16, 16)), fmt)
    assert Image.open(io.BytesIO(data)).format == fmt  # Pillow itself would decode it
    with pytest.raises(UnsupportedFormatError, match="JPEG, PNG, WebP, BMP or TIFF"):
        load_rgb(data)
    with pytest.raises(UnsupportedFormatError):
        load_rgb(b"%PDF-1.4\n" + b"0" * 100)


def test_16_bit_keeps_its_top_byte() -> None:
    arr = np.array([[0, 255, 256, 65535]], dtype=np.uint16)
    rgb = load_rgb(_encoded(Image.fromarray(arr), "PNG"))
    assert np.asarray(rgb)[0, :, 0].tolist() == [0, 0, 1, 255]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidImageError, match="cannot read"):
        load_rgb(tmp_path / "absent.jpg")


def test_normalize_uses_config_constants() -> None:
    cfg = PreprocessConfig(image_size=2, mean=GAN_MEAN, std=GAN_STD)
    x = normalize(torch.tensor([[[0, 255]]], dtype=torch.uint8).expand(3, 2, 2), cfg)
    assert torch.allclose(x[:, 0, 0], torch.tensor(-1.0)) and torch.allclose(
        x[:, 0, 1], torch.tensor(1.0)
    )


def test_generator_output_round_trip() -> None:
    imgs = torch.rand(2, 3, 32, 32) * 2 - 1
    u8 = to_uint8(imgs)
    assert u8.dtype == torch.uint8
    pngs = images_to_bytes(imgs, "png")
    back = load_uint8(pngs[0], PreprocessConfig(image_size=32))
    assert torch.equal(back, u8[0])  # PNG is lossless, same size: no resampling
    jpg = images_to_bytes(imgs, "jpeg")[0]
    assert jpg[:3] == b"\xff\xd8\xff"
    with pytest.raises(ValueError, match="png or jpeg"):
        encode(Image.new("RGB", (2, 2)), "gif")
