"""Shared fixtures: one real local Spark session for the whole run, configs rooted in temp folders."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionlake.config import SparkConfig, load_config

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "mnist_png.tar.gz"


@pytest.fixture(scope="session")
def spark():
    from visionlake.spark import spark_session

    config = SparkConfig(master="local[2]", app_name="visionlake-tests", conf={
        "spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "4", "spark.driver.memory": "2g"})
    with spark_session(config) as session:
        session.sparkContext.setLogLevel("ERROR")
        yield session


@pytest.fixture
def make_config(tmp_path):
    """A config whose relative paths (lake, raw data, MLflow store) live under this test's temp folder."""
    def make(*overrides: str, conf: str | None = None):
        return load_config(conf, list(overrides), base_dir=str(tmp_path))
    return make


@pytest.fixture
def shared_mnist() -> Path:
    if not SHARED_MNIST.exists():
        pytest.skip(f"needs the shared MNIST archive at {SHARED_MNIST} (absent outside the team's machines)")
    return SHARED_MNIST


def png_bytes(pixels: np.ndarray, mode: str | None = None, **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, "PNG", **save)
    return buffer.getvalue()


def encoded(image: Image.Image, image_format: str, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **save)
    return buffer.getvalue()
