"""The Airflow DAG, in Airflow's own virtual environment (`make airflow-setup`): it loads cleanly with the right task
order, and `airflow dags test` runs the whole pipeline for real through spark-submit on demo data."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY_TRAINING, loopback_job_env

AIRFLOW_PYTHON = REPO / ".venv-airflow" / "bin" / "python"
DAG_ID = "visionlake_pipeline"

pytestmark = pytest.mark.skipif(not AIRFLOW_PYTHON.exists(),
                                reason="needs Airflow's environment: run `make airflow-setup` (make test does)")

# Runs inside Airflow's venv: what the DagBag holds, and whether parsing pulled in the job stack.
_DESCRIBE_DAG = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags.get(sys.argv[2])
heavy = sorted(m for m in ("pyspark", "tensorflow", "horovod", "mlflow", "visionlake") if m in sys.modules)
# The ingest task's Spark conf rendered with the job stack installed on the nodes, and with a packed one shipped.
installed = {"visionlake_python": "/job/bin/python"}
shipped = {**installed, "visionlake_archives": "env.tar.gz#environment",
           "visionlake_executor_python": "./environment/bin/python"}
ingest = dag.get_task("ingest") if dag else None
print(json.dumps({
    "spark_conf": {name: ingest.render_template(ingest.conf, {"var": {"value": values}}) if ingest else None
                   for name, values in (("installed", installed), ("shipped", shipped))},
    "jars": {name: ingest.render_template(ingest.jars, {"var": {"value": values}}) if ingest else None
             for name, values in (("default", installed), ("set", {**installed, "visionlake_jars": "/j/*.jar"}))},
    "import_errors": {k: str(v) for k, v in bag.import_errors.items()},
    "heavy_imports": heavy,
    "params": sorted(dag.params.keys()) if dag else [],
    "tasks": {t.task_id: {"upstream": sorted(t.upstream_task_ids), "type": type(t).__name__,
                          "retries": t.retries, "backoff": float(t.retry_exponential_backoff or 0),
                          "conn_id": getattr(t, "_conn_id", None)} for t in (dag.tasks if dag else [])}}))
"""


def airflow_env(home: Path) -> dict[str, str]:
    """A throwaway Airflow: SQLite metadata DB under ``home``, no examples, the repository's dags/, a local Spark
    connection, the job venv's interpreter and spark-submit on PATH, everything on 127.0.0.1."""
    env = loopback_job_env(
        AIRFLOW_HOME=str(home), AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False", AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        AIRFLOW_CONN_VISIONLAKE_SPARK=json.dumps({"conn_type": "spark", "host": "local[2]"}),
        AIRFLOW_VAR_VISIONLAKE_HOME=str(REPO), AIRFLOW_VAR_VISIONLAKE_PYTHON=sys.executable)
    env.pop("PYTHONPATH", None)
    return env


def test_dag_loads_without_heavy_imports_and_in_pipeline_order(tmp_path):
    result = subprocess.run([str(AIRFLOW_PYTHON), "-c", _DESCRIBE_DAG, str(REPO / "dags"), DAG_ID],
                            env=airflow_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    described = json.loads(result.stdout.strip().splitlines()[-1])

    assert described["import_errors"] == {}
    assert described["heavy_imports"] == [], "the DAG file must not import the job stack at parse time"
    assert described["params"] == ["compact", "config_file", "dataset", "overrides", "raw_path", "train_gan"]
    upstream = {task: info["upstream"] for task, info in described["tasks"].items()}
    assert upstream == {"ingest": [], "train_classifier": ["ingest"], "train_anomaly": ["train_classifier"],
                        "gan_enabled": ["train_classifier"], "train_gan": ["gan_enabled"],
                        "score": ["train_anomaly", "train_classifier"], "compact_enabled": ["score"],
                        "optimize": ["compact_enabled"]}
    # Executors run the job environment's interpreter, or the packed one's when it is shipped (the cluster test's
    # DAG run uses the installed one, its README commands the archive).
    assert described["spark_conf"] == {
        "installed": {"spark.pyspark.driver.python": "/job/bin/python", "spark.pyspark.python": "/job/bin/python"},
        "shipped": {"spark.pyspark.driver.python": "/job/bin/python",
                    "spark.pyspark.python": "./environment/bin/python", "spark.archives": "env.tar.gz#environment"}}
    # Delta Lake's jars: the job environment's own, unless a variable names others.
    assert described["jars"] == {"default": "/job/share/visionlake/jars/*.jar", "set": "/j/*.jar"}
    for task, info in described["tasks"].items():
        assert info["retries"] >= 1 and info["backoff"] > 1, f"{task} must retry with exponential back-off"
        if task not in ("gan_enabled", "compact_enabled"):
            assert (info["type"], info["conn_id"]) == ("SparkSubmitOperator", "visionlake_spark")


def _the_cluster_runs_the_dag() -> bool:
    from tests.cluster import harness
    from tests.cluster.pipeline import PACKED_ENV
    return PACKED_ENV.exists() and harness.missing_prerequisites() is None


# One full DAG run per suite: where the two-node cluster can run, tests/cluster runs this DAG there (every task
# through spark-submit, asserted in test_the_airflow_dag_ran_every_task_on_the_cluster); elsewhere this runs it locally.
@pytest.mark.skipif(_the_cluster_runs_the_dag(), reason="tests/cluster runs the whole DAG on the two-node cluster")
def test_dags_test_runs_the_whole_pipeline_through_spark_submit(tmp_path, visionlake_wheel, spark):
    from mlflow.tracking import MlflowClient

    from visionlake.config import load_config
    from visionlake.operate.demo_data import write_demo_dataset
    from visionlake.lake.store import Lake

    env = airflow_env(tmp_path / "airflow")
    env["AIRFLOW_VAR_VISIONLAKE_PY_FILES"] = str(visionlake_wheel)
    workspace = tmp_path / "workspace"
    settings = [f"lake.root={workspace / 'lake'}", f"tracking.tracking_uri=sqlite:///{workspace / 'mlflow.db'}",
                f"tracking.artifact_root={workspace / 'mlartifacts'}",
                f"train.checkpoint_root={workspace / 'checkpoints'}",
                *TINY_TRAINING, "generative.quality.samples=200"]
    config = load_config(None, settings)
    raw = workspace / "raw"
    write_demo_dataset(raw, config.demo)
    migrate = subprocess.run([str(AIRFLOW_PYTHON), "-m", "airflow", "db", "migrate"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stderr[-3000:]

    run_conf = {"dataset": "parts", "raw_path": str(raw), "overrides": settings, "train_gan": True, "compact": True}
    result = subprocess.run([str(AIRFLOW_PYTHON), "-m", "airflow", "dags", "test", DAG_ID, "-c", json.dumps(run_conf)],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    log = result.stdout + result.stderr
    assert result.returncode == 0 and "state=success" in log, log[-5000:]
    assert log.count(f"--py-files {visionlake_wheel}") == 6, "every Spark task ships the wheel"

    lake = Lake(spark, str(workspace / "lake"))
    images = lake.read_table("parts", "images").count()
    assert images > 0
    predictions = lake.read_table("parts", "predictions")
    assert predictions.count() == images
    store = config.tracking.tracking_uri
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    for name in ("visionlake-classifier", "visionlake-anomaly", "visionlake-cdcgan"):
        assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    scored_with = predictions.select("classifier_version", "anomaly_version").distinct().collect()
    assert [tuple(row) for row in scored_with] == [("1", "1")]
