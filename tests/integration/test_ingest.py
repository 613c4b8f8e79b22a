"""The ingest job on real local Spark, with raw data built in each test."""
from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import delta_rs_ids, encoded, png_bytes
from visionlake.lake.reader import open_batch_reader
from visionlake.operate.demo_data import bad_files, write_demo_dataset
from visionlake.lake.images import decode_stored_image, normalise_image
from visionlake.ingest.job import IngestError, ingest
from visionlake.lake.store import Lake, LakeError
from visionlake.lake.schema import IMAGES_SCHEMA, QUARANTINE_REASONS
from visionlake.ingest.sources import SourceError
from visionlake.lake.delta import DeltaTables
from visionlake.lake.tfrecord import read_tfrecord_dataset

SMALL = ["ingest.image.mode=L", "ingest.image.height=12", "ingest.image.width=12", "ingest.label.names=[cats, dogs]",
         "ingest.source.uri=raw"]


def write_class_images(root: Path, label: str, count: int, start: int = 0, image_format: str = "PNG") -> None:
    folder = root / label
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(start, start + count):
        rng = np.random.default_rng(hash((label, index)) % 2 ** 32)
        pixels = rng.integers(0, 256, (12, 12), dtype=np.uint8)
        suffix = {"PNG": ".png", "JPEG": ".jpg"}[image_format]
        (folder / f"{label}_{index:03d}{suffix}").write_bytes(encoded(Image.fromarray(pixels), image_format))


def table_rows(spark, config, table: str):
    lake = Lake(spark, config.lake.root)
    return lake.read_table(config.ingest.dataset, table).collect()


def test_every_file_becomes_an_image_or_a_quarantine_row_with_its_reason(spark, make_config, tmp_path):
    raw = tmp_path / "raw"
    write_class_images(raw, "cats", 5)
    write_class_images(raw, "dogs", 5, image_format="JPEG")
    bad = {
        "cats/empty.png": b"",
        "cats/notes.txt": b"not pixels\n",
        "dogs/truncated.png": png_bytes(np.random.default_rng(3).integers(0, 255, (40, 40, 3), np.uint8))[:300],
        "dogs/bomb.png": png_bytes(np.zeros((1500, 1500), np.uint8), optimize=True),
        "dogs/float.tif": encoded(Image.fromarray(np.ones((8, 8), np.float32)), "TIFF"),
        "cats/icon.ico": encoded(Image.new("RGB", (16, 16)), "ICO"),
        "loose.png": png_bytes(np.zeros((12, 12), np.uint8)),
        "birds/bird.png": png_bytes(np.full((12, 12), 9, np.uint8)),
        "dogs/huge.png": png_bytes(np.random.default_rng(4).integers(0, 255, (200, 200, 3), np.uint8)),
        "cats/zz_copy.png": (raw / "cats" / "cats_000.png").read_bytes(),
        "broken.zip": b"PK\x03\x04 this is no zip",
    }
    for relative, payload in bad.items():
        (raw / relative).parent.mkdir(parents=True, exist_ok=True)
        (raw / relative).write_bytes(payload)
    config = make_config(*SMALL, "ingest.limits.max_pixels=1000000", "ingest.limits.max_file_bytes=60000")

    summary = ingest(spark, config)

    images = table_rows(spark, config, "images")
    quarantine = {Path(r.source_path).name: r.reason for r in table_rows(spark, config, "quarantine")}
    assert quarantine == {"empty.png": "empty_file", "notes.txt": "not_an_image", "truncated.png": "truncated",
                          "bomb.png": "too_many_pixels", "float.tif": "unsupported_mode",
                          "icon.ico": "unsupported_format", "loose.png": "no_label", "bird.png": "no_label",
                          "huge.png": "file_too_large", "zz_copy.png": "duplicate", "broken.zip": "unreadable"}
    assert set(quarantine.values()) <= set(QUARANTINE_REASONS)
    assert len(images) == 10 and summary.images_added == 10
    assert sum(summary.quarantined.values()) == len(bad)
    assert {r.label_name for r in images} == {"cats", "dogs"}
    assert all((r.height, r.width, r.channels) == (12, 12, 1) for r in images)
    read_back = Lake(spark, config.lake.root).read_table("demo", "images")
    assert [f.name for f in read_back.schema.fields] == [f.name for f in IMAGES_SCHEMA.fields]


def test_reruns_add_nothing_and_new_files_are_appended(spark, make_config, tmp_path, capsys):
    raw = tmp_path / "raw"
    write_class_images(raw, "cats", 6)
    write_class_images(raw, "dogs", 6)
    config = make_config(*SMALL)
    first = ingest(spark, config)
    again = ingest(spark, config)
    assert (first.version, again.version, again.images_added) == (1, 1, 0)

    write_class_images(raw, "dogs", 3, start=100)
    (raw / "cats" / "renamed_copy.png").write_bytes((raw / "cats" / "cats_001.png").read_bytes())
    third = ingest(spark, config)

    assert third.version == 2 and third.images_added == 3 and third.quarantined == {"duplicate": 1}
    images = table_rows(spark, config, "images")
    assert len(images) == 15 and len({r.id for r in images}) == 15
    assert delta_rs_ids(f"{config.lake.root}/demo/images") == sorted(r.id for r in images)
    assert len({r.source_path for r in images}) == 15
    assert sum(third.total.values()) == 15
    manifest = Lake(spark, config.lake.root).read_manifest("demo")
    assert manifest.version == 2 and len(manifest.live_runs) == 2

    # Maintenance: `optimize` compacts each run's files in one commit, rows and description unchanged; `history`
    # lists every version.
    from visionlake.operate.cli import history_job, optimize_job
    lake = Lake(spark, config.lake.root)
    files = {split: lake.table_files("demo", "images", split, manifest) for split in manifest.counts}
    optimize_job(spark, config)
    compacted = lake.read_manifest("demo")
    assert compacted.version == 3 and compacted.counts == manifest.counts
    after = {split: lake.table_files("demo", "images", split, compacted) for split in manifest.counts}
    assert all(len(after[split]) == 1 < len(files[split]) for split in files if len(files[split]) > 1)
    assert sorted(r.id for r in lake.read_table("demo", "images", compacted).collect()) == sorted(r.id for r in images)
    assert "optimize of dataset 'demo'" in capsys.readouterr().out
    history_job(spark, config)
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in listed if line.split()[:1] == ["images"]] == [
        ["images", "3"], ["images", "2"], ["images", "1"], ["images", "0"]]
    assert any(third.run_id in line and "MERGE" in line for line in listed)
    assert any("OPTIMIZE" in line and "optimize" in line for line in listed)


def test_a_failed_run_leaves_the_previous_version_readable(spark, make_config, tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    write_class_images(raw, "cats", 4)
    config = make_config(*SMALL)
    ingest(spark, config)
    lake = Lake(spark, config.lake.root)
    write_class_images(raw, "dogs", 4)

    def fail_midway(*args, **kwargs):
        raise RuntimeError("executor lost while writing TFRecords")
    monkeypatch.setattr("visionlake.ingest.job._write_tfrecords", fail_midway)
    with pytest.raises(RuntimeError, match="executor lost"):
        ingest(spark, config)
    assert lake.latest_version("demo") == 1
    assert len(lake.read_table("demo", "images").collect()) == 4
    monkeypatch.undo()

    # The process dies between its quarantine and images commits: readers still see version 1, and the next run
    # adds the images once, without a second quarantine row for the same file.
    (raw / "dogs" / "empty.png").write_bytes(b"")

    def die(*args, **kwargs):
        raise SystemExit("killed")
    monkeypatch.setattr(DeltaTables, "insert_new", die)
    with pytest.raises(SystemExit):
        ingest(spark, config)
    monkeypatch.undo()
    assert lake.latest_version("demo") == 1 and len(lake.read_table("demo", "images").collect()) == 4
    assert [r.source_path.rsplit("/", 1)[1] for r in lake.read_latest("demo", "quarantine").collect()] == \
        ["empty.png"]

    recovered = ingest(spark, config)
    assert recovered.version == 2 and recovered.images_added == 4 and recovered.quarantined == {}
    assert len(lake.read_table("demo", "images").collect()) == 8
    assert lake.read_table("demo", "quarantine").count() == 1
    assert lake.read_manifest("demo").quarantine == {"empty_file": 1}  # counted from the table


def test_a_commit_based_on_an_older_version_is_refused(spark, make_config, tmp_path, monkeypatch):
    write_class_images(tmp_path / "raw", "cats", 3)
    config = make_config(*SMALL)
    ingest(spark, config)
    write_class_images(tmp_path / "raw", "dogs", 2)
    real_commit = Lake.commit_ingest

    def someone_else_commits_first(self, manifest, images, quarantine, **options):
        self.delta.insert_new(self._conform(images.limit(0), "images", "other"), self.paths("demo").table("images"),
                              "id", metadata={"job": "other"})
        return real_commit(self, manifest, images, quarantine, **options)
    monkeypatch.setattr(Lake, "commit_ingest", someone_else_commits_first)
    with pytest.raises(LakeError, match="version 2 of dataset 'demo' was committed by another writer while run "
                                        r"r.*this run's images were not committed.*Re-run"):
        ingest(spark, config)
    monkeypatch.undo()
    assert Lake(spark, config.lake.root).read_table("demo", "images").count() == 3
    assert ingest(spark, config).images_added == 2


def test_archives_are_read_in_memory_and_match_the_folder(spark, make_config, tmp_path):
    raw = tmp_path / "tree"
    write_class_images(raw, "cats", 4)
    write_class_images(raw, "dogs", 4)
    archives = tmp_path / "archives"
    archives.mkdir()
    with tarfile.open(archives / "part1.tar.gz", "w:gz") as tar:
        tar.add(raw / "cats", arcname="cats")
    with zipfile.ZipFile(archives / "part2.zip", "w") as archive:
        for path in (raw / "dogs").iterdir():
            archive.write(path, f"dogs/{path.name}")
    from_folder = make_config(*SMALL, "ingest.source.uri=tree", "ingest.dataset=folder")
    from_archives = make_config(*SMALL, "ingest.source.uri=archives", "ingest.dataset=archived")
    ingest(spark, from_folder)
    summary = ingest(spark, from_archives)
    folder_ids = {(r.id, r.label_name) for r in table_rows(spark, from_folder, "images")}
    archive_rows = table_rows(spark, from_archives, "images")
    assert {(r.id, r.label_name) for r in archive_rows} == folder_ids and summary.images_added == 8
    assert all("!/" in r.source_path for r in archive_rows)


def test_manifest_sources_take_labels_and_report_missing_files(spark, make_config, tmp_path):
    raw = tmp_path / "raw"
    write_class_images(raw, "a", 3)
    (raw / "manifest.csv").write_text("path,label\na/a_000.png,dogs\na/a_001.png,cats\n"
                                      f"{raw}/a/a_002.png,cats\na/missing.png,cats\n")
    config = make_config(*SMALL, "ingest.source.manifest=raw/manifest.csv", "ingest.label.source=manifest")
    summary = ingest(spark, config)
    labels = {Path(r.source_path).name: r.label_name for r in table_rows(spark, config, "images")}
    assert labels == {"a_000.png": "dogs", "a_001.png": "cats", "a_002.png": "cats"}
    assert summary.quarantined == {"missing_file": 1}


def test_bad_sources_and_incompatible_reruns_fail_with_clear_errors(spark, make_config, tmp_path):
    with pytest.raises(SourceError, match="does not exist; set ingest.source.uri"):
        ingest(spark, make_config(*SMALL, "ingest.source.uri=nowhere"))
    write_class_images(tmp_path / "raw", "cats", 2)
    ingest(spark, make_config(*SMALL))
    with pytest.raises(IngestError, match="full_rebuild=true"):
        ingest(spark, make_config(*SMALL, "ingest.image.height=16"))
    rebuilt = ingest(spark, make_config(*SMALL, "ingest.image.height=16", "ingest.full_rebuild=true"))
    assert rebuilt.version == 2 and sum(rebuilt.total.values()) == 2
    rows = table_rows(spark, make_config(*SMALL), "images")
    assert len(rows) == 2 and {r.height for r in rows} == {16}


def test_pixels_and_labels_round_trip_through_petastorm_and_tf_data(spark, make_config, tmp_path):
    write_demo_dataset(tmp_path / "data" / "demo-raw", make_config().demo)
    config = make_config()
    summary = ingest(spark, config)
    assert summary.images_added == 5 * config.demo.images_per_class
    assert summary.quarantined == {"empty_file": 1, "not_an_image": 2, "truncated": 1}
    expected = {}
    raw = tmp_path / "data" / "demo-raw"
    broken = {raw / relative for relative in bad_files()}
    for path in raw.rglob("*"):
        if path.is_file() and path not in broken:  # a flat GIF part can be under 200 bytes: no size rule
            image = normalise_image(path.read_bytes(), config.ingest.image, config.ingest.limits)
            expected[image.content_hash] = (path.parent.name, image.pixels)
    lake = Lake(spark, config.lake.root)
    manifest = lake.read_manifest("demo")
    train = manifest.tables["images"] + "/split=train"

    seen = {}
    with open_batch_reader(train, num_epochs=1, workers_count=1) as reader:
        for batch in reader:
            for row_id, label, image in zip(batch.id, batch.label, batch.image):
                assert row_id not in seen
                seen[row_id] = (manifest.label_names[label], decode_stored_image(image))
    assert len(seen) == sum(manifest.counts["train"].values())
    for row_id, (label_name, pixels) in seen.items():
        assert expected[row_id][0] == label_name
        assert np.array_equal(expected[row_id][1], pixels)

    base = manifest.tables["tfrecord"].rsplit("/tfrecord", 1)[0]
    files = [f"{base}/{relative}" for relative in manifest.tfrecord_files["train"]]
    dataset = read_tfrecord_dataset(files, (32, 32, 3), batch_size=64)
    from_tfrecords = {}
    for batch in dataset:
        for row_id, label, image in zip(batch["id"].numpy(), batch["label"].numpy(), batch["image"].numpy()):
            from_tfrecords[row_id.decode()] = (manifest.label_names[label], image)
    assert from_tfrecords.keys() == seen.keys()
    for row_id, (label_name, pixels) in from_tfrecords.items():
        assert label_name == seen[row_id][0] and np.array_equal(pixels, seen[row_id][1])


def test_a_sample_of_the_shared_mnist_archive(spark, make_config, tmp_path, shared_mnist):
    sample = tmp_path / "mnist_sample.tar.gz"
    with tarfile.open(shared_mnist) as source, tarfile.open(sample, "w:gz") as target:
        for index, member in enumerate(source):
            if member.isfile() and index % 35 == 0:
                target.addfile(member, source.extractfile(member))
    repo = Path(__file__).resolve().parents[2]
    config = make_config(f"ingest.source.uri={sample}", conf=str(repo / "conf" / "mnist.yaml"))
    summary = ingest(spark, config)
    rows = table_rows(spark, config, "images")
    assert summary.images_added == len(rows) > 1500 and not summary.quarantined
    assert set(summary.total) == {"train", "val", "test"}
    assert {r.label_name for r in rows} == set(config.ingest.label.names)
    assert all(config.ingest.label.names[r.label] == r.label_name for r in rows)
    for row in rows[:50]:
        pixels = decode_stored_image(row.image)
        assert pixels.shape == (28, 28, 1)
        assert pixels.mean() < 100  # inverted to white strokes on black, as MNIST arrays are
        assert row.label_name in row.source_path.rsplit("/", 1)[1]
    split_of = {r.source_path: r.split for r in rows}
    assert all(split in ("train", "val") for path, split in split_of.items() if "/train/" in path)
    assert all(split == "test" for path, split in split_of.items() if "/test/" in path)
