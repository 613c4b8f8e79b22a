"""Photo benchmark: camera-sized JPEGs in class folders, ingested at 224x224 RGB, per stored codec.

    python bench/photo_bench.py              # 3,000 photos (make bench-photos)
    python bench/photo_bench.py --limit 300

The raw drop is built offline from the real photographs scikit-image ships (a bench-only extra, never a job
dependency): random crops rescaled to 640x480, 800x600 or 1024x768, randomly flipped, saved as JPEG (quality 90) in
one folder per source photograph. For each codec the Spark ingest job (local[*], session warmed up first, the
TFRecord copy on) is timed from the ``ingest()`` call to the commit, against one process doing the same per-image
work (read, hash, decode, normalise, encode) and writing Parquet, in the same run. Also: lake bytes per image for
``images`` and ``tfrecord`` against the source's, the TFRecord copy's write cost, peak memory of the job (driver,
JVM and Python workers), and the direct PNG writer against Pillow's. The last line is JSON.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from _common import PeakMemory, decode_in_one_process, workspace
from visionlake.operate.cli import configure_logging
from visionlake.config import load_config
from visionlake.ingest.decode import DecodePlan
from visionlake.lake.images import encode_png
from visionlake.ingest.job import ingest
from visionlake.spark import spark_session

SOURCE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
CAMERA_SIZES = ((640, 480), (800, 600), (1024, 768))
BATCH = 256


def build_photo_drop(target: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` JPEG photos in one folder per source photograph (random crop, rescale, flip)."""
    import skimage.data

    rng = np.random.default_rng(seed)
    sources = [Image.fromarray(getattr(skimage.data, name)()) for name in SOURCE_PHOTOS]
    files = []
    for index in range(count):
        label = index % len(sources)
        source = sources[label]
        fraction = rng.uniform(0.5, 1.0)
        width, height = round(source.width * fraction), round(source.height * fraction)
        left, top = rng.integers(0, source.width - width + 1), rng.integers(0, source.height - height + 1)
        size = CAMERA_SIZES[rng.integers(len(CAMERA_SIZES))]
        photo = source.crop((left, top, left + width, top + height)).resize(size, Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            photo = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = target / SOURCE_PHOTOS[label] / f"{index:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        photo.save(path, "JPEG", quality=90)
        files.append(path)
    return files


def run_single_process(files: list[Path], config, output: Path) -> float:
    """The per-image work of the job in one process: read, hash, decode, normalise, encode; then write Parquet."""
    plan = DecodePlan(config.ingest, tuple(SOURCE_PHOTOS))
    started = time.perf_counter()
    decoded = decode_in_one_process(files, plan, BATCH)
    accepted = decoded[decoded["reason"].isna()].drop(columns=["reason", "detail"])
    pq.write_table(pa.Table.from_pandas(accepted, preserve_index=False), output / "images.parquet",
                   row_group_size=64)
    return time.perf_counter() - started


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.name.startswith("."))


def compare_png_writers(files: list[Path], config, samples: int = 100) -> dict:
    """The direct PNG writer (adaptive row filters) against Pillow's save at the same level, on normalised photos."""
    from visionlake.lake.images import normalise_image

    pixels = [normalise_image(p.read_bytes(), config.ingest.image, config.ingest.limits).pixels
              for p in files[:samples]]

    def pillow(image: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "PNG", compress_level=config.ingest.image.png_compress_level)
        return buffer.getvalue()

    figures = {}
    for name, encode in (("direct", lambda p: encode_png(p, config.ingest.image.png_compress_level)),
                         ("pillow", pillow)):
        started = time.perf_counter()
        sizes = [len(encode(p)) for p in pixels]
        figures[name] = {"kib_per_image": round(float(np.mean(sizes)) / 1024, 1),
                         "images_per_s": round(len(pixels) / (time.perf_counter() - started))}
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=3000, help="number of photos (default 3,000)")
    args = parser.parse_args()
    configure_logging()
    with workspace("vl-photo-bench-") as work:
        started = time.perf_counter()
        files = build_photo_drop(work / "raw", args.limit)
        source_bytes = sum(f.stat().st_size for f in files)
        print(f"built {len(files)} photos ({source_bytes / 2 ** 20:.0f} MB) in {time.perf_counter() - started:.0f}s")
        config = load_config(None, [
            f"ingest.source.uri={work / 'raw'}", f"lake.root={work / 'lake'}", "spark.conf.spark.ui.enabled=false",
            "ingest.image.mode=RGB", "ingest.image.height=224", "ingest.image.width=224", "ingest.image.resize=crop",
            "ingest.split.ratios={train: 0.8, val: 0.1, test: 0.1}"])
        n, result = len(files), {"images": len(files), "source_kib_per_image": round(source_bytes / len(files) / 1024,
                                                                                     1)}
        with spark_session(config.spark) as spark:
            spark.sparkContext.setLogLevel("ERROR")
            result["cores"] = cores = spark.sparkContext.defaultParallelism
            ingest(spark, replace(config, ingest=replace(config.ingest, dataset="warmup",
                                                         source=replace(config.ingest.source,
                                                                        uri=str(files[0].parent)))))
            runs = (("png", "png", True), ("jpeg", "jpeg", True), ("jpeg_no_tfrecord", "jpeg", False))
            for run, codec, tfrecord in runs:
                settings = replace(config.ingest, dataset=run, tfrecord=tfrecord,
                                   image=replace(config.ingest.image, codec=codec))
                run_config = replace(config, ingest=settings)
                (work / f"single-{run}").mkdir()
                single_seconds = run_single_process(files, run_config, work / f"single-{run}")
                with PeakMemory() as memory:
                    job_started = time.perf_counter()
                    summary = ingest(spark, run_config)
                    job_seconds = time.perf_counter() - job_started
                assert summary.images_added + sum(summary.quarantined.values()) == n, summary.report()
                dataset = work / "lake" / run
                figures = {
                    "job_images_per_s": round(n / job_seconds, 1),
                    "single_process_images_per_s": round(n / single_seconds, 1),
                    "ratio_vs_single_process": round(single_seconds / job_seconds, 2),
                    "images_kib_per_image": round(folder_bytes(dataset / "images") / n / 1024, 1),
                    "tfrecord_kib_per_image": round(folder_bytes(dataset / "tfrecord") / n / 1024, 1),
                    "job_seconds": round(job_seconds, 1), "job_peak_memory_mb": memory.peak_mb}
                figures["images_vs_source_bytes"] = round(figures["images_kib_per_image"]
                                                          / result["source_kib_per_image"], 3)
                result[run] = figures
                print(f"{run:17s} job {figures['job_images_per_s']:6.1f} images/s vs one process "
                      f"{figures['single_process_images_per_s']:6.1f} -> {figures['ratio_vs_single_process']:.2f}x; "
                      f"images {figures['images_kib_per_image']:.1f} KiB/image "
                      f"({figures['images_vs_source_bytes']:.2f}x source), tfrecord "
                      f"{figures['tfrecord_kib_per_image']:.1f} KiB/image; peak {memory.peak_mb} MB")
        result["tfrecord_copy_seconds"] = round(result["jpeg"]["job_seconds"]
                                                - result["jpeg_no_tfrecord"]["job_seconds"], 1)
        result["png_writer"] = compare_png_writers(files, config)
        print(f"TFRecord copy (jpeg): +{result['tfrecord_copy_seconds']}s, "
              f"+{result['jpeg']['tfrecord_kib_per_image']} KiB/image")
        print(f"PNG writer on 224 px photos: direct {result['png_writer']['direct']}, "
              f"Pillow {result['png_writer']['pillow']}")
        print("targets: job >= 1.7x one process (limit 2.0x on 2 cores); jpeg images <= 0.5x the source bytes")
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
