import io

import numpy as np
import pytest
from PIL import Image

from tests.conftest import encoded, png_bytes
from visionlake.config import ImageConfig, LimitsConfig
from visionlake.images import RejectedImage, content_hash, decode_stored_image, normalise_image

LIMITS = LimitsConfig()


def gray(**changes) -> ImageConfig:
    return ImageConfig(**{"mode": "L", "height": 8, "width": 8, **changes})


def test_rgba_with_grey_content_becomes_single_channel_and_inverts():
    pixels = np.full((8, 8, 4), 255, np.uint8)
    pixels[2:6, 2:6, :3] = 20  # dark stroke on white, alpha 255: the shared MNIST quirk
    result = normalise_image(png_bytes(pixels, "RGBA"), gray(invert=True), LIMITS)
    assert result.pixels.shape == (8, 8, 1)
    assert result.pixels[3, 3, 0] == 235 and result.pixels[0, 0, 0] == 0


def test_transparency_is_composited_over_the_configured_background():
    pixels = np.zeros((8, 8, 2), np.uint8)  # LA, fully transparent black
    result = normalise_image(png_bytes(pixels, "LA"), gray(alpha_background=200), LIMITS)
    assert np.all(result.pixels == 200)


@pytest.mark.parametrize("mode, maker", [
    ("1", lambda: Image.new("1", (8, 8), 1)),
    ("P", lambda: Image.new("RGB", (8, 8), (255, 255, 255)).convert("P")),
    ("CMYK", lambda: Image.new("CMYK", (8, 8), (0, 0, 0, 0))),
    ("I;16", lambda: Image.fromarray(np.full((8, 8), 65535, np.uint16))),
])
def test_odd_modes_convert_to_the_target(mode, maker):
    image = maker()
    data = encoded(image, "TIFF" if mode in ("CMYK", "I;16") else "PNG")
    result = normalise_image(data, gray(), LIMITS)
    assert result.pixels.shape == (8, 8, 1)
    assert result.pixels.min() >= 250  # all of these are white


def test_float_pixels_are_an_unsupported_mode():
    data = encoded(Image.fromarray(np.ones((8, 8), np.float32)), "TIFF")
    with pytest.raises(RejectedImage) as rejection:
        normalise_image(data, gray(), LIMITS)
    assert rejection.value.reason == "unsupported_mode"


def test_pad_keeps_the_aspect_ratio_and_crop_fills():
    wide = np.full((10, 40, 3), 255, np.uint8)
    padded = normalise_image(png_bytes(wide), ImageConfig(mode="RGB", height=20, width=20, resize="pad"), LIMITS)
    assert padded.pixels.shape == (20, 20, 3)
    assert padded.pixels[0, 10].tolist() == [0, 0, 0] and padded.pixels[10, 10].tolist() == [255, 255, 255]
    cropped = normalise_image(png_bytes(wide), ImageConfig(mode="RGB", height=20, width=20, resize="crop"), LIMITS)
    assert np.all(cropped.pixels == 255)


def test_exif_orientation_is_applied():
    image = Image.new("L", (16, 8), 0)
    image.paste(255, (0, 0, 8, 8))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    data = encoded(image, "JPEG", exif=exif, quality=95)
    result = normalise_image(data, ImageConfig(mode="L", height=16, width=8, resize="stretch"), LIMITS)
    top, bottom = result.pixels[:8].mean(), result.pixels[8:].mean()
    assert top > 200 and bottom < 50


def test_gif_uses_the_first_frame():
    frames = [Image.new("L", (8, 8), value) for value in (255, 0)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    assert normalise_image(buffer.getvalue(), gray(), LIMITS).pixels.min() >= 250


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"])
def test_every_supported_format_decodes(image_format):
    data = encoded(Image.new("RGB", (8, 8), (10, 200, 30)), image_format)
    result = normalise_image(data, ImageConfig(mode="RGB", height=8, width=8), LIMITS)
    assert result.pixels.shape == (8, 8, 3)
    assert decode_stored_image(result.encoded).tolist() == result.pixels.tolist()


def test_content_hash_depends_on_pixels_and_shape_only():
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8, 1)
    assert content_hash(pixels) == content_hash(pixels.copy())
    assert content_hash(pixels) != content_hash(pixels.reshape(4, 16, 1))
    as_png = normalise_image(png_bytes(pixels[:, :, 0]), gray(), LIMITS)
    as_bmp = normalise_image(encoded(Image.fromarray(pixels[:, :, 0]), "BMP"), gray(), LIMITS)
    assert as_png.content_hash == as_bmp.content_hash


def _truncated_png():
    data = png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    return data[: len(data) // 2]


def _bomb_png():
    return png_bytes(np.zeros((2000, 2000), np.uint8), optimize=True)  # ~4 Mpx in a few KiB


@pytest.mark.parametrize("data, limits, reason", [
    (b"", LIMITS, "empty_file"),
    (b"hello, I am text\n" * 4, LIMITS, "not_an_image"),
    (_truncated_png(), LIMITS, "truncated"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, LIMITS, "not_an_image"),
    (_bomb_png(), LimitsConfig(max_pixels=1_000_000), "too_many_pixels"),
    (png_bytes(np.zeros((8, 8), np.uint8)), LimitsConfig(max_file_bytes=10), "file_too_large"),
    (encoded(Image.new("RGB", (16, 16)), "ICO"), LIMITS, "unsupported_format"),
])
def test_bad_input_is_rejected_with_its_reason(data, limits, reason):
    with pytest.raises(RejectedImage) as rejection:
        normalise_image(data, gray(), limits)
    assert rejection.value.reason == reason
    assert rejection.value.detail


def test_corrupt_pixel_data_is_reported_as_corrupt():
    data = bytearray(png_bytes(np.random.default_rng(1).integers(0, 255, (32, 32), dtype=np.uint8)))
    start = data.index(b"IDAT") + 8
    data[start:start + 40] = b"\xff" * 40  # same length, garbage deflate stream
    with pytest.raises(RejectedImage) as rejection:
        normalise_image(bytes(data), gray(), LIMITS)
    assert rejection.value.reason in ("corrupt", "truncated")
