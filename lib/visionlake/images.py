"""Pure image normalisation: raw bytes -> validated, mode-converted, resized pixels, their content hash and PNG bytes.

Every rejection raises ``RejectedImage`` with one of ``schema.QUARANTINE_REASONS``; nothing here touches Spark or I/O.
"""
from __future__ import annotations

import hashlib
import io
import struct
import warnings
import zlib
from dataclasses import dataclass

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
class NormalisedImage:
    pixels: np.ndarray  # uint8, height x width x channels
    png: bytes
    content_hash: str

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
    decoded = decode_image(data, limits, formats)
    converted = convert_mode(decoded, image.mode, image.alpha_background)
    if image.invert:
        converted = ImageChops.invert(converted)  # C loop; ImageOps.invert builds a LUT in Python per call
    resized = resize_image(converted, image.height, image.width, image.resize, image.pad_value)
    pixels = np.asarray(resized, dtype=np.uint8).reshape(image.height, image.width, -1)
    return NormalisedImage(pixels=pixels, png=encode_png(pixels, image.png_compress_level),
                           content_hash=content_hash(pixels))


def decode_image(data: bytes, limits: LimitsConfig, formats: frozenset[str]) -> Image.Image:
    """Opens the first frame with its EXIF orientation applied, after the size and pixel-count guards."""
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
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # in place: no copy for the usual unrotated image
            return image
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        message = str(error)
        reason = "truncated" if "truncated" in message or isinstance(error, EOFError) else "corrupt"
        raise RejectedImage(reason, f"{image.format}: {message}") from None


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


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPE = {1: 0, 3: 2}  # grey, RGB


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def encode_png(pixels: np.ndarray, compress_level: int) -> bytes:
    """A standard 8-bit grey/RGB PNG of ``pixels`` (height x width x 1|3).

    Written directly (one IDAT chunk, no row filters) because Pillow's save machinery costs more per small image
    than the compression itself; any PNG decoder reads the result.
    """
    height, width, channels = pixels.shape
    rows = np.zeros((height, 1 + width * channels), np.uint8)  # each row starts with filter type 0
    rows[:, 1:] = pixels.reshape(height, width * channels)
    header = struct.pack(">IIBBBBB", width, height, 8, _PNG_COLOUR_TYPE[channels], 0, 0, 0)
    return (_PNG_SIGNATURE + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), compress_level)) + _png_chunk(b"IEND", b""))


def decode_png(png: bytes) -> np.ndarray:
    """Decodes a lake image back to a height x width x channels uint8 array."""
    with Image.open(io.BytesIO(png)) as image:
        pixels = np.asarray(image, dtype=np.uint8)
    return pixels if pixels.ndim == 3 else pixels[:, :, None]
