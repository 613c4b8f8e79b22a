"""The one Spark session factory: loopback-bound local mode, or whatever spark-submit configured."""
from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import sys
import tempfile
from importlib.metadata import version as installed_version
from pathlib import Path
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
    # A Delta table's log state is rebuilt in this many tasks. Delta's default, 50, is for tables of millions of
    # files; on a lake table's hundreds it made a new session's first read 2 s and each file plan 3 s slower.
    "spark.databricks.delta.snapshotPartitions": "2",
}


# Spark creates its SQL warehouse folder the first time a statement touches the catalog, in the working directory by
# default; every Delta statement does (DESCRIBE DETAIL, VACUUM, OPTIMIZE), although the lake's tables are paths and
# nothing is stored there. A temporary folder keeps it out of the user's (unless they set one).
WAREHOUSE_KEY = "spark.sql.warehouse.dir"


def default_warehouse() -> str:
    return os.path.join(tempfile.gettempdir(), "visionlake-spark-warehouse")


# Delta Lake is the lake's table format: every session loads its SQL extension and catalog. The jars' version is the
# installed delta-spark Python package's (one pin for both), resolved once by `visionlake jars --fetch` (make setup).
DELTA_EXTENSION = ("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
DELTA_CATALOG = ("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
_DELTA_CLASS = "io.delta.tables.DeltaTable"
# Where `visionlake jars --fetch` puts the jars, inside the environment: sessions started here use them, and the
# packed cluster environment carries them for nodes that run jobs from it (`--jars local:<env>/share/...`).
JARS_FOLDER = ("share", "visionlake", "jars")
_RESOLVED = ".resolved"  # in the jars folder: the coordinates the jars were resolved for
SCALA_BINARY_VERSION = "2.12"  # pyspark 3.5's PyPI build; Delta's jars are built per Scala version


class SparkSetupError(RuntimeError):
    """Spark cannot run visionlake's tables as set up (Delta Lake's jars missing or unresolvable); says what to do."""


def delta_package() -> str:
    """The Maven coordinates of the Delta Lake jars that pair with this environment's delta-spark, for pyspark 3.5's
    Scala (what delta-spark's own ``configure_spark_with_delta_pip`` resolves)."""
    return f"io.delta:delta-spark_{SCALA_BINARY_VERSION}:{installed_version('delta-spark')}"


def jars_folder(prefix: str = sys.prefix) -> Path:
    return Path(prefix).joinpath(*JARS_FOLDER)


def installed_jars(prefix: str = sys.prefix, required: bool = False) -> list[str]:
    """The Delta Lake jars installed in the environment at ``prefix`` (empty before ``visionlake jars --fetch``).

    Raises:
        SparkSetupError: ``required`` and there are none, or they were resolved for another delta-spark.
    """
    jars = sorted(glob.glob(str(jars_folder(prefix) / "*.jar")))
    if required:
        resolved = _resolved_for(prefix)
        if not jars or (resolved and resolved != delta_package()):
            found = f"jars for {resolved}" if jars else "no jars"
            raise SparkSetupError(
                f"Delta Lake's jars for {delta_package()} are not installed in {prefix} ({found}): run "
                "`visionlake jars --fetch` (make setup does; it needs Maven Central once), or without network set "
                "spark.conf.spark.jars to copies of them (README: Running the jobs with spark-submit)")
    return jars


def _resolved_for(prefix: str) -> str:
    marker = jars_folder(prefix) / _RESOLVED
    return marker.read_text().strip() if marker.exists() else ""


def delta_conf(user_conf: dict[str, str], prefix: str = sys.prefix) -> dict[str, str]:
    """What a session started here adds to the user's ``spark.conf`` for Delta: the installed jars after the user's
    own ``spark.jars`` (unless the user names Delta's jars or package), and Delta's extension and catalog (see
    ``delta_settings``).

    Raises:
        SparkSetupError: no jars installed (or for another version) and none named.
    """
    conf = delta_settings(user_conf.get)
    named = f"{user_conf.get('spark.jars', '')},{user_conf.get('spark.jars.packages', '')}"
    if "delta-spark" not in named:
        jars = installed_jars(prefix, required=True)
        conf["spark.jars"] = ",".join(filter(None, [user_conf.get("spark.jars", ""), *jars]))
    return conf


def delta_settings(chosen) -> dict[str, str]:
    """Delta's extension appended to the extensions already chosen (``chosen(key)`` gives a key's value or None),
    and its catalog unless another ``spark_catalog`` was chosen."""
    settings = {}
    key, extension = DELTA_EXTENSION
    extensions = [name for name in (chosen(key) or "").split(",") if name]
    if extension not in extensions:
        settings[key] = ",".join([*extensions, extension])
    key, catalog = DELTA_CATALOG
    if not chosen(key):
        settings[key] = catalog
    return settings


def check_delta_loaded(spark: SparkSession) -> None:
    """Under spark-submit the driver's classpath comes from the submit: fail early, and say how, without Delta's
    jars (a table write would otherwise fail deep inside a job with ``ClassNotFoundException``)."""
    from py4j.protocol import Py4JJavaError

    jvm = spark.sparkContext._jvm
    try:
        jvm.java.lang.Class.forName(_DELTA_CLASS, False, jvm.java.lang.Thread.currentThread().getContextClassLoader())
    except Py4JJavaError as error:  # the JVM's ClassNotFoundException
        raise SparkSetupError(
            f"Delta Lake's jars are not on this application's classpath: add --jars 'dist/jars/*.jar' (make dist "
            f"copies them there) or --packages {delta_package()} to spark-submit; `visionlake jars` prints the "
            "installed ones (README: Running the jobs with spark-submit)") from error


def fetch_jars(prefix: str = sys.prefix, log_file: Optional[str] = None) -> list[str]:
    """Resolves Delta Lake's jars (``delta_package()`` and its dependencies) from Maven Central with Spark's own Ivy,
    into ``jars_folder(prefix)``; a no-op when they were resolved for this version. The new folder replaces the old
    one by renames, so readers see one whole set or the other. Returns the jars.

    Raises:
        SparkSetupError: a Spark session is already running in this process (it would resolve nothing), or the
            resolution failed (no network, no such version); names the log with Ivy's output.
    """
    wanted = delta_package()
    target = jars_folder(prefix)
    if _resolved_for(prefix) == wanted and installed_jars(prefix):
        return installed_jars(prefix)
    if launched_by_spark_submit() or SparkSession.getActiveSession() is not None:
        raise SparkSetupError("fetch Delta Lake's jars from a process without a Spark session: `visionlake jars "
                              "--fetch`")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="visionlake-ivy-", dir=target.parent) as ivy:
        fetch = SparkConfig(master="local[1]", app_name="visionlake-fetch-jars", conf={
            "spark.jars.packages": wanted, "spark.jars.ivy": ivy, "spark.ui.enabled": "false"})
        try:
            with spark_session(fetch, jvm_log=log_file):
                pass
        except Exception as error:  # noqa: BLE001 - the gateway fails with a generic error; Ivy's log says why
            where = f"; Ivy's output is in {log_file}" if log_file else ""
            raise SparkSetupError(f"could not resolve {wanted} from Maven Central{where}. Without network, copy "
                                  f"the jars into {target} or set spark.conf.spark.jars") from error
        resolved = Path(ivy) / "jars"
        _, artifact, release = wanted.split(":")
        if not list(resolved.glob(f"*{artifact}-{release}.jar")):  # Ivy names it <group>_<artifact>-<version>.jar
            raise SparkSetupError(f"Spark's Ivy resolved no {artifact}-{release}.jar for {wanted}; see {log_file}")
        (resolved / _RESOLVED).write_text(wanted + "\n")
        old = Path(ivy) / "previous"
        if target.exists():
            target.rename(old)
        resolved.rename(target)
    return installed_jars(prefix)


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
        for key, value in {WAREHOUSE_KEY: default_warehouse(), **config.conf, **delta_conf(config.conf)}.items():
            builder = builder.config(key, value)
    else:
        submitted = SparkConf()
        if not submitted.contains(WAREHOUSE_KEY):
            builder = builder.config(WAREHOUSE_KEY, default_warehouse())
        for key, value in delta_settings(lambda key: submitted.get(key, None)).items():
            builder = builder.config(key, value)
        if submitted.get("spark.master", "").startswith("local"):
            # A local-master submit is one machine too: keep the driver on loopback unless the submit says otherwise
            # (its UI follows SPARK_LOCAL_IP, which the submitter sets: see README).
            for key in ("spark.driver.host", "spark.driver.bindAddress"):
                if not submitted.contains(key):
                    builder = builder.config(key, LOOPBACK)
    with child_output_to(None if launched_by_spark_submit() else jvm_log):
        spark = builder.getOrCreate()
    try:
        if launched_by_spark_submit():
            check_delta_loaded(spark)
            ship_wheels_to_python_workers(spark)
        chosen = spark.sparkContext.getConf()  # what the builder or spark-submit set explicitly
        for key, value in SESSION_DEFAULTS.items():
            if not chosen.contains(key):
                spark.conf.set(key, value)
    except BaseException:
        spark.stop()
        raise
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
