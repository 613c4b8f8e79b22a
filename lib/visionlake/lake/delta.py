"""The lake's Delta Lake tables: every write and every pinned read of a table goes through here.

Delta does the format (the log, snapshot isolation, time travel, ``VACUUM``, ``OPTIMIZE``); this module adds what
visionlake's readers and writers need on top:

- **One writer at a time per table on local disks and NFS.** Delta commits version N by checking that its log file
  is absent and then renaming a temporary file onto it (``HDFSLogStore``). Where the file system's rename replaces
  an existing file (local disks, NFS) two processes can both pass the check, and the later one silently overwrites
  the earlier commit; Delta's own guard is a ``synchronized`` block, one JVM only. Each write here holds
  ``<table>/../_locks/<table name>.lock`` with ``fcntl.lockf`` (the kernel and NFS's lock manager release it when
  the process dies, so nothing is left to clean up). HDFS renames atomically and needs no lock; S3 needs Delta's
  DynamoDB log store for more than one writing cluster.
- **Commit metadata.** Each write records a JSON document in its commit's ``userMetadata`` (``DESCRIBE HISTORY``
  returns it per version), in the same atomic step as the data.
- **Pinned file lists.** Readers plan one version's Parquet files on the driver (``files``) and hand them to ranks,
  so they refuse tables with features a plain Parquet reader would misread (deletion vectors, column mapping).
- **Row groups.** Delta ignores the writer option ``parquet.block.size`` and the session's
  ``spark.hadoop.parquet.block.size`` set at run time; the Spark context's Hadoop configuration holds it for the
  duration of each write.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

from pyspark.sql import DataFrame, SparkSession

from visionlake.uris import local_path

log = logging.getLogger(__name__)

# Table properties of every table visionlake creates: features that make Parquet files alone not the table's rows
# stay off, so the readers' pinned file lists mean what they say.
CREATE_PROPERTIES = {"delta.enableDeletionVectors": "false"}
# Table features (reader side) a file-list reader cannot honour, and why.
UNREADABLE_FEATURES = {
    "deletionVectors": "rows are deleted by side files that a Parquet reader does not see",
    "columnMapping": "Parquet column names differ from the table's",
}
_USER_METADATA = "spark.databricks.delta.commitInfo.userMetadata"
_COMPRESSION = "spark.sql.parquet.compression.codec"
_BLOCK_SIZE = "parquet.block.size"
# VACUUM lists the table in this many tasks; Spark's default (10,000) made one VACUUM of a small table take 40 s.
_LISTING_PARALLELISM = "spark.sql.sources.parallelPartitionDiscovery.parallelism"
_LOCKS_FOLDER = "_locks"
# The table property a write that changes no file sets, so that it still commits (with its userMetadata).
_METADATA_COMMIT = "visionlake.commit"


class DeltaTableError(RuntimeError):
    """A table cannot be read or written as asked; the message says why and what to do."""


class ConcurrentCommitError(DeltaTableError):
    """Another writer committed the table after the version this write was based on."""


@dataclass(frozen=True)
class Commit:
    """One version of a table, from ``DESCRIBE HISTORY``."""
    version: int
    timestamp: dt.datetime
    operation: str
    metadata: dict[str, Any] = field(default_factory=dict)   # the visionlake document in userMetadata
    metrics: dict[str, str] = field(default_factory=dict)    # Delta's operationMetrics (numOutputRows, ...)


def lock_path(table: str, lock_root: str = "") -> Optional[str]:
    """The lock file of a table: ``<lock_root>/<dataset>.<table>.lock`` when ``lock_root`` (``lake.commit_lock``, a
    local or NFS folder) is set, else ``<dataset>/_locks/<table>.lock`` beside a table on a local or NFS path; None
    for a table elsewhere without a lock root."""
    if lock_root:
        parent, name = os.path.split(table.rstrip("/"))
        return os.path.join(local_path(lock_root), f"{os.path.basename(parent)}.{name}.lock")
    if not (table.startswith("file:") or table.startswith("/")):
        return None
    folder, name = os.path.split(local_path(table).rstrip("/"))
    return os.path.join(folder, _LOCKS_FOLDER, f"{name}.lock")


@contextlib.contextmanager
def table_lock(table: str, lock_root: str = "") -> Iterator[None]:
    """Holds the table's write lock (``lock_path``) for the block; waits for another holder to finish."""
    path = lock_path(table, lock_root)
    if path is None:
        yield
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            log.info("waiting for another writer of %s to commit (lock %s)", table, path)
            fcntl.lockf(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)


class DeltaTables:
    """Reads and writes the lake's Delta tables through one Spark session."""

    def __init__(self, spark: SparkSession, lock_root: str = ""):
        """``lock_root``: ``lake.commit_lock`` ("" = a lock beside each table on local and NFS paths)."""
        self.spark = spark
        self.lock_root = lock_root

    # ---- reading -----------------------------------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        from delta.tables import DeltaTable

        return DeltaTable.isDeltaTable(self.spark, path)

    def history(self, path: str, limit: Optional[int] = None) -> list[Commit]:
        """The table's versions, newest first (``limit``: only the newest ``limit``)."""
        commits = self._log_history(path, limit)
        if commits is not None:
            return commits
        from delta.tables import DeltaTable

        frame = DeltaTable.forPath(self.spark, path).history(limit)
        return [Commit(version=row.version, timestamp=row.timestamp, operation=row.operation,
                       metadata=json.loads(row.userMetadata) if row.userMetadata else {},
                       metrics=dict(row.operationMetrics or {}))
                for row in frame.select("version", "timestamp", "operation", "userMetadata",
                                        "operationMetrics").collect()]

    def _log_history(self, path: str, limit: Optional[int]) -> Optional[list[Commit]]:
        """The commits ``DESCRIBE HISTORY`` returns, read from the table's log on the driver; None if this Delta
        release's internal API differs.

        Delta's own history (``DeltaHistoryManager.getHistory``, behind ``DESCRIBE HISTORY``) reads the commit
        files in a Spark job: on a cluster that was the application's first job on executors that had never run
        Delta's code, 22-28 s per application on the two-node harness, and 0.25-0.9 s in a local session. Here
        the same steps run on the driver: each commit file's ``commitInfo`` action, the file's modification time
        as the commit's timestamp, made strictly increasing as Delta does (``monotonizeCommitTimestamps``)."""
        try:
            jvm = self.spark.sparkContext._jvm
            delta = jvm.org.apache.spark.sql.delta
            delta_log = self._delta_log(path)
            latest = int(self._update(delta_log).version())
            first = (max(latest - int(limit) + 1, 0) if limit is not None
                     else int(delta.DeltaHistoryManager.getEarliestDeltaFile(delta_log)))
            store, conf, log_path = delta_log.store(), delta_log.newDeltaHadoopConf(), delta_log.logPath()
            file_system = log_path.getFileSystem(conf)
            lines_of = jvm.scala.collection.JavaConverters.seqAsJavaList
            commits, previous_millis = [], None
            for version in range(first, latest + 1):
                commit_file = jvm.org.apache.hadoop.fs.Path(log_path, f"{version:020d}.json")  # the protocol's name
                try:
                    # one string per commit: a py4j round trip per field or metric cost 60 ms per commit
                    text = jvm.java.lang.String.join("\n", lines_of(store.read(commit_file, conf)))
                    millis = int(file_system.getFileStatus(commit_file).getModificationTime())
                except Exception as error:  # noqa: BLE001 - a commit file removed by log clean-up: skipped, as Delta does
                    if "FileNotFoundException" in str(error):
                        continue
                    raise
                if previous_millis is not None and millis <= previous_millis:
                    millis = previous_millis + 1
                previous_millis = millis
                info = next((action["commitInfo"] for action in map(json.loads, filter(None, text.split("\n")))
                             if "commitInfo" in action), {})
                commits.append(Commit(
                    version=version,
                    # naive local time, as Spark returns DESCRIBE HISTORY's timestamps to Python
                    timestamp=dt.datetime.fromtimestamp(millis // 1000).replace(microsecond=millis % 1000 * 1000),
                    operation=info.get("operation", ""),
                    metadata=json.loads(info["userMetadata"]) if info.get("userMetadata") else {},
                    metrics=dict(info.get("operationMetrics") or {})))
            return commits[::-1]
        except Exception:  # noqa: BLE001 - py4j errors of another Delta release's signature
            log.debug("no DeltaLog history API in this Delta release; using DESCRIBE HISTORY", exc_info=True)
            return None

    def latest_version(self, path: str) -> Optional[int]:
        """The newest version, or None when there is no table at ``path``."""
        if not self.exists(path):
            return None
        snapshot = self._snapshot(path)
        return int(snapshot.version()) if snapshot is not None else self.history(path, limit=1)[0].version

    def is_empty(self, path: str) -> bool:
        """True when the table's latest version has no file (or there is no table)."""
        if not self.exists(path):
            return True
        snapshot = self._snapshot(path)
        if snapshot is not None:
            # The commit's checksum knows the file count (0.02 s); counting from the snapshot's state rebuilds
            # it from the log in a Spark job (1.3-2 s on a warm session).
            checksum = snapshot.checksumOpt()
            return int(checksum.get().numFiles() if checksum.isDefined() else snapshot.numOfFiles()) == 0
        from delta.tables import DeltaTable

        return DeltaTable.forPath(self.spark, path).detail().first().numFiles == 0

    def _snapshot(self, path: str):
        """The table's latest snapshot (a JVM object), brought up to date from the log; None if this Delta release's
        internal API differs. It knows the version in about 0.02 s on a warm session, where DESCRIBE HISTORY (the
        public API) takes 0.5 s and reading the table to count its rows up to 1.6 s, and a commit asks four times."""
        try:
            return self._update(self._delta_log(path))
        except Exception:  # noqa: BLE001 - py4j errors of another Delta release's signature
            log.debug("no DeltaLog snapshot API in this Delta release; using the public API", exc_info=True)
            return None

    def _delta_log(self, path: str):
        """The table's ``DeltaLog`` (a JVM object, cached by Delta per path); internal API."""
        return self.spark.sparkContext._jvm.org.apache.spark.sql.delta.DeltaLog.forTable(self.spark._jsparkSession,
                                                                                          path)

    def _update(self, delta_log):
        """``delta_log``'s latest snapshot, brought up to date from the log (the commits' checksums know its
        version and file count without rebuilding its state)."""
        empty = self.spark.sparkContext._jvm.scala.Option.empty()
        return delta_log.update(False, empty, empty)

    def read(self, path: str, version: Optional[int] = None) -> DataFrame:
        """The table at ``version`` (default: the latest).

        Raises:
            DeltaTableError: the table has a feature visionlake's readers cannot honour, or the version is gone.
        """
        self.check_readable(path)
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        try:
            return reader.load(path)
        except Exception as error:  # noqa: BLE001 - py4j carries Delta's VersionNotFound / FileNotFound
            raise DeltaTableError(f"cannot read version {version} of {path}: {_first_line(error)}") from None

    def files(self, path: str, version: int, where: Optional[str] = None) -> list[str]:
        """The Parquet files that make up ``version`` (restricted by the partition filter ``where``), planned on the
        driver from the log; nothing is listed or read.

        Raises:
            DeltaTableError: as ``read``; also when a file of that version is gone (``VACUUM`` removed it).
        """
        frame = self.read(path, version)
        if where:
            frame = frame.where(where)
        files = sorted(frame.inputFiles())
        self.check_present(path, version, files)
        return files

    def check_present(self, path: str, version: int, files: list[str]) -> None:
        """Fails when ``VACUUM`` removed the files of ``version`` (``files``: some of them, as ``files`` planned)."""
        if not files:
            return
        first = self.spark.sparkContext._jvm.org.apache.hadoop.fs.Path(files[0])
        if not first.getFileSystem(self.spark.sparkContext._jsc.hadoopConfiguration()).exists(first):
            raise DeltaTableError(f"version {version} of {path} can no longer be read: `visionlake vacuum` "
                                  "removed its files, which later versions superseded; read a newer version")

    def check_readable(self, path: str) -> None:
        """Refuses a table whose rows are not simply its Parquet files' rows (``UNREADABLE_FEATURES``)."""
        detail = self.spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()
        features = set(detail.tableFeatures or []) if "tableFeatures" in detail.asDict() else set()
        properties = detail.properties or {}
        if properties.get("delta.enableDeletionVectors") == "true":
            features.add("deletionVectors")
        if properties.get("delta.columnMapping.mode", "none") != "none":
            features.add("columnMapping")
        found = sorted(features & set(UNREADABLE_FEATURES))
        if found:
            reasons = "; ".join(f"{name}: {UNREADABLE_FEATURES[name]}" for name in found)
            raise DeltaTableError(f"{path} uses Delta features visionlake's readers cannot honour ({reasons}). "
                                  "Rewrite it without them (e.g. REORG TABLE ... APPLY (PURGE) and "
                                  "ALTER TABLE ... SET TBLPROPERTIES ('delta.enableDeletionVectors'='false')), or "
                                  "re-ingest into a new dataset")

    # ---- writing -----------------------------------------------------------------------------------------------
    def create(self, path: str, schema, partition_by: Optional[str] = None) -> None:
        """Creates an empty table (its version 0) with ``schema``, unless one exists."""
        from delta.tables import DeltaTable

        with table_lock(path, self.lock_root):
            if self.exists(path):
                return
            builder = DeltaTable.createIfNotExists(self.spark).location(path).addColumns(schema)
            for key, value in CREATE_PROPERTIES.items():
                builder = builder.property(key, value)
            (builder.partitionedBy(partition_by) if partition_by else builder).execute()

    @contextlib.contextmanager
    def _writing(self, path: str, metadata: dict[str, Any], row_group_bytes: Optional[int],
                 compression: Optional[str] = None, based_on: Optional[int] = None,
                 always_commit: bool = False) -> Iterator[None]:
        """One write: the table's lock, the commit's userMetadata, the Parquet codec and the row-group size. With
        ``based_on``, the write fails unless the table is still at that version. With ``always_commit``, a write
        that changes no file (nothing new to insert) commits its metadata alone, so its record is never lost."""
        with table_lock(path, self.lock_root), \
                _session_setting(self.spark, _USER_METADATA, json.dumps(metadata, sort_keys=True, default=str)), \
                _session_setting(self.spark, _COMPRESSION, compression or self.spark.conf.get(_COMPRESSION)):
            before = self.latest_version(path)
            if based_on is not None and before != based_on:
                raise ConcurrentCommitError(f"{path} is at version {before}, not {based_on}: another writer "
                                            "committed it meanwhile")
            with _hadoop_setting(self.spark, _BLOCK_SIZE, str(row_group_bytes) if row_group_bytes else None):
                yield
            if always_commit and before is not None and self.latest_version(path) == before:
                self.spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES "
                               f"('{_METADATA_COMMIT}' = '{uuid.uuid4().hex}')")

    def _writer(self, frame: DataFrame, mode: str, partition_by: Optional[str]):
        writer = frame.write.format("delta").mode(mode)
        for key, value in CREATE_PROPERTIES.items():
            writer = writer.option(key, value)
        return writer.partitionBy(partition_by) if partition_by else writer

    def append(self, frame: DataFrame, path: str, *, metadata: dict[str, Any], partition_by: Optional[str] = None,
               row_group_bytes: Optional[int] = None, txn: Optional[tuple[str, int]] = None,
               compression: Optional[str] = None) -> None:
        """Appends ``frame`` in one commit. ``txn`` = (application id, version): Delta skips the write when that
        application already committed that version or a later one (a re-run after a crash adds nothing twice)."""
        writer = self._writer(frame, "append", partition_by)
        if txn:
            writer = writer.option("txnAppId", txn[0]).option("txnVersion", txn[1])
        with self._writing(path, metadata, row_group_bytes, compression):
            writer.save(path)

    def overwrite(self, frame: DataFrame, path: str, *, metadata: dict[str, Any], partition_by: Optional[str] = None,
                  row_group_bytes: Optional[int] = None, replace_where: Optional[str] = None,
                  compression: Optional[str] = None, based_on: Optional[int] = None) -> None:
        """Replaces the whole table, or with ``replace_where`` exactly the rows matching it, in one commit (readers
        of earlier versions keep reading them until ``vacuum``)."""
        writer = self._writer(frame, "overwrite", partition_by)
        writer = writer.option("replaceWhere", replace_where) if replace_where else \
            writer.option("overwriteSchema", "true")
        with self._writing(path, metadata, row_group_bytes, compression, based_on, always_commit=True):
            writer.save(path)

    def insert_new(self, frame: DataFrame, path: str, key: str, *, metadata: dict[str, Any],
                   partition_by: Optional[str] = None, row_group_bytes: Optional[int] = None,
                   compression: Optional[str] = None, based_on: Optional[int] = None) -> None:
        """Inserts the rows of ``frame`` whose ``key`` the table does not hold yet, in one commit (``MERGE``; a
        first write creates the table; with nothing new, the commit holds the metadata alone). Two writers inserting the same key: Delta fails the later commit with a
        conflict instead of duplicating it."""
        from delta.tables import DeltaTable

        # Delta repartitions a MERGE's output by the partition columns first: one task and one file per split, which
        # loses the write's parallelism and the rows' spread over files. The frame's own partitioning is kept.
        with self._writing(path, metadata, row_group_bytes, compression, based_on, always_commit=True), \
                _session_setting(self.spark, "spark.databricks.delta.merge.repartitionBeforeWrite.enabled", "false"):
            if not self.exists(path):
                self._writer(frame, "append", partition_by).save(path)
                return
            (DeltaTable.forPath(self.spark, path).alias("t")
             .merge(frame.alias("s"), f"t.`{key}` = s.`{key}`")
             .whenNotMatchedInsertAll().execute())

    # ---- maintenance -------------------------------------------------------------------------------------------
    def optimize(self, path: str, *, metadata: dict[str, Any], row_group_bytes: Optional[int] = None,
                 compression: Optional[str] = None) -> dict[str, str]:
        """Delta ``OPTIMIZE``: compacts small files in one commit (readers of earlier versions keep theirs until
        ``vacuum``); returns Delta's metrics (``numFilesRemoved``, ``numFilesAdded``, ...). The compacted files keep
        ``row_group_bytes`` row groups, and each input file's rows stay together in their order."""
        with self._writing(path, metadata, row_group_bytes, compression):
            row = self.spark.sql(f"OPTIMIZE delta.`{path}`").first()
        metrics = row.metrics.asDict() if row is not None and row.metrics is not None else {}
        return {key: str(value) for key, value in metrics.items() if not hasattr(value, "asDict")}

    def vacuum(self, path: str, retention_hours: float, dry_run: bool = False) -> list[str]:
        """Delta ``VACUUM``: removes the files no version within ``retention_hours`` needs (0: all but the latest's);
        returns them (``dry_run``: only lists them)."""
        # visionlake's retention is lake.retention_hours, which its config checks; Delta's own check would refuse
        # anything under 7 days.
        statement = f"VACUUM delta.`{path}` RETAIN {float(retention_hours)} HOURS"
        with table_lock(path, self.lock_root), \
                _session_setting(self.spark, "spark.databricks.delta.retentionDurationCheck.enabled", "false"), \
                _session_setting(self.spark, _LISTING_PARALLELISM, str(self.spark.sparkContext.defaultParallelism)), \
                _session_setting(self.spark, "spark.databricks.delta.vacuum.logging.enabled", "false"):
            # (Logged, a VACUUM adds two versions to the table; the lake's versions stay its data's versions.)
            removed = sorted(row.path for row in self.spark.sql(statement + " DRY RUN").collect())
            if removed and not dry_run:
                self.spark.sql(statement).collect()
        return removed


@contextlib.contextmanager
def _hadoop_setting(spark: SparkSession, key: str, value: Optional[str]) -> Iterator[None]:
    """``key=value`` in the Spark context's Hadoop configuration for the block (nothing when ``value`` is None)."""
    if value is None:
        yield
        return
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    saved = hadoop.get(key)
    hadoop.set(key, value)
    try:
        yield
    finally:
        if saved is None:
            hadoop.unset(key)
        else:
            hadoop.set(key, saved)


@contextlib.contextmanager
def _session_setting(spark: SparkSession, key: str, value: str) -> Iterator[None]:
    """``key=value`` on the session for the block, then what it was before."""
    saved = spark.conf.get(key, None)
    spark.conf.set(key, value)
    try:
        yield
    finally:
        if saved is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, saved)


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return next((line for line in text if "Exception" in line or "Error" in line), text[0] if text else repr(error))
