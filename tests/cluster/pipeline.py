"""The whole pipeline as users submit it, on any master: the cluster test and bench/cluster_bench.py share it.

Each stage is one ``spark-submit`` of a ``jobs/*.py`` entry point. On a cluster the executors get their Python from
the packed environment (``make cluster-env``) shipped with ``--archives``, and the code from the wheel
(``make dist``) shipped with ``--py-files``, exactly as the README tells users.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[2]
# `make cluster-env` builds it; VISIONLAKE_PACKED_ENV points at another build of it.
PACKED_ENV = Path(os.environ.get("VISIONLAKE_PACKED_ENV", REPO / "dist" / "visionlake-env.tar.gz"))
SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"

# Small settings: 5 classes of 60 demo images (32x32 in the lake), 2 ranks, a few epochs; enough to exercise every stage.
SETTINGS = ["demo.images_per_class=60",
            "train.num_proc=2", "train.batch_size=16", "train.epochs=3",
            "train.augment.flip=false", "train.augment.crop_fraction=1.0", "train.augment.brightness=0.0",
            "train.augment.contrast=0.0", "generative.batch_size=16", "generative.epochs=2",
            "generative.gan.filters=16", "generative.gan.latent_dim=16", "generative.autoencoder.filters=16",
            "generative.quality.samples=200", "anomaly.normal_labels=[circle, cross, square, triangle]"]

# (stage, job, job flags): ingest, classifier, VAE anomaly detector, cDCGAN, generate, score.
STAGES = [("ingest", "ingest", []),
          ("train_classifier", "train_classifier", ["--dataset", "demo"]),
          ("train_anomaly", "train_anomaly", ["--method", "vae", "--dataset", "demo"]),
          ("train_gan", "train_gan", ["--model", "cdcgan", "--dataset", "demo"]),
          ("generate_synthetic", "generate_synthetic", ["--dataset", "demo", "--per-class", "20"]),
          ("batch_inference", "batch_inference", ["--dataset", "demo"])]


@dataclass(frozen=True)
class Target:
    """Where the pipeline runs: the master, the shared lake and raw folder, and the tracking server."""
    master: str
    lake_root: str
    raw: str
    tracking_uri: str
    spark_conf_dir: str = ""  # the cluster's spark-defaults.conf (tests/cluster/harness.py)

    @property
    def is_cluster(self) -> bool:
        return not self.master.startswith("local")

    def overrides(self) -> list[str]:
        return [f"lake.root={self.lake_root}", f"ingest.source.uri={self.raw}",
                f"tracking.tracking_uri={self.tracking_uri}", "tracking.artifact_root=", *SETTINGS]


def submit_command(target: Target, job: str, flags: list[str], wheel: Path,
                   extra: Optional[list[str]] = None, ship_env: bool = True) -> list[str]:
    """The spark-submit of one stage; ``ship_env=False`` leaves the packed environment out (for a job that stops
    before any executor runs Python)."""
    from visionlake.spark import jars_folder

    # Delta Lake's jars from the driver's environment: the driver ships them to the executors (README).
    command = [str(SPARK_SUBMIT), "--master", target.master, "--conf", "spark.ui.enabled=false",
               "--jars", str(jars_folder() / "*.jar"), "--py-files", str(wheel)]
    if target.is_cluster:
        command += ["--total-executor-cores", "2", "--executor-cores", "1", "--executor-memory", "2g",
                    "--conf", f"spark.pyspark.driver.python={sys.executable}"]
        if ship_env:
            command += ["--archives", f"{PACKED_ENV}#environment", "--conf",
                        "spark.pyspark.python=./environment/bin/python"]
    return [*command, str(REPO / "jobs" / f"{job}.py"), *flags, *target.overrides(), *(extra or [])]


def job_env(target: Target) -> dict[str, str]:
    """The submitting shell: Spark services on loopback, the cluster's spark-defaults, no leftovers of a PySpark
    driver around it."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYSPARK", "SPARK_CONF_DIR"))}
    env.update(SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable,
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if target.spark_conf_dir:
        env["SPARK_CONF_DIR"] = target.spark_conf_dir
    return env


def run_stage(target: Target, job: str, flags: list[str], wheel: Path, cwd: Path,
              extra: Optional[list[str]] = None, ship_env: bool = True) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    result = subprocess.run(submit_command(target, job, flags, wheel, extra, ship_env), cwd=cwd, env=job_env(target),
                            capture_output=True, text=True, timeout=1200)
    return result, time.perf_counter() - started


def write_raw(target: Target) -> int:
    """The demo raw drop in the target's raw folder; returns the number of files."""
    from visionlake.config import load_config
    from visionlake.operate.demo_data import write_demo_dataset

    config = load_config(None, SETTINGS)
    return write_demo_dataset(Path(target.raw), config.demo)
