"""The lake's layout and run bookkeeping that need no Spark: where a dataset keeps what, when a run started, and
whether the process that wrote a run still runs."""
from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys

from visionlake.lake.store import DatasetPaths, new_run_id, run_started_at, writer_identity, writer_state


def test_a_dataset_keeps_tables_manifests_staging_and_vacuumed_files_under_its_own_folder():
    paths = DatasetPaths("hdfs://nn:8020/lake/", "mnist")
    assert paths.base == "hdfs://nn:8020/lake/mnist"
    assert paths.table("images") == "hdfs://nn:8020/lake/mnist/images"
    assert paths.manifests == "hdfs://nn:8020/lake/mnist/_manifests"
    assert paths.manifest_version(7) == "hdfs://nn:8020/lake/mnist/_manifests/v000007.json"
    assert paths.manifest_version(1234567) == "hdfs://nn:8020/lake/mnist/_manifests/v1234567.json"
    assert paths.staging_root == "hdfs://nn:8020/lake/mnist/_staging"
    assert paths.staging("r1") == "hdfs://nn:8020/lake/mnist/_staging/r1"
    assert paths.vacuumed == "hdfs://nn:8020/lake/mnist/_vacuumed"


def test_a_run_id_carries_its_start_time_to_the_second():
    started = dt.datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=dt.timezone.utc)
    run_id = new_run_id(started)
    assert run_id.startswith("r20260304T050607Z-")
    assert run_started_at(run_id) == started.replace(microsecond=0)
    assert run_started_at("r20260304T050607Z-abc123") == dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.timezone.utc)
    for other in ("r20260304T050607Z", "20260304T050607Z-abc123", "r20260304T050607Z-ABC", "ingest-7"):
        assert run_started_at(other) is None


def test_the_writer_of_a_run_is_gone_running_or_unknown():
    me = writer_identity()
    assert me["host"] == socket.gethostname() and me["pid"] == os.getpid()
    assert writer_state(None) == "gone"  # no record
    assert writer_state(me) == "gone"  # this process, which starts its next write
    assert writer_state({**me, "host": "another-host"}) == "unknown"  # cannot be checked from here
    assert writer_state({**me, "pid_namespace": "pid:[0]"}) == "unknown"  # another container

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with open(f"/proc/{child.pid}/stat") as stat:
            child_started = stat.read().rsplit(")", 1)[1].split()[19]
        running = {**me, "pid": child.pid, "process_started": child_started}
        assert writer_state(running) == "running"
        assert writer_state({**running, "process_started": "1"}) == "gone"  # the pid was reused by another process
    finally:
        child.kill()
        child.wait()
    assert writer_state(running) == "gone"
