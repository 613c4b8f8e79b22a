"""The whole pipeline on a two-node Spark standalone cluster whose nodes share no local disk (tests/cluster/harness.py).

The workers see neither this checkout, its venv, its /tmp nor the MLflow server's files: they get Python from the
packed environment, code from the wheel, data from the shared lake folder, and models and artifacts from the
tracking server. Whatever still crosses a node through a local path fails here.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.cluster import harness
from tests.cluster.pipeline import PACKED_ENV, Target, job_env, run_stage, write_raw
from tests.conftest import REPO, suite_spark_defaults
from tests.readme_commands import readme_commands
from tests.integration.test_airflow import AIRFLOW_PYTHON, DAG_ID, airflow_env

TIMINGS = REPO / "build" / "cluster" / "timings.json"


@pytest.fixture(scope="module")
def cluster():
    if not PACKED_ENV.exists():
        pytest.skip(f"needs the packed job environment {PACKED_ENV}: run `make cluster-env` (make test and "
                    "make cluster-test build it first)")
    reason = harness.missing_prerequisites()
    if reason:
        pytest.skip(reason)
    already_up = harness.load() is not None and harness.is_running(harness.load())
    running = harness.up(client_conf=suite_spark_defaults())
    yield running
    if not already_up:  # stop only what this test started
        harness.down()


@pytest.fixture(scope="module")
def target(cluster) -> Target:
    raw = Path(cluster.shared) / "raw" / "demo-raw"
    return Target(master=cluster.master_url, lake_root=cluster.lake_root, raw=str(raw),
                  tracking_uri=cluster.tracking_uri, spark_conf_dir=cluster.spark_conf_dir)


@pytest.fixture(scope="module")
def pipeline(cluster, target, visionlake_wheel, tmp_path_factory):
    """The pipeline on the cluster, run once for every test below, the way users run it: the README's cluster
    commands (the ingest), then the Airflow DAG (ingest again, which finds nothing new, the classifier, the VAE
    detector, the cDCGAN, scoring), then the synthetic images through spark-submit. Returns what each part left.

    The README's commands and the synthetic stage ship the packed environment (``--archives``); the DAG's tasks
    use it installed on the nodes (its ``visionlake_executor_python`` variable), the other way to give executors
    the job stack, which spares each of its five applications three unpacks of the archive."""
    files = write_raw(target)
    workdir = tmp_path_factory.mktemp("driver-workdir")
    seconds = {}
    lake = Path(target.lake_root) / "demo"

    commands = [c for c in readme_commands("cluster") if c.argv[0] == "spark-submit"]
    values = {"port": cluster.master_url.rsplit(":", 1)[1], "shared": cluster.shared,
              "mlflow_port": cluster.tracking_uri.rsplit(":", 1)[1]}
    started = time.perf_counter()
    for command in commands:
        argv = command.resolve(**{k: v for k, v in values.items() if k in command.placeholders})
        result = subprocess.run(argv, cwd=REPO, env={**job_env(target), **dict(command.env)},
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"{command}:\n{result.stdout[-4000:]}"
    seconds["readme commands"] = time.perf_counter() - started
    after_readme = sorted(p.name for p in lake.iterdir()) if lake.exists() else []

    started = time.perf_counter()
    dag = run_dag_on_cluster(cluster, target, visionlake_wheel, tmp_path_factory.mktemp("airflow"), workdir)
    seconds["airflow dag"] = time.perf_counter() - started

    result, seconds["generate_synthetic"] = run_stage(target, "generate_synthetic",
                                                      ["--dataset", "demo", "--per-class", "20"], visionlake_wheel,
                                                      workdir)
    assert result.returncode == 0, f"generate_synthetic failed on the cluster:\n{result.stdout[-6000:]}"
    assert f"from {visionlake_wheel}" in result.stdout, "the driver must run the shipped wheel"
    TIMINGS.parent.mkdir(parents=True, exist_ok=True)
    TIMINGS.write_text(json.dumps({"master": target.master, "seconds": seconds}, indent=2))
    return {"files": files, "seconds": seconds, "workdir": workdir, "readme": commands, "after_readme": after_readme,
            "dag_log": dag}


def run_dag_on_cluster(cluster, target: Target, wheel: Path, home: Path, workdir: Path) -> str:
    """``airflow dags test`` of the pipeline DAG on dataset demo, every Spark task submitted to the cluster with the
    wheel, its executors on the job environment installed on the nodes, from ``workdir``; returns the log."""
    env = airflow_env(home)
    env["SPARK_CONF_DIR"] = cluster.spark_conf_dir
    host, port = cluster.master_url.rsplit(":", 1)
    env["AIRFLOW_CONN_VISIONLAKE_SPARK"] = json.dumps({"conn_type": "spark", "host": host, "port": int(port)})
    env["AIRFLOW_VAR_VISIONLAKE_PY_FILES"] = str(wheel)
    env["AIRFLOW_VAR_VISIONLAKE_EXECUTOR_PYTHON"] = harness.install_job_env(PACKED_ENV)  # nothing to ship
    migrate = subprocess.run([str(AIRFLOW_PYTHON), "-m", "airflow", "db", "migrate"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    overrides = [o for o in target.overrides() if not o.startswith("ingest.source.uri=")]
    run_conf = {"dataset": "demo", "raw_path": target.raw, "overrides": overrides, "train_gan": True, "compact": True}
    result = subprocess.run([str(AIRFLOW_PYTHON), "-m", "airflow", "dags", "test", DAG_ID, "-c", json.dumps(run_conf)],
                            env=env, cwd=workdir, capture_output=True, text=True, timeout=2400)
    log = result.stdout + result.stderr
    assert result.returncode == 0 and "state=success" in log, log[-6000:]
    return log


def test_the_pipeline_runs_on_two_nodes_without_a_shared_local_disk(pipeline, target, spark):
    import mlflow
    from mlflow.tracking import MlflowClient

    from visionlake.operate.demo_data import bad_files
    from visionlake.lake.store import Lake

    lake = Lake(spark, target.lake_root)
    manifest = lake.read_manifest("demo")
    # one ingest (the DAG's ingest found nothing new; its compaction task may add an OPTIMIZE version); scoring and
    # generation commit their own tables, written by the cluster's executors through Delta
    assert len(manifest.live_runs) == 1 and manifest.table_versions["predictions"] is not None
    assert manifest.table_versions["synthetic"] is not None
    images = lake.read_table("demo", "images").count()
    assert images == pipeline["files"] - len(bad_files())
    assert lake.read_table("demo", "quarantine").count() == len(bad_files())
    assert lake.read_table("demo", "synthetic").count() == 5 * 20

    client = MlflowClient(tracking_uri=target.tracking_uri, registry_uri=target.tracking_uri)
    champions = {name: client.get_model_version_by_alias(name, "champion")
                 for name in ("visionlake-classifier", "visionlake-anomaly", "visionlake-cdcgan")}
    assert {name: str(version.version) for name, version in champions.items()} == dict.fromkeys(champions, "1")

    predictions = lake.read_table("demo", "predictions")
    assert predictions.count() == images
    lineage = predictions.select("classifier_model", "classifier_version", "anomaly_model", "anomaly_version",
                                 "scoring_run_id").distinct().collect()
    assert len(lineage) == 1
    row = lineage[0]
    assert (row.classifier_model, row.classifier_version, row.anomaly_model, row.anomaly_version) == (
        "visionlake-classifier", "1", "visionlake-anomaly", "1")
    assert client.get_run(row.scoring_run_id).info.status == "FINISHED"

    # Rank 0 ran on a worker: its metrics, checkpoints and artifacts had to go through the server and the lake.
    classifier_run = champions["visionlake-classifier"].run_id
    run = client.get_run(classifier_run)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), "artifacts are served by the tracking server"
    assert len(client.get_metric_history(classifier_run, "val_accuracy")) == 3
    downloaded = mlflow.artifacts.download_artifacts(run_id=classifier_run, tracking_uri=target.tracking_uri,
                                                     artifact_path="evaluation/confusion_matrix.png")
    assert Path(downloaded).read_bytes().startswith(b"\x89PNG")
    gan_run = champions["visionlake-cdcgan"].run_id
    samples = [a.path for a in client.list_artifacts(gan_run, "samples")]
    assert samples, "rank 0 logs the GAN's sample grids from its node through the server"
    checkpoints = Path(target.lake_root) / "_checkpoints" / classifier_run
    assert (checkpoints / "latest").exists() and (checkpoints / "best.pkl").exists()
    # Nothing but the driver's own log landed in its working directory: no MLflow store, checkpoints or lake.
    assert sorted(p.name for p in pipeline["workdir"].iterdir()) == ["visionlake.log"], "only the driver's own log"


def test_a_node_local_checkpoint_root_is_refused_before_any_work(target, visionlake_wheel, tmp_path):
    # The refusal comes before any executor runs Python: no packed environment to ship (and unpack three times).
    result, _ = run_stage(target, "train_classifier", ["--dataset", "demo"], visionlake_wheel, tmp_path,
                          extra=[f"train.checkpoint_root={tmp_path}/checkpoints"], ship_env=False)
    assert result.returncode == 2, result.stdout[-3000:]
    assert "train.checkpoint_root" in result.stdout and "one node's disk" in result.stdout
    assert "starting 2 Horovod rank(s)" not in result.stdout


def test_the_airflow_dag_ran_every_task_on_the_cluster(pipeline, cluster, target, visionlake_wheel, spark):
    from mlflow.tracking import MlflowClient

    from visionlake.lake.store import Lake

    log = pipeline["dag_log"]
    assert log.count(f"--master {cluster.master_url}") >= 5, "every Spark task is submitted to the cluster"
    assert log.count(f"--py-files {visionlake_wheel}") == 6, "every Spark task ships the wheel"
    assert "optimize of dataset 'demo'" in log, "the compaction task ran"
    lake = Lake(spark, target.lake_root)
    images = lake.read_table("demo", "images").count()
    assert images > 0 and lake.read_table("demo", "predictions").count() == images
    client = MlflowClient(tracking_uri=target.tracking_uri, registry_uri=target.tracking_uri)
    for name in ("visionlake-anomaly", "visionlake-cdcgan"):  # train_anomaly and train_gan registered champions
        assert client.get_model_version_by_alias(name, "champion").version
    scored_with = lake.read_table("demo", "predictions").select("classifier_version").distinct().collect()
    assert [row.classifier_version for row in scored_with] == [
        str(client.get_model_version_by_alias("visionlake-classifier", "champion").version)]


def test_the_readme_cluster_commands_ran_on_the_harness(pipeline):
    """The README's commands for this harness, placeholders filled in, ran as written from the checkout: they are
    the pipeline's ingest (the DAG's own ingest then found the lake already holding the drop)."""
    assert pipeline["readme"], "the README shows how to submit to the harness"
    assert "images" in pipeline["after_readme"] and "quarantine" in pipeline["after_readme"], pipeline["after_readme"]
