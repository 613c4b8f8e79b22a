"""The evaluation gate on a real (SQLite) MLflow registry: figures are compared only between comparable versions."""
from __future__ import annotations

from visionlake.config import TrackingConfig
from visionlake.tracking import connect, gate_and_promote, model_requirements

NORMAL = "anomaly.normal_labels"


def test_gate_compares_like_with_like_and_replaces_a_champion_of_another_normal_set(tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    connect(TrackingConfig(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=str(tmp_path / "art"),
                           experiment="gate"))
    client = MlflowClient()
    client.create_registered_model("detector")

    def register(auroc: float, normal: str) -> str:
        with mlflow.start_run() as run:
            mlflow.log_metric("val_auroc", auroc)
        version = client.create_model_version("detector", f"{run.info.artifact_uri}/model", run.info.run_id).version
        client.set_model_version_tag("detector", version, NORMAL, normal)
        return version

    def gate(version: str, auroc: float) -> dict:
        return gate_and_promote("detector", version, "val_auroc", auroc, comparable_on=(NORMAL,))

    first = register(0.90, "0,1")
    assert gate(first, 0.90)["gate.decision"] == "promoted"
    worse = register(0.80, "0,1")
    assert gate(worse, 0.80)["gate.decision"] == "kept_champion"
    other_normal = register(0.70, "2")
    decision = gate(other_normal, 0.70)

    assert decision["gate.decision"] == "promoted" and decision["gate.not_comparable_on"] == NORMAL
    assert client.get_model_version_by_alias("detector", "champion").version == other_normal


def test_model_requirements_pin_the_first_installed_distribution_of_each_group():
    import numpy as np

    assert model_requirements((("no-such-build-of-numpy", "numpy"), ("no-such-package",))) == \
        [f"numpy=={np.__version__}"]


def test_a_new_experiment_stores_artifacts_at_a_uri_or_leaves_them_to_the_server(tmp_path):
    from visionlake.tracking import artifact_location

    assert artifact_location("") is None  # a tracking server stores and serves them
    assert artifact_location("s3a://bucket/mlflow") == "s3a://bucket/mlflow"
    assert artifact_location("file:/srv/mlflow") == "file:/srv/mlflow"
    assert artifact_location(str(tmp_path / "art")) == f"file://{tmp_path}/art"  # a local folder as a file URI


def test_a_worker_loads_each_model_once_per_loader_and_points_mlflow_at_its_store(tmp_path, monkeypatch):
    import mlflow

    from visionlake import tracking

    monkeypatch.setattr(tracking, "_WORKER_MODELS", {})  # this test's own cache: no model of another test is reused
    previous = mlflow.get_tracking_uri()
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    loads = []

    def load(uri):
        loads.append(uri)
        return object()

    def other_loader(uri):
        loads.append(("other", uri))
        return object()

    try:
        first = tracking.worker_model("models:/m/1", store, load)
        assert mlflow.get_tracking_uri() == store
        assert tracking.worker_model("models:/m/1", store, load) is first
        assert tracking.worker_model("models:/m/2", store, load) is not first
        assert tracking.worker_model("models:/m/1", store, other_loader) is not first
        assert loads == ["models:/m/1", "models:/m/2", ("other", "models:/m/1")]
    finally:
        mlflow.set_tracking_uri(previous)
