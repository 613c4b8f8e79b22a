"""The lake's layout and run ids, without Spark: where a dataset keeps what, and when a run started."""
from __future__ import annotations

import datetime as dt

import pytest

from visionlake.lake.delta import lock_path
from visionlake.lake.store import DatasetPaths, new_run_id, run_started_at


def test_a_dataset_keeps_its_tables_and_shards_under_its_own_folder():
    paths = DatasetPaths("hdfs://nn:8020/lake/", "mnist")
    assert paths.base == "hdfs://nn:8020/lake/mnist"
    assert paths.table("images") == "hdfs://nn:8020/lake/mnist/images"
    # Shards live beside the tables, never inside a table folder, where Delta's VACUUM would delete them.
    assert paths.tfrecord_run("r1") == "hdfs://nn:8020/lake/mnist/tfrecord/run_id=r1"


@pytest.mark.parametrize("table, lock_root, expected", [
    ("file:/lake/mnist/images", "", "/lake/mnist/_locks/images.lock"),
    ("/lake/mnist/images/", "", "/lake/mnist/_locks/images.lock"),
    ("hdfs://nn/lake/mnist/images", "", None),          # HDFS renames atomically: no lock needed
    ("s3a://bucket/lake/mnist/images", "file:/var/locks", "/var/locks/mnist.images.lock"),
    ("file:/lake/mnist/quarantine", "/nfs/locks", "/nfs/locks/mnist.quarantine.lock"),
])
def test_each_table_write_takes_one_lock_file(table, lock_root, expected):
    assert lock_path(table, lock_root) == expected


def test_a_run_id_carries_its_start_time_to_the_second():
    started = dt.datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=dt.timezone.utc)
    run_id = new_run_id(started)
    assert run_id.startswith("r20260304T050607Z-")
    assert run_started_at(run_id) == started.replace(microsecond=0)
    assert run_started_at("r20260304T050607Z-abc123") == dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.timezone.utc)
    for other in ("r20260304T050607Z", "20260304T050607Z-abc123", "r20260304T050607Z-ABC", "ingest-7"):
        assert run_started_at(other) is None
