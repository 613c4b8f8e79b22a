import dataclasses
import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from tests.conftest import png_bytes
from tests.unit.lake_records import a_manifest
from visionlake.lake import manifest as M
from visionlake.config import load_config
from visionlake.ingest.decode import DecodePlan, decode_records
from visionlake.ingest.job import summarise_statistics


def raw_frame(rows):
    return pd.DataFrame([{"source_path": p, "content": c, "length": len(c or b""), "label_hint": None,
                          "split_hint": None, "error": e} for p, c, e in rows])


def test_each_record_yields_one_accepted_or_rejected_row(tmp_path):
    from visionlake.lake.images import content_hash

    # Every hash lands in val, so the split shows the configured ratios were used; a split hint wins over them.
    config = load_config(None, ["ingest.source.uri=/raw", "ingest.image.mode=L", "ingest.image.height=4",
                                "ingest.image.width=4", "ingest.split.ratios={train: 0.0, val: 1.0, test: 0.0}"],
                         base_dir=str(tmp_path))
    plan = DecodePlan(config.ingest, ("cat", "dog"))
    image = png_bytes(np.full((4, 4), 7, np.uint8))
    frame = raw_frame([
        ("file:/raw/cat/a.png", image, None),
        ("file:/raw/bird/b.png", image, None),        # label not in the map
        ("file:/raw/dog/c.png", b"junk", None),
        ("file:/raw/dog/d.png", None, "file_too_large: 9 bytes > limit 1"),
        ("file:/raw/dog/e.png", image, None),
    ])
    frame.loc[4, "split_hint"] = "Testing"  # a source split name, any case
    result = decode_records(frame, plan).set_index("source_path")
    assert len(result) == len(frame)
    accepted = result.loc["file:/raw/cat/a.png"]
    assert accepted["reason"] is None and accepted["label"] == 0 and accepted["label_name"] == "cat"
    assert accepted["split"] == "val"
    assert accepted["id"] == content_hash(np.full((4, 4, 1), 7, np.uint8))  # the pixels', not the file's
    assert (accepted["height"], accepted["width"], accepted["channels"]) == (4, 4, 1)
    assert result.loc["file:/raw/dog/e.png", "split"] == "test" and result.loc["file:/raw/dog/e.png", "label"] == 1
    assert result.loc["file:/raw/bird/b.png", "reason"] == "no_label"
    assert result.loc["file:/raw/bird/b.png", "detail"] == "label 'bird' is not in ingest.label.names"
    assert result.loc["file:/raw/dog/c.png", "reason"] == "not_an_image"
    assert result.loc["file:/raw/dog/d.png", "reason"] == "file_too_large"
    assert result.loc["file:/raw/dog/d.png", "detail"] == "9 bytes > limit 1"


def test_statistics_subtract_duplicates_and_sum_the_digest():
    stats = [{"reason": None, "split": "train", "label_name": "cat", "count": 3, "digest": 5,
              "example_path": "p", "example_detail": None},
             {"reason": "truncated", "split": None, "label_name": None, "count": 1, "digest": 7,
              "example_path": "q", "example_detail": "PNG"}]
    added, quarantined, examples, fingerprint = summarise_statistics(stats, [("r", "train", "cat", "same as p")])
    assert added == {"train": {"cat": 2}}
    assert quarantined == {"duplicate": 1, "truncated": 1}
    assert fingerprint == (4, 12)
    assert {e["reason"] for e in examples} == {"truncated", "duplicate"}


def test_incremental_manifest_adds_to_its_base(tmp_path):
    settings = load_config(base_dir=str(tmp_path)).ingest
    now = dt.datetime(2026, 1, 1)
    common = dict(settings=settings, created_at=now, label_names=["a", "b"], tables={}, compression="none", config={})
    first = M.build_manifest(previous=None, base=None, run_id="r1", added={"train": {"a": 2}},
                             quarantined={"truncated": 1}, fingerprint=(3, 10),
                             shards=[{"split": "train", "file": "part-0.tfrecord", "records": 2}], **common)
    second = M.build_manifest(previous=first, base=first, run_id="r2", added={"train": {"a": 1, "b": 4}},
                              quarantined={}, fingerprint=(5, 2 ** 64 - 1), shards=[], **common)
    assert second.version == 2 and second.live_runs == ("r1", "r2")
    assert second.counts == {"train": {"a": 3, "b": 4}}
    assert second.quarantine == {"truncated": 1}
    assert second.tfrecord_files["train"] == ("tfrecord/run_id=r1/split=train/part-0.tfrecord",)
    assert second.source.files == 8 and second.source.digest == f"{9:016x}"
    rebuilt = M.build_manifest(previous=second, base=None, run_id="r3", added={"test": {"b": 1}}, quarantined={},
                               fingerprint=(1, 1), shards=[], **common)
    assert rebuilt.version == 3 and rebuilt.live_runs == ("r3",) and rebuilt.counts == {"test": {"b": 1}}
    assert [run["run_id"] for run in rebuilt.runs] == ["r1", "r2", "r3"]  # the history outlives a rebuild

    # A generation is the run that started what the dataset holds: kept by incremental runs, new with a rebuild.
    assert (first.generation, second.generation, rebuilt.generation) == ("r1", "r1", "r3")
    # The sections other jobs keep in their own tables' commits are not part of what an images commit stores.
    extended = dataclasses.replace(second, synthetic={"live_runs": ["g1"]}, table_versions={"quarantine": 3})
    stored = extended.to_json()
    assert "synthetic" not in stored and stored["table_versions"] == {"quarantine": 3}
    assert M.Manifest.from_json(json.loads(json.dumps(stored))) == dataclasses.replace(extended, synthetic=None)


def test_changed_image_settings_need_a_rebuild(tmp_path):
    settings = load_config(base_dir=str(tmp_path)).ingest
    stored = a_manifest(image=dataclasses.replace(M.ImageSpec.from_settings(settings), height=64))
    with pytest.raises(ValueError, match="differs in height.*full_rebuild=true"):
        M.check_compatible(stored, settings)
    M.check_compatible(a_manifest(image=M.ImageSpec.from_settings(settings)), settings)


def test_codec_and_tfrecord_copy_are_fixed_per_dataset_and_old_manifests_read_as_png_with_tfrecord(tmp_path):
    settings = load_config(base_dir=str(tmp_path)).ingest
    document = a_manifest(image=M.ImageSpec.from_settings(settings)).to_json()
    document["image"] = {key: value for key, value in document["image"].items()
                         if key not in ("codec", "quality", "tfrecord")}
    legacy = M.Manifest.from_json(document)
    M.check_compatible(legacy, settings)  # written before codecs existed: png with a TFRecord copy
    assert legacy.image.stored_codec().name == "png" and legacy.image.tfrecord
    jpeg = load_config(base_dir=str(tmp_path), overrides=["ingest.image.codec=jpeg",
                                                          "ingest.image.quality=90"]).ingest
    with pytest.raises(ValueError, match="differs in codec, quality"):
        M.check_compatible(legacy, jpeg)
    stored = M.ImageSpec.from_settings(jpeg)
    assert stored.stored_codec().name == "jpeg" and stored.stored_codec().quality == 90
    without_copy = load_config(base_dir=str(tmp_path), overrides=["ingest.tfrecord=false"]).ingest
    with pytest.raises(ValueError, match="differs in tfrecord"):
        M.check_compatible(legacy, without_copy)


def test_decoded_batches_are_bounded_by_stored_bytes(tmp_path):
    from visionlake.ingest.decode import decode_partition

    image = png_bytes(np.random.default_rng(0).integers(0, 255, (4, 4), np.uint8))
    config = load_config(None, ["ingest.source.uri=/raw", "ingest.image.mode=L", "ingest.image.height=4",
                                "ingest.image.width=4"], base_dir=str(tmp_path))
    plan = DecodePlan(config.ingest, ("cat",))
    frame = raw_frame([(f"file:/raw/cat/{i}.png", image, None) for i in range(10)])
    stored = len(decode_records(frame.head(1), plan).loc[0, "image"])
    batches = list(decode_partition(iter([frame]), plan, max_batch_bytes=3 * stored))
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    assert pd.concat(batches, ignore_index=True).equals(decode_records(frame, plan))


def test_versions_follow_one_another_and_runs_record_the_table_versions_they_read():
    previous = a_manifest(version=4, table_versions={"images": 4, "quarantine": 2, "synthetic": None})
    assert M.version_after(None) == 1 and M.version_after(previous) == 5
    assert previous.version_params(("synthetic",)) == {"lake.images_version": "4", "lake.synthetic_version": "None"}
    assert previous.version_params(("images",)) == {"lake.images_version": "4"}


def test_counts_combine_per_split_and_label_and_total_per_split():
    earlier = {"train": {"b": 2, "a": 1}, "val": {"a": 3}}
    combined = M.combine_counts(earlier, {"train": {"a": 4, "c": 1}, "test": {"b": 5}})
    assert combined == {"test": {"b": 5}, "train": {"a": 5, "b": 2, "c": 1}, "val": {"a": 3}}
    assert list(combined) == ["test", "train", "val"] and list(combined["train"]) == ["a", "b", "c"]  # sorted
    assert earlier == {"train": {"b": 2, "a": 1}, "val": {"a": 3}}  # the earlier counts are untouched
    assert a_manifest(counts=combined).split_totals() == {"test": 5, "train": 8, "val": 3}


def test_labels_are_numbered_in_the_order_of_their_names():
    assert a_manifest(label_names=("ring", "circle", "10")).label_map == {"ring": 0, "circle": 1, "10": 2}


def test_keys_a_newer_writer_added_survive_every_later_commit():
    document = a_manifest(version=3, live_runs=("r1",)).to_json()
    document["lineage"] = {"upstream": "s3a://raw/v7"}  # a section this version does not know
    read = M.Manifest.from_json(json.loads(json.dumps(document)))
    following = dataclasses.replace(read, version=4)
    assert following.to_json()["lineage"] == {"upstream": "s3a://raw/v7"}
    assert "label_map" not in read.extra and read.to_json()["label_map"] == {"a": 0, "b": 1}
    with pytest.raises(TypeError, match="new_setting"):  # an image setting this version cannot honour: refused
        M.Manifest.from_json({**document, "image": {**document["image"], "new_setting": 1}})
