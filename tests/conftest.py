"""Shared fixtures: one real local Spark session for the whole run, configs rooted in temp folders."""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionlake.config import SparkConfig, load_config

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "datasets" / "mnist_png.tar.gz"


@pytest.fixture(scope="session")
def spark():
    from visionlake.spark import spark_session

    config = SparkConfig(master="local[2]", app_name="visionlake-tests", conf={
        "spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "4", "spark.driver.memory": "2g"})
    with spark_session(config) as session:
        session.sparkContext.setLogLevel("ERROR")
        yield session


@pytest.fixture(scope="session")
def visionlake_wheel(tmp_path_factory) -> Path:
    """A wheel of the checkout, as `make dist` builds it (fresh for every test session)."""
    folder = tmp_path_factory.mktemp("dist")
    shutil.rmtree(REPO / "build", ignore_errors=True)  # setuptools packs what an earlier build left there
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "--disable-pip-version-check", "-w", str(folder), str(REPO)], check=True)
    return next(folder.glob("visionlake-*.whl"))


def loopback_job_env(**extra: str) -> dict[str, str]:
    """The environment a local spark-submit gets: the job venv's interpreter and every Spark service on 127.0.0.1."""
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", **extra}
    env.pop("PYSPARK_GATEWAY_PORT", None)
    return env


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


# Small, fast settings shared by the modules that train on the demo dataset (2 ranks, 32x32 RGB, 5 classes).
TINY_TRAINING = ["demo.images_per_class=60", "train.num_proc=2", "train.batch_size=16", "train.epochs=3",
                 "train.augment.flip=false", "train.augment.crop_fraction=1.0", "train.augment.brightness=0.0",
                 "train.augment.contrast=0.0", "generative.batch_size=16", "generative.epochs=2",
                 "generative.gan.filters=16", "generative.gan.latent_dim=16", "generative.autoencoder.filters=16"]


def demo_workspace_with_classifier(root: Path, spark, settings: list[str]):
    """Ingests the demo dataset under ``root``, trains the champion classifier, returns a config factory."""
    from visionlake.operate.demo_data import write_demo_dataset
    from visionlake.ingest.job import ingest
    from visionlake.train.classifier import train_classifier

    def make(*overrides: str):
        return load_config(None, [*TINY_TRAINING, *settings, *overrides], base_dir=str(root))

    config = make()
    write_demo_dataset(root / "data" / "demo-raw", config.demo)
    ingest(spark, config)
    train_classifier(spark, config)
    return make
