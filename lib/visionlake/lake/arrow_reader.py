"""The arrow reader (``train.reader=arrow``): a rank's planned share of lake Parquet files, read with pyarrow
straight into tf.data. No petastorm, so it runs on any pyarrow and TensorFlow the lake's other code runs on.

It reads what the driver planned (``visionlake.lake.shards``), exactly as petastorm would: sharded by row group, a
rank reads the row groups whose position in the sorted files' row groups is its rank modulo the ranks; sharded by
row, it reads every row group and keeps the rows whose ``row_rank`` is its rank. Training reads repeat forever in a
fresh row-group order each pass (the tf.data shuffle buffer mixes rows across groups); evaluation reads once.
"""
from __future__ import annotations

from typing import Iterator, Optional

import numpy as np

from visionlake.lake.shards import RankShard, row_rank


def rank_row_groups(row_groups_per_file: list[tuple[str, int]], shard: RankShard) -> list[tuple[str, int]]:
    """(file, row group index) pairs the rank reads, from each of ``shard.files``' row-group count, in order."""
    numbered = [(file, index) for file, count in row_groups_per_file for index in range(count)]
    if shard.shared_by_row_group:
        return [group for position, group in enumerate(numbered) if position % shard.ranks == shard.rank]
    return numbered


def _file_systems(files: tuple[str, ...]) -> dict[str, tuple]:
    """(file system, path) of each file, one connection per file system (an S3 client, an HDFS connection)."""
    from visionlake.lake.filesystem import pyarrow_filesystem

    return {uri: pyarrow_filesystem(uri) for uri in files}


def _row_group_counts(located: dict[str, tuple]) -> list[tuple[str, int]]:
    import pyarrow.parquet as pq

    counts = []
    for uri, (filesystem, path) in located.items():
        with filesystem.open_input_file(path) as handle:
            counts.append((uri, pq.ParquetFile(handle).metadata.num_row_groups))
    return counts


def examples(shard: RankShard, labels: tuple[int, ...], training: bool, seed: int,
             located: Optional[dict[str, tuple]] = None,
             groups: Optional[list[tuple[str, int]]] = None) -> Iterator[tuple[bytes, int]]:
    """(stored image bytes, label) of the rank's share; forever in a new row-group order each pass when
    ``training``, else once in file order. ``located`` and ``groups`` (the files' file systems and the rank's row
    groups) are looked up when not given."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    located = located if located is not None else _file_systems(shard.files)
    groups = groups if groups is not None else rank_row_groups(_row_group_counts(located), shard)
    columns = ["image", "label", "id"] if shard.shared_by_row else ["image", "label"]
    order = np.random.default_rng(seed + shard.rank)
    while True:
        for position in (order.permutation(len(groups)) if training else range(len(groups))):
            uri, index = groups[position]
            filesystem, path = located[uri]
            with filesystem.open_input_file(path) as handle:
                table = pq.ParquetFile(handle).read_row_group(index, columns=columns)
            if labels:
                table = table.filter(pc.is_in(table["label"], value_set=_int_array(labels, table["label"].type)))
            if shard.shared_by_row:
                table = table.filter(row_rank(table["id"].to_pylist(), shard.ranks) == shard.rank)
            yield from zip(table["image"].to_pylist(), table["label"].to_pylist())
        if not training or not groups:
            return


def _int_array(values: tuple[int, ...], arrow_type):
    import pyarrow as pa

    return pa.array(values, type=arrow_type)


def arrow_dataset(shard: RankShard, labels: tuple[int, ...], training: bool, seed: int):
    """The rank's share as a ``tf.data.Dataset`` of (stored image bytes, int32 label). The file systems and the
    row groups are looked up once, not on each pass (validation iterates the dataset every epoch)."""
    import tensorflow as tf

    located = _file_systems(shard.files)
    groups = rank_row_groups(_row_group_counts(located), shard)
    return tf.data.Dataset.from_generator(
        lambda: examples(shard, labels, training, seed, located, groups),
        output_signature=(tf.TensorSpec((), tf.string), tf.TensorSpec((), tf.int32)))
