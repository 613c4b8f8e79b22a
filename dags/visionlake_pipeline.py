"""visionlake pipeline: ingest -> train classifier -> train anomaly model (and GAN when enabled) -> batch scoring
(-> compaction of the dataset's Delta tables when enabled).

Every task is one ``spark-submit`` of a ``jobs/*.py`` entry point through the Apache Spark provider, so Airflow only
schedules: the job stack (Spark, TensorFlow, Horovod) lives in its own environment and is never imported here.

Deployment settings are Airflow objects, read when a task runs (not when the scheduler parses this file):
* connection ``visionlake_spark``: the Spark master, e.g. ``local[*]`` (``make airflow-test`` defines it through
  ``AIRFLOW_CONN_VISIONLAKE_SPARK``), ``yarn``, ``spark://host:7077`` or ``k8s://https://host:6443``;
* variable ``visionlake_home``: the folder holding ``jobs/`` and ``conf/`` (default: the checkout this file is in);
* variable ``visionlake_python``: the job environment's interpreter (default ``<home>/.venv/bin/python``);
* variable ``visionlake_py_files``: the wheel to ship (``make dist``), empty when the package is installed there;
* variable ``visionlake_jars``: Delta Lake's jars for ``--jars`` (default: the job environment's own,
  ``<its prefix>/share/visionlake/jars/*.jar``, which ``make setup`` fills);
* variables ``visionlake_archives`` and ``visionlake_executor_python``: on a cluster whose nodes lack the job stack,
  the packed environment (``make cluster-env``: ``<path>/visionlake-env.tar.gz#environment``) and the executors'
  interpreter inside it (``./environment/bin/python``); empty = the executors use ``visionlake_python``.

Per-run choices are DAG params (dataset, raw path, config file, extra ``key=value`` overrides, whether to train the
GAN, whether to compact the tables afterwards), so one trigger form covers the demo and a production dataset alike.
Compaction (``visionlake optimize``) is for lakes fed often: each incremental run adds a few files per split.
"""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.standard.operators.python import ShortCircuitOperator
from airflow.sdk import DAG, Param

CONN_ID = "visionlake_spark"
CHECKOUT = str(Path(__file__).resolve().parents[1])
_HOME = f"var.value.get('visionlake_home', '{CHECKOUT}')"
HOME = "{{ " + _HOME + " }}"
_PYTHON = "var.value.get('visionlake_python', " + _HOME + " ~ '/.venv/bin/python')"
_EXECUTOR_PYTHON = f"(var.value.get('visionlake_executor_python', '') or {_PYTHON})"
_ARCHIVES = "var.value.get('visionlake_archives', '')"
# Delta Lake's jars beside the job environment's interpreter (<prefix>/bin/python -> <prefix>/share/...); an
# interpreter elsewhere needs the visionlake_jars variable (spark-submit then stops, saying so).
JARS = ("{{ var.value.get('visionlake_jars', '') or ((%s).rsplit('/bin/', 1)[0] ~ '/share/visionlake/jars/*.jar' "
        "if '/bin/' in %s else '') }}" % (_PYTHON, _PYTHON))
_INTERPRETERS = f"'spark.pyspark.driver.python': {_PYTHON}, 'spark.pyspark.python': {_EXECUTOR_PYTHON}"
# The driver runs the job environment's interpreter; executors the same one, or the packed environment's when one
# is shipped (spark.archives is only set then). Rendered natively into a dict.
SPARK_CONF = ("{{ {%s, 'spark.archives': %s} if %s else {%s} }}"
              % (_INTERPRETERS, _ARCHIVES, _ARCHIVES, _INTERPRETERS))

RETRIES = {"retries": 2, "retry_delay": timedelta(minutes=1), "retry_exponential_backoff": 2.0,
           "max_retry_delay": timedelta(minutes=15)}


def job_arguments(*settings: str) -> str:
    """The job's arguments as one native-rendered list: ``--conf FILE`` (when given), the task's own settings
    (templates like ``'ingest.dataset=' ~ params.dataset``) and then the run's overrides, which win."""
    conf = "(['--conf', params.config_file] if params.config_file else [])"
    return "{{ %s + [%s] + params.overrides }}" % (conf, ", ".join(settings))


def gan_enabled(params: dict) -> bool:
    return bool(params["train_gan"])


def compaction_enabled(params: dict) -> bool:
    return bool(params["compact"])


def spark_job(task_id: str, job: str, *settings: str) -> SparkSubmitOperator:
    return SparkSubmitOperator(
        task_id=task_id,
        conn_id=CONN_ID,
        application=f"{HOME}/jobs/{job}.py",
        application_args=job_arguments(*settings),
        py_files="{{ var.value.get('visionlake_py_files', '') }}",
        jars=JARS,
        conf=SPARK_CONF,
        name=f"visionlake-{task_id}")


with DAG(
    dag_id="visionlake_pipeline",
    description="Ingest raw images, train the classifier and anomaly model (and GAN), score into the lake.",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # runs commit lake and registry versions; one at a time keeps them in order
    default_args=RETRIES,
    render_template_as_native_obj=True,  # job_arguments renders to a real list
    params={
        "dataset": Param("demo", type="string", minLength=1, description="lake dataset to build and score"),
        "raw_path": Param("data/demo-raw", type="string", minLength=1,
                          description="raw images to ingest: a folder, archive or manifest, any Hadoop URI"),
        "config_file": Param("", type="string",
                             description="YAML config passed as --conf (empty: the embedded local default)"),
        "overrides": Param([], type="array", items={"type": "string", "pattern": "^[A-Za-z0-9_.]+=.*$"},
                           description="extra key.path=value config overrides for every job"),
        "train_gan": Param(False, type="boolean", description="also train the conditional GAN"),
        "compact": Param(False, type="boolean",
                         description="compact the dataset's Delta tables after scoring (visionlake optimize)"),
    },
    tags=["visionlake"],
    doc_md=__doc__,
) as dag:
    ingest = spark_job("ingest", "ingest", "'ingest.dataset=' ~ params.dataset",
                       "'ingest.source.uri=' ~ params.raw_path")
    train_classifier = spark_job("train_classifier", "train_classifier", "'train.dataset=' ~ params.dataset")
    train_anomaly = spark_job("train_anomaly", "train_anomaly", "'train.dataset=' ~ params.dataset")
    check_gan = ShortCircuitOperator(task_id="gan_enabled", python_callable=gan_enabled,
                                     ignore_downstream_trigger_rules=False)
    train_gan = spark_job("train_gan", "train_gan", "'train.dataset=' ~ params.dataset")
    score = spark_job("score", "batch_inference", "'score.dataset=' ~ params.dataset")
    check_compact = ShortCircuitOperator(task_id="compact_enabled", python_callable=compaction_enabled,
                                         ignore_downstream_trigger_rules=False)
    optimize = spark_job("optimize", "optimize", "'ingest.dataset=' ~ params.dataset")

    # The classifier comes first: scoring needs it and the GAN's quality metric (FCD) is measured with it.
    ingest >> train_classifier >> [train_anomaly, check_gan]
    check_gan >> train_gan
    [train_classifier, train_anomaly] >> score >> check_compact >> optimize
