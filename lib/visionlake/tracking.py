"""Shared MLflow helpers: connect (failing fast), runs that end FAILED on errors, params, and the promotion gate."""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

from visionlake.config import TrackingConfig
from visionlake.console import library_prints_to_log
from visionlake.uris import file_uri, has_scheme

log = logging.getLogger(__name__)

CANDIDATE, CHAMPION = "candidate", "champion"
# A probe of an unreachable server must not sit through MLflow's default retries (minutes) before training.
_PROBE_ENVIRONMENT = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


class TrackingError(RuntimeError):
    """The MLflow tracking store cannot be used; the message names the URI and what to check."""


def artifact_location(root: str) -> Optional[str]:
    """The new experiment's artifact location; None (empty ``root``) lets a tracking server store and serve them."""
    if not root:
        return None
    return root if has_scheme(root) else file_uri(root)


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


@dataclass(frozen=True)
class ModelRef:
    """A registered model version resolved from a reference such as ``name@champion``."""
    name: str
    version: str
    run_id: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def parse_model_reference(reference: str) -> tuple[str, Optional[str], Optional[str]]:
    """``[models:/]name[@alias|/version]`` -> (name, alias, version); a bare name means its ``champion``.

    Raises:
        ValueError: an empty name.
    """
    body = reference.strip().removeprefix("models:/")
    if "@" in body:
        name, alias = body.split("@", 1)
        version = None
    elif "/" in body:
        name, version = body.rsplit("/", 1)
        alias = None
    else:
        name, alias, version = body, CHAMPION, None
    if not name or (alias is not None and not alias) or (version is not None and not version.isdigit()):
        raise ValueError(f"model reference {reference!r}: use name, name@alias, name/version or models:/...")
    return name, alias, version


def resolve_model(reference: str, what: str) -> ModelRef:
    """Resolves a registry reference to one version, before any Spark or training work.

    Raises:
        TrackingError: malformed, or no such model, alias or version; ``what`` names the config key to fix.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        name, alias, version = parse_model_reference(reference)
    except ValueError as error:
        raise TrackingError(f"{what}: {error}") from None
    client = MlflowClient()
    try:
        found = (client.get_model_version_by_alias(name, alias) if alias
                 else client.get_model_version(name, version))
    except MlflowException as error:
        known = [m.name for m in client.search_registered_models(max_results=50)]
        raise TrackingError(f"{what}: model {reference!r} is not in the registry at {mlflow_uri()} "
                            f"({str(error).splitlines()[0][:200]}). Registered models: {known or 'none'}. Train and "
                            "register it first, or point the setting at an existing name@alias") from None
    return ModelRef(found.name, str(found.version), found.run_id)


def mlflow_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


def gate_and_promote(model_name: str, version: str, metric: str, value: Optional[float],
                     higher_is_better: bool = True, comparable_on: tuple[str, ...] = ()) -> dict[str, Any]:
    """Sets ``candidate`` on the new version and moves ``champion`` to it only if it beats the current champion.

    A version without a figure (``value`` None) only becomes champion when there is none. ``comparable_on`` names
    version tags that must match for the figures to be comparable (e.g. what an anomaly model calls normal); a
    champion that differs in one of them is replaced, since the new version follows the current configuration. The
    decision and both figures are recorded as tags on the model version and on its run.
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
        champion, champion_value, champion_version = None, None, None
    candidate_tags = client.get_model_version(model_name, version).tags if comparable_on else {}
    differs = [tag for tag in comparable_on
               if champion is not None and champion.tags.get(tag) != candidate_tags.get(tag)]
    if champion is None or differs:
        promoted = True
    elif value is None:
        promoted = False
    else:
        promoted = champion_value is None or (value > champion_value if higher_is_better else value < champion_value)
    if promoted:
        client.set_registered_model_alias(model_name, CHAMPION, version)
    decision = {"gate.metric": metric, "gate.direction": "higher" if higher_is_better else "lower",
                "gate.candidate_value": "none" if value is None else f"{value:.6f}",
                "gate.champion_value": "none" if champion_value is None else f"{champion_value:.6f}",
                "gate.champion_version": str(champion_version or "none"),
                "gate.decision": "promoted" if promoted else "kept_champion",
                "gate.not_comparable_on": ",".join(differs) or "none"}
    run_id = client.get_model_version(model_name, version).run_id
    for key, tag in decision.items():
        client.set_model_version_tag(model_name, version, key, tag)
        client.set_tag(run_id, key, tag)
    log.info("model %s version %s: %s (%s %s vs champion %s)", model_name, version, decision["gate.decision"],
             metric, decision["gate.candidate_value"], decision["gate.champion_value"])
    return decision


def metric_history(run_id: str, rank_zero_history: list[dict[str, float]]) -> list[dict[str, float]]:
    """The run's per-epoch records from MLflow, so a resumed run's curves include the epochs before the restart.

    The keys are those of this attempt's records (``rank_zero_history``, or all the run's metrics when it is empty);
    epochs missing a key logged every epoch are left out; keys logged on some epochs only (quality metrics) are kept
    where present.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    if rank_zero_history:
        keys = {k for record in rank_zero_history for k in record} - {"epoch"}
        every_epoch = set.intersection(*(set(record) for record in rank_zero_history)) - {"epoch"}
    else:  # resumed after its last epoch: nothing ran this time, everything is in MLflow
        keys, every_epoch = set(client.get_run(run_id).data.metrics), set()
    by_epoch: dict[int, dict[str, float]] = {}
    for key in sorted(keys):
        for metric in client.get_metric_history(run_id, key):
            by_epoch.setdefault(metric.step, {"epoch": metric.step})[key] = metric.value
    return [by_epoch[e] for e in sorted(by_epoch) if every_epoch <= set(by_epoch[e])] or rank_zero_history


# What a registered model needs to load, pinned to this environment's versions. Given explicitly, MLflow skips
# inferring them, which loads every model once more in a subprocess (5-10 s per model, measured).
KERAS_MODEL_PACKAGES = (("tensorflow", "tensorflow-cpu", "tensorflow-gpu"), ("numpy",), ("cloudpickle",))
SCORER_PACKAGES = KERAS_MODEL_PACKAGES + (("pandas",), ("visionlake",))


def model_requirements(packages: tuple[tuple[str, ...], ...]) -> list[str]:
    """``name==version`` for the first installed distribution of each group (e.g. TensorFlow's CPU build)."""
    from importlib import metadata

    pins = []
    for candidates in packages:
        for name in candidates:
            try:
                pins.append(f"{name}=={metadata.version(name)}")
                break
            except metadata.PackageNotFoundError:
                continue
    return pins


def log_keras_model(model, registered_name: str, with_example: bool = True) -> str:
    """Logs a Keras model with a tensor signature (named inputs when it has several), registers it under
    ``registered_name`` and returns the new version."""
    import mlflow
    import numpy as np
    from mlflow.models import infer_signature

    # Input tensors by name and numpy dtype, in a form Keras 2 (tf.DType) and Keras 3 (dtype names) both give.
    examples = {tensor.name.split(":")[0]: np.zeros((2, *tensor.shape[1:]),
                                                    np.dtype(getattr(tensor.dtype, "as_numpy_dtype", tensor.dtype)))
                for tensor in model.inputs}
    single = len(examples) == 1
    model_input = next(iter(examples.values())) if single else examples
    signature = infer_signature(model_input, model.predict(model_input if single else list(examples.values()),
                                                           verbose=0))
    with library_prints_to_log("mlflow"):
        info = mlflow.tensorflow.log_model(model, name="model", signature=signature,
                                           registered_model_name=registered_name,
                                           input_example=model_input if with_example and single else None,
                                           pip_requirements=model_requirements(KERAS_MODEL_PACKAGES))
    return str(info.registered_model_version)


def signature_shapes(model: ModelRef) -> tuple[list[list[int]], list[list[int]]]:
    """(input shapes, output shapes) of a registered model's tensor signature, batch dimension included."""
    from mlflow.models import get_model_info

    signature = get_model_info(model.uri).signature
    if signature is None:
        return [], []
    shapes = [[spec["tensor-spec"]["shape"] for spec in schema.to_dict()] for schema in (signature.inputs,
                                                                                       signature.outputs)]
    return [list(s) for s in shapes[0]], [list(s) for s in shapes[1]]


_WORKER_MODELS: dict[tuple[str, Any], Any] = {}


def load_keras_model(uri: str):
    """A registered Keras model (the ``tensorflow`` flavour)."""
    import mlflow.tensorflow

    return mlflow.tensorflow.load_model(uri)


def worker_model(uri: str, tracking_uri: str, load: Callable[[str], Any] = load_keras_model):
    """A registered model loaded once per Python worker process, however many partitions or tasks it serves.

    ``load`` turns the model's URI into the object to use (a Keras model by default; scoring passes the scorer's
    loader, so this module never imports model code).
    """
    key = (uri, load)
    if key not in _WORKER_MODELS:
        import mlflow

        mlflow.set_tracking_uri(tracking_uri)
        _WORKER_MODELS[key] = load(uri)
    return _WORKER_MODELS[key]
