"""The lake: each dataset's Delta Lake tables, its versioned description, and the commits of every job.

Layout of one dataset under the lake root::

    <root>/<dataset>/
        images/split=<split>/part-*.parquet            Delta table, partitioned by split; the run is a column
        quarantine/part-*.parquet                      Delta table: every rejected file, with its reason
        synthetic/split=train/part-*.parquet           Delta table: generated images plus their lineage
        predictions/scored_date=<day>/part-*.parquet   Delta table: batch scoring output with model lineage
        tfrecord/run_id=<run>/split=<split>/*.tfrecord tf.train.Example shards, outside every table folder
                                                       (Delta's VACUUM deletes files a table does not track)
        _locks/<table>.lock                            each table's write lock, on local and NFS paths

Any engine reads the tables as Delta (``spark.read.format("delta")``, delta-rs, polars, DuckDB); Delta does the
format: the log, atomic commits, snapshot isolation, time travel, ``VACUUM``. ``lake.delta`` is the I/O edge.

**The dataset's version** is the ``images`` table's Delta version (version 0 is the empty table, so the first
ingest commits version 1). Each ``images`` commit carries the dataset's description (``Manifest``: image settings,
labels, counts, TFRecord shards, the ``quarantine`` version it goes with, the source record) as JSON in its
``userMetadata``, committed in the same atomic step as the rows; ``read_manifest(dataset, version)`` reads it back
from the table's history.

**Generations.** The first ingest and every full rebuild start a generation of the dataset (named by that run's
id). Synthetic and predictions commits record the generation and the ``images`` version they were made from, and a
description read at a version pairs only with commits of its own generation, so a rebuild never pairs new images
with predictions of the old ones, also when it was interrupted before it emptied those tables.

**Crash safety.** Ingest commits ``quarantine`` first (an append whose ``txnAppId`` is the run's id) and then
``images``: a run that dies between the two leaves quarantine rows whose source paths the next run skips, and no
images, so the re-run decodes only the images again. TFRecord shards are written before the ``images`` commit that
lists them; shards no version lists are removed by ``vacuum`` once older than the retention.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from visionlake.config import LakeConfig
from visionlake.lake.delta import Commit, ConcurrentCommitError, DeltaTableError, DeltaTables
from visionlake.lake.filesystem import HadoopStorage
from visionlake.lake.manifest import Manifest
from visionlake.lake.schema import IMAGES_SCHEMA, PREDICTIONS_SCHEMA, QUARANTINE_SCHEMA, SYNTHETIC_SCHEMA

log = logging.getLogger(__name__)

TABLE_SCHEMAS = {"images": IMAGES_SCHEMA, "synthetic": SYNTHETIC_SCHEMA, "predictions": PREDICTIONS_SCHEMA,
                 "quarantine": QUARANTINE_SCHEMA}
# What readers filter on; the run is a column.
PARTITION_BY = {"images": "split", "quarantine": None, "synthetic": "split", "predictions": "scored_date"}
# Tables whose commits belong to a generation of the dataset (see the module docstring).
DERIVED_TABLES = ("synthetic", "predictions")
DESCRIPTION_KEY = "dataset"  # the key of the description in an images commit's userMetadata
_RUN_ID = re.compile(r"^r(\d{8}T\d{6})Z-[0-9a-f]+$")
_LEGACY_LOG = "_manifests"  # the version log of the table format before Delta Lake
_LEGACY_FOLDER = "_legacy"
# Commits a description lookup reads first: the one it needs is almost always among the newest few.
_HISTORY_PAGE = 10


def in_shuffled_order(frame: DataFrame, partitions: int, by: str = "id") -> DataFrame:
    """``frame`` spread over ``partitions`` and ordered in each by a hash of column ``by``.

    Deterministic, and independent of the source's order (a class-per-folder listing arrives sorted by class), so
    every written file and row group is a fair sample of the labels: training shards by row group and its shuffle
    buffer only has to mix neighbours. Ingest applies it to the raw records, before any pixel is decoded.
    """
    key = F.xxhash64(by)
    return frame.repartition(partitions, key).sortWithinPartitions(key, by)


def grouped_by_split(frame: DataFrame, by: str = "id") -> DataFrame:
    """Rows grouped by split for a partitioned write, keeping the ``in_shuffled_order`` order inside each split."""
    return frame.sortWithinPartitions("split", F.xxhash64(by), by)


class LakeError(RuntimeError):
    """The lake is missing, inconsistent, or was changed concurrently; the message says what to do."""


def new_run_id(now: Optional[dt.datetime] = None) -> str:
    """A sortable, unique run id."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"r{now:%Y%m%dT%H%M%S}Z-{uuid.uuid4().hex[:6]}"


def run_started_at(run_id: str) -> Optional[dt.datetime]:
    """The start time ``new_run_id`` put in a run id, or None for another form."""
    match = _RUN_ID.match(run_id)
    if not match:
        return None
    return dt.datetime.strptime(match.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class DatasetPaths:
    root: str
    dataset: str

    @property
    def base(self) -> str:
        return f"{self.root.rstrip('/')}/{self.dataset}"

    def table(self, name: str) -> str:
        return f"{self.base}/{name}"

    def tfrecord_run(self, run_id: str) -> str:
        """Where one ingest run writes its TFRecord shards (``split=<split>/`` below)."""
        return f"{self.table('tfrecord')}/run_id={run_id}"


@dataclass
class VacuumReport:
    """What ``Lake.vacuum`` removed (or, in a dry run, would remove): (kind, location) per file or folder."""
    dataset: str
    version: int
    retention_hours: float
    cutoff: dt.datetime
    dry_run: bool
    removed: list[tuple[str, str]] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(1 for item in self.removed if item[0] == kind)

    def report(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        kinds = sorted({kind for kind, _ in self.removed})
        lines = [f"vacuum of dataset {self.dataset!r} at version {self.version} (retention {self.retention_hours:g} h: "
                 f"files superseded before {self.cutoff:%Y-%m-%d %H:%M:%S}Z){' - dry run' if self.dry_run else ''}",
                 f"  {verb} {len(self.removed)} item(s)"
                 + (": " + ", ".join(f"{self.count(kind)} of {kind}" for kind in kinds) if kinds else "")]
        lines += [f"    {kind:11s} {location}" for kind, location in self.removed]
        return "\n".join(lines)


@dataclass
class OptimizeReport:
    """What ``Lake.optimize`` compacted: per table, (files removed, files added)."""
    dataset: str
    tables: dict[str, tuple[int, int]] = field(default_factory=dict)

    def report(self) -> str:
        lines = [f"optimize of dataset {self.dataset!r}: {sum(r for r, _ in self.tables.values())} file(s) compacted "
                 f"into {sum(a for _, a in self.tables.values())}"]
        lines += [f"  {table:11s} {removed} -> {added} file(s)" for table, (removed, added) in self.tables.items()]
        return "\n".join(lines)


@dataclass(frozen=True)
class TableVersion:
    """One version of one of a dataset's tables, as ``visionlake history`` lists it."""
    table: str
    version: int
    timestamp: dt.datetime
    operation: str
    job: str
    run_id: str
    rows: str

    @classmethod
    def of(cls, table: str, commit: Commit) -> "TableVersion":
        rows = commit.metrics.get("numOutputRows") or commit.metrics.get("numTargetRowsInserted") or ""
        return cls(table, commit.version, commit.timestamp, commit.operation, commit.metadata.get("job", ""),
                   commit.metadata.get("run_id", ""), rows)


def history_report(dataset: str, versions: list[TableVersion]) -> str:
    """``visionlake history``'s table: one line per version of each table, newest first."""
    lines = [f"history of dataset {dataset!r} ({len(versions)} table version(s))",
             f"  {'table':11s} {'version':>7s}  {'committed (UTC)':19s}  {'operation':17s} {'job':9s} "
             f"{'run':26s} rows"]
    lines += [f"  {v.table:11s} {v.version:>7d}  {v.timestamp:%Y-%m-%d %H:%M:%S}  {v.operation:17s} {v.job:9s} "
              f"{v.run_id:26s} {v.rows}" for v in versions]
    return "\n".join(lines)


class Lake:
    """Reads and commits versions of the lake's datasets."""

    def __init__(self, spark: SparkSession, root: str, commit_lock: str = "", settings: Optional[LakeConfig] = None):
        """``commit_lock``: ``lake.commit_lock``, a local or NFS folder for the tables' write locks ("" = beside
        each table on local and NFS paths). ``settings``: the ``lake`` section, for row groups and compression."""
        self.spark = spark
        self.storage = HadoopStorage(spark)
        self.root = self.storage.qualify(root)
        self.settings = settings or LakeConfig()
        self.delta = DeltaTables(spark, commit_lock)
        # (dataset, table, version) -> that version's files: a version never changes, and a trainer plans three
        # splits of it (one planning each cost a table snapshot and a scan plan, about a second).
        self._planned: dict[tuple[str, str, int], list[str]] = {}

    def paths(self, dataset: str) -> DatasetPaths:
        return DatasetPaths(self.root, dataset)

    # ---- versions and the description -----------------------------------------------------------------------------
    def _history(self, dataset: str, table: str, limit: Optional[int] = None) -> list[Commit]:
        """The table's commits, newest first (``limit``: only the newest ``limit``); none when there is no table."""
        path = self.paths(dataset).table(table)
        if not self.delta.exists(path):
            if table == "images":
                self._refuse_legacy(dataset)
            return []
        return self.delta.history(path, limit)

    def _newest(self, dataset: str, table: str, wanted: Callable[[Commit], bool],
                skip: int = 0) -> Optional[Commit]:
        """The newest commit of ``table`` that ``wanted`` accepts, passing over the newest ``skip``. Reads the newest
        commits first: a history of every version costs a read of each of its commit files."""
        limit = skip + _HISTORY_PAGE
        commits = self._history(dataset, table, limit)
        if len(commits) == limit and not any(wanted(c) for c in commits[skip:]):
            commits = self._history(dataset, table)
        return next((c for c in commits[skip:] if wanted(c)), None)

    def _refuse_legacy(self, dataset: str) -> None:
        if self.storage.exists(f"{self.paths(dataset).base}/{_LEGACY_LOG}"):
            raise LakeError(f"dataset {dataset!r} under {self.root} is in the table format visionlake wrote before "
                            f"Delta Lake; rebuild it on Delta with `visionlake ingest --dataset {dataset} "
                            f"ingest.full_rebuild=true` (its old folders move under "
                            f"{self.paths(dataset).base}/{_LEGACY_FOLDER}/)")

    def latest_version(self, dataset: str) -> int:
        """The dataset's latest version (its ``images`` table's Delta version; 0 before the first ingest)."""
        path = self.paths(dataset).table("images")
        if not self.delta.exists(path):
            self._refuse_legacy(dataset)
            return 0
        return self.delta.latest_version(path) or 0

    def read_manifest(self, dataset: str, version: Optional[int] = None) -> Optional[Manifest]:
        """The dataset's description at ``version`` (default: latest), with the table versions that go with it;
        None when nothing was ingested yet.

        Raises:
            LakeError: no such version, or the description cannot be read.
        """
        if not self.delta.exists(self.paths(dataset).table("images")):
            self._refuse_legacy(dataset)
            return None
        latest = self.latest_version(dataset)
        wanted = latest if version is None else version
        if not 0 <= wanted <= latest:
            raise LakeError(f"dataset {dataset!r} has no version {version}; its versions are 0-{latest} "
                            f"(DESCRIBE HISTORY delta.`{self.paths(dataset).table('images')}` lists them)")
        commit = self._newest(dataset, "images", lambda c: c.version <= wanted and DESCRIPTION_KEY in c.metadata,
                              skip=latest - wanted)
        if commit is None:
            return None
        try:
            manifest = Manifest.from_json(commit.metadata[DESCRIPTION_KEY])
        except (KeyError, TypeError, ValueError) as error:
            raise LakeError(f"version {commit.version} of {self.paths(dataset).table('images')} carries a dataset "
                            f"description this visionlake cannot read (at {error}); it was written by a newer "
                            "visionlake: upgrade") from None
        versions = {"images": wanted, "quarantine": manifest.table_versions.get("quarantine")}
        sections: dict[str, Any] = {}
        for table in DERIVED_TABLES:
            derived = self._newest(dataset, table, lambda c: c.metadata.get("generation") == manifest.generation
                                   and c.metadata.get("images_version", wanted + 1) <= wanted)
            versions[table] = derived.version if derived else None
            sections[table] = derived.metadata.get(table) if derived else None
        return dataclasses.replace(manifest, version=wanted, table_versions=versions, **sections)

    def require_manifest(self, dataset: str, version: Optional[int] = None) -> Manifest:
        manifest = self.read_manifest(dataset, version)
        if manifest is None:
            raise LakeError(f"dataset {dataset!r} has no committed version under {self.root}; "
                            "run `visionlake ingest` for it first")
        return manifest

    # ---- reading tables --------------------------------------------------------------------------------------------
    def read_table(self, dataset: str, table: str, manifest: Optional[Manifest] = None) -> DataFrame:
        """A table at the version that goes with ``manifest`` (default: the latest); empty, with the table's schema,
        when it has none."""
        manifest = manifest if manifest is not None else self.read_manifest(dataset)
        version = manifest.table_versions.get(table) if manifest is not None else None
        if version is None:
            return self.spark.createDataFrame([], TABLE_SCHEMAS[table])
        return self._read(dataset, table, version)

    def read_latest(self, dataset: str, table: str) -> DataFrame:
        """A table's latest version, whatever description it goes with (empty when there is no table)."""
        path = self.paths(dataset).table(table)
        if not self.delta.exists(path):
            return self.spark.createDataFrame([], TABLE_SCHEMAS[table])
        return self._read(dataset, table, None)

    def _read(self, dataset: str, table: str, version: Optional[int]) -> DataFrame:
        try:
            return self.delta.read(self.paths(dataset).table(table), version)
        except DeltaTableError as error:
            raise LakeError(str(error)) from None

    def table_files(self, dataset: str, table: str, split: str, manifest: Manifest) -> list[str]:
        """The Parquet files of one split of a table at the version that goes with ``manifest``, planned from the
        Delta log; nothing is listed or read."""
        version = manifest.table_versions.get(table)
        if version is None:
            return []
        path = self.paths(dataset).table(table)
        try:
            if (dataset, table, version) not in self._planned:
                self._planned[dataset, table, version] = self.delta.files(path, version)
            files = [f for f in self._planned[dataset, table, version] if f"/split={split}/" in f]
            self.delta.check_present(path, version, files)  # VACUUM may have run since it was planned
        except DeltaTableError as error:
            raise LakeError(str(error)) from None
        return files

    # ---- writing ---------------------------------------------------------------------------------------------------
    def _write_options(self, table: str) -> dict[str, Any]:
        return {"partition_by": PARTITION_BY[table], "row_group_bytes": self.settings.row_group_bytes,
                "compression": self.settings.parquet_compression}

    def _ensure(self, dataset: str, table: str) -> str:
        path = self.paths(dataset).table(table)
        self.delta.create(path, TABLE_SCHEMAS[table], PARTITION_BY[table])
        return path

    def _conform(self, frame: DataFrame, table: str, run_id: str) -> DataFrame:
        """``frame`` with the run's id and the table's columns in the table's order."""
        if "run_id" not in frame.columns:
            frame = frame.withColumn("run_id", F.lit(run_id))
        return frame.select([f.name for f in TABLE_SCHEMAS[table].fields])

    def _empty(self, table: str) -> DataFrame:
        return self.spark.createDataFrame([], TABLE_SCHEMAS[table])

    def retire_legacy(self, dataset: str) -> None:
        """Moves a dataset in the table format before Delta Lake under ``<dataset>/_legacy/<time>/`` (a full rebuild
        then writes it on Delta); nothing happens to a Delta dataset."""
        paths = self.paths(dataset)
        if self.delta.exists(paths.table("images")) or not self.storage.exists(f"{paths.base}/{_LEGACY_LOG}"):
            return
        target = f"{paths.base}/{_LEGACY_FOLDER}/{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}"
        for name in self.storage.list_names(paths.base):
            if name not in (_LEGACY_FOLDER, "_locks"):
                self.storage.rename(f"{paths.base}/{name}", f"{target}/{name}")
        log.warning("moved dataset %r's folders in the table format before Delta Lake to %s; this run rebuilds it "
                    "on Delta (delete that folder once nothing reads it)", dataset, target)

    def commit_ingest(self, manifest: Manifest, images: DataFrame, quarantine: Optional[DataFrame], *,
                      full_rebuild: bool, based_on: int) -> Manifest:
        """Commits an ingest run: its quarantine rows, then its images with ``manifest`` as the description; returns
        the description as committed (with its version). ``based_on``: the dataset version the run started from.

        Incremental: the quarantine rows are appended once per run (``txnAppId``), the images inserted unless their
        id (content hash) is already in the table (``MERGE``), so concurrent runs never duplicate an image. Full
        rebuild: each table is overwritten in one commit, and synthetic and predictions, made from the replaced
        images, are emptied.

        Raises:
            LakeError: another writer committed ``images`` since ``based_on`` (the description would lose its
                work): nothing of this run's images is committed, and a re-run adds them.
        """
        dataset, run_id = manifest.dataset, manifest.run_id
        images_path, quarantine_path = self._ensure(dataset, "images"), self._ensure(dataset, "quarantine")
        note = {"job": "ingest", "run_id": run_id, "generation": manifest.generation}
        if full_rebuild:
            rows = self._conform(quarantine, "quarantine", run_id) if quarantine is not None else self._empty(
                "quarantine")
            self.delta.overwrite(rows, quarantine_path, metadata=note, **self._write_options("quarantine"))
        elif quarantine is not None:
            self.delta.append(self._conform(quarantine, "quarantine", run_id), quarantine_path, metadata=note,
                              txn=(f"visionlake-ingest-{run_id}", 0), **self._write_options("quarantine"))
        quarantine_version = self.delta.latest_version(quarantine_path)
        # Counted from the table, so rows a run that died before its images commit left are counted too.
        counts = [] if self.delta.is_empty(quarantine_path) else \
            self.delta.read(quarantine_path, quarantine_version).groupBy("reason").count().collect()
        described = dataclasses.replace(manifest, table_versions={"quarantine": quarantine_version},
                                        quarantine={row["reason"]: row["count"] for row in sorted(counts)})
        metadata = {**note, DESCRIPTION_KEY: described.to_json()}
        rows = self._conform(images, "images", run_id)
        try:
            if full_rebuild:
                self.delta.overwrite(rows, images_path, metadata=metadata, based_on=based_on,
                                     **self._write_options("images"))
            else:
                self.delta.insert_new(rows, images_path, "id", metadata=metadata, based_on=based_on,
                                      **self._write_options("images"))
        except ConcurrentCommitError:
            raise LakeError(f"version {based_on + 1} of dataset {dataset!r} was committed by another writer while "
                            f"run {run_id} was running; this run's images were not committed, and the dataset holds "
                            "the other writer's version. Re-run to add this run's work on top of it (its rejected "
                            "files are recorded already), and run one writer per dataset at a time") from None
        version = self.delta.latest_version(images_path)
        if full_rebuild:
            for table in DERIVED_TABLES:
                path = self.paths(dataset).table(table)
                if self.delta.exists(path):
                    self.delta.overwrite(self._empty(table), path, metadata={
                        **note, "images_version": version, table: None}, **self._write_options(table))
        return self.require_manifest(dataset, version)

    def commit_synthetic(self, manifest: Manifest, frame: DataFrame, run_id: str, section: dict[str, Any]) -> int:
        """Appends generated images (with their lineage columns) made from ``manifest``'s images; ``section`` is
        the synthetic table's record (its runs and counts) after this commit. Returns the table's version."""
        path = self._ensure(manifest.dataset, "synthetic")
        metadata = {"job": "generate", "run_id": run_id, "generation": manifest.generation,
                    "images_version": manifest.version, "synthetic": section}
        rows = self._conform(frame, "synthetic", run_id)
        if manifest.table_versions.get("synthetic") is None:  # rows of another generation go
            self.delta.overwrite(rows, path, metadata=metadata, **self._write_options("synthetic"))
        else:
            self.delta.append(rows, path, metadata=metadata, **self._write_options("synthetic"))
        return self.delta.latest_version(path)

    def commit_predictions(self, manifest: Manifest, frame: DataFrame, run_id: str, slice_key: str,
                           section: dict[str, Any]) -> int:
        """Replaces the rows of one scoring slice (``slice_id``) with ``frame`` in one commit; ``section`` is the
        predictions table's record (its slices) after it. Returns the table's version."""
        path = self._ensure(manifest.dataset, "predictions")
        metadata = {"job": "score", "run_id": run_id, "generation": manifest.generation,
                    "images_version": manifest.version, "predictions": section}
        rows = self._conform(frame, "predictions", run_id)
        replace_where = None if manifest.table_versions.get("predictions") is None else f"slice_id = '{slice_key}'"
        self.delta.overwrite(rows, path, metadata=metadata, replace_where=replace_where,
                             **self._write_options("predictions"))
        return self.delta.latest_version(path)

    def append_quarantine(self, dataset: str, frame: DataFrame, run_id: str, job: str) -> None:
        """Adds rows another job rejected (e.g. lake images scoring could not decode), once per run."""
        path = self._ensure(dataset, "quarantine")
        self.delta.append(self._conform(frame, "quarantine", run_id), path, metadata={"job": job, "run_id": run_id},
                          txn=(f"visionlake-{job}-{run_id}", 0), **self._write_options("quarantine"))

    # ---- maintenance -----------------------------------------------------------------------------------------------
    def history(self, dataset: str) -> list[TableVersion]:
        """Every version of each of the dataset's tables, newest first per table.

        Raises:
            LakeError: the dataset has no committed version.
        """
        self.require_manifest(dataset)
        return [TableVersion.of(table, commit) for table in TABLE_SCHEMAS for commit in self._history(dataset, table)]

    def optimize(self, dataset: str) -> OptimizeReport:
        """Delta ``OPTIMIZE`` of each table: small files (one set per incremental run) compacted in one commit per
        table, in ``lake.row_group_bytes`` row groups. Each compacted file holds its input files' rows one file
        after another, each in its pseudo-random order, so every row group still mixes the labels.

        Raises:
            LakeError: the dataset has no committed version.
        """
        self.require_manifest(dataset)
        report = OptimizeReport(dataset)
        for table in TABLE_SCHEMAS:
            path = self.paths(dataset).table(table)
            if self.delta.exists(path):
                metrics = self.delta.optimize(path, metadata={"job": "optimize"},
                                              row_group_bytes=self.settings.row_group_bytes,
                                              compression=self.settings.parquet_compression)
                report.tables[table] = (int(metrics.get("numFilesRemoved", 0)), int(metrics.get("numFilesAdded", 0)))
        log.info("%s", report.report())
        return report

    def vacuum(self, dataset: str, retention_hours: float, dry_run: bool = False,
               now: Optional[dt.datetime] = None) -> VacuumReport:
        """Delta ``VACUUM`` of each table with ``retention_hours``, and removal of TFRecord shards of runs no version
        within the retention lists, once their run is older than it. Reading a version whose files were removed
        fails clearly.

        Raises:
            LakeError: the dataset has no committed version.
            ValueError: ``retention_hours`` is negative.
        """
        if retention_hours < 0:
            raise ValueError(f"retention_hours must be >= 0, got {retention_hours}")
        manifest = self.require_manifest(dataset)
        now = now or dt.datetime.now(dt.timezone.utc)
        cutoff = now - dt.timedelta(hours=retention_hours)
        report = VacuumReport(dataset, manifest.version, retention_hours, cutoff, dry_run)
        for table in TABLE_SCHEMAS:
            path = self.paths(dataset).table(table)
            if self.delta.exists(path):
                report.removed += [(table, location) for location in
                                   self.delta.vacuum(path, retention_hours, dry_run=dry_run)]
        for folder in self._unlisted_shard_runs(dataset, manifest, cutoff):
            report.removed.append(("tfrecord", folder))
            if not dry_run:
                self.storage.delete(folder)
        log.info("%s", report.report())
        return report

    def _unlisted_shard_runs(self, dataset: str, latest: Manifest, cutoff: dt.datetime) -> list[str]:
        """TFRecord run folders that neither the latest description nor one committed after ``cutoff`` lists,
        whose run started before ``cutoff`` (a run still writing its shards has not committed yet)."""
        listed = {f.split("/", 2)[1] for files in latest.tfrecord_files.values() for f in files}
        for commit in self._history(dataset, "images"):
            if commit.timestamp.astimezone(dt.timezone.utc) > cutoff and DESCRIPTION_KEY in commit.metadata:
                for files in commit.metadata[DESCRIPTION_KEY].get("tfrecord_files", {}).values():
                    listed |= {f.split("/", 2)[1] for f in files}
        folder = self.paths(dataset).table("tfrecord")
        unlisted = []
        for name in self.storage.list_names(folder, directories_only=True):
            started = run_started_at(name.split("=", 1)[-1])
            if name.startswith("run_id=") and name not in listed and started is not None and started <= cutoff:
                unlisted.append(f"{folder}/{name}")
        return unlisted
