"""What users bring: a class-per-folder tree listed in class order, and photos stored as JPEG.

Real Spark, real Horovod (2 ranks) and real petastorm on data generated here. The shuffle buffer is kept far below
the dataset size, so a well-mixed stream can only come from the lake's own order, not from the buffer.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.conftest import encoded
from visionlake.config import ConfigError, LimitsConfig
from visionlake.lake.reader import InputSpec, open_images, plan_inputs
from visionlake.lake.images import decode_stored_image, normalise_image
from visionlake.ingest.job import IngestError, ingest
from visionlake.lake.store import Lake
from visionlake.train.launcher import RankSettings, init_rank, run_on_ranks
from visionlake.lake.shards import whole
from visionlake.lake.tfrecord import read_tfrecord_dataset

CLASSES = [f"class_{i}" for i in range(10)]
PER_CLASS = 60
BATCH = 16
TREE = ["ingest.source.uri=tree", "ingest.image.mode=RGB", "ingest.image.height=16", "ingest.image.width=16",
        "ingest.split.ratios={train: 0.8, val: 0.1, test: 0.1}", "lake.write_partitions=2",
        "lake.row_group_bytes=16384", "train.num_proc=2", f"train.batch_size={BATCH}", "train.shuffle_buffer=32"]


def smooth_image(rng, size: int, base: int) -> np.ndarray:
    """A photo-like image: a colour gradient plus a soft blob, different for every call."""
    y, x = np.mgrid[0:size, 0:size] / size
    cy, cx = rng.uniform(0.2, 0.8, 2)
    blob = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) * 12)[..., None]
    colour = (base + rng.integers(-40, 40, 3)) % 256
    pixels = colour * (0.6 + 0.4 * x[..., None]) + 120 * blob * rng.uniform(0.5, 1.0, 3)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write_class_tree(root: Path) -> dict[str, int]:
    """``root/<class>/...`` with a third of each class two folders deeper (which keeps the class)."""
    rng = np.random.default_rng(11)
    for index, name in enumerate(CLASSES):
        for item in range(PER_CLASS):
            folder = root / name / ("scans" / Path("batch_a") if item % 3 == 0 else Path())
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{item:03d}.png").write_bytes(encoded(Image.fromarray(smooth_image(rng, 24, 25 * index)),
                                                            "PNG"))
    return {name: PER_CLASS for name in CLASSES}


@pytest.fixture(scope="module")
def tree_lake(tmp_path_factory, spark):
    from visionlake.config import load_config

    root = tmp_path_factory.mktemp("tree")
    write_class_tree(root / "tree")

    def make(*overrides: str):
        return load_config(None, [*TREE, *overrides], base_dir=str(root))

    summary = ingest(spark, make())
    return make, summary


def expected_distinct_labels(class_counts: list[int], batch: int) -> float:
    """E[distinct labels in a batch] drawn uniformly without replacement: sum over classes of P(class present)."""
    total = sum(class_counts)
    return sum(1 - math.comb(total - n, batch) / math.comb(total, batch) for n in class_counts)


def stream_labels(spec: InputSpec, inputs, batches: int) -> list[list[int]]:
    """What every rank runs: the labels of its first training batches."""
    hvd = init_rank(RankSettings(seed=1, threads=1))
    with open_images(spec, inputs.train[hvd.rank()], training=True) as dataset:
        return [labels.numpy().tolist() for _, labels in dataset.take(batches)]


def read_once(spec: InputSpec, inputs) -> int:
    """What every rank runs: one pass over its share, counting the rows petastorm hands it."""
    hvd = init_rank(RankSettings(seed=1, threads=1))
    with open_images(spec, inputs.train[hvd.rank()], training=False) as dataset:
        return sum(len(labels) for _, labels in dataset)


def test_first_folder_labels_hold_for_nested_files(tree_lake):
    _, summary = tree_lake
    assert summary.quarantined == {}
    assert {name: sum(summary.added[split].get(name, 0) for split in summary.added) for name in CLASSES} == \
        {name: PER_CLASS for name in CLASSES}


def test_every_lake_file_is_a_mixed_sample_of_the_labels(tree_lake, spark):
    make, _ = tree_lake
    config = make()
    lake = Lake(spark, config.lake.root)
    files = lake.table_files("demo", "images", "train", lake.read_manifest("demo"))
    assert len(files) == 2
    for uri in files:
        labels = pq.read_table(uri[len("file:"):], columns=["label"]).column("label").to_numpy()
        assert set(labels) == set(range(10))
        changes = np.count_nonzero(np.diff(labels))
        assert changes > 0.7 * (len(labels) - 1), "rows are still grouped by label"


def test_two_ranks_each_stream_every_label_in_well_mixed_batches(tree_lake, spark):
    make, _ = tree_lake
    config = make()
    lake = Lake(spark, config.lake.root)
    manifest = lake.read_manifest("demo")
    inputs = plan_inputs(spark, lake, manifest, num_proc=2, batch_size=BATCH, max_steps=0)
    # Which plan is fair here depends on how the rows fell into row groups, and the lake's row order hashes the
    # source paths, which hold this run's temporary folder: either plan must stream the same way.
    assert len({shard.by for shard in inputs.train}) == 1 and inputs.train[0].by in ("row_group", "row")
    spec = InputSpec(image_shape=(16, 16, 3), batch_size=BATCH, shuffle_buffer=config.train.shuffle_buffer, seed=1)
    # petastorm (cur_shard/shard_count, or the row predicate) hands each rank exactly the rows the planner counted.
    assert run_on_ranks(spark, read_once, (spec, inputs), 2) == [shard.rows for shard in inputs.train]
    assert sum(shard.rows for shard in inputs.train) == sum(manifest.counts["train"].values())
    per_rank = run_on_ranks(spark, stream_labels, (spec, inputs, 24), 2)
    counts = list(manifest.counts["train"].values())
    expected = expected_distinct_labels(counts, BATCH)
    for batches in per_rank:
        assert set(label for batch in batches for label in batch) == set(range(10))
        distinct = np.mean([len(set(batch)) for batch in batches])
        assert abs(distinct - expected) <= 0.1 * expected, (distinct, expected)


def test_a_label_subset_in_one_row_group_is_shared_by_row(tmp_path, spark):
    """One file, one row group per split: fewer row groups than ranks, so ranks share the normal class by row."""
    from visionlake.config import load_config
    from visionlake.train.detectors import train_detector
    from mlflow.tracking import MlflowClient

    write_class_tree(tmp_path / "tree")
    config = load_config(None, [*TREE, "lake.write_partitions=1", "lake.row_group_bytes=67108864",
                                "anomaly.method=autoencoder", "anomaly.normal_labels=[class_3]",
                                "generative.epochs=1", "generative.batch_size=8", "generative.autoencoder.filters=8",
                                "generative.quality.samples=16"], base_dir=str(tmp_path))
    ingest(spark, config)
    lake = Lake(spark, config.lake.root)
    manifest = lake.read_manifest("demo")
    normal_rows = manifest.counts["train"]["class_3"]
    inputs = plan_inputs(spark, lake, manifest, num_proc=2, batch_size=8, max_steps=0, labels=(3,))
    assert [shard.by for shard in inputs.train] == ["row", "row"]
    assert sum(shard.rows for shard in inputs.train) == normal_rows and min(s.rows for s in inputs.train) >= 8

    trained = train_detector(spark, config)
    tags = MlflowClient(config.tracking.tracking_uri).get_run(trained.run_id).data.tags
    assert tags["data.sharding"] == "row"
    assert sum(map(int, tags["data.rows_per_rank"].split(","))) == normal_rows
    assert trained.calibration.calibration_images == manifest.counts["val"]["class_3"]

    with pytest.raises(ConfigError, match="has no TFRecord copy"):
        without_copy = dataclasses.replace(manifest, image=dataclasses.replace(manifest.image, tfrecord=False))
        plan_inputs(spark, lake, without_copy, num_proc=2, batch_size=8, max_steps=0, reader="tfrecord")
    with pytest.raises(ConfigError, match=r"fewer images than 2 rank\(s\) x batch 64"):
        plan_inputs(spark, lake, manifest, num_proc=2, batch_size=64, max_steps=0, labels=(3,))


@pytest.mark.parametrize("codec, max_mean_error", [("png", 0.0), ("jpeg", 3.0)])
def test_codecs_round_trip_through_both_training_readers(codec, max_mean_error, tmp_path, spark):
    """PNG is exact; JPEG at quality 95 stays within 3 grey levels on average per image (smooth 16 px images)."""
    from visionlake.config import load_config

    write_class_tree(tmp_path / "tree")
    config = load_config(None, [*TREE, f"ingest.image.codec={codec}"], base_dir=str(tmp_path))
    ingest(spark, config)
    lake = Lake(spark, config.lake.root)
    manifest = lake.read_manifest("demo")
    assert manifest.image.codec == codec
    exact = {}
    lossless = replace(config.ingest.image, codec="png")
    for path in sorted((tmp_path / "tree").rglob("*.png")):
        image = normalise_image(path.read_bytes(), lossless, LimitsConfig())
        exact[image.content_hash] = image.pixels.astype(int)

    rows = lake.read_table("demo", "images").select("id", "image").collect()
    stored = {row.id: decode_stored_image(row.image).astype(int) for row in rows}
    errors = [np.abs(stored[i] - exact[i]).mean() for i in stored]
    assert len(stored) == len(exact) and max(errors) <= max_mean_error
    base = manifest.tables["tfrecord"].rsplit("/tfrecord", 1)[0]
    tfrecord_files = [f"{base}/{f}" for split in manifest.tfrecord_files.values() for f in split]
    through_tfrecord = {}
    for batch in read_tfrecord_dataset(tfrecord_files, (16, 16, 3), batch_size=64):
        for image_id, image in zip(batch["id"].numpy(), batch["image"].numpy()):
            through_tfrecord[image_id.decode()] = image.astype(int)
    assert through_tfrecord.keys() == stored.keys()
    # tf.data decodes with the same libjpeg as Pillow: the readers agree with each other to the grey level.
    assert max(np.abs(through_tfrecord[i] - stored[i]).max() for i in stored) <= 1

    spec = InputSpec(image_shape=(16, 16, 3), batch_size=64)
    test_files = lake.table_files("demo", "images", "test", manifest)
    with open_images(spec, whole(test_files), training=False) as batches:
        petastorm_images = np.concatenate([images.numpy() for images, _ in batches])
    test_ids = [row.id for row in lake.read_table("demo", "images").filter("split = 'test'").collect()]
    assert len(petastorm_images) == len(test_ids)
    # The readers' orders differ: compare each image's pixel sum, sorted.
    assert np.allclose(sorted(petastorm_images.sum(axis=(1, 2, 3))),
                       sorted(stored[i].sum() / 255.0 for i in test_ids), atol=1e-2)


def test_changing_the_codec_or_the_tfrecord_copy_needs_a_rebuild(tree_lake, spark):
    make, _ = tree_lake
    with pytest.raises(IngestError, match="differs in codec, quality"):
        ingest(spark, make("ingest.image.codec=jpeg"))
    with pytest.raises(IngestError, match="differs in tfrecord"):
        ingest(spark, make("ingest.tfrecord=false"))
