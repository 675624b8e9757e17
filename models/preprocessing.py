"""The one image path: bytes/file/PIL -> RGB -> model-sized crop -> tensor, and back.

Training, evaluation and the service all call these functions, so a real JPEG photo and a
generated PNG reach the network through exactly the same steps. The constants
(:class:`PreprocessConfig`) are saved in every checkpoint and read back from it.

Two ways to reach the model's size (``PreprocessConfig.crop``):

- ``center_square`` (the paper's VGG16): centre square crop, then an antialiased resize.
- ``native`` (the general detector): no resampling filter at all. Generators leave their trace
  in how neighbouring pixels relate (upsampling layers); a resize smears it, and a resize that
  shrinks real photos but enlarges small generated ones hands the model a "sharp = real" cue.
  So the image is only ever *reduced* by a power of two (JPEG: in the DCT domain while decoding;
  other formats: 2x2 box averages), to the smallest size whose short side is still at least
  twice the crop, and then cropped at native resolution. Every source, whatever its format or
  size, reaches the model at a comparable scale this way: a 200x150 HAM10000 photo is cropped as
  it is, a 600x450 one is halved first, a 3072x2304 clinic photo is reduced 16x.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GAN_MEAN = (0.5, 0.5, 0.5)
GAN_STD = (0.5, 0.5, 0.5)
DEFAULT_MAX_PIXELS = 50_000_000  # a 8660x5773 photo; far above any dermatoscope
# The formats a photo or a generated image arrives in; every other Pillow plugin (ICO, GIF, PSD,
# TGA, ...) is never even tried, so its parser is not attack surface. (Multi-picture JPEGs
# from some cameras open through the JPEG plugin, as format MPO.)
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")
ACCEPTED = "JPEG, PNG, WebP, BMP or TIFF"
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
CROPS = ("center_square", "native")

ImageSource = bytes | bytearray | memoryview | str | Path | Image.Image


class InvalidImageError(ValueError):
    """The input is not an image we can use; the message says why (safe to show to a client)."""


class UnsupportedFormatError(InvalidImageError):
    """Not one of :data:`FORMATS` (or not an image at all): the service answers 415."""


@dataclass(frozen=True)
class PreprocessConfig:
    image_size: int = 128
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"
    crop: str = "center_square"  # or "native" (see the module docstring)

    def __post_init__(self) -> None:
        if self.crop not in CROPS:
            raise ValueError(f"unknown crop {self.crop!r}; choose one of {CROPS}")
        if self.image_size < 2:
            raise ValueError(f"image_size must be >= 2, got {self.image_size}")

    @property
    def decode_min_side(self) -> int:
        """The short side a decoder may reduce to (DCT scaling) without losing what we need."""
        return 2 * self.image_size

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessConfig:
        return cls(
            image_size=int(d["image_size"]),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            interpolation=d.get("interpolation", "bicubic"),
            crop=d.get("crop", "center_square"),
        )


def _open(source: ImageSource) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidImageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    else:
        data = bytes(source)
    if not data:
        raise InvalidImageError("empty file: 0 bytes")
    # No warnings.catch_warnings() here: it is not thread-safe and decoding runs in a pool.
    # Pillow's DecompressionBombWarning (above ~89 MP) only ever fires for images that
    # load_rgb's own, lower pixel limit then refuses; its DecompressionBombError is caught.
    try:
        return Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as exc:
        raise InvalidImageError(f"image too large (decompression bomb): {exc}") from exc
    except UnidentifiedImageError as exc:
        raise UnsupportedFormatError(
            f"not a supported image: send {ACCEPTED} (recognised by content, not by name)"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImageError(f"corrupt image header: {exc}") from exc


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; 16/32-bit greyscale is rescaled, alpha composited on black.

    16-bit images keep their top byte (no float copy: a 12 MP frame stays 24 MB, not 96);
    32-bit integer and float images are scaled by their maximum in float32."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16"):
        arr = (np.asarray(img).astype(np.uint16, copy=False) >> 8).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if img.mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        scale = np.float32(255.0 / max(float(arr.max()), 1.0))
        arr = np.clip(arr * scale + np.float32(0.5), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _checked_pixels(img: Image.Image, max_pixels: int) -> int:
    width, height = img.size
    if width < 1 or height < 1:
        raise InvalidImageError(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise InvalidImageError(
            f"image too large: {width}x{height} = {width * height} pixels, limit {max_pixels}"
        )
    return width * height


def header_pixels(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """The image's pixel count from its header alone (no pixel data is decoded), refused as
    :func:`load_rgb` would refuse it: a caller can budget the decode before paying for it."""
    return _checked_pixels(_open(source), max_pixels)


def load_rgb(
    source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = 0
) -> Image.Image:
    """Decode into an RGB image: EXIF orientation applied, first frame of an animation.

    The pixel limit is checked on the header, before any pixel buffer is allocated. With
    ``min_side``, a JPEG larger than twice that on both sides is decoded at 1/2, 1/4 or 1/8
    scale in the DCT domain (never below ``min_side``): a 1022x767 clinic photo decodes in ~12
    instead of ~90 ms, which on a small server is CPU the model needs. Images that are already
    small (all of HAM10000's 600x450 and 200x150 files for a 128 px model) are unaffected.
    """
    img = _open(source)
    _checked_pixels(img, max_pixels)
    try:
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)
        if min_side and img.format in ("JPEG", "MPO"):
            img.draft(None, (min_side, min_side))
        img.load()
        img = ImageOps.exif_transpose(img)
        return _to_rgb(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        msg = str(exc)
        if "truncated" in msg:
            msg = "image file is truncated"
        raise InvalidImageError(f"cannot decode image: {msg}") from exc


def square_resize(img: Image.Image, config: PreprocessConfig) -> Image.Image:
    """Center square crop, then resize to ``config.image_size`` (antialiased when shrinking)."""
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    if side != w or side != h:
        img = img.crop((left, top, left + side, top + side))
    size = config.image_size
    if img.size != (size, size):
        img = img.resize((size, size), _RESAMPLE[config.interpolation], reducing_gap=None)
    return img


def reduce_pow2(img: Image.Image, min_side: int) -> Image.Image:
    """Halve (2x2 box average) while the short side stays >= ``min_side``: the same reduction a
    JPEG decoder's DCT scaling gives, for every other format."""
    factor = 1
    while min(img.size) // (2 * factor) >= min_side:
        factor *= 2
    return img.reduce(factor) if factor > 1 else img


def native_crop(img: Image.Image, config: PreprocessConfig, canvas: int = 0) -> Image.Image:
    """``native`` mode: power-of-two reduction, then a centre square crop of the model size (or
    of up to ``canvas`` px: training keeps a larger canvas and crops at random inside it). An
    image smaller than the model input (a thumbnail) is the one case that is enlarged, bicubic
    on its short side."""
    size = config.image_size
    img = reduce_pow2(img, config.decode_min_side)
    w, h = img.size
    if min(w, h) < size:
        scale = size / min(w, h)
        w, h = max(size, round(w * scale)), max(size, round(h * scale))
        img = img.resize((w, h), Image.Resampling.BICUBIC)
    side = min(max(size, canvas), w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return img.crop((left, top, left + side, top + side))


def model_canvas(img: Image.Image, config: PreprocessConfig) -> Image.Image:
    """What a model's views are cut from: for ``native``, the reduced image's centre square of up
    to twice the model size (training crops at random inside it); for ``center_square``, the
    resized model input itself."""
    if config.crop == "native":
        return native_crop(img, config, canvas=2 * config.image_size)
    return square_resize(img, config)


def views_from_canvas(canvas: Image.Image, config: PreprocessConfig) -> torch.Tensor:
    """uint8 (V, 3, S, S): every view a model scores, cut from a :func:`model_canvas` (perturbed
    or not). ``center_square``: the canvas itself (V = 1). ``native`` (V = 2): the centre S x S
    crop, and the canvas at half scale (2x2 box averages; enlarged to S if it falls short). An
    upsampling trace that a model sees in the first and no longer in the second is the one any
    2x resize of a photo leaves (see ``models.operating_point``)."""
    if config.crop != "native":
        return to_uint8_tensor(canvas).unsqueeze(0)
    size = config.image_size
    w, h = canvas.size
    left, top = (w - size) // 2, (h - size) // 2
    full = canvas.crop((left, top, left + size, top + size))
    half = native_crop(canvas.reduce(2) if min(w, h) >= 2 else canvas, config)
    return torch.stack([to_uint8_tensor(full), to_uint8_tensor(half)])


def model_views(img: Image.Image, config: PreprocessConfig) -> torch.Tensor:
    """uint8 (V, 3, S, S): every view a model scores of a decoded image (V = 1 for
    ``center_square``; the crop and its half-scale view for ``native``)."""
    return views_from_canvas(model_canvas(img, config), config)


def model_input(views: torch.Tensor) -> torch.Tensor:
    """The model input among an image's views (:func:`model_views`, V, 3, S, S): the first; a
    single (3, S, S) view is its own."""
    return views if views.dim() == 3 else views[0]


def model_pixels(img: Image.Image, config: PreprocessConfig) -> torch.Tensor:
    """Decoded RGB image -> uint8 (3, S, S) the way ``config`` says (crop mode, size)."""
    if config.crop == "native":
        return to_uint8_tensor(native_crop(img, config))
    return to_uint8_tensor(square_resize(img, config))


def to_uint8_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> uint8 tensor (3, H, W)."""
    return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


def load_uint8(
    source: ImageSource, config: PreprocessConfig, max_pixels: int = DEFAULT_MAX_PIXELS
) -> torch.Tensor:
    """Source -> uint8 tensor (3, S, S): the CPU half of preprocessing (decode, crop, resize).

    Large JPEGs are decoded at reduced scale down to no less than 2S per side, so the final
    antialiased resize still averages at least 2x2 decoded pixels per output pixel (and the
    ``native`` crop sees the same power-of-two reduction it applies to other formats).
    """
    img = load_rgb(source, max_pixels, min_side=config.decode_min_side)
    return model_pixels(img, config)


def normalize(batch: torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    """uint8 (N, 3, S, S) or (3, S, S), any device -> float32 normalised by the config."""
    shape = (3, 1, 1)
    mean = torch.tensor(config.mean, device=batch.device).view(shape)
    std = torch.tensor(config.std, device=batch.device).view(shape)
    return (batch.float() / 255.0 - mean) / std


def preprocess(
    source: ImageSource, config: PreprocessConfig, max_pixels: int = DEFAULT_MAX_PIXELS
) -> torch.Tensor:
    """Source -> float tensor (3, S, S), ready for the model."""
    return normalize(load_uint8(source, config, max_pixels), config)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1], (N, 3, S, S) -> uint8 (N, 3, S, S) on the CPU."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


def to_pil(image: torch.Tensor) -> Image.Image:
    """uint8 (3, H, W) -> RGB PIL image."""
    return Image.fromarray(image.permute(1, 2, 0).numpy(), mode="RGB")


def encode(image: Image.Image, fmt: str = "png", quality: int = 95) -> bytes:
    """PIL image -> PNG or JPEG bytes (JPEG with 4:2:0 subsampling, as cameras write it)."""
    buf = io.BytesIO()
    fmt = fmt.lower()
    if fmt == "png":
        image.save(buf, format="PNG", compress_level=1)
    elif fmt in ("jpeg", "jpg"):
        image.save(buf, format="JPEG", quality=quality)
    else:
        raise ValueError(f"unsupported output format {fmt!r}: use png or jpeg")
    return buf.getvalue()


def images_to_bytes(images: torch.Tensor, fmt: str = "png", quality: int = 95) -> list[bytes]:
    """Generator output in [-1, 1] -> encoded files, one per image."""
    return [encode(to_pil(img), fmt, quality) for img in to_uint8(images)]
