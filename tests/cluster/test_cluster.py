"""The whole pipeline on a two-node Spark standalone cluster whose nodes share no local disk (tests/cluster/harness.py).

The workers see neither this checkout, its venv, its /tmp nor the MLflow server's files: they get Python from the
packed environment, code from the wheel, data from the shared lake folder, and models and artifacts from the
tracking server. Whatever still crosses a node through a local path fails here.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.cluster import harness
from tests.cluster.pipeline import PACKED_ENV, STAGES, Target, run_stage, write_raw
from tests.conftest import REPO
from tests.integration.test_airflow import AIRFLOW_PYTHON, DAG_ID, airflow_env

TIMINGS = REPO / "build" / "cluster" / "timings.json"


@pytest.fixture(scope="module")
def cluster():
    if not PACKED_ENV.exists():
        pytest.skip(f"needs the packed job environment {PACKED_ENV}: run `make cluster-env` (make test and "
                    "make cluster-test build it first)")
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"needs mount namespaces (`unshare -m`, as root): {probe.stderr.strip()}")
    already_up = harness.load() is not None and harness.is_running(harness.load())
    running = harness.up()
    yield running
    if not already_up:  # stop only what this test started
        harness.down()


@pytest.fixture(scope="module")
def target(cluster) -> Target:
    raw = Path(cluster.shared) / "raw" / "demo-raw"
    return Target(master=cluster.master_url, lake_root=cluster.lake_root, raw=str(raw),
                  tracking_uri=cluster.tracking_uri, spark_conf_dir=cluster.spark_conf_dir)


@pytest.fixture(scope="module")
def pipeline(target, visionlake_wheel, tmp_path_factory):
    """Runs every stage once through spark-submit; returns {stage: seconds} (also written for the note)."""
    files = write_raw(target)
    workdir = tmp_path_factory.mktemp("driver-workdir")
    seconds = {}
    for stage, job, flags in STAGES:
        result, seconds[stage] = run_stage(target, job, flags, visionlake_wheel, workdir)
        assert result.returncode == 0, f"{stage} failed on the cluster:\n{result.stdout[-6000:]}"
        assert f"from {visionlake_wheel}" in result.stdout, "the driver must run the shipped wheel"
    TIMINGS.parent.mkdir(parents=True, exist_ok=True)
    TIMINGS.write_text(json.dumps({"master": target.master, "seconds": seconds}, indent=2))
    return {"files": files, "seconds": seconds, "workdir": workdir}


def test_the_pipeline_runs_on_two_nodes_without_a_shared_local_disk(pipeline, target, spark):
    import mlflow
    from mlflow.tracking import MlflowClient

    from visionlake.operate.demo_data import bad_files
    from visionlake.lake.store import Lake

    lake = Lake(spark, target.lake_root)
    manifest = lake.read_manifest("demo")
    # ingest (v1), generate (v2), score (v3): each a committed version
    assert manifest.version == 3
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
    result, _ = run_stage(target, "train_classifier", ["--dataset", "demo"], visionlake_wheel, tmp_path,
                          extra=[f"train.checkpoint_root={tmp_path}/checkpoints"])
    assert result.returncode == 2, result.stdout[-3000:]
    assert "train.checkpoint_root" in result.stdout and "one node's disk" in result.stdout
    assert "starting 2 Horovod rank(s)" not in result.stdout


def test_the_airflow_dag_runs_the_pipeline_on_the_cluster(cluster, target, visionlake_wheel, tmp_path, spark):
    from mlflow.tracking import MlflowClient

    from visionlake.lake.store import Lake

    env = airflow_env(tmp_path / "airflow")
    env["SPARK_CONF_DIR"] = cluster.spark_conf_dir
    host, port = cluster.master_url.rsplit(":", 1)
    env["AIRFLOW_CONN_VISIONLAKE_SPARK"] = json.dumps({"conn_type": "spark", "host": host, "port": int(port)})
    env["AIRFLOW_VAR_VISIONLAKE_PY_FILES"] = str(visionlake_wheel)
    env["AIRFLOW_VAR_VISIONLAKE_ARCHIVES"] = f"{PACKED_ENV}#environment"
    env["AIRFLOW_VAR_VISIONLAKE_EXECUTOR_PYTHON"] = "./environment/bin/python"
    migrate = subprocess.run([str(AIRFLOW_PYTHON), "-m", "airflow", "db", "migrate"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    overrides = [o for o in target.overrides() if not o.startswith("ingest.source.uri=")]
    write_raw(target)
    run_conf = {"dataset": "parts", "raw_path": target.raw, "overrides": overrides, "train_gan": False}
    result = subprocess.run([str(AIRFLOW_PYTHON), "-m", "airflow", "dags", "test", DAG_ID, "-c", json.dumps(run_conf)],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    log = result.stdout + result.stderr
    assert result.returncode == 0 and "state=success" in log, log[-6000:]
    assert log.count(f"--master {cluster.master_url}") >= 4, "every Spark task is submitted to the cluster"

    lake = Lake(spark, target.lake_root)
    images = lake.read_table("parts", "images").count()
    assert images > 0 and lake.read_table("parts", "predictions").count() == images
    client = MlflowClient(tracking_uri=target.tracking_uri, registry_uri=target.tracking_uri)
    # Whether the pipeline test ran first or not, predictions name the champion the scoring task loaded.
    scored_with = lake.read_table("parts", "predictions").select("classifier_version").distinct().collect()
    assert [row.classifier_version for row in scored_with] == [
        str(client.get_model_version_by_alias("visionlake-classifier", "champion").version)]


def test_the_readme_cluster_commands_run_on_the_harness(cluster, target):
    """The README's commands for this harness, placeholders filled in, run as written from the checkout."""
    from tests.cluster.pipeline import job_env
    from tests.readme_commands import readme_commands

    commands = [c for c in readme_commands("cluster") if c.argv[0] == "spark-submit"]
    assert commands, "the README shows how to submit to the harness"
    host_port = cluster.master_url.rsplit(":", 1)[1]
    values = {"port": host_port, "shared": cluster.shared, "mlflow_port": cluster.tracking_uri.rsplit(":", 1)[1]}
    write_raw(target)
    for command in commands:
        argv = command.resolve(**{k: v for k, v in values.items() if k in command.placeholders})
        result = subprocess.run(argv, cwd=REPO, env={**job_env(target), **dict(command.env)},
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"{command}:\n{result.stdout[-4000:]}"
