"""The lake's layout, versioned manifests, atomic publish/commit of a run's tables, and vacuum.

Layout of one dataset under the lake root::

    <root>/<dataset>/
        images/split=<split>/run_id=<run>/part-*.parquet      Hive-partitioned, readable by Spark and petastorm
        tfrecord/split=<split>/run_id=<run>/part-*.tfrecord   tf.train.Example shards
        synthetic/split=train/run_id=<run>/part-*.parquet     generated images: the images columns plus lineage
        predictions/scored_date=<day>/run_id=<run>/*.parquet  batch scoring output with model lineage
        quarantine/run_id=<run>/part-*.parquet
        _manifests/v000001.json, v000002.json, ...           the commit log: the highest version is the truth
        manifest.json                                       a copy of the latest version, for people
        _staging/<run>/...                                  a run's output until it is published, and
        _staging/<run>/_writer.json                         which process writes it (host, pid, start time)
        _vacuumed/<run>                                     a run `vacuum` removed (older versions list it)

**Commits.** A run writes only under ``_staging``, publishes each partition folder with one rename, then commits by
creating the next ``_manifests`` version with ``HadoopStorage.publish_text``: whole, and only if absent. On local
file systems (and NFS) and on HDFS that create is exclusive, so of two writers that commit the same version exactly
one succeeds; the other rolls its published partitions back and fails with ``LakeError``. Object stores (s3a, gs,
abfs, ...) have no exclusive create: each commit there logs a warning, unless ``lake.commit_lock`` names a folder on
a file system that has one, where the commit holds ``<lock>/<dataset>.lock`` (created exclusively, removed after).

**Snapshot isolation.** A commit never deletes files: partitions that the new version no longer lists (a full
rebuild's predecessors, a re-scored slice's previous run) stay on disk, so a reader or a training run still on the
older version reads it to the end, and ``read_table(..., manifest=<older version>)`` works. Each manifest records
when it was committed (``committed_at``) and when each run left the live runs (``superseded``). ``vacuum`` removes
partitions superseded longer ago than ``lake.retention_hours`` and what failed runs left behind; it never removes a
run the latest version lists, and leaves a ``_vacuumed/<run>`` marker so that reading a vacuumed version fails
with a clear error instead of returning part of it.

**Recovery.** At the start of every write, ``recover`` rolls back the leftovers of failed runs (staging, and
partitions no committed version ever listed) whose writer is known to be gone: this process, or a process on this
host that no longer runs. A run written from another host, or by a live process here, may still be in flight: it is
left alone until ``vacuum`` finds it older than the retention. One process runs one write at a time.

Folders starting with ``_`` are ignored by Spark, pyarrow and petastorm readers.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from visionlake.config import LakeConfig
from visionlake.lake.schema import IMAGES_SCHEMA, PREDICTIONS_SCHEMA, QUARANTINE_SCHEMA, SYNTHETIC_SCHEMA
from visionlake.lake.manifest import Manifest
from visionlake.lake.filesystem import HadoopStorage, StorageError, TargetExistsError, is_temporary

log = logging.getLogger(__name__)

# Tables with one partition level above run_id (split=..., or scored_date=... for predictions).
PARTITIONED_TABLES = ("images", "tfrecord", "synthetic", "predictions")
TABLE_SCHEMAS = {"images": IMAGES_SCHEMA, "synthetic": SYNTHETIC_SCHEMA, "predictions": PREDICTIONS_SCHEMA,
                 "quarantine": QUARANTINE_SCHEMA}
_VERSION_FILE = re.compile(r"^v(\d{6})\.json$")
_RUN_ID = re.compile(r"^r(\d{8}T\d{6})Z-[0-9a-f]+$")
_WRITER_FILE = "_writer.json"
# Temporary files a crashed commit left in _manifests are removed by vacuum once at least this old.
_TEMPORARY_GRACE = dt.timedelta(hours=1)
# A reader that meets a version file not yet complete JSON (only possible where hard links are unsupported and the
# commit falls back to O_EXCL) retries for this long before failing.
_PARTIAL_MANIFEST_RETRY_SECONDS = 2.0


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

    @property
    def staging_root(self) -> str:
        return f"{self.base}/_staging"

    def staging(self, run_id: str) -> str:
        return f"{self.staging_root}/{run_id}"

    @property
    def vacuumed(self) -> str:
        return f"{self.base}/_vacuumed"


@dataclass
class VacuumReport:
    """What ``Lake.vacuum`` removed (or, in a dry run, would remove): (kind, location, bytes) per item."""
    dataset: str
    version: int
    retention_hours: float
    cutoff: dt.datetime
    dry_run: bool
    removed: list[tuple[str, str, int]] = field(default_factory=list)
    kept_superseded: list[str] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(1 for item in self.removed if item[0] == kind)

    @property
    def bytes(self) -> int:
        return sum(item[2] for item in self.removed)

    def report(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        lines = [f"vacuum of dataset {self.dataset!r} at version {self.version} (retention {self.retention_hours:g} h: "
                 f"superseded before {self.cutoff:%Y-%m-%d %H:%M:%S}Z){' - dry run' if self.dry_run else ''}",
                 f"  {verb} {len(self.removed)} item(s), {self.bytes:,} bytes: "
                 f"{self.count('superseded')} superseded partition(s), {self.count('uncommitted')} partition(s) of "
                 f"uncommitted runs, {self.count('staging')} staging folder(s), {self.count('temporary')} "
                 "temporary file(s)"]
        lines += [f"    {kind:11s} {size:>12,d}  {location}" for kind, location, size in self.removed]
        if self.kept_superseded:
            lines.append(f"  kept {len(self.kept_superseded)} superseded partition(s) within the retention")
        return "\n".join(lines)


def run_started_at(run_id: str) -> Optional[dt.datetime]:
    """The start time ``new_run_id`` put in a run id, or None for another form."""
    match = _RUN_ID.match(run_id)
    if not match:
        return None
    return dt.datetime.strptime(match.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=dt.timezone.utc)


def _timestamp(text: Optional[str]) -> Optional[dt.datetime]:
    if not text:
        return None
    stamp = dt.datetime.fromisoformat(text)
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.timezone.utc)


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _process_started(pid: int) -> Optional[str]:
    """An identifier of the process's start (Linux: its start time in clock ticks), or None when it is not running.
    With a pid and this, a reused pid is never mistaken for the process that wrote a run."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except FileNotFoundError:
        return None
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except OSError:
        pass
    return "running"


def writer_identity() -> dict[str, Any]:
    """What a run's ``_writer.json`` records about the process that writes it."""
    return {"host": socket.gethostname(), "pid_namespace": _pid_namespace(), "pid": os.getpid(),
            "process_started": _process_started(os.getpid()),
            "started_at": dt.datetime.now(dt.timezone.utc).isoformat()}


def writer_state(writer: Optional[dict[str, Any]]) -> str:
    """``gone``, ``running`` or ``unknown``: the process that wrote a run's ``_writer.json``.

    Gone: no record, this very process (which runs one write at a time and is starting another), or a process on
    this host (same pid namespace) that no longer runs, also when its pid was reused. A writer on another host
    cannot be checked: unknown.
    """
    if writer is None:
        return "gone"
    if writer.get("host") != socket.gethostname() or writer.get("pid_namespace") != _pid_namespace():
        return "unknown"
    if writer.get("pid") == os.getpid():
        return "gone"
    started = _process_started(int(writer.get("pid", -1)))
    if started is None or (started != "running" and started != writer.get("process_started")):
        return "gone"
    return "running"


class Lake:
    """Reads and commits versions of the lake's datasets."""

    def __init__(self, spark: SparkSession, root: str, commit_lock: str = ""):
        """``commit_lock``: ``lake.commit_lock``, a folder where commits take ``<dataset>.lock`` ("" = none)."""
        self.spark = spark
        self.storage = HadoopStorage(spark)
        self.root = self.storage.qualify(root)
        self.commit_lock = self.storage.qualify(commit_lock) if commit_lock else ""

    def paths(self, dataset: str) -> DatasetPaths:
        return DatasetPaths(self.root, dataset)

    # ---- manifests -------------------------------------------------------------------------------------------------
    def latest_version(self, dataset: str) -> int:
        names = self.storage.list_names(self.paths(dataset).manifests)
        versions = [int(m.group(1)) for m in map(_VERSION_FILE.match, names) if m]
        return max(versions, default=0)

    def read_manifest(self, dataset: str, version: Optional[int] = None) -> Optional[Manifest]:
        """The dataset's manifest at ``version`` (default: latest), or None when the dataset has no version yet.

        Raises:
            LakeError: the version file is not complete JSON (after retrying for a commit still writing it).
        """
        version = version or self.latest_version(dataset)
        if version == 0:
            return None
        location = self.paths(dataset).manifest_version(version)
        deadline = time.monotonic() + _PARTIAL_MANIFEST_RETRY_SECONDS
        while True:
            try:
                document = json.loads(self.storage.read_text(location))
            except ValueError as error:
                if time.monotonic() > deadline:
                    raise LakeError(f"{location} is not a complete manifest ({error}); if no writer is committing "
                                    f"{dataset!r}, the file is damaged: restore it from a backup") from None
                time.sleep(0.1)
                continue
            try:
                return Manifest.from_json(document)
            except (KeyError, TypeError) as error:
                raise LakeError(f"{location} is not a manifest this visionlake can read (at {error}); it was "
                                "damaged, or written by a newer visionlake: upgrade, or restore it from a backup") \
                    from None

    def require_manifest(self, dataset: str) -> Manifest:
        manifest = self.read_manifest(dataset)
        if manifest is None:
            raise LakeError(f"dataset {dataset!r} has no committed version under {self.root}; "
                            "run `visionlake ingest` for it first")
        return manifest

    # ---- reading tables --------------------------------------------------------------------------------------------
    def read_table(self, dataset: str, table: str, manifest: Optional[Manifest] = None) -> DataFrame:
        """A table restricted to the manifest's live runs (empty with the right schema before the first commit)."""
        manifest = manifest if manifest is not None else self.read_manifest(dataset)
        schema = TABLE_SCHEMAS[table]
        location = self.paths(dataset).table(table)
        if manifest is None or not self.storage.exists(location):
            return self.spark.createDataFrame([], schema)
        self._check_not_vacuumed(dataset, manifest)
        frame = self.spark.read.option("basePath", location).schema(schema).parquet(location)
        return frame.filter(F.col("run_id").isin(list(manifest.live_runs)))

    def table_files(self, dataset: str, table: str, split: str, manifest: Manifest) -> list[str]:
        """The Parquet files of one split of a table, live runs only; listed, nothing read."""
        folder = f"{self.paths(dataset).table(table)}/split={split}"
        live = set(manifest.live_runs)
        self._check_not_vacuumed(dataset, manifest)
        files = []
        for run_folder in self.storage.list_names(folder, directories_only=True):
            if run_folder.startswith("run_id=") and run_folder[len("run_id="):] in live:
                files += [f"{folder}/{run_folder}/{name}" for name in self.storage.list_names(f"{folder}/{run_folder}")
                          if name.endswith(".parquet")]
        return sorted(files)

    def _check_not_vacuumed(self, dataset: str, manifest: Manifest) -> None:
        """An older version whose superseded runs ``vacuum`` removed cannot be read whole: fail, never read part."""
        gone = sorted(set(manifest.live_runs) & set(self.storage.list_names(self.paths(dataset).vacuumed)))
        if gone:
            raise LakeError(f"version {manifest.version} of dataset {dataset!r} can no longer be read: "
                            f"`visionlake vacuum` removed its run(s) {', '.join(gone)}, which later versions "
                            f"superseded; read the latest version (version {self.latest_version(dataset)})")

    # ---- writing ---------------------------------------------------------------------------------------------------
    def begin_run(self, dataset: str, run_id: str) -> str:
        """Marks ``run_id``'s staging folder as written by this process (``recover`` in other processes leaves it
        alone while this one runs); returns the staging folder. Call before the run's first staging write."""
        staging = self.paths(dataset).staging(run_id)
        self.storage.write_text(f"{staging}/{_WRITER_FILE}", json.dumps(writer_identity()), overwrite=True)
        return staging

    def _staged_runs(self, paths: DatasetPaths) -> dict[str, Optional[dict[str, Any]]]:
        """run id -> its ``_writer.json`` (None when absent or unreadable), for each folder under ``_staging``."""
        return {name: self.storage.read_json(f"{paths.staging(name)}/{_WRITER_FILE}")
                for name in self.storage.list_names(paths.staging_root, directories_only=True)}

    def _runs_in_flight(self, paths: DatasetPaths) -> set[str]:
        return {run for run, writer in self._staged_runs(paths).items() if writer_state(writer) != "gone"}

    def recover(self, dataset: str) -> list[str]:
        """Rolls back what failed runs left: partitions no committed version lists, and staging folders, of runs
        whose writer is gone (``writer_state``); returns what was removed. Superseded partitions (listed by an
        older version) are kept for readers of that version until ``vacuum``."""
        paths = self.paths(dataset)
        latest = self.read_manifest(dataset)
        committed = latest.committed_runs() if latest else set()
        in_flight = self._runs_in_flight(paths)
        removed = [folder for folder in self._run_partitions(paths)
                   if _run_of(folder) not in committed and _run_of(folder) not in in_flight]
        for folder in removed:
            self.storage.delete(folder)
        for run in self.storage.list_names(paths.staging_root, directories_only=True):
            if run not in in_flight or run in committed:  # a committed run's staging is only its writer record
                self.storage.delete(paths.staging(run))
        if removed:
            log.warning("rolled back %d partition(s) of uncommitted runs in %s", len(removed), paths.base)
        if in_flight:
            log.info("left %d run(s) another process may still be writing in %s: %s", len(in_flight), paths.base,
                     ", ".join(sorted(in_flight)))
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

    def publish_and_commit(self, dataset: str, run_id: str, manifest: Manifest) -> int:
        """Moves the run's staged partitions into the tables and commits ``manifest`` as the next version.

        Nothing is deleted: partitions the new version no longer lists stay for readers of older versions, and the
        manifest records when they were superseded (``vacuum`` removes them after the retention).

        Raises:
            LakeError: another writer committed this version first (this run's partitions are rolled back), the
                commit lock is held, or the version file cannot be written.
        """
        paths = self.paths(dataset)
        staging = paths.staging(run_id)
        try:
            with self._commit_lock(dataset, run_id):
                manifest = self._commit(paths, run_id, manifest)
        except LakeError:
            # The run is over: without its staging folder, recover() rolls back whatever it left published.
            self.storage.delete(staging)
            raise
        self.storage.delete(staging)
        self.storage.write_text(f"{paths.base}/manifest.json", json.dumps(manifest.to_json(), indent=2, default=str),
                                overwrite=True)
        return manifest.version

    def _commit(self, paths: DatasetPaths, run_id: str, manifest: Manifest) -> Manifest:
        """Publishes the run's partitions and creates the version file; returns the manifest as committed."""
        version = manifest.version
        target = paths.manifest_version(version)
        if self.storage.exists(target):
            raise self._lost_race(paths.dataset, version, run_id, "nothing of it was published")
        previous = self.read_manifest(paths.dataset, version - 1) if version > 1 else None
        manifest = _with_commit_record(manifest, previous)
        published = self._publish_partitions(paths, run_id)
        self.storage.mkdirs(paths.manifests)
        try:
            self.storage.publish_text(target, json.dumps(manifest.to_json(), indent=2, default=str))
        except TargetExistsError:
            for folder in published:
                self.storage.delete(folder)
            raise self._lost_race(paths.dataset, version, run_id, "its published partitions were rolled back") \
                from None
        except StorageError as error:
            raise LakeError(f"could not commit version {version} of {paths.dataset!r}: {error}. The dataset stays "
                            "at its previous version; re-run (the next run rolls this one's partitions back)") \
                from None
        return manifest

    def _publish_partitions(self, paths: DatasetPaths, run_id: str) -> list[str]:
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
        return published

    @staticmethod
    def _lost_race(dataset: str, version: int, run_id: str, undone: str) -> LakeError:
        return LakeError(f"version {version} of dataset {dataset!r} was committed by another writer while run "
                         f"{run_id} was running; {undone}, and the dataset holds the other writer's version. "
                         "Re-run to add this run's work on top of it, and run one writer per dataset at a time")

    @contextlib.contextmanager
    def _commit_lock(self, dataset: str, run_id: str) -> Iterator[None]:
        """Holds ``<lake.commit_lock>/<dataset>.lock`` during the commit, when configured; warns when commits to
        this lake are not exclusive and no lock is configured."""
        if not self.commit_lock:
            if self.storage.exclusive_create(self.root) is None:
                log.warning("commits to %s are not exclusive on %s: two concurrent writers of %r could both "
                            "commit; run one writer per dataset or configure lake.commit_lock", self.root,
                            self.storage.scheme(self.root), dataset)
            yield
            return
        if self.storage.exclusive_create(self.commit_lock) is None:
            raise LakeError(f"lake.commit_lock={self.commit_lock} is on {self.storage.scheme(self.commit_lock)}, "
                            "which has no exclusive create: use a folder on a local or NFS path or on hdfs://")
        lock = f"{self.commit_lock.rstrip('/')}/{dataset}.lock"
        owner = {**writer_identity(), "dataset": dataset, "run_id": run_id, "lake": self.root}
        try:
            self.storage.publish_text(lock, json.dumps(owner))
        except TargetExistsError:
            holder = self.storage.read_json(lock) or {}
            raise LakeError(f"the commit lock {lock} is held by run {holder.get('run_id', '?')} (process "
                            f"{holder.get('pid', '?')} on {holder.get('host', '?')}, since "
                            f"{holder.get('started_at', '?')}): another writer of {dataset!r} is committing. Re-run "
                            f"when it has finished; if that process is no longer running, delete {lock}") from None
        try:
            yield
        finally:
            self.storage.delete(lock)

    # ---- vacuum ----------------------------------------------------------------------------------------------------
    def vacuum(self, dataset: str, retention_hours: float, dry_run: bool = False,
               now: Optional[dt.datetime] = None) -> VacuumReport:
        """Removes what the latest version no longer needs, once old enough; never anything it lists.

        Removed: partitions of runs an older version listed and a later one superseded more than
        ``retention_hours`` ago (a ``_vacuumed/<run>`` marker is written first, so reading such an older version
        fails clearly); partitions and staging folders of runs no version committed, when their writer is gone, or
        started more than ``retention_hours`` ago on another host (a live writer on this host keeps its run);
        staging folders of committed runs; temporary files of crashed commits.

        Raises:
            LakeError: the dataset has no committed version.
            ValueError: ``retention_hours`` is negative.
        """
        if retention_hours < 0:
            raise ValueError(f"retention_hours must be >= 0, got {retention_hours}")
        manifest = self.require_manifest(dataset)
        now = now or dt.datetime.now(dt.timezone.utc)
        cutoff = now - dt.timedelta(hours=retention_hours)
        paths = self.paths(dataset)
        live, committed = set(manifest.live_runs), manifest.committed_runs()
        superseded = manifest.superseded
        # Versions written before `superseded` was recorded: the latest commit is the latest time it can have been.
        latest_commit = _timestamp(manifest.committed_at) or _timestamp(manifest.created_at)
        staged = self._staged_runs(paths)
        report = VacuumReport(dataset, manifest.version, retention_hours, cutoff, dry_run)

        marked = set(self.storage.list_names(paths.vacuumed))
        for folder in self._run_partitions(paths):
            run = _run_of(folder)
            if run in live:
                continue
            if run in committed:
                left_at = _timestamp(superseded.get(run, {}).get("committed_at")) or latest_commit
                if left_at > cutoff:
                    report.kept_superseded.append(folder)
                    continue
                if not dry_run and run not in marked:
                    self.storage.write_text(f"{paths.vacuumed}/{run}", json.dumps(
                        {"removed_at": now.isoformat(), "superseded_at": left_at.isoformat(),
                         "latest_version": manifest.version}), overwrite=True)
                    marked.add(run)
                report.removed.append(("superseded", folder, self.storage.size(folder)))
            elif _uncommitted_expired(run, staged, cutoff):
                report.removed.append(("uncommitted", folder, self.storage.size(folder)))
        for run in staged:
            if run in committed or _uncommitted_expired(run, staged, cutoff):
                report.removed.append(("staging", paths.staging(run), self.storage.size(paths.staging(run))))
        for name in self.storage.list_names(paths.manifests):
            location = f"{paths.manifests}/{name}"
            modified = self.storage.modified_at(location)
            if is_temporary(name) and modified is not None and dt.datetime.fromtimestamp(
                    modified, dt.timezone.utc) <= min(cutoff, now - _TEMPORARY_GRACE):
                report.removed.append(("temporary", location, self.storage.size(location)))
        if not dry_run:
            for _, location, _ in report.removed:
                self.storage.delete(location)
        log.info("%s", report.report())
        return report


def _uncommitted_expired(run: str, staged: dict[str, Optional[dict[str, Any]]], cutoff: dt.datetime) -> bool:
    """A run no version committed may go when its writer is gone, or when it started before ``cutoff`` and its
    writer is not known to be running (a live process on this host keeps its run, whatever its age)."""
    writer = staged.get(run)
    state = writer_state(writer) if run in staged else "unknown"
    if state != "unknown":
        return state == "gone"
    started = _timestamp((writer or {}).get("started_at")) or run_started_at(run)
    return started is not None and started <= cutoff


def _run_of(folder: str) -> str:
    return folder.rsplit("run_id=", 1)[1]


def _with_commit_record(manifest: Manifest, previous: Optional[Manifest]) -> Manifest:
    """``manifest`` with its commit time, and the runs it supersedes (live in ``previous``, not in it) recorded
    with that time next to those older versions superseded."""
    committed_at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    superseded = dict(previous.superseded) if previous else {}
    for run in sorted(set(previous.live_runs if previous else ()) - set(manifest.live_runs)):
        superseded[run] = {"version": manifest.version, "committed_at": committed_at}
    return dataclasses.replace(manifest, committed_at=committed_at, superseded=superseded)
