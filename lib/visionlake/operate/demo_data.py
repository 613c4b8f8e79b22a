"""A small, deterministic raw dataset that ships with the package, so the demo needs no download.

Synthetic "parts": shapes of several classes drawn with random size, rotation and colour, saved in
class folders as PNG and JPEG (plus a GIF, a BMP and a WebP), with a few deliberately bad files that the ingest must
quarantine.
"""
from __future__ import annotations

import io
import logging
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from visionlake.config import Config, DemoConfig
from visionlake.uris import local_path

log = logging.getLogger(__name__)

SHAPES = ("circle", "square", "triangle", "cross", "ring")
_FORMATS = (("PNG", ".png"), ("JPEG", ".jpg"), ("PNG", ".png"), ("JPEG", ".jpg"), ("GIF", ".gif"),
            ("BMP", ".bmp"), ("WEBP", ".webp"))


def draw_shape(shape: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One RGB image of ``shape``: a light part of random size, rotation and colour near the middle of a dark
    background of random tint, the way parts pass a camera on a belt.

    Noise and wide backgrounds are left out on purpose: they made the short demo schedule learn the background
    instead of the shapes (cDCGAN conditional accuracy 0.29 with sensor noise and anywhere-on-the-frame parts,
    0.83 without, same steps)."""
    background = tuple(int(v) for v in rng.integers(0, 31, 3))
    colour = tuple(int(v) for v in rng.integers(150, 256, 3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    centre = rng.uniform(0.45, 0.55, 2) * size
    radius = rng.uniform(0.22, 0.34) * size
    angle = rng.uniform(0, 2 * math.pi)
    width = max(2, int(radius / 3))
    box = [centre[0] - radius, centre[1] - radius, centre[0] + radius, centre[1] + radius]
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=width)
    elif shape in ("square", "triangle"):
        corners = 4 if shape == "square" else 3
        points = [(centre[0] + radius * math.cos(angle + 2 * math.pi * k / corners),
                   centre[1] + radius * math.sin(angle + 2 * math.pi * k / corners)) for k in range(corners)]
        draw.polygon(points, fill=colour)
    elif shape == "cross":
        for turn in (0, math.pi / 2):
            dx, dy = radius * math.cos(angle + turn), radius * math.sin(angle + turn)
            draw.line([(centre[0] - dx, centre[1] - dy), (centre[0] + dx, centre[1] + dy)], fill=colour, width=width)
    else:
        raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")
    return image


def bad_files() -> dict[str, bytes]:
    """Deliberately broken files, one per common failure, named for what is wrong with them."""
    png = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(png, "PNG")
    return {
        "circle/truncated.png": png.getvalue()[: len(png.getvalue()) // 2],
        "square/empty.png": b"",
        "triangle/notes.txt": b"these are not pixels\n",
        "cross/corrupt.jpg": b"\xff\xd8\xff\xe0" + b"\x00" * 64,
    }


def write_demo_dataset(target: Path, config: DemoConfig) -> int:
    """Writes the demo raw dataset under ``target/<class>/`` (idempotent); returns the number of files."""
    rng = np.random.default_rng(config.seed)
    count = 0
    for shape in SHAPES:
        folder = target / shape
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(config.images_per_class):
            image_format, suffix = _FORMATS[index % len(_FORMATS)]
            image = draw_shape(shape, config.image_size, rng)
            path = folder / f"{shape}_{index:04d}{suffix}"
            if not path.exists():
                image.save(path, image_format, **({"quality": 92} if image_format == "JPEG" else {}))
            count += 1
    for relative, payload in bad_files().items():
        path = target / relative
        if not path.exists():
            path.write_bytes(payload)
        count += 1
    return count


def write_demo_source(config: Config) -> Path:
    """The demo dataset at ``ingest.source.uri`` (a local path), where the demo's ingest reads it."""
    target = Path(local_path(config.ingest.source.uri))
    count = write_demo_dataset(target, config.demo)
    log.info("demo raw dataset: %d files under %s", count, target)
    return target
