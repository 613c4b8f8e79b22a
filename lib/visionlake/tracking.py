"""Shared MLflow helpers: connect (failing fast), runs that end FAILED on errors, params, and the promotion gate."""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterator, Optional

from visionlake.config import TrackingConfig

log = logging.getLogger(__name__)

CANDIDATE, CHAMPION = "candidate", "champion"
# A probe of an unreachable server must not sit through MLflow's default retries (minutes) before training.
_PROBE_ENVIRONMENT = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


class TrackingError(RuntimeError):
    """The MLflow tracking store cannot be used; the message names the URI and what to check."""


def artifact_location(root: str) -> str:
    return root if "://" in root or root.startswith("file:") else "file://" + os.path.abspath(root)


@contextlib.contextmanager
def _probe_environment() -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in _PROBE_ENVIRONMENT}
    os.environ.update(_PROBE_ENVIRONMENT)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def connect(tracking: TrackingConfig) -> str:
    """Points MLflow at the configured store and returns the experiment id, creating the experiment if needed.

    Raises:
        TrackingError: the store is unreachable or the URI is malformed (checked before any training starts).
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    try:
        with _probe_environment():
            mlflow.set_tracking_uri(tracking.tracking_uri)
            client = MlflowClient(tracking.tracking_uri)
            experiment = client.get_experiment_by_name(tracking.experiment)
            experiment_id = experiment.experiment_id if experiment else client.create_experiment(
                tracking.experiment, artifact_location=artifact_location(tracking.artifact_root))
    except Exception as error:  # noqa: BLE001 - MLflow raises many types for a bad store; one message for all
        raise TrackingError(f"cannot use the MLflow tracking store {tracking.tracking_uri!r}: "
                            f"{str(error).splitlines()[0][:300]}. Check tracking.tracking_uri (a sqlite:/// file "
                            "or the URL of a running MLflow server)") from error
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> MLflow params ``{"train.batch_size": "32", ...}``."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = str(value)[:6000]
    return flat


@contextlib.contextmanager
def tracked_run(experiment_id: str, run_name: str, resume_run_id: Optional[str] = None) -> Iterator[Any]:
    """An MLflow run (resumed when ``resume_run_id`` is given) that ends FAILED if the body raises."""
    import mlflow

    run = mlflow.start_run(run_id=resume_run_id, experiment_id=None if resume_run_id else experiment_id,
                           run_name=None if resume_run_id else run_name)
    try:
        yield run
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run(status="FINISHED")


def gate_and_promote(model_name: str, version: str, metric: str, value: float) -> dict[str, Any]:
    """Sets ``candidate`` on the new version and moves ``champion`` to it only if it beats the current champion.

    The decision and both figures are recorded as tags on the model version and on its run.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    client.set_registered_model_alias(model_name, CANDIDATE, version)
    try:
        champion = client.get_model_version_by_alias(model_name, CHAMPION)
        champion_value = client.get_run(champion.run_id).data.metrics.get(metric)
        champion_version = champion.version
    except MlflowException:
        champion_value, champion_version = None, None
    promoted = champion_value is None or value > champion_value
    if promoted:
        client.set_registered_model_alias(model_name, CHAMPION, version)
    decision = {"gate.metric": metric, "gate.candidate_value": f"{value:.6f}",
                "gate.champion_value": "none" if champion_value is None else f"{champion_value:.6f}",
                "gate.champion_version": str(champion_version or "none"),
                "gate.decision": "promoted" if promoted else "kept_champion"}
    run_id = client.get_model_version(model_name, version).run_id
    for key, tag in decision.items():
        client.set_model_version_tag(model_name, version, key, tag)
        client.set_tag(run_id, key, tag)
    log.info("model %s version %s: %s (%s %.4f vs champion %s)", model_name, version, decision["gate.decision"],
             metric, value, decision["gate.champion_value"])
    return decision
