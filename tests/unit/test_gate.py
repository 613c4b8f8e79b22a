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
