"""Commits, concurrency and retention on real local Spark: exclusive version files, two real concurrent writers, the
commit lock, readers of an older version while a newer one commits, recovery around live writers, and vacuum."""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import loopback_job_env
from tests.integration.test_ingest import SMALL, write_class_images
from visionlake.lake import filesystem
from visionlake.ingest.job import ingest
from visionlake.lake.store import Lake, LakeError, _process_started, new_run_id, writer_identity
from visionlake.lake.filesystem import HadoopStorage, TargetExistsError

# Each writer process: its own local Spark session, small and quiet.
PROCESS_SPARK = ["spark.master=local[1]", "spark.conf.spark.ui.enabled=false", "spark.conf.spark.driver.memory=1g",
                 "spark.conf.spark.sql.shuffle.partitions=2"]

# A writer process: the real `visionlake` CLI, except that each commit first waits, after its partitions are
# published, until every writer has reached the same point (files in a barrier folder): then all of them create the
# same next version file at the same moment.
WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path

    from visionlake.operate import cli
    from visionlake.lake.filesystem import HadoopStorage

    barrier, name, parties = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    create = HadoopStorage.publish_text

    def create_when_all_writers_are_ready(self, uri, text):
        if "/_manifests/v" in uri:
            (barrier / name).touch()
            deadline = time.monotonic() + 300
            while len(list(barrier.iterdir())) < parties:
                if time.monotonic() > deadline:
                    raise RuntimeError("the other writer never reached its commit")
                time.sleep(0.005)
        return create(self, uri, text)

    HadoopStorage.publish_text = create_when_all_writers_are_ready
    sys.exit(cli.main(sys.argv[4:]))
""")


def runs_on_disk(dataset_folder: Path) -> set[str]:
    return {p.name.split("=", 1)[1] for p in dataset_folder.rglob("run_id=*") if "_staging" not in p.parts}


def local(uri: str) -> str:
    return re.sub(r"^file:(//)?", "", uri)


def test_two_concurrent_ingests_of_the_same_next_version_commit_exactly_once(spark, make_config, tmp_path):
    write_class_images(tmp_path / "raw", "cats", 4)
    first = ingest(spark, make_config(*SMALL))
    write_class_images(tmp_path / "raw", "dogs", 3)           # writer a: 3 new dogs
    write_class_images(tmp_path / "raw_b", "cats", 5, start=50)  # writer b: 5 new cats, from another drop
    added = {"a": 3, "b": 5}
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    script = tmp_path / "writer.py"
    script.write_text(WRITER)

    writers = {name: subprocess.Popen(
        [sys.executable, str(script), str(barrier), name, "2", "ingest", "--dataset", "demo", *SMALL,
         f"ingest.source.uri={tmp_path / source}", f"lake.root={tmp_path / 'lake'}", *PROCESS_SPARK],
        cwd=tmp_path, env=loopback_job_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, source in (("a", "raw"), ("b", "raw_b"))}
    outcomes = {name: (writer.wait(timeout=600), writer.communicate()[1]) for name, writer in writers.items()}

    assert sorted(barrier.iterdir()) == [barrier / "a", barrier / "b"], "both writers reached the commit"
    assert sorted(code for code, _ in outcomes.values()) == [0, 2], {k: v[1][-3000:] for k, v in outcomes.items()}
    winner = next(name for name, (code, _) in outcomes.items() if code == 0)
    loser = "b" if winner == "a" else "a"
    loser_log = outcomes[loser][1]
    assert re.search(r"version 2 of dataset 'demo' was committed by another writer while run r\S+ was running; "
                     r"its published partitions were rolled back, and the dataset holds the other writer's "
                     r"version\. Re-run", loser_log), loser_log[-3000:]
    loser_run = re.search(r"\(run (r\S+?), ", loser_log).group(1)

    lake = Lake(spark, str(tmp_path / "lake"))
    manifest = lake.read_manifest("demo")
    assert lake.latest_version("demo") == 2 and manifest.live_runs[0] == first.run_id
    assert loser_run not in manifest.live_runs
    images = lake.read_table("demo", "images").select("id", "source_path").collect()
    assert len(images) == 4 + added[winner] == len({row.id for row in images}), "the winner's rows, once each"
    assert sum(sum(labels.values()) for labels in manifest.counts.values()) == 4 + added[winner]
    assert runs_on_disk(tmp_path / "lake" / "demo") == set(manifest.live_runs), "the loser's partitions are gone"
    assert not (tmp_path / "lake" / "demo" / "_staging").exists() or not any(
        (tmp_path / "lake" / "demo" / "_staging").iterdir())


@pytest.fixture
def competitor_names_first(monkeypatch):
    """Another writer that creates the version file just before this one's gets its name (link, rename, replace)."""
    def first(real):
        def call(source, target, *args, **kwargs):
            if str(target).endswith(".json") and not os.path.exists(target):
                Path(target).write_text('{"writer": "competitor"}')
            return real(source, target, *args, **kwargs)
        return call
    for name in ("link", "rename", "replace"):
        monkeypatch.setattr(filesystem.os, name, first(getattr(os, name)))


def test_a_local_version_file_created_at_the_last_moment_by_another_writer_is_never_replaced(
        spark, tmp_path, competitor_names_first):
    storage = HadoopStorage(spark)
    target = f"file:{tmp_path}/_manifests/v000002.json"
    with pytest.raises(TargetExistsError, match="another writer created it first"):
        storage.publish_text(target, '{"writer": "me"}')
    assert (tmp_path / "_manifests" / "v000002.json").read_text() == '{"writer": "competitor"}'


def test_each_file_system_gets_its_exclusive_create_and_object_stores_none(spark, tmp_path):
    storage = HadoopStorage(spark)
    assert storage.exclusive_create(str(tmp_path)) == storage.exclusive_create(f"file:{tmp_path}") == "hard link"
    assert storage.exclusive_create("hdfs://namenode:8020/lake") == "atomic rename"
    for uri in ("s3a://bucket/lake", "gs://bucket/lake", "abfs://container@account.dfs.core.windows.net/lake"):
        assert storage.exclusive_create(uri) is None
    # Each way of creating, on this file system: the second create of a name fails and leaves the first whole.
    for index, create in enumerate((storage.publish_text, storage._publish_by_atomic_rename,
                                    storage._create_if_absent)):
        target = f"file:{tmp_path}/m{index}/v000001.json"
        create(target, '{"writer": "first"}')
        with pytest.raises(TargetExistsError, match="v000001.json exists"):
            create(target, '{"writer": "second"}')
        assert json.loads(storage.read_text(target)) == {"writer": "first"}
        assert [p.name for p in (tmp_path / f"m{index}").iterdir() if not p.name.endswith(".crc")] == \
            ["v000001.json"], "no temporary file is left"


def test_a_held_commit_lock_fails_the_commit_naming_the_lock_file(spark, make_config, tmp_path):
    write_class_images(tmp_path / "raw", "cats", 3)
    lock = tmp_path / "locks" / "demo.lock"
    lock.parent.mkdir()
    lock.write_text(json.dumps({"run_id": "r20250101T000000Z-0ther0", "pid": 4242, "host": "node-7",
                                "started_at": "2025-01-01T00:00:00+00:00"}))
    config = make_config(*SMALL, "lake.commit_lock=locks")

    with pytest.raises(LakeError, match=r"the commit lock .*/locks/demo.lock is held by run r20250101T000000Z-0ther0 "
                                        r"\(process 4242 on node-7, since 2025-01-01.*if that process is no longer "
                                        r"running, delete .*/locks/demo.lock"):
        ingest(spark, config)
    lake = Lake(spark, config.lake.root)
    assert lake.latest_version("demo") == 0 and not runs_on_disk(tmp_path / "lake" / "demo")
    assert not list((tmp_path / "lake" / "demo" / "_staging").iterdir())

    lock.unlink()  # the documented way to break a lock whose process is gone
    assert ingest(spark, config).version == 1
    assert not lock.exists(), "the lock is held only during the commit"


def test_commits_without_exclusive_create_warn_unless_a_lock_is_configured(spark, make_config, tmp_path, monkeypatch,
                                                                          caplog):
    exclusive_create = HadoopStorage.exclusive_create
    lake_root = str(tmp_path / "lake")
    monkeypatch.setattr(HadoopStorage, "exclusive_create",  # the lake behaves like an object store
                        lambda self, uri: None if lake_root in uri else exclusive_create(self, uri))
    write_class_images(tmp_path / "raw", "cats", 3)
    with caplog.at_level(logging.WARNING, logger="visionlake.lake.store"):
        assert ingest(spark, make_config(*SMALL)).version == 1
    assert re.search(r"commits to file:\S+/lake are not exclusive on file: two concurrent writers of 'demo' could "
                     r"both commit; run one writer per dataset or configure lake.commit_lock", caplog.text)

    caplog.clear()
    write_class_images(tmp_path / "raw", "dogs", 2)
    with caplog.at_level(logging.WARNING, logger="visionlake.lake.store"):
        assert ingest(spark, make_config(*SMALL, "lake.commit_lock=locks")).version == 2
    assert "not exclusive" not in caplog.text
    # A version file that exists is never replaced on that path either.
    with pytest.raises(TargetExistsError):
        Lake(spark, lake_root).storage.publish_text(f"file:{lake_root}/demo/_manifests/v000002.json", "{}")


def test_a_reader_of_version_1_reads_it_whole_while_version_2_rebuilds_the_dataset_until_vacuum(
        spark, make_config, tmp_path):
    write_class_images(tmp_path / "raw", "cats", 8)
    write_class_images(tmp_path / "raw", "dogs", 8)
    settings = [*SMALL, "lake.write_partitions=3", "ingest.split.ratios={train: 0.8, val: 0.1, test: 0.1}"]
    first = ingest(spark, make_config(*settings))
    lake = Lake(spark, str(tmp_path / "lake"))
    version_1 = lake.read_manifest("demo")
    files = lake.table_files("demo", "images", "train", version_1)
    expected = sorted(row.id for row in lake.read_table("demo", "images", version_1).filter("split = 'train'")
                      .select("id").collect())
    assert len(files) >= 2

    # A training reader has read part of version 1 when the full rebuild commits version 2 ...
    read = pq.read_table(local(files[0]), columns=["id"]).column("id").to_pylist()
    rebuilt = ingest(spark, make_config(*settings, "ingest.full_rebuild=true"))
    assert rebuilt.version == 2
    version_2 = lake.read_manifest("demo")
    assert version_2.live_runs == (rebuilt.run_id,)
    # ... and reads the rest of version 1 to the end: every row, once.
    for uri in files[1:]:
        read += pq.read_table(local(uri), columns=["id"]).column("id").to_pylist()
    assert sorted(read) == expected
    # Version 1 stays readable through the lake too (Parquet and its TFRecord copy), until vacuum.
    assert lake.read_table("demo", "images", version_1).count() == sum(first.total.values())
    base = Path(local(version_1.tables["tfrecord"])).parent
    assert all((base / name).exists() for names in version_1.tfrecord_files.values() for name in names)
    assert version_2.superseded == {first.run_id: {"version": 2, "committed_at": version_2.committed_at}}

    within = lake.vacuum("demo", retention_hours=1)
    assert within.removed == [] and within.kept_superseded
    dry = lake.vacuum("demo", retention_hours=0, dry_run=True)
    assert {kind for kind, _, _ in dry.removed} == {"superseded"} and dry.bytes > 0
    assert {location.rsplit("run_id=", 1)[1] for _, location, _ in dry.removed} == {first.run_id}
    assert runs_on_disk(tmp_path / "lake" / "demo") == {first.run_id, rebuilt.run_id}, "a dry run removes nothing"

    vacuum = subprocess.run(
        [sys.executable, "-m", "visionlake.operate.cli", "vacuum", "--dataset", "demo", "--retention-hours", "0",
         f"lake.root={tmp_path / 'lake'}", *PROCESS_SPARK],
        cwd=tmp_path, env=loopback_job_env(), capture_output=True, text=True, timeout=600)
    assert vacuum.returncode == 0, vacuum.stderr[-3000:]
    assert f"removed {len(dry.removed)} item(s), {dry.bytes:,} bytes: {len(dry.removed)} superseded partition(s)" \
        in vacuum.stdout
    assert runs_on_disk(tmp_path / "lake" / "demo") == {rebuilt.run_id}
    latest = lake.read_table("demo", "images")
    assert latest.count() == sum(rebuilt.total.values())
    assert sorted(row.id for row in latest.filter("split = 'train'").select("id").collect()) == expected
    with pytest.raises(LakeError, match=rf"version 1 of dataset 'demo' can no longer be read: `visionlake vacuum` "
                                        rf"removed its run\(s\) {first.run_id}.*read the latest version \(version 2\)"):
        lake.read_table("demo", "images", version_1)
    with pytest.raises(LakeError, match="can no longer be read"):
        lake.table_files("demo", "images", "train", version_1)


def stage_run(dataset_folder: Path, run_id: str, writer: dict) -> None:
    """What a writer has left at its commit: a staging folder with its record, and a published partition."""
    (dataset_folder / "_staging" / run_id).mkdir(parents=True)
    (dataset_folder / "_staging" / run_id / "_writer.json").write_text(json.dumps(writer))
    partition = dataset_folder / "images" / "split=train" / f"run_id={run_id}"
    partition.mkdir(parents=True)
    (partition / "part-00000.parquet").write_bytes(b"PAR1")


def test_recover_leaves_the_runs_of_writers_that_may_still_run_and_vacuum_ages_them_out(spark, make_config,
                                                                                      tmp_path):
    write_class_images(tmp_path / "raw", "cats", 3)
    first = ingest(spark, make_config(*SMALL))
    lake, folder = Lake(spark, str(tmp_path / "lake")), tmp_path / "lake" / "demo"
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        runs = {"live here": "r20200101T000000Z-a11ve0", "elsewhere, old": "r20200101T000000Z-e15e01",
                "elsewhere, recent": new_run_id(), "gone here": new_run_id()}
        stage_run(folder, runs["live here"], {**writer_identity(), "pid": alive.pid,
                                               "process_started": _process_started(alive.pid)})
        stage_run(folder, runs["elsewhere, old"], {**writer_identity(), "host": "node-7",
                                                   "started_at": "2020-01-01T00:00:00+00:00"})
        stage_run(folder, runs["elsewhere, recent"], {**writer_identity(), "host": "node-7"})
        stage_run(folder, runs["gone here"], {**writer_identity(), "pid": alive.pid, "process_started": "1"})

        removed = lake.recover("demo")
        assert [location.rsplit("run_id=", 1)[1] for location in removed] == [runs["gone here"]]
        assert runs_on_disk(folder) == {first.run_id, runs["live here"], runs["elsewhere, old"],
                                        runs["elsewhere, recent"]}

        report = lake.vacuum("demo", retention_hours=168)
        assert sorted((kind, location.rsplit("/", 1)[1]) for kind, location, _ in report.removed) == [
            ("staging", runs["elsewhere, old"]), ("uncommitted", f"run_id={runs['elsewhere, old']}")]
        assert runs_on_disk(folder) == {first.run_id, runs["live here"], runs["elsewhere, recent"]}
    finally:
        alive.kill()
        alive.wait()
    assert [location.rsplit("run_id=", 1)[1] for location in lake.recover("demo")] == [runs["live here"]]
    assert sorted(p.name for p in (folder / "_staging").iterdir()) == [runs["elsewhere, recent"]]
    assert lake.read_table("demo", "images").count() == 3
