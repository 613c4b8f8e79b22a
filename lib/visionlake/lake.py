"""The lake's layout, versioned manifests, and atomic publish/commit of a run's tables.

Layout of one dataset under the lake root::

    <root>/<dataset>/
        images/split=<split>/run_id=<run>/part-*.parquet      Hive-partitioned, readable by Spark and petastorm
        tfrecord/split=<split>/run_id=<run>/part-*.tfrecord   tf.train.Example shards
        synthetic/split=train/run_id=<run>/part-*.parquet     generated images: the images columns plus lineage
        predictions/scored_date=<day>/run_id=<run>/*.parquet  batch scoring output with model lineage
        quarantine/run_id=<run>/part-*.parquet
        _manifests/v000001.json, v000002.json, ...           the commit log: the highest version is the truth
        manifest.json                                       a copy of the latest version, for people
        _staging/<run>/...                                  a run's output until it is published

A run writes only under ``_staging``, publishes each partition folder with one rename, then commits by creating the
next ``_manifests`` version (create-if-absent, so two writers cannot both commit). Partitions of runs that the latest
manifest does not list as live are rolled back at the next run's start: a failed run never changes what readers see.
Folders starting with ``_`` are ignored by Spark, pyarrow and petastorm readers.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any, Optional

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from visionlake.config import LakeConfig
from visionlake.schema import IMAGES_SCHEMA, PREDICTIONS_SCHEMA, QUARANTINE_SCHEMA, SYNTHETIC_SCHEMA
from visionlake.storage import HadoopStorage, StorageError

log = logging.getLogger(__name__)

# Tables with one partition level above run_id (split=..., or scored_date=... for predictions).
PARTITIONED_TABLES = ("images", "tfrecord", "synthetic", "predictions")
TABLE_SCHEMAS = {"images": IMAGES_SCHEMA, "synthetic": SYNTHETIC_SCHEMA, "predictions": PREDICTIONS_SCHEMA,
                 "quarantine": QUARANTINE_SCHEMA}
_VERSION_FILE = re.compile(r"^v(\d{6})\.json$")


def in_shuffled_order(frame: DataFrame, partitions: int, by: str = "id") -> DataFrame:
    """``frame`` spread over ``partitions`` and ordered in each by a hash of column ``by``.

    Deterministic, and independent of the source's order (a class-per-folder listing arrives sorted by class), so
    every written file and row group is a fair sample of the labels: training shards by row group and its shuffle
    buffer only has to mix neighbours. Ingest applies it to the raw records, before any pixel is decoded.
    """
    key = F.xxhash64(by)
    return frame.repartition(partitions, key).sortWithinPartitions(key, by)


def table_writer(frame: DataFrame, settings: LakeConfig, partition_by: Optional[str] = None):
    """How every lake table is written: row groups of ``lake.row_group_bytes`` in ``lake.parquet_compression``."""
    writer = frame.write.option("parquet.block.size", settings.row_group_bytes).option(
        "compression", settings.parquet_compression)
    return writer.partitionBy(partition_by) if partition_by else writer


def grouped_by_split(frame: DataFrame, by: str = "id") -> DataFrame:
    """Rows grouped by split for a partitioned write, keeping the ``in_shuffled_order`` order inside each split."""
    return frame.sortWithinPartitions("split", F.xxhash64(by), by)


class LakeError(RuntimeError):
    """The lake is missing, inconsistent, or was changed concurrently; the message says what to do."""


def new_run_id(now: Optional[dt.datetime] = None) -> str:
    """A sortable, unique run id that Spark never mistakes for a number in partition paths."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"r{now:%Y%m%dT%H%M%S}Z-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class DatasetPaths:
    root: str
    dataset: str

    @property
    def base(self) -> str:
        return f"{self.root.rstrip('/')}/{self.dataset}"

    def table(self, name: str) -> str:
        return f"{self.base}/{name}"

    @property
    def manifests(self) -> str:
        return f"{self.base}/_manifests"

    def manifest_version(self, version: int) -> str:
        return f"{self.manifests}/v{version:06d}.json"

    def staging(self, run_id: str) -> str:
        return f"{self.base}/_staging/{run_id}"


class Lake:
    """Reads and commits versions of the lake's datasets."""

    def __init__(self, spark: SparkSession, root: str):
        self.spark = spark
        self.storage = HadoopStorage(spark)
        self.root = self.storage.qualify(root)

    def paths(self, dataset: str) -> DatasetPaths:
        return DatasetPaths(self.root, dataset)

    # ---- manifests -------------------------------------------------------------------------------------------------
    def latest_version(self, dataset: str) -> int:
        names = self.storage.list_names(self.paths(dataset).manifests)
        versions = [int(m.group(1)) for m in map(_VERSION_FILE.match, names) if m]
        return max(versions, default=0)

    def read_manifest(self, dataset: str, version: Optional[int] = None) -> Optional[dict[str, Any]]:
        """The dataset's manifest at ``version`` (default: latest), or None when the dataset has no version yet."""
        version = version or self.latest_version(dataset)
        if version == 0:
            return None
        return json.loads(self.storage.read_text(self.paths(dataset).manifest_version(version)))

    def require_manifest(self, dataset: str) -> dict[str, Any]:
        manifest = self.read_manifest(dataset)
        if manifest is None:
            raise LakeError(f"dataset {dataset!r} has no committed version under {self.root}; "
                            "run `visionlake ingest` for it first")
        return manifest

    # ---- reading tables --------------------------------------------------------------------------------------------
    def read_table(self, dataset: str, table: str, manifest: Optional[dict[str, Any]] = None) -> DataFrame:
        """A table restricted to the manifest's live runs (empty with the right schema before the first commit)."""
        manifest = manifest if manifest is not None else self.read_manifest(dataset)
        schema = TABLE_SCHEMAS[table]
        location = self.paths(dataset).table(table)
        if manifest is None or not self.storage.exists(location):
            return self.spark.createDataFrame([], schema)
        frame = self.spark.read.option("basePath", location).schema(schema).parquet(location)
        return frame.filter(F.col("run_id").isin(manifest["live_runs"]))

    def table_files(self, dataset: str, table: str, split: str, manifest: dict[str, Any]) -> list[str]:
        """The Parquet files of one split of a table, live runs only; listed, nothing read."""
        folder = f"{self.paths(dataset).table(table)}/split={split}"
        live = set(manifest["live_runs"])
        files = []
        for run_folder in self.storage.list_names(folder, directories_only=True):
            if run_folder.startswith("run_id=") and run_folder[len("run_id="):] in live:
                files += [f"{folder}/{run_folder}/{name}" for name in self.storage.list_names(f"{folder}/{run_folder}")
                          if name.endswith(".parquet")]
        return sorted(files)

    # ---- writing ---------------------------------------------------------------------------------------------------
    def recover(self, dataset: str) -> list[str]:
        """Rolls back partitions no committed manifest lists and clears stale staging; returns what was removed."""
        manifest = self.read_manifest(dataset)
        live = set(manifest["live_runs"]) if manifest else set()
        paths = self.paths(dataset)
        removed = self._drop_dead_partitions(paths, live)
        if self.storage.exists(f"{paths.base}/_staging"):
            self.storage.delete(f"{paths.base}/_staging")
        if removed:
            log.warning("rolled back %d partition(s) of uncommitted runs in %s", len(removed), paths.base)
        return removed

    def _run_partitions(self, paths: DatasetPaths) -> list[str]:
        folders = []
        for table in PARTITIONED_TABLES:
            for split_dir in self.storage.list_names(paths.table(table), directories_only=True):
                parent = f"{paths.table(table)}/{split_dir}"
                folders += [f"{parent}/{name}" for name in self.storage.list_names(parent, True)
                            if name.startswith("run_id=")]
        quarantine = paths.table("quarantine")
        folders += [f"{quarantine}/{name}" for name in self.storage.list_names(quarantine, True)
                    if name.startswith("run_id=")]
        return folders

    def publish_and_commit(self, dataset: str, run_id: str, manifest: dict[str, Any]) -> int:
        """Moves the run's staged partitions into the tables and commits ``manifest`` as the next version.

        Raises:
            LakeError: another writer committed first; this run's partitions are rolled back.
        """
        paths = self.paths(dataset)
        staging = paths.staging(run_id)
        published = []
        for table in PARTITIONED_TABLES:
            for split_dir in self.storage.list_names(f"{staging}/{table}", directories_only=True):
                target = f"{paths.table(table)}/{split_dir}/run_id={run_id}"
                self.storage.rename(f"{staging}/{table}/{split_dir}", target)
                published.append(target)
        if self.storage.exists(f"{staging}/quarantine"):
            target = f"{paths.table('quarantine')}/run_id={run_id}"
            self.storage.rename(f"{staging}/quarantine", target)
            published.append(target)
        version = manifest["version"]
        try:
            self.storage.mkdirs(paths.manifests)
            self.storage.publish_text(paths.manifest_version(version), json.dumps(manifest, indent=2, default=str))
        except StorageError as error:
            for folder in published:
                self.storage.delete(folder)
            raise LakeError(f"could not commit version {version} of {dataset!r} ({error}); another ingest may "
                            "have committed it concurrently. Run one writer per dataset at a time, then re-run.")
        self.storage.delete(staging)
        self.storage.write_text(f"{paths.base}/manifest.json", json.dumps(manifest, indent=2, default=str),
                                overwrite=True)
        self._drop_dead_partitions(paths, set(manifest["live_runs"]))
        return version

    def _drop_dead_partitions(self, paths: DatasetPaths, live: set[str]) -> list[str]:
        dead = [folder for folder in self._run_partitions(paths) if folder.rsplit("run_id=", 1)[1] not in live]
        for folder in dead:
            self.storage.delete(folder)
        return dead
