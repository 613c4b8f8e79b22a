"""Commits, concurrency and retention of the lake's Delta tables on real local Spark: two real concurrent ingests,
readers of an older version while a full rebuild commits, vacuum, plain Delta readers, and a lake in the format
before Delta."""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import delta_rs_ids, loopback_job_env
from tests.integration.test_ingest import SMALL, write_class_images
from visionlake.ingest.job import ingest
from visionlake.lake.store import Lake, LakeError

# Each writer process: its own local Spark session, small and quiet.
PROCESS_SPARK = ["spark.master=local[1]", "spark.conf.spark.ui.enabled=false", "spark.conf.spark.driver.memory=1g",
                 "spark.conf.spark.sql.shuffle.partitions=2"]

# A writer process: the real `visionlake` CLI, except that its ingest commit first waits until every writer has
# reached it (files in a barrier folder): both runs start from the same version and commit at the same moment.
WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path

    from visionlake.operate import cli
    from visionlake.lake.store import Lake

    barrier, name, parties = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    commit = Lake.commit_ingest

    def commit_when_all_writers_are_ready(self, *args, **kwargs):
        (barrier / name).touch()
        deadline = time.monotonic() + 300
        while len(list(barrier.iterdir())) < parties:
            if time.monotonic() > deadline:
                raise RuntimeError("the other writer never reached its commit")
            time.sleep(0.005)
        return commit(self, *args, **kwargs)

    Lake.commit_ingest = commit_when_all_writers_are_ready
    sys.exit(cli.main(sys.argv[4:]))
""")


def local(uri: str) -> str:
    return re.sub(r"^file:(//)?", "", uri)


def test_two_concurrent_ingests_commit_once_each_and_never_duplicate_an_image(spark, make_config, tmp_path):
    write_class_images(tmp_path / "raw", "cats", 4)
    first = ingest(spark, make_config(*SMALL))
    write_class_images(tmp_path / "raw", "dogs", 3)            # writer a: 3 new dogs
    write_class_images(tmp_path / "raw_b", "cats", 5, start=50)  # writer b: 5 new cats, from another drop ...
    write_class_images(tmp_path / "raw_b", "dogs", 3)          # ... and the same 3 dogs' pixels under other paths
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    script = tmp_path / "writer.py"
    script.write_text(WRITER)

    def run_writers():
        writers = {name: subprocess.Popen(
            [sys.executable, str(script), str(barrier), name, "2", "ingest", "--dataset", "demo", *SMALL,
             f"ingest.source.uri={tmp_path / source}", f"lake.root={tmp_path / 'lake'}", *PROCESS_SPARK],
            cwd=tmp_path, env=loopback_job_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for name, source in (("a", "raw"), ("b", "raw_b"))}
        return {name: (writer.wait(timeout=600), writer.communicate()[1]) for name, writer in writers.items()}

    outcomes = run_writers()
    assert sorted(barrier.iterdir()) == [barrier / "a", barrier / "b"], "both writers reached the commit"
    assert sorted(code for code, _ in outcomes.values()) == [0, 2], {k: v[1][-3000:] for k, v in outcomes.items()}
    loser = next(name for name, (code, _) in outcomes.items() if code == 2)
    assert re.search(r"version 2 of dataset 'demo' was committed by another writer while run r\S+ was running; "
                     r"this run's images were not committed", outcomes[loser][1]), outcomes[loser][1][-3000:]
    lake = Lake(spark, str(tmp_path / "lake"))
    assert lake.latest_version("demo") == 2

    # The loser re-runs on top of the winner's version: its new images go in, the dogs' pixels once.
    rerun = ingest(spark, make_config(*SMALL, f"ingest.source.uri={tmp_path / ('raw' if loser == 'a' else 'raw_b')}"))
    assert rerun.version == 3
    images = lake.read_table("demo", "images").select("id", "source_path", "run_id").collect()
    assert len(images) == 4 + 3 + 5 == len({row.id for row in images}), "every image once"
    manifest = lake.read_manifest("demo")
    assert sum(manifest.split_totals().values()) == 12 and manifest.live_runs[0] == first.run_id
    assert {row.run_id for row in images} <= set(manifest.live_runs) and len(manifest.live_runs) == 3
    assert manifest.quarantine == {"duplicate": 3}
    # Any Delta reader sees the same rows: no superseded or uncommitted files are read.
    assert spark.read.format("delta").load(manifest.tables["images"]).count() == 12
    assert delta_rs_ids(manifest.tables["images"]) == sorted(row.id for row in images)
    assert (tmp_path / "lake" / "demo" / "_locks" / "images.lock").exists(), "every write took the table's lock"


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
    assert version_2.live_runs == (rebuilt.run_id,) and version_2.generation == rebuilt.run_id
    # ... and reads the rest of version 1 to the end: every row, once.
    for uri in files[1:]:
        read += pq.read_table(local(uri), columns=["id"]).column("id").to_pylist()
    assert sorted(read) == expected
    # Any Delta reader of the latest version sees the rebuilt rows only, once each.
    plain = spark.read.format("delta").load(version_2.tables["images"])
    assert plain.count() == plain.select("id").distinct().count() == sum(rebuilt.total.values())
    assert spark.sql(f"SELECT count(DISTINCT id) AS n FROM delta.`{version_2.tables['images']}`").first().n == \
        plain.count()
    assert delta_rs_ids(version_2.tables["images"]) == sorted(row.id for row in plain.select("id").collect())
    # Time travel to the previous version returns its rows, in both readers.
    previous = sorted(row.id for row in lake.read_table("demo", "images", version_1).select("id").collect())
    assert delta_rs_ids(version_1.tables["images"], version=1) == previous
    # Version 1 stays readable through the lake too (Parquet and its TFRecord copy), until vacuum.
    assert lake.read_table("demo", "images", version_1).count() == sum(first.total.values())
    base = Path(local(version_1.tables["tfrecord"])).parent
    assert all((base / name).exists() for names in version_1.tfrecord_files.values() for name in names)

    within = lake.vacuum("demo", retention_hours=1)
    assert within.removed == []
    dry = lake.vacuum("demo", retention_hours=0, dry_run=True)
    assert {"images", "tfrecord"} <= {kind for kind, _ in dry.removed}
    assert {local(location) for kind, location in dry.removed if kind == "images"} >= {local(f) for f in files}
    assert ("tfrecord", f"{local(version_1.tables['tfrecord'])}/run_id={first.run_id}") in \
        [(kind, local(location)) for kind, location in dry.removed]
    assert all(Path(local(f)).exists() for f in files), "a dry run removes nothing"

    vacuum = subprocess.run(
        [sys.executable, "-m", "visionlake.operate.cli", "vacuum", "--dataset", "demo", "--retention-hours", "0",
         f"lake.root={tmp_path / 'lake'}", *PROCESS_SPARK],
        cwd=tmp_path, env=loopback_job_env(), capture_output=True, text=True, timeout=600)
    assert vacuum.returncode == 0, vacuum.stderr[-3000:]
    assert f"removed {len(dry.removed)} item(s): " in vacuum.stdout, vacuum.stdout
    assert not any(Path(local(f)).exists() for f in files)
    assert not (base / "tfrecord" / f"run_id={first.run_id}").exists()
    latest = lake.read_table("demo", "images")
    assert latest.count() == sum(rebuilt.total.values())
    assert sorted(row.id for row in latest.filter("split = 'train'").select("id").collect()) == expected
    with pytest.raises(LakeError, match=r"version 1 of \S+ can no longer be read: `visionlake vacuum` removed its "
                                        r"files"):
        lake.table_files("demo", "images", "train", version_1)
    with pytest.raises(LakeError, match=r"dataset 'demo' has no version 5; its versions are 0-2"):
        lake.read_manifest("demo", 5)

    # Commits without a description (OPTIMIZE, property changes), more than one page of history of them, leave
    # every version's description readable.
    for n in range(12):
        spark.sql(f"ALTER TABLE delta.`{lake.paths('demo').table('images')}` SET TBLPROPERTIES ('test.n' = '{n}')")
    assert lake.latest_version("demo") == 14
    assert (lake.read_manifest("demo").version, lake.read_manifest("demo").run_id) == (14, rebuilt.run_id)
    assert lake.read_manifest("demo", 1).run_id == first.run_id


def test_a_lake_in_the_format_before_delta_is_refused_until_a_full_rebuild_moves_it_aside(spark, make_config,
                                                                                         tmp_path):
    old = tmp_path / "lake" / "demo"
    (old / "_manifests").mkdir(parents=True)
    (old / "_manifests" / "v000001.json").write_text("{}")
    (old / "images" / "split=train" / "run_id=r1").mkdir(parents=True)
    write_class_images(tmp_path / "raw", "cats", 3)
    with pytest.raises(LakeError, match=r"dataset 'demo' under \S+ is in the table format visionlake wrote before "
                                        r"Delta Lake; rebuild it on Delta with `visionlake ingest --dataset demo "
                                        r"ingest.full_rebuild=true`"):
        ingest(spark, make_config(*SMALL))
    rebuilt = ingest(spark, make_config(*SMALL, "ingest.full_rebuild=true"))
    assert rebuilt.version == 1 and rebuilt.images_added == 3
    (legacy,) = (old / "_legacy").iterdir()
    assert sorted(p.name for p in legacy.iterdir()) == ["_manifests", "images"]
    assert Lake(spark, str(tmp_path / "lake")).read_table("demo", "images").count() == 3
