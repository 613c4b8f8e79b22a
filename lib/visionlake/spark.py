"""The one Spark session factory: loopback-bound local mode, or whatever spark-submit configured."""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
from typing import Iterator, Optional

from pyspark import SparkConf
from pyspark.sql import SparkSession

from visionlake.config import SparkConfig
from visionlake.console import child_output_to
from visionlake.uris import local_path

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# Defaults for visionlake's workloads (many small files, Arrow batches of images); user settings win.
SESSION_DEFAULTS = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "2048",
    # Image folders hold many small files: count each file as cheap to open and cap the number of read tasks,
    # so 70,000 files become a few evenly sized tasks instead of thousands of tiny ones.
    "spark.sql.files.openCostInBytes": "8192",
    "spark.sql.files.maxPartitionNum": "16",
    "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
    "spark.sql.session.timeZone": "UTC",
}


def launched_by_spark_submit() -> bool:
    """spark-submit starts the JVM first and hands PySpark its gateway port."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def start_session(config: SparkConfig, jvm_log: Optional[str] = None) -> SparkSession:
    """The session for ``config``: under spark-submit the master and resources come from the submit; otherwise
    ``config.master`` runs locally with every Spark service bound to 127.0.0.1. The caller stops it.

    ``jvm_log``: a file that takes the output of the JVM and its Python workers instead of the console, when the
    JVM starts here (under spark-submit, the JVM's output is the submitter's)."""
    builder = SparkSession.builder.appName(config.app_name)
    if not launched_by_spark_submit():
        # The JVM reads SPARK_LOCAL_IP at launch for the UI and block manager; the driver settings cover the rest.
        os.environ["SPARK_LOCAL_IP"] = LOOPBACK
        # Python workers must run the driver's interpreter (the venv holding visionlake), not PATH's python3.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = (builder.master(config.master)
                   .config("spark.driver.host", LOOPBACK).config("spark.driver.bindAddress", LOOPBACK))
        for key, value in config.conf.items():
            builder = builder.config(key, value)
    else:
        submitted = SparkConf()
        if submitted.get("spark.master", "").startswith("local"):
            # A local-master submit is one machine too: keep the driver on loopback unless the submit says otherwise
            # (its UI follows SPARK_LOCAL_IP, which the submitter sets: see README).
            for key in ("spark.driver.host", "spark.driver.bindAddress"):
                if not submitted.contains(key):
                    builder = builder.config(key, LOOPBACK)
    with child_output_to(None if launched_by_spark_submit() else jvm_log):
        spark = builder.getOrCreate()
    if launched_by_spark_submit():
        ship_wheels_to_python_workers(spark)
    chosen = spark.sparkContext.getConf()  # what the builder or spark-submit set explicitly
    for key, value in SESSION_DEFAULTS.items():
        if not chosen.contains(key):
            spark.conf.set(key, value)
    log.info("Spark %s on %s (parallelism %d)", spark.version, spark.sparkContext.master,
             spark.sparkContext.defaultParallelism)
    return spark


def ship_wheels_to_python_workers(spark: SparkSession) -> None:
    """Makes a wheel shipped with ``--py-files`` importable on the executors too.

    spark-submit puts it on the driver's ``PYTHONPATH``, but executors' Python workers add only ``.zip``, ``.egg``
    and ``.jar`` files to ``sys.path``: a wheel would be fetched and ignored, and executors would import whatever
    visionlake their environment holds, or none. A pure-Python wheel is a zip, so it is shipped again under that name.
    """
    context = spark.sparkContext
    for uri in filter(None, context.getConf().get("spark.submit.pyFiles", "").split(",")):
        local = local_path(uri)
        if local.endswith(".whl") and os.path.isfile(local):
            folder = tempfile.mkdtemp(prefix="visionlake-pyfiles-")
            zipped = os.path.join(folder, os.path.basename(local)[:-len(".whl")] + ".zip")
            shutil.copyfile(local, zipped)
            context.addPyFile(zipped)
            log.info("shipping %s to the executors' Python workers as %s", local, os.path.basename(zipped))


@contextlib.contextmanager
def spark_session(config: SparkConfig, jvm_log: Optional[str] = None) -> Iterator[SparkSession]:
    """``start_session`` that always stops the session, also when the job fails."""
    spark = start_session(config, jvm_log)
    try:
        yield spark
    finally:
        spark.stop()
