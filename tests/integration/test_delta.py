"""Delta Lake tables: the sessions visionlake opens read and write them (jars, extension, catalog), and
``visionlake.lake.delta`` is the lake's writer and pinned reader on real tables."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from tests.conftest import loopback_job_env
from visionlake.lake.delta import DeltaTableError, DeltaTables, lock_path, table_lock
from visionlake.uris import local_path


def test_a_session_writes_reads_and_time_travels_a_delta_table(spark, tmp_path):
    path = str(tmp_path / "table")
    spark.range(5).write.format("delta").save(path)
    spark.range(5, 8).write.format("delta").mode("append").save(path)

    assert spark.read.format("delta").load(path).count() == 8
    assert spark.sql(f"SELECT count(*) AS n FROM delta.`{path}`").first().n == 8  # the catalog's SQL path
    assert spark.read.format("delta").option("versionAsOf", 0).load(path).count() == 5
    assert [row.version for row in spark.sql(f"DESCRIBE HISTORY delta.`{path}`").collect()] == [1, 0]
    # SQL statements touch the catalog, whose warehouse folder stays out of the working directory.
    assert spark.conf.get("spark.sql.warehouse.dir").endswith("/visionlake-spark-warehouse")


def _rows(spark, ids, split="train"):
    return spark.createDataFrame([(i, split, f"run-{i // 100}") for i in ids], "id long, split string, run_id string")


def test_commits_carry_their_metadata_and_a_repeated_transaction_adds_nothing(spark, tmp_path):
    tables, path = DeltaTables(spark), str(tmp_path / "images")
    tables.append(_rows(spark, range(10)), path, metadata={"run_id": "a"}, partition_by="split", txn=("ingest", 1))
    tables.append(_rows(spark, range(10)), path, metadata={"run_id": "a"}, partition_by="split", txn=("ingest", 1))
    tables.append(_rows(spark, range(10, 15), "val"), path, metadata={"run_id": "b"}, partition_by="split",
                  txn=("ingest", 2))

    assert [(c.version, c.metadata) for c in tables.history(path)] == [(1, {"run_id": "b"}), (0, {"run_id": "a"})]
    # The commits read from the table's log are what the public DESCRIBE HISTORY returns, field by field.
    public = [(r.version, r.timestamp, r.operation, json.loads(r.userMetadata), dict(r.operationMetrics))
              for r in spark.sql(f"DESCRIBE HISTORY delta.`{path}`").collect()]
    assert [(c.version, c.timestamp, c.operation, c.metadata, c.metrics)
            for c in tables.history(path)] == public
    assert [c.version for c in tables.history(path, limit=1)] == [1]
    assert tables._log_history(path, None) is not None, "this Delta release still has the log API the lake uses"
    assert tables.latest_version(path) == 1 and tables.latest_version(str(tmp_path / "none")) is None
    assert not tables.is_empty(path) and tables.is_empty(str(tmp_path / "none"))
    tables.create(str(tmp_path / "empty"), _rows(spark, []).schema, partition_by="split")
    assert tables.is_empty(str(tmp_path / "empty"))
    assert tables.read(path).count() == 15 and tables.read(path, version=0).count() == 10
    assert spark.conf.get("spark.databricks.delta.commitInfo.userMetadata", None) is None, "restored after the write"
    train = tables.files(path, 1, where="split = 'train'")
    assert train and all("/split=train/" in f for f in train)
    assert sum(pq.ParquetFile(local_path(f)).metadata.num_rows for f in train) == 10


def test_new_keys_only_are_inserted_and_a_slice_is_replaced_in_one_commit(spark, tmp_path):
    tables, path = DeltaTables(spark), str(tmp_path / "t")
    tables.insert_new(_rows(spark, range(5)), path, "id", metadata={}, partition_by="split")
    tables.insert_new(_rows(spark, range(3, 8)), path, "id", metadata={"n": 2}, partition_by="split")
    assert sorted(r.id for r in tables.read(path).collect()) == list(range(8))

    replacement = _rows(spark, range(3)).withColumn("run_id", F.lit("again"))
    tables.overwrite(replacement, path, metadata={}, replace_where="id < 3")
    rows = {r.id: r.run_id for r in tables.read(path).collect()}
    assert sorted(rows) == list(range(8)) and {rows[i] for i in range(3)} == {"again"}
    assert [c.operation for c in tables.history(path)] == ["WRITE", "MERGE", "WRITE"]


def test_a_pinned_reader_keeps_its_version_through_a_rebuild_until_vacuum_removes_it(spark, tmp_path):
    tables, path = DeltaTables(spark), str(tmp_path / "t")
    tables.append(_rows(spark, range(20)), path, metadata={}, partition_by="split")
    pinned = tables.files(path, 0)
    tables.overwrite(_rows(spark, range(100, 105)), path, metadata={"rebuild": True}, partition_by="split")

    assert spark.read.parquet(*pinned).count() == 20  # version 0's files, read after version 1 committed
    assert tables.read(path).count() == 5
    tables.vacuum(path, retention_hours=0)
    with pytest.raises(DeltaTableError, match="can no longer be read: `visionlake vacuum` removed its files"):
        tables.files(path, 0)


def test_row_groups_follow_the_lakes_setting_which_delta_writes_otherwise_ignore(spark, tmp_path):
    tables, path = DeltaTables(spark), str(tmp_path / "t")
    frame = spark.range(4000).select("id", F.lit("train").alias("split"),
                                     F.expr("sha2(cast(id as string), 512)").alias("noise")).coalesce(1)
    tables.append(frame, path, metadata={}, row_group_bytes=64 * 1024)
    (file,) = tables.files(path, 0)
    assert pq.ParquetFile(local_path(file)).metadata.num_row_groups > 1


def test_a_table_with_deletion_vectors_is_refused_not_misread(spark, tmp_path):
    tables, path = DeltaTables(spark), str(tmp_path / "t")
    tables.append(_rows(spark, range(10)), path, metadata={})
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')")
    with pytest.raises(DeltaTableError, match="deletionVectors: rows are deleted by side files"):
        tables.files(path, 1)


# Long enough for a writer's session to start and reach its first commit (about 6 s here); were the lock ignored,
# a commit would land meanwhile.
LOCK_HELD_SECONDS = 15
_WRITER = textwrap.dedent("""
    import sys
    from visionlake.config import SparkConfig
    from visionlake.lake.delta import DeltaTables
    from visionlake.spark import start_session
    path, name, commits = sys.argv[1], sys.argv[2], int(sys.argv[3])
    spark = start_session(SparkConfig(master="local[1]", conf={"spark.ui.enabled": "false"}))
    tables = DeltaTables(spark)
    for i in range(commits):
        frame = spark.createDataFrame([(f"{name}-{i}",)], "id string")
        tables.append(frame, path, metadata={"writer": name, "commit": i})
    spark.stop()
""")


def test_two_writer_processes_on_one_local_table_lose_no_commit(spark, tmp_path):
    path, commits = str(tmp_path / "t"), 8
    DeltaTables(spark).append(spark.createDataFrame([("seed",)], "id string"), path, metadata={})
    with table_lock(path):  # both writers start, and wait at their first commit until this process lets go
        writers = [subprocess.Popen([sys.executable, "-c", _WRITER, path, name, str(commits)], cwd=tmp_path,
                                    env=loopback_job_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True) for name in "ab"]
        time.sleep(LOCK_HELD_SECONDS)
        assert DeltaTables(spark).latest_version(path) == 0, "no writer commits while another holds the lock"
    outputs = [writer.communicate(timeout=600)[0] for writer in writers]
    assert [w.returncode for w in writers] == [0, 0], "\n".join(o[-2000:] for o in outputs)

    history = DeltaTables(spark).history(path)
    assert len(history) == 1 + 2 * commits and [c.version for c in history] == list(range(2 * commits, -1, -1))
    ids = [row.id for row in DeltaTables(spark).read(path).collect()]
    assert sorted(ids) == sorted(["seed"] + [f"{n}-{i}" for n in "ab" for i in range(commits)])
    assert lock_path(path) == str(tmp_path / "_locks" / "t.lock")
