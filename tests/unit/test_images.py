import io
import re

import numpy as np
import pytest
from PIL import Image

from tests.conftest import encoded, png_bytes
from visionlake.config import ImageConfig, LimitsConfig
from visionlake.lake.images import RejectedImage, content_hash, decode_stored_image, normalise_image

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
    assert np.all(result.pixels == 255)  # all of these are white


def test_sixteen_bit_grey_is_scaled_to_eight_bits_with_rounding():
    levels = np.array([[0, 257, 448, 32767, 32768, 65535]], np.uint16)
    result = normalise_image(encoded(Image.fromarray(levels), "TIFF"), gray(height=1, width=6), LIMITS)
    # round(v * 255 / 65535): 448 -> 1.74 -> 2, 32767 -> 127.498 -> 127, 32768 -> 127.502 -> 128
    assert result.pixels[0, :, 0].tolist() == [0, 1, 2, 127, 128, 255]


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


@pytest.mark.parametrize("data, limits, reason, detail", [
    (b"", LIMITS, "empty_file", "0 bytes"),
    (b"hello, I am text\n" * 4, LIMITS, "not_an_image", "no image codec recognises these 68 bytes"),
    (_truncated_png(), LIMITS, "truncated", "PNG: .*truncated.*"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, LIMITS, "not_an_image", "no image codec recognises these 48 bytes"),
    (_bomb_png(), LimitsConfig(max_pixels=1_000_000), "too_many_pixels", "2000x2000 = 4000000 px > limit 1000000"),
    (png_bytes(np.zeros((8, 8), np.uint8)), LimitsConfig(max_file_bytes=10), "file_too_large",
     "{size} bytes > limit 10"),
    (encoded(Image.new("RGB", (16, 16)), "ICO"), LIMITS, "unsupported_format",
     re.escape("ICO is not one of ['BMP', 'GIF', 'JPEG', 'PNG', 'TIFF', 'WEBP']")),
])
def test_bad_input_is_rejected_with_its_reason(data, limits, reason, detail):
    with pytest.raises(RejectedImage) as rejection:
        normalise_image(data, gray(), limits)
    assert rejection.value.reason == reason
    assert re.fullmatch(detail.replace("{size}", str(len(data))), rejection.value.detail), rejection.value.detail
    assert str(rejection.value) == f"{reason}: {rejection.value.detail}"


def test_corrupt_pixel_data_is_reported_as_corrupt():
    data = bytearray(png_bytes(np.random.default_rng(1).integers(0, 255, (32, 32), dtype=np.uint8)))
    start = data.index(b"IDAT") + 8
    data[start:start + 40] = b"\xff" * 40  # same length, garbage deflate stream
    with pytest.raises(RejectedImage) as rejection:
        normalise_image(bytes(data), gray(), LIMITS)
    assert rejection.value.reason == "corrupt"  # not "truncated": every byte is there
    assert rejection.value.detail.startswith("PNG: ")


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth photo-like RGB image with some texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([128 + 100 * np.sin(x / 37.0 + c) * np.cos(y / 53.0 - c) for c in range(3)], axis=-1)
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


def test_png_row_filters_are_exact_and_smaller_than_unfiltered_rows_on_photos():
    import zlib

    from visionlake.lake.images import encode_png, png_filtered_rows

    pixels = photo(96, 128)
    filtered = encode_png(pixels, 1)
    assert np.array_equal(decode_stored_image(filtered), pixels)
    assert set(png_filtered_rows(pixels)[:, 0]) <= {0, 1, 2, 3, 4}
    unfiltered_size = len(zlib.compress(np.pad(pixels.reshape(96, -1), ((0, 0), (1, 0))).tobytes(), 1))
    assert len(filtered) < 0.9 * unfiltered_size
    grey = photo(80, 80)[:, :, :1]
    assert np.array_equal(decode_stored_image(encode_png(grey, 6)), grey)


def test_jpeg_codec_stores_near_lossless_pixels_with_the_same_id():
    data = encoded(Image.fromarray(photo(120, 160)), "PNG")
    settings = ImageConfig(mode="RGB", height=60, width=80)
    as_png = normalise_image(data, settings, LIMITS)
    as_jpeg = normalise_image(data, ImageConfig(mode="RGB", height=60, width=80, codec="jpeg", quality=95), LIMITS)
    assert as_jpeg.encoded[:3] == b"\xff\xd8\xff" and as_png.encoded[:4] == b"\x89PNG"
    assert as_jpeg.content_hash == as_png.content_hash  # the id is of the normalised pixels, not of the codec
    error = np.abs(decode_stored_image(as_jpeg.encoded).astype(int) - as_png.pixels).mean()
    assert error < 3.0 and len(as_jpeg.encoded) < len(as_png.encoded) / 2


def test_jpeg_draft_decoding_matches_a_full_decode():
    """DCT-domain downscaling to >= the needed size, then Lanczos: within 35 dB PSNR of decoding every pixel."""
    from visionlake.lake.images import decode_image, resize_image

    data = encoded(Image.fromarray(photo(960, 1280)), "JPEG", quality=92)
    settings = ImageConfig(mode="RGB", height=224, width=224, resize="crop")
    drafted = normalise_image(data, settings, LIMITS).pixels.astype(float)
    full = decode_image(data, LIMITS, frozenset({"JPEG"}))
    assert full.size == (1280, 960)
    reference = np.asarray(resize_image(full, 224, 224, "crop", 0), float)
    psnr = 10 * np.log10(255 ** 2 / np.mean((drafted - reference) ** 2))
    assert psnr > 35, psnr


def test_draft_respects_the_exif_rotation():
    image = Image.new("L", (1600, 800), 0)
    image.paste(255, (0, 0, 800, 800))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: 800 wide, 1600 high, white on top
    data = encoded(image, "JPEG", exif=exif, quality=95)
    result = normalise_image(data, ImageConfig(mode="L", height=200, width=100, resize="stretch"), LIMITS)
    assert result.pixels[:90].mean() > 200 and result.pixels[110:].mean() < 50


def test_a_20_megapixel_jpeg_normalises_in_bounded_memory(tmp_path):
    """Decoded at 1/8 scale: ~11 MB above the interpreter's baseline, where a full decode needs ~86 MB (measured)."""
    import subprocess
    import sys

    big = tmp_path / "big.jpg"
    Image.fromarray(photo(3648, 5472)).save(big, "JPEG", quality=85)
    script = (
        "import resource, sys\n"
        "from visionlake.config import ImageConfig, LimitsConfig\n"
        "from visionlake.lake.images import normalise_image\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "image = normalise_image(data, ImageConfig(mode='RGB', height=224, width=224, resize='crop'), LimitsConfig())\n"
        "print(image.pixels.shape, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n")
    output = subprocess.run([sys.executable, "-c", script, str(big)], capture_output=True, text=True, check=True)
    shape, megabytes = output.stdout.strip().rsplit(" ", 1)
    assert shape == "(224, 224, 3)" and int(megabytes) < 40, output.stdout


def test_allowed_formats_are_the_pillow_formats_of_the_configured_extensions():
    from visionlake.lake.images import allowed_formats

    assert allowed_formats([".PNG", ".jpg", ".jpeg", ".txt"]) == frozenset({"PNG", "JPEG"})
    assert allowed_formats([]) == frozenset()
    with pytest.raises(RejectedImage) as rejection:  # a format outside the configured extensions is refused
        normalise_image(png_bytes(np.zeros((8, 8), np.uint8)), gray(), LIMITS, allowed_formats([".jpg"]))
    assert rejection.value.reason == "unsupported_format"


def test_mode_conversion_uses_luma_and_composites_transparency_over_the_background():
    from visionlake.lake.images import convert_mode

    same = Image.new("L", (2, 2), 9)
    assert convert_mode(same, "L", 0) is same
    # ITU-R 601 luma: 0.299 * 10 + 0.587 * 200 + 0.114 * 30 = 123.81
    assert np.asarray(convert_mode(Image.new("RGB", (2, 2), (10, 200, 30)), "L", 0)).tolist() == [[124, 124]] * 2
    half = np.zeros((2, 2, 2), np.uint8)
    half[..., 0], half[..., 1] = 100, 128  # grey 100 at alpha 128/255 over 200: 100 * 128/255 + 200 * 127/255
    assert np.asarray(convert_mode(Image.fromarray(half, "LA"), "L", 200)).tolist() == [[150, 150]] * 2
    palette = Image.new("P", (2, 2), 0)
    palette.putpalette([255, 0, 0] * 256)
    palette.info["transparency"] = 0  # a transparent palette entry: the background shows
    assert np.asarray(convert_mode(palette, "RGB", 40)).tolist() == [[[40, 40, 40]] * 2] * 2
    with pytest.raises(RejectedImage, match="pixel mode F has no defined conversion to L"):
        convert_mode(Image.new("F", (2, 2)), "L", 0)


def test_jpeg_storage_is_a_baseline_jpeg_of_the_pixels_at_the_quality_asked():
    from visionlake.lake.images import encode_jpeg

    pixels = photo(64, 80)
    high, low = encode_jpeg(pixels, 95), encode_jpeg(pixels, 30)
    assert high[:3] == b"\xff\xd8\xff" and len(low) < len(high)
    error = {quality: np.abs(decode_stored_image(data).astype(int) - pixels).mean() for quality, data in
             ((95, high), (30, low))}
    assert error[95] < error[30] and error[95] < 6  # the photo's own noise has a standard deviation of 6
    grey = pixels[:, :, :1]
    assert decode_stored_image(encode_jpeg(grey, 95)).shape == (64, 80, 1)
    with Image.open(io.BytesIO(high)) as image:
        assert image.format == "JPEG" and not image.info.get("progressive")
