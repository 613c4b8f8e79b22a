from types import SimpleNamespace

import numpy as np
import pytest

from tests.conftest import png_bytes
from visionlake.lake.tfrecord import image_example, read_tfrecord_dataset, write_records

tf = pytest.importorskip("tensorflow")


def test_hand_encoded_examples_parse_with_tensorflow():
    row = SimpleNamespace(image=b"\x89PNG...", height=28, width=30, channels=1, label=7, id="abc")
    parsed = tf.train.Example.FromString(image_example(row))
    feature = parsed.features.feature
    assert feature["image/encoded"].bytes_list.value == [b"\x89PNG..."]
    assert feature["image/width"].int64_list.value == [30]
    assert feature["label"].int64_list.value == [7]
    assert feature["id"].bytes_list.value == [b"abc"]


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_written_shards_read_back_through_tf_data(tmp_path, compression):
    images = [np.full((4, 5, 1), value, np.uint8) for value in (0, 100, 255)]
    rows = [SimpleNamespace(image=png_bytes(img[:, :, 0]), height=4, width=5, channels=1, label=i, id=f"id{i}")
            for i, img in enumerate(images)]
    path = tmp_path / f"shard.{compression}"
    with open(path, "wb") as stream:
        assert write_records((image_example(r) for r in rows), stream, compression) == 3
    batches = list(read_tfrecord_dataset([str(path)], (4, 5, 1), batch_size=2, compression=compression))
    assert [b["image"].shape[0] for b in batches] == [2, 1]
    pixels = np.concatenate([b["image"].numpy() for b in batches])
    assert pixels.tolist() == np.stack(images).tolist()
    assert np.concatenate([b["label"].numpy() for b in batches]).tolist() == [0, 1, 2]


def test_examples_are_encoded_as_tensorflow_serialises_them():
    from visionlake.lake.tfrecord import encode_example

    features = {"b": 5, "a": b"x\x00y", "neg": -3, "big": 2 ** 40, "empty": b""}
    parsed = tf.train.Example.FromString(encode_example(features)).features.feature
    assert {key: list(parsed[key].int64_list.value or parsed[key].bytes_list.value) for key in parsed} == {
        "b": [5], "a": [b"x\x00y"], "neg": [-3], "big": [2 ** 40], "empty": [b""]}
    reference = tf.train.Example(features=tf.train.Features(feature={
        "n": tf.train.Feature(int64_list=tf.train.Int64List(value=[300])),
        "s": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"abc"]))}))
    assert encode_example({"s": b"abc", "n": 300}) == reference.SerializeToString(deterministic=True)


def test_records_are_framed_exactly_as_tensorflow_writes_them(tmp_path):
    from visionlake.lake.tfrecord import frame_record

    records = [b"", b"one", bytes(range(256)) * 40]
    with tf.io.TFRecordWriter(str(tmp_path / "reference.tfrecord")) as writer:
        for record in records:
            writer.write(record)
    assert b"".join(frame_record(r) for r in records) == (tmp_path / "reference.tfrecord").read_bytes()


def test_output_streams_create_their_folders_on_local_lake_uris(tmp_path):
    from visionlake.lake.tfrecord import open_output_stream

    for uri in (f"file:{tmp_path}/a/b/one.bin", f"{tmp_path}/c/two.bin"):
        with open_output_stream(uri) as stream:
            stream.write(b"bytes")
    assert (tmp_path / "a" / "b" / "one.bin").read_bytes() == (tmp_path / "c" / "two.bin").read_bytes() == b"bytes"


def test_output_streams_write_the_bytes_as_given_whatever_the_file_name(tmp_path):
    from visionlake.lake.tfrecord import open_output_stream

    with open_output_stream(f"file:{tmp_path}/part-0.tfrecord.gz") as stream:
        stream.write(b"already gzip-ed by write_records")
    assert (tmp_path / "part-0.tfrecord.gz").read_bytes() == b"already gzip-ed by write_records"


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_a_task_writes_one_shard_per_split_and_reports_its_records(tmp_path, compression):
    import pandas as pd

    from visionlake.lake.tfrecord import TFRECORD_SUFFIX, tfrecord_examples, write_shards

    def rows(splits, first):
        return pd.DataFrame({"image": [png_bytes(np.full((2, 2), first + i, np.uint8)) for i in range(len(splits))],
                             "height": 2, "width": 2, "channels": 1, "label": range(first, first + len(splits)),
                             "id": [f"id{first + i}" for i in range(len(splits))], "split": splits})

    batches = [rows(["train", "val", "train"], 0), rows(["train", "test"], 3)]  # two batches of one task
    (written,) = list(write_shards(iter(batches), f"file:{tmp_path}/staging", compression))
    assert sorted(written["split"]) == ["test", "train", "val"]
    assert dict(zip(written["split"], written["records"])) == {"train": 3, "val": 1, "test": 1}
    labels = {}
    for split, name in zip(written["split"], written["file"]):
        assert name.startswith("part-00000-") and name.endswith(TFRECORD_SUFFIX[compression])  # no Spark task: 0
        examples = tfrecord_examples([f"file:{tmp_path}/staging/split={split}/{name}"], compression)
        labels[split] = [(int(e["label"]), e["id"].numpy().decode()) for e in examples]
    assert labels == {"train": [(0, "id0"), (2, "id2"), (3, "id3")], "val": [(1, "id1")], "test": [(4, "id4")]}
