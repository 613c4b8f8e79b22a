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
