"""The driver side every trainer shares: dataset -> image shape -> input plan -> ranks -> history.

Bad input fails before a trainer opens its MLflow run: ``open_dataset`` (no dataset, unusable tracking store; no
Spark work yet), then the trainer's own checks, then ``plan_training`` (too few images for the ranks).
``TrainingPlan.loop`` is the rank loop's job, and ``train_on_ranks`` runs it and collects what the ranks return.
The trainers add only their model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pyspark.sql import SparkSession

from visionlake import tracking
from visionlake.config import AugmentConfig, Config
from visionlake.lake.manifest import Manifest
from visionlake.lake.reader import InputSpec, TrainingInputs, plan_inputs
from visionlake.lake.store import Lake
from visionlake.train.launcher import RankSettings, default_num_proc, rank_settings, run_on_ranks
from visionlake.train.loop import LoopJob


@dataclass(frozen=True)
class TrainingPlan:
    """What a trainer decided on the driver before its MLflow run opened."""
    manifest: Manifest
    spec: InputSpec
    inputs: TrainingInputs
    num_proc: int
    rank_settings: RankSettings
    experiment_id: str
    tracking_uri: str
    checkpoint_root: str

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.manifest.label_names

    def dataset_tags(self) -> dict[str, Any]:
        """What every training run records about the data it read and how the ranks shared it."""
        manifest = self.manifest
        return {"dataset": manifest.dataset, "dataset.version": manifest.version,
                "dataset.digest": manifest.source.digest if manifest.source else "", "dataset.run_id": manifest.run_id,
                "horovod.num_proc": self.num_proc, "train.engine": self.rank_settings.engine,
                **manifest.version_params(("synthetic",) if self.inputs.synthetic else ()),
                **self.inputs.sharding_tags()}

    def loop(self, run_id: str, epochs: int, **options: Any) -> LoopJob:
        """The rank loop's job for MLflow run ``run_id`` (``options``: selection, synthetic mix)."""
        return LoopJob(rank_settings=self.rank_settings, spec=self.spec, epochs=epochs,
                       steps_per_epoch=self.inputs.steps, train=self.inputs.train, val=self.inputs.val,
                       tracking_uri=self.tracking_uri, run_id=run_id,
                       checkpoint_uri=f"{self.checkpoint_root}/{run_id}", **options)


@dataclass(frozen=True)
class OpenDataset:
    """A dataset's latest version and the tracking store, both checked: the first step of every trainer."""
    lake: Lake
    manifest: Manifest
    experiment_id: str


def open_dataset(spark: SparkSession, config: Config) -> OpenDataset:
    """Reads ``config.train.dataset``'s description at ``train.dataset_version`` (0: the latest) and connects to the
    tracking store.

    Raises:
        LakeError: the dataset has no committed version.
        TrackingError: the MLflow store is unusable.
    """
    lake = Lake(spark, config.lake.root)
    manifest = lake.require_manifest(config.train.dataset, config.train.dataset_version or None)
    return OpenDataset(lake, manifest, tracking.connect(config.tracking))


def plan_training(spark: SparkSession, config: Config, dataset: OpenDataset, *, batch_size: int, max_steps: int,
                  section: str, reader: str = "petastorm", scale: str = "unit",
                  augment: AugmentConfig = AugmentConfig(), labels: tuple[int, ...] = (),
                  synthetic_fraction: float = 0.0) -> TrainingPlan:
    """Shards the opened dataset over the ranks (one Spark job over the Parquet footers). ``section`` names the
    trainer's config section in error messages.

    Raises:
        ConfigError: too few images for the ranks and batch, or no data for the chosen reader or mix.
    """
    shared, manifest = config.train, dataset.manifest
    num_proc = default_num_proc(spark, shared.num_proc)
    spec = InputSpec(image_shape=manifest.image.shape, batch_size=batch_size, reader=reader, scale=scale,
                     shuffle_buffer=shared.shuffle_buffer, seed=shared.seed, augment=augment, labels=tuple(labels),
                     tfrecord_compression=manifest.tfrecord_compression or "none", codec=manifest.image.codec)
    inputs = plan_inputs(spark, dataset.lake, manifest, num_proc=num_proc, batch_size=batch_size,
                         max_steps=max_steps, reader=reader, synthetic_fraction=synthetic_fraction, section=section,
                         labels=tuple(labels))
    return TrainingPlan(manifest, spec, inputs, num_proc, rank_settings(spark, shared, num_proc),
                        dataset.experiment_id, config.tracking.tracking_uri, shared.checkpoint_root)


def train_on_ranks(spark: SparkSession, plan: TrainingPlan, rank_main: Callable, job: Any,
                   run_id: str) -> tuple[list[dict[str, Any]], list[dict[str, float]]]:
    """Runs ``rank_main(job)`` on the plan's ranks; returns their results in rank order and the run's epoch
    history as MLflow recorded it (rank 0 logs)."""
    results = sorted(run_on_ranks(spark, rank_main, (job,), plan.num_proc, plan.rank_settings.engine),
                     key=lambda result: result["rank"])
    return results, tracking.metric_history(run_id, results[0]["history"])
