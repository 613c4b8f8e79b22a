"""Pure image normalisation: raw bytes -> validated, mode-converted, resized pixels, their content hash and the
stored bytes in the dataset's codec (PNG, lossless, or JPEG).

Every rejection raises ``RejectedImage`` with one of ``schema.QUARANTINE_REASONS``; nothing here touches Spark or I/O.
"""
from __future__ import annotations

import hashlib
import io
import math
import struct
import warnings
import zlib
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
from PIL import Image, ImageChops, ImageOps, UnidentifiedImageError

from visionlake.config import ImageConfig, LimitsConfig

# Our own pixel limit (ingest.limits.max_pixels) is checked from the header; Pillow's global guard would otherwise
# raise or warn with its own fixed threshold before we can give the configured, documented reason.
Image.MAX_IMAGE_PIXELS = None

# Pillow format names for the file extensions the ingest accepts.
FORMATS_BY_EXTENSION = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".gif": "GIF", ".bmp": "BMP",
                        ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_RGB_CONVERTIBLE_MODES = {"P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"}


class RejectedImage(Exception):
    """A source file that cannot become a lake image; ``reason`` is a quarantine reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class StoredCodec:
    """How a dataset stores its normalised images: lossless PNG, or JPEG at ``quality`` for photo datasets."""
    name: str = "png"
    quality: int = 95             # JPEG only
    png_compress_level: int = 1   # PNG only

    @classmethod
    def of(cls, image: ImageConfig) -> "StoredCodec":
        return cls(image.codec, image.quality, image.png_compress_level)

    def encode(self, pixels: np.ndarray) -> bytes:
        if self.name == "jpeg":
            return encode_jpeg(pixels, self.quality)
        return encode_png(pixels, self.png_compress_level)


@dataclass(frozen=True)
class NormalisedImage:
    pixels: np.ndarray  # uint8, height x width x channels
    encoded: bytes      # the stored form (StoredCodec); its pixels equal ``pixels`` for PNG, approximate for JPEG
    content_hash: str   # of ``pixels``, so the id does not depend on the codec

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.pixels.shape  # type: ignore[return-value]


def allowed_formats(extensions: list[str]) -> frozenset[str]:
    """Pillow format names accepted for the configured file extensions."""
    return frozenset(FORMATS_BY_EXTENSION[e.lower()] for e in extensions if e.lower() in FORMATS_BY_EXTENSION)


def normalise_image(data: bytes, image: ImageConfig, limits: LimitsConfig,
                    formats: frozenset[str] = frozenset(FORMATS_BY_EXTENSION.values())) -> NormalisedImage:
    """Decodes ``data`` and normalises it to the configured mode and size.

    Raises:
        RejectedImage: the bytes are empty, not an image, truncated, corrupt, too large or of an unsupported mode.
    """
    decoded = decode_image(data, limits, formats, draft_size=_draft_size(image))
    converted = convert_mode(decoded, image.mode, image.alpha_background)
    if image.invert:
        converted = ImageChops.invert(converted)  # C loop; ImageOps.invert builds a LUT in Python per call
    resized = resize_image(converted, image.height, image.width, image.resize, image.pad_value)
    pixels = np.asarray(resized, dtype=np.uint8).reshape(image.height, image.width, -1)
    return NormalisedImage(pixels=pixels, encoded=StoredCodec.of(image).encode(pixels),
                           content_hash=content_hash(pixels))


def _draft_size(image: ImageConfig):
    """A function of the source size giving the smallest size the resize still needs (before EXIF rotation)."""
    def needed(source_width: int, source_height: int) -> tuple[int, int]:
        if image.resize == "stretch":
            return image.width, image.height
        fit = min if image.resize == "pad" else max
        scale = fit(image.width / source_width, image.height / source_height)
        return math.ceil(source_width * scale), math.ceil(source_height * scale)
    return needed


def decode_image(data: bytes, limits: LimitsConfig, formats: frozenset[str],
                 draft_size: Optional[Callable[[int, int], tuple[int, int]]] = None) -> Image.Image:
    """Opens the first frame with its EXIF orientation applied, after the size and pixel-count guards.

    ``draft_size(width, height)`` gives the size the caller needs at least; a JPEG is then decoded at the smallest
    DCT scale (1/2, 1/4, 1/8) that still covers it, so a 20-megapixel photo bound for 224 px never holds its full
    pixels in memory and decodes several times faster.
    """
    if not data:
        raise RejectedImage("empty_file", "0 bytes")
    if len(data) > limits.max_file_bytes:
        raise RejectedImage("file_too_large", f"{len(data)} bytes > limit {limits.max_file_bytes}")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise RejectedImage("not_an_image", f"no image codec recognises these {len(data)} bytes") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise RejectedImage("corrupt", f"header: {error}") from None
    if image.format not in formats:
        raise RejectedImage("unsupported_format", f"{image.format} is not one of {sorted(formats)}")
    width, height = image.size
    if width * height > limits.max_pixels:
        raise RejectedImage("too_many_pixels", f"{width}x{height} = {width * height} px > limit {limits.max_pixels}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns on odd EXIF/palette chunks; rejections are explicit
            if draft_size is not None and image.format == "JPEG":
                _apply_draft(image, draft_size)
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # in place: no copy for the usual unrotated image
            return image
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        message = str(error)
        reason = "truncated" if "truncated" in message or isinstance(error, EOFError) else "corrupt"
        raise RejectedImage(reason, f"{image.format}: {message}") from None


def _apply_draft(image: Image.Image, draft_size: Callable[[int, int], tuple[int, int]]) -> None:
    width, height = image.size
    quarter_turn = image.getexif().get(_EXIF_ORIENTATION) in (5, 6, 7, 8)
    if quarter_turn:  # the needed size is in display orientation; the JPEG's pixels are stored turned
        needed_height, needed_width = draft_size(height, width)
    else:
        needed_width, needed_height = draft_size(width, height)
    image.draft(None, (needed_width, needed_height))


def convert_mode(image: Image.Image, target: str, alpha_background: int) -> Image.Image:
    """Converts any supported Pillow mode to ``target`` (L or RGB); transparency is composited over a grey level."""
    mode = image.mode
    if mode == target:
        return image
    if mode in _SIXTEEN_BIT_MODES:
        return Image.fromarray(_sixteen_to_eight_bits(image, mode)).convert(target)
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _flatten_alpha(image, alpha_background).convert(target)
    if mode in ("1", "L", "RGB") or mode in _RGB_CONVERTIBLE_MODES:
        return (image if mode in ("1", "L", "RGB") else image.convert("RGB")).convert(target)
    raise RejectedImage("unsupported_mode", f"pixel mode {mode} has no defined conversion to {target}")


def _sixteen_to_eight_bits(image: Image.Image, mode: str) -> np.ndarray:
    values = np.asarray(image).astype(np.int64)
    if mode == "I" and (values.min() < 0 or values.max() > 65535):
        raise RejectedImage("unsupported_mode", "32-bit integer pixels outside the 16-bit range")
    return ((values * 255 + 32767) // 65535).astype(np.uint8)


def _flatten_alpha(image: Image.Image, background: int) -> Image.Image:
    rgba = image if image.mode == "RGBA" else image.convert("RGBA")
    if rgba.getchannel("A").getextrema() == (255, 255):
        return rgba.convert("RGB")  # fully opaque (e.g. MNIST's RGBA PNGs): no compositing needed
    canvas = Image.new("RGBA", rgba.size, (background, background, background, 255))
    canvas.alpha_composite(rgba)
    return canvas.convert("RGB")


def resize_image(image: Image.Image, height: int, width: int, method: str, pad_value: int) -> Image.Image:
    """Resizes to ``height x width``: ``pad`` keeps the aspect and pads, ``crop`` fills and centre-crops."""
    source_width, source_height = image.size
    if (source_width, source_height) == (width, height):
        return image
    if method == "stretch":
        return image.resize((width, height), Image.Resampling.LANCZOS)
    fit = min if method == "pad" else max
    scale = fit(width / source_width, height / source_height)
    scaled_size = (max(1, round(source_width * scale)), max(1, round(source_height * scale)))
    scaled = image.resize(scaled_size, Image.Resampling.LANCZOS)
    if method == "crop":
        left, top = (scaled_size[0] - width) // 2, (scaled_size[1] - height) // 2
        return scaled.crop((left, top, left + width, top + height))
    fill = pad_value if image.mode == "L" else (pad_value,) * 3
    canvas = Image.new(image.mode, (width, height), fill)
    canvas.paste(scaled, ((width - scaled_size[0]) // 2, (height - scaled_size[1]) // 2))
    return canvas


def content_hash(pixels: np.ndarray) -> str:
    """sha256 of the normalised pixels and their shape: identical images get identical ids whatever their source."""
    digest = hashlib.sha256("x".join(map(str, pixels.shape)).encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()


_EXIF_ORIENTATION = 0x0112
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPE = {1: 0, 3: 2}  # grey, RGB
# Below this many pixels, unfiltered rows compress as well as filtered ones (MNIST: 0.29 vs 0.30 KiB) and searching
# for filters costs more than it saves; above it, per-row filters save ~18% on photos (bench/photo_bench.py).
_FILTER_MIN_PIXELS = 4096


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_filtered_rows(pixels: np.ndarray) -> np.ndarray:
    """PNG scanlines with the per-row filter (None, Sub, Up, Average or Paeth) of least absolute sum: libpng's
    adaptive heuristic, vectorised. Filters predict from the unfiltered neighbours, so all rows filter at once."""
    height, width, channels = pixels.shape
    raw = pixels.reshape(height, width * channels).astype(np.int16)
    left, up, up_left = np.zeros_like(raw), np.zeros_like(raw), np.zeros_like(raw)
    left[:, channels:], up[1:], up_left[1:, channels:] = raw[:, :-channels], raw[:-1], raw[:-1, :-channels]
    estimate = left + up - up_left
    distance_left, distance_up = np.abs(estimate - left), np.abs(estimate - up)
    distance_up_left = np.abs(estimate - up_left)
    paeth = np.where((distance_left <= distance_up) & (distance_left <= distance_up_left), left,
                     np.where(distance_up <= distance_up_left, up, up_left))
    candidates = np.stack([raw, raw - left, raw - up, raw - ((left + up) >> 1), raw - paeth]).astype(np.uint8)
    cost = np.abs(candidates.view(np.int8).astype(np.int16)).sum(axis=2)  # filter x row
    choice = cost.argmin(axis=0)
    rows = np.empty((height, 1 + width * channels), np.uint8)
    rows[:, 0] = choice
    rows[:, 1:] = candidates[choice, np.arange(height)]
    return rows


def encode_png(pixels: np.ndarray, compress_level: int) -> bytes:
    """A standard 8-bit grey/RGB PNG of ``pixels`` (height x width x 1|3).

    Written directly (one IDAT chunk) rather than through Pillow: on small images Pillow's save machinery costs
    more than the compression, and on photos the adaptive row filters here match Pillow's size at Pillow's speed
    (measured in bench/photo_bench.py). Any PNG decoder reads the result.
    """
    height, width, channels = pixels.shape
    if height * width >= _FILTER_MIN_PIXELS:
        rows = png_filtered_rows(pixels)
    else:
        rows = np.zeros((height, 1 + width * channels), np.uint8)  # each row starts with filter type 0 (None)
        rows[:, 1:] = pixels.reshape(height, width * channels)
    header = struct.pack(">IIBBBBB", width, height, 8, _PNG_COLOUR_TYPE[channels], 0, 0, 0)
    return (_PNG_SIGNATURE + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), compress_level)) + _png_chunk(b"IEND", b""))


def encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    """A baseline JPEG of ``pixels`` (height x width x 1|3) at ``quality`` (Pillow's default 4:2:0 chroma)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def decode_stored_image(data: bytes) -> np.ndarray:
    """Decodes a lake image (PNG or JPEG, whatever the dataset's codec) to a height x width x channels uint8
    array."""
    with Image.open(io.BytesIO(data)) as image:
        pixels = np.asarray(image, dtype=np.uint8)
    return pixels if pixels.ndim == 3 else pixels[:, :, None]
