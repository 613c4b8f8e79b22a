"""Shared fixtures: one real local Spark session for the whole run, configs rooted in temp folders."""
from __future__ import annotations

import io
import os
import re
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


# The suite's spark-defaults.conf (its JVMs skip the C2 JIT); every Spark the tests start, in-process or as a
# subprocess, reads it, and the cluster harness merges it into the cluster's own.
TEST_SPARK_CONF = REPO / "tests" / "spark-conf"


def pytest_configure(config):
    os.environ["SPARK_CONF_DIR"] = str(TEST_SPARK_CONF)


def suite_spark_defaults() -> dict[str, str]:
    lines = (TEST_SPARK_CONF / "spark-defaults.conf").read_text().splitlines()
    return dict(line.split(None, 1) for line in lines if line.strip() and not line.startswith("#"))


# --- The durations report (make test: build/test-reports/) and the grouping of tests for pytest-xdist. ---

# One line per test phase, slowest first; later changes are judged against it, so the columns stay as they are.
DURATIONS_HEADER = "seconds\tphase\toutcome\ttest\n"


_RECORDED: list[tuple[float, str, str, str]] = []  # (seconds, phase, outcome, test) of this session


def pytest_runtest_logreport(report):
    _RECORDED.append((report.duration, report.when, report.outcome, plain_test_id(report.nodeid)))


def plain_test_id(nodeid: str) -> str:
    """The test's id without the ``@group`` suffix pytest-xdist's loadgroup adds (a parameter's ``@`` stays)."""
    head, at, group = nodeid.rpartition("@")
    return head if at and "]" not in group else nodeid


def pytest_sessionfinish(session):
    """Next to the JUnit XML (``--junitxml=X.xml``): ``X-durations.tsv``, every test phase's seconds. Written by the
    process that writes the XML (the controller under pytest-xdist, which receives every worker's reports)."""
    xml = session.config.option.xmlpath
    if not xml or hasattr(session.config, "workerinput"):
        return
    report = Path(xml).with_name(Path(xml).stem + "-durations.tsv")
    report.parent.mkdir(parents=True, exist_ok=True)
    rows = sorted(_RECORDED, key=lambda row: -row[0])
    report.write_text(DURATIONS_HEADER + "".join(f"{seconds:.2f}\t{phase}\t{outcome}\t{test}\n"
                                                 for seconds, phase, outcome, test in rows))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """Under ``--dist loadgroup`` a module's tests stay on one worker (its module fixtures are built once): every test
    without an ``xdist_group`` of its own is grouped by its module. Modules that share a session fixture name one
    group (``pytestmark = pytest.mark.xdist_group(...)``)."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
        if item.nodeid.startswith(SLOW):
            item.add_marker(pytest.mark.slow)
    # Longest first (groups are handed out in this order): the cluster run, then the integration modules, then the
    # unit tests that fill the gaps; a stable sort keeps each module's own order.
    items.sort(key=lambda item: next((rank for rank, prefix in enumerate(RUN_FIRST) if item.nodeid.startswith(prefix)),
                                     len(RUN_FIRST)))


# The lock resolutions wait on the registry, so they start early beside the CPU-bound modules instead of ending a run.
RUN_FIRST = ("tests/cluster/", "tests/unit/test_packaging.py", "tests/integration/")

# `slow`: what `make test-fast` (-m "not slow") leaves out, a minute or more each (build/test-reports/ has the
# figures): the cluster, training, the demo, the full DAG run and resolving the lock against the registry.
SLOW = ("tests/cluster/", "tests/integration/test_train.py", "tests/integration/test_generative.py",
        "tests/integration/test_anomaly_scoring.py", "tests/integration/test_operate.py",
        "tests/integration/test_console.py", "tests/integration/test_current_stack.py",
        "tests/integration/test_airflow.py::test_dags_test_runs_the_whole_pipeline",
        "tests/unit/test_packaging.py::test_each_tensorflow_extra_resolves_entirely_from_the_lock")


@pytest.fixture(scope="session")
def spark():
    from visionlake.spark import spark_session

    config = SparkConfig(master="local[2]", app_name="visionlake-tests", conf={
        "spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "4", "spark.driver.memory": "2g"})
    with spark_session(config) as session:
        session.sparkContext.setLogLevel("ERROR")
        yield session


# What a wheel is built from: the checkout's tracked sources, never its venvs, build/ (the cluster's state, test
# reports, setuptools leftovers) or dist/.
WHEEL_SOURCES = ("setup.py", "pyproject.toml", "README.md", "lib")


@pytest.fixture(scope="session")
def visionlake_wheel(tmp_path_factory) -> Path:
    """A wheel of the checkout, as `make dist` builds it (fresh for every test session), built from a copy of the
    sources so that parallel sessions, `make dist` and the cluster's state in build/ never meet."""
    source = tmp_path_factory.mktemp("wheel-source")
    for name in WHEEL_SOURCES:
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, source / name, **({"ignore": shutil.ignore_patterns("*.egg-info", "__pycache__")}
                                           if (REPO / name).is_dir() else {}))
    folder = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "--disable-pip-version-check", "-w", str(folder), str(source)], check=True)
    return next(folder.glob("visionlake-*.whl"))


# The MLflow servers the tests start run no server-side jobs (MLflow's GenAI job runner: eight more processes that
# took 22 CPU-s a minute while idle); visionlake uses none of them (`make mlflow-ui` and README do the same).
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


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


def delta_rs_ids(table: str, version: int | None = None) -> list[str]:
    """The ids delta-rs (the Rust Delta reader, no Spark) finds in a lake table at ``version`` (default: the
    latest): its file list for that version, read with pyarrow. Sorted, duplicates kept."""
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    files = DeltaTable(re.sub(r"^file:(//)?", "", table), version=version).file_uris()
    return sorted(i for f in files for i in pq.read_table(f, columns=["id"]).column("id").to_pylist())


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


@pytest.fixture(scope="session")
def classifier_workspace(tmp_path_factory, spark):
    """One lake and MLflow store with the demo dataset and a champion classifier, shared by the generative and anomaly
    modules (each passes its own settings; both name the xdist group ``classifier-workspace``)."""
    return demo_workspace_with_classifier(tmp_path_factory.mktemp("classifier-workspace"), spark, [])


CLASSIFIER_WORKSPACE_GROUP = pytest.mark.xdist_group("classifier-workspace")


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
