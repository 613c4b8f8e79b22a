"""The training input path's pure pieces: the run tags of a plan, decoding stored images in TensorFlow, and the
online augmentation."""
from __future__ import annotations

import numpy as np
import pytest

from visionlake.config import AugmentConfig
from visionlake.lake.images import decode_stored_image, encode_jpeg, encode_png
from visionlake.lake.reader import TrainingInputs, augment_image, decode_lake_image
from visionlake.lake.shards import RankShard

tf = pytest.importorskip("tensorflow")


def test_a_plan_tags_its_run_with_the_sharding_and_the_synthetic_mix():
    shards = (RankShard(("a",), 0, 2, "row", 41), RankShard(("a",), 1, 2, "row", 39))
    inputs = TrainingInputs(train=shards, val=shards, test_files=(), train_files=("a",), steps=4,
                            synthetic_rows=120, synthetic_runs=("g1", "g2"))
    assert inputs.sharding_tags() == {"data.sharding": "row", "data.rows_per_rank": "41,39",
                                      "data.steps_per_epoch": "4"}
    assert inputs.mix_tags(0.25) == {"data.synthetic_fraction": "0.25", "data.synthetic_rows": "120",
                                     "data.synthetic_runs": "g1,g2"}
    real_only = TrainingInputs(train=shards, val=shards, test_files=(), train_files=("a",), steps=4)
    assert real_only.mix_tags(0.0) == {"data.synthetic_fraction": "0.0", "data.synthetic_rows": "0",
                                       "data.synthetic_runs": "none"}


def _photo(height: int, width: int, channels: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(x * 7 + y * 3 + 40 * c) % 256 for c in range(channels)], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("channels", [1, 3])
def test_stored_images_decode_in_tensorflow_to_the_pixels_pillow_decodes(channels):
    pixels = _photo(12, 16, channels)
    png, jpeg = encode_png(pixels, 1), encode_jpeg(pixels, 90)
    for codec in ("png", None):
        np.testing.assert_array_equal(decode_lake_image(png, pixels.shape, codec).numpy(), pixels)
    for codec in ("jpeg", None):  # libjpeg's integer DCT, as Pillow decodes: the same pixels, not near ones
        np.testing.assert_array_equal(decode_lake_image(jpeg, pixels.shape, codec).numpy(), decode_stored_image(jpeg))
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError)):
        decode_lake_image(png, (16, 12, channels), "png")  # another dataset's shape is an error, not a reshape


def test_augmentation_with_nothing_enabled_leaves_the_image_as_it_is():
    image = tf.constant(_photo(8, 8, 3) / 255.0, tf.float32)
    assert not AugmentConfig().enabled
    np.testing.assert_array_equal(augment_image(image, AugmentConfig()).numpy(), image.numpy())


def test_a_flip_mirrors_left_to_right_or_leaves_the_image():
    tf.random.set_seed(0)
    image = tf.constant(_photo(6, 8, 1) / 255.0, tf.float32)
    flipped = image.numpy()[:, ::-1]
    seen = set()
    for _ in range(40):
        out = augment_image(image, AugmentConfig(flip=True)).numpy()
        assert np.array_equal(out, image.numpy()) or np.array_equal(out, flipped)
        seen.add(np.array_equal(out, flipped))
    assert seen == {True, False}


def test_crops_keep_the_size_and_every_augmentation_stays_in_0_1():
    tf.random.set_seed(1)
    image = tf.constant(_photo(16, 16, 3) / 255.0, tf.float32)
    settings = AugmentConfig(flip=True, crop_fraction=0.5, brightness=0.5, contrast=0.5)
    for _ in range(20):
        out = augment_image(image, settings).numpy()
        assert out.shape == (16, 16, 3) and out.min() >= 0.0 and out.max() <= 1.0
    cropped = augment_image(tf.ones((16, 16, 1)), AugmentConfig(crop_fraction=0.5)).numpy()
    np.testing.assert_allclose(cropped, 1.0)  # a crop of a flat image, resized back, is the same flat image


@pytest.mark.parametrize("reader, parquet", [("arrow", "arrow"), ("petastorm", "petastorm"), ("tfrecord", "petastorm")])
def test_parquet_tables_are_read_with_arrow_only_when_training_reads_with_arrow(reader, parquet):
    from visionlake.lake.reader import InputSpec, parquet_reader

    assert parquet_reader(reader) == parquet
    assert InputSpec((4, 4, 1), batch_size=2, reader=reader).parquet_reader == parquet


def test_the_arrow_dataset_yields_stored_bytes_and_int32_labels_of_the_rank_s_share(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from visionlake.lake.arrow_reader import arrow_dataset

    images = [encode_png(np.full((2, 2, 1), i, np.uint8), 1) for i in range(6)]
    table = pa.table({"id": [f"{i:064x}" for i in range(6)], "label": pa.array([0, 1, 2, 0, 1, 2], pa.int32()),
                      "image": images})
    pq.write_table(table, tmp_path / "part-0.parquet", row_group_size=2)  # row groups (0, 1), (2, 3), (4, 5)
    shard = RankShard((f"file:{tmp_path}/part-0.parquet",), rank=1, ranks=2, by="row_group")
    dataset = arrow_dataset(shard, labels=(), training=False, seed=0)
    assert dataset.element_spec == (tf.TensorSpec((), tf.string), tf.TensorSpec((), tf.int32))
    assert [(png.numpy(), int(label)) for png, label in dataset] == [(images[2], 2), (images[3], 0)]  # group 1 of 3
    everything = arrow_dataset(RankShard(shard.files), labels=(2,), training=False, seed=0)
    assert [int(label) for _, label in everything] == [2, 2]
