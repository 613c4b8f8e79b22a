"""TFRecord shards of the lake: writing without TensorFlow, reading with ``tf.data``.

Ingest workers encode ``tf.train.Example`` protobufs and the TFRecord framing by hand, so they never import
TensorFlow (seconds of start-up and ~1 GiB per Python worker). The reader is plain ``tf.data``.
"""
from __future__ import annotations

import gzip
import struct
import uuid
from typing import Iterable, Iterator, Optional

import google_crc32c
import pandas as pd

from visionlake.uris import local_path

TFRECORD_SUFFIX = {"none": ".tfrecord", "gzip": ".tfrecord.gz"}
_CRC_MASK_DELTA = 0xA282EAD8


# ---- protobuf wire format of tf.train.Example --------------------------------------------------------------------
def _varint(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF  # int64 two's complement, as protobuf encodes negatives
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(field_number: int, payload: bytes) -> bytes:
    return _varint(field_number << 3 | 2) + _varint(len(payload)) + payload


def _bytes_feature(value: bytes) -> bytes:
    return _length_delimited(1, _length_delimited(1, value))  # Feature.bytes_list{value}


def _int64_feature(value: int) -> bytes:
    return _length_delimited(3, _length_delimited(1, _varint(value)))  # Feature.int64_list{packed value}


def encode_example(features: dict[str, bytes | int]) -> bytes:
    """Serialises a ``tf.train.Example`` whose features are bytes or int64 scalars."""
    entries = b""
    for key in sorted(features):
        value = features[key]
        feature = _bytes_feature(value) if isinstance(value, (bytes, bytearray)) else _int64_feature(int(value))
        entries += _length_delimited(1, _length_delimited(1, key.encode()) + _length_delimited(2, feature))
    return _length_delimited(1, entries)  # Example.features


def image_example(row) -> bytes:
    """The lake's TFRecord record for one image row (same names as the Parquet table, TF conventions)."""
    return encode_example({
        "image/encoded": bytes(row.image), "image/height": row.height, "image/width": row.width,
        "image/channels": row.channels, "label": row.label, "id": row.id.encode(),
    })


# ---- TFRecord framing ---------------------------------------------------------------------------------------------
def _masked_crc(data: bytes) -> bytes:
    crc = google_crc32c.value(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF)


def frame_record(record: bytes) -> bytes:
    length = struct.pack("<Q", len(record))
    return length + _masked_crc(length) + record + _masked_crc(record)


def write_records(records: Iterable[bytes], stream, compression: str) -> int:
    """Writes framed records to an open binary stream; returns the count."""
    sink = gzip.GzipFile(fileobj=stream, mode="wb", compresslevel=6) if compression == "gzip" else stream
    count = 0
    for record in records:
        sink.write(frame_record(record))
        count += 1
    if sink is not stream:
        sink.close()
    return count


def open_output_stream(uri: str):
    """A writable stream on a local path or a pyarrow-supported URI (s3/s3a, gs, hdfs with libhdfs)."""
    from visionlake.lake.filesystem import pyarrow_filesystem

    filesystem, path = pyarrow_filesystem(uri)
    if uri.startswith(("file:", "/")):  # object stores and HDFS create parents themselves
        filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    # The bytes are written as given: pyarrow would otherwise gzip again what a .tfrecord.gz name already holds.
    return filesystem.open_output_stream(path, compression=None)


def write_shards(batches: Iterator[pd.DataFrame], staging_uri: str, compression: str) -> Iterator[pd.DataFrame]:
    """mapInPandas body: writes one shard per split seen in this task; yields (split, file, records) rows."""
    from pyspark import TaskContext

    partition = TaskContext.get().partitionId() if TaskContext.get() else 0
    streams: dict[str, tuple[str, object]] = {}
    counts: dict[str, int] = {}
    try:
        for batch in batches:
            for split, rows in batch.groupby("split", sort=False):
                if split not in streams:
                    name = f"part-{partition:05d}-{uuid.uuid4().hex[:8]}{TFRECORD_SUFFIX[compression]}"
                    streams[split] = (name, open_output_stream(f"{staging_uri}/split={split}/{name}"))
                    counts[split] = 0
                raw = streams[split][1]
                # Each batch is gzip-ed as its own member; concatenated gzip members form one valid gzip stream.
                counts[split] += write_records((image_example(r) for r in rows.itertuples(index=False)), raw,
                                               compression)
    finally:
        for _, stream in streams.values():
            stream.close()
    yield pd.DataFrame({"split": list(streams), "file": [streams[s][0] for s in streams],
                        "records": [counts[s] for s in streams]})


# ---- reading --------------------------------------------------------------------------------------------------------
def tfrecord_examples(files: list[str], compression: str = "none"):
    """Unbatched ``{"image/encoded", "label", "id"}`` examples of the lake's TFRecord shards."""
    import tensorflow as tf

    spec = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "id": tf.io.FixedLenFeature([], tf.string),
    }
    local_files = [local_path(f) for f in files]
    records = tf.data.TFRecordDataset(local_files, compression_type="GZIP" if compression == "gzip" else "",
                                      num_parallel_reads=tf.data.AUTOTUNE if len(local_files) > 1 else None)
    return records.map(lambda serialised: tf.io.parse_single_example(serialised, spec),
                       num_parallel_calls=tf.data.AUTOTUNE)


def read_tfrecord_dataset(files: list[str], image_shape: tuple[int, int, int], batch_size: int,
                          compression: str = "none", shuffle_buffer: int = 0, seed: Optional[int] = None,
                          drop_remainder: bool = False, codec: Optional[str] = None):
    """A parsed, batched ``tf.data.Dataset`` of ``{"image": uint8 HxWxC, "label": int64, "id": string}``."""
    import tensorflow as tf

    from visionlake.lake.reader import decode_lake_image

    def decode(example):
        return {"image": decode_lake_image(example["image/encoded"], image_shape, codec), "label": example["label"],
                "id": example["id"]}

    dataset = tfrecord_examples(files, compression)
    if shuffle_buffer:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed)
    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
