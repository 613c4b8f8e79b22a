"""Labelled synthetic images from a registered conditional generator, generated on Spark into the lake.

The driver resolves the model (failing before any Spark work if it is missing or does not fit the dataset), plans
generation tasks (label, first index, count, seed) and commits the result as a new dataset version whose
``synthetic`` table holds the ``images`` columns plus lineage (model name and version, the MLflow generation run).
Each Python worker loads the generator once and generates its tasks in batches. Generation is deterministic per
(model version, per-class count, seed): asking again for the same set is a no-op.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Iterator

import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from visionlake.lake import manifest as M
from visionlake import tracking
from visionlake.config import Config, ConfigError
from visionlake.lake.store import Lake, grouped_by_split, in_shuffled_order, new_run_id
from visionlake.lake.schema import IMAGE_FIELDS, LINEAGE_FIELDS

log = logging.getLogger(__name__)

TASK_SCHEMA = T.StructType([T.StructField("label", T.IntegerType(), False),
                            T.StructField("first_index", T.IntegerType(), False),
                            T.StructField("count", T.IntegerType(), False),
                            T.StructField("seed", T.LongType(), False)])
GENERATED_SCHEMA = T.StructType(IMAGE_FIELDS + LINEAGE_FIELDS + [T.StructField("split", T.StringType(), False)])
SYNTHETIC_SPLIT = "train"  # generated images are training data; evaluation stays on real images


@dataclass(frozen=True)
class GenerationTask:
    label: int
    first_index: int
    count: int
    seed: int


@dataclass(frozen=True)
class GenerationRequest:
    """What identifies a generated set (the noise is drawn per task, so the task size matters too); the same
    request twice is generated once."""
    model: str
    version: str
    per_class: int
    seed: int
    batch_size: int

    def key(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "per_class": self.per_class, "seed": self.seed,
                "batch_size": self.batch_size}


@dataclass
class SyntheticSummary:
    dataset: str
    version: int
    run_id: str
    mlflow_run_id: str
    model: str
    model_version: str
    counts: dict[str, int]
    path: str
    seconds: float
    already_present: bool = False

    def report(self) -> str:
        if self.already_present:
            return (f"{self.model} v{self.model_version} already generated this set for {self.dataset!r} "
                    f"(lake run {self.run_id}); nothing to do")
        return (f"generated {sum(self.counts.values())} images ({len(self.counts)} classes) with {self.model} "
                f"v{self.model_version} in {self.seconds:.0f}s -> {self.path} (dataset {self.dataset!r} version "
                f"{self.version}, lake run {self.run_id}, MLflow run {self.mlflow_run_id})")


# ---- pure planning ------------------------------------------------------------------------------------------------
def task_seed(seed: int, label: int, first_index: int) -> int:
    digest = hashlib.sha256(f"{seed}:{label}:{first_index}".encode()).digest()
    return int.from_bytes(digest[:7], "big")


def plan_tasks(num_classes: int, per_class: int, batch_size: int, seed: int) -> list[GenerationTask]:
    """Per class, ``per_class`` images in tasks of at most ``batch_size``, each with its own noise seed."""
    return [GenerationTask(label, first, min(batch_size, per_class - first), task_seed(seed, label, first))
            for label in range(num_classes) for first in range(0, per_class, batch_size)]


def find_existing(manifest: M.Manifest, request: GenerationRequest):
    """The live synthetic run that holds exactly this request, or None."""
    synthetic = (manifest.synthetic or {})
    for run in synthetic.get("runs", []):
        if run["request"] == request.key() and run["run_id"] in synthetic.get("live_runs", []):
            return run
    return None


def with_synthetic_run(manifest: M.Manifest, run_id: str, request: GenerationRequest, mlflow_run_id: str,
                       counts: dict[str, int], created_at: dt.datetime) -> dict[str, Any]:
    """The synthetic table's record after this run: ``manifest``'s plus one live run."""
    synthetic = manifest.synthetic or {"live_runs": [], "runs": [], "counts": {}}
    totals = dict(synthetic["counts"])
    for name, count in counts.items():
        totals[name] = totals.get(name, 0) + count
    record = {"run_id": run_id, "created_at": created_at.isoformat(), "request": request.key(),
              "mlflow_run_id": mlflow_run_id, "added": counts}
    return {"live_runs": synthetic["live_runs"] + [run_id], "runs": synthetic["runs"] + [record],
            "counts": dict(sorted(totals.items()))}


# ---- the worker side ----------------------------------------------------------------------------------------------
def generate_partition(tasks: Iterator[pd.DataFrame], *, model_uri: str, tracking_uri: str, model_name: str,
                       model_version: str, generation_run_id: str, label_names: tuple[str, ...],
                       codec, created_at: dt.datetime) -> Iterator[pd.DataFrame]:
    import tensorflow as tf

    from visionlake.models.generative import latent_size
    from visionlake.lake.images import content_hash
    from visionlake.evaluate.measures import to_uint8

    generator = tracking.worker_model(model_uri, tracking_uri)
    for frame in tasks:
        for task in frame.itertuples(index=False):
            latent = tf.random.Generator.from_seed(int(task.seed)).normal([int(task.count), latent_size(generator)])
            # Keras 3 refuses a call whose inputs mix tensors and arrays: both are tensors, on either stack.
            labels = tf.fill([int(task.count), 1], tf.constant(int(task.label), tf.int32))
            pixels = to_uint8(generator([latent, labels], training=False).numpy())
            rows = []
            for offset, image in enumerate(pixels):
                encoded = codec.encode(image)
                rows.append({"id": content_hash(image), "label": int(task.label),
                             "label_name": label_names[task.label], "height": image.shape[0],
                             "width": image.shape[1], "channels": image.shape[2], "image": encoded,
                             "source_path": f"{model_uri}#label={task.label}&index={task.first_index + offset}",
                             "source_sha256": hashlib.sha256(encoded).hexdigest(), "ingested_at": created_at,
                             "source_model": model_name, "source_model_version": model_version,
                             "generation_run_id": generation_run_id, "split": SYNTHETIC_SPLIT})
            yield pd.DataFrame(rows, columns=GENERATED_SCHEMA.fieldNames())


# ---- the driver side ----------------------------------------------------------------------------------------------
def generate_synthetic(spark: SparkSession, config: Config) -> SyntheticSummary:
    """Generates ``synthetic.per_class`` images per class into ``train.dataset``'s ``synthetic`` table.

    Raises:
        LakeError: the dataset has no committed version.
        TrackingError: the MLflow store is unusable, or the model is not registered.
        ConfigError: the model is not a conditional generator of this dataset's images and classes.
    """
    import mlflow

    started = time.perf_counter()
    settings, dataset = config.synthetic, config.train.dataset
    lake = Lake(spark, config.lake.root, commit_lock=config.lake.commit_lock, settings=config.lake)
    manifest = lake.require_manifest(dataset)
    experiment_id = tracking.connect(config.tracking)
    model = tracking.resolve_model(settings.model, "synthetic.model (--model)")
    label_names = tuple(manifest.label_names)
    _check_generator(model, manifest)
    request = GenerationRequest(model.name, model.version, settings.per_class, settings.seed, settings.batch_size)
    existing = find_existing(manifest, request)
    paths = lake.paths(dataset)
    if existing is not None:
        summary = SyntheticSummary(dataset, manifest.version, existing["run_id"], existing["mlflow_run_id"],
                                   model.name, model.version, existing["added"], paths.table("synthetic"), 0.0, True)
        log.info("%s", summary.report())
        return summary
    run_id, now = new_run_id(), dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    tasks = plan_tasks(len(label_names), settings.per_class, settings.batch_size, settings.seed)
    with tracking.tracked_run(experiment_id, f"generate-{dataset}") as run:
        mlflow.log_params({**{f"synthetic.{k}": v for k, v in request.key().items()}, "dataset": dataset,
                           **manifest.version_params()})
        mlflow.set_tags({"job": "generate", "dataset": dataset, "lake.run_id": run_id, "source.model": model.name,
                         "source.model_version": model.version, "source.run_id": model.run_id})
        log.info("generating %d images per class x %d classes with %s in %d task(s) (lake run %s)",
                 settings.per_class, len(label_names), model.uri, len(tasks), run_id)
        frame = spark.createDataFrame([(t.label, t.first_index, t.count, t.seed) for t in tasks], TASK_SCHEMA)
        partitions = min(len(tasks), config.lake.write_partitions or spark.sparkContext.defaultParallelism)
        generated = frame.repartition(partitions).mapInPandas(partial(
            generate_partition, model_uri=model.uri, tracking_uri=config.tracking.tracking_uri,
            model_name=model.name, model_version=model.version, generation_run_id=run.info.run_id,
            label_names=label_names, codec=manifest.image.stored_codec(), created_at=now),
            GENERATED_SCHEMA)
        generated = grouped_by_split(in_shuffled_order(generated, partitions))  # tasks are per label: mix them
        # The per-class counts are the plan's (every task yields its count), so the commit's record is known
        # before the rows are written, and the table is written once.
        counts = dict(sorted(_planned_counts(tasks, label_names).items()))
        lake.commit_synthetic(manifest, generated, run_id, with_synthetic_run(
            manifest, run_id, request, run.info.run_id, counts, now))
        version = manifest.version
        mlflow.log_metrics({"synthetic_images": sum(counts.values()), "seconds": time.perf_counter() - started})
        mlflow_run_id = run.info.run_id
    summary = SyntheticSummary(dataset, version, run_id, mlflow_run_id, model.name, model.version, counts,
                               paths.table("synthetic"), time.perf_counter() - started)
    log.info("%s", summary.report())
    return summary


def _planned_counts(tasks: list[GenerationTask], label_names: tuple[str, ...]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for task in tasks:
        counts[label_names[task.label]] = counts.get(label_names[task.label], 0) + task.count
    return counts


def _check_generator(model: tracking.ModelRef, manifest: M.Manifest) -> None:
    """A conditional generator whose output is this dataset's image shape and whose classes are its classes."""
    from mlflow.tracking import MlflowClient

    inputs, outputs = tracking.signature_shapes(model)
    image = manifest.image
    expected = list(image.shape)
    produced = outputs[0][1:] if outputs else None
    if len(inputs) != 2 or produced != expected:
        raise ConfigError(f"{model.uri} is not a conditional generator of {expected} images ({len(inputs)} input(s), "
                          f"output shape {produced}); use a cDCGAN trained on dataset {manifest.dataset!r}, e.g. "
                          "--model visionlake-cdcgan@champion")
    classes = MlflowClient().get_run(model.run_id).data.tags.get("model.num_classes")
    if classes is not None and int(classes) != len(manifest.label_names):
        raise ConfigError(f"{model.uri} was trained on {classes} classes but dataset {manifest.dataset!r} has "
                          f"{len(manifest.label_names)}")
