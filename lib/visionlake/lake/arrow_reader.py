"""The arrow reader (``train.reader=arrow``): a rank's planned share of lake Parquet files, read with pyarrow
straight into tf.data. No petastorm, so it runs on any pyarrow and TensorFlow the lake's other code runs on.

It reads what the driver planned (``visionlake.lake.shards``), exactly as petastorm would: sharded by row group, a
rank reads the row groups whose position in the sorted files' row groups is its rank modulo the ranks; sharded by
row, it reads every row group and keeps the rows whose ``row_rank`` is its rank. Training reads repeat forever in a
fresh row-group order each pass (the tf.data shuffle buffer mixes rows across groups); evaluation reads once.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from visionlake.lake.shards import RankShard, row_rank


def rank_row_groups(row_groups_per_file: list[tuple[str, int]], shard: RankShard) -> list[tuple[str, int]]:
    """(file, row group index) pairs the rank reads, from each of ``shard.files``' row-group count, in order."""
    numbered = [(file, index) for file, count in row_groups_per_file for index in range(count)]
    if shard.shared_by_row_group:
        return [group for position, group in enumerate(numbered) if position % shard.ranks == shard.rank]
    return numbered


def _row_group_counts(files: tuple[str, ...]) -> list[tuple[str, int]]:
    import pyarrow.parquet as pq

    from visionlake.lake.filesystem import pyarrow_filesystem

    counts = []
    for uri in files:
        filesystem, path = pyarrow_filesystem(uri)
        with filesystem.open_input_file(path) as handle:
            counts.append((uri, pq.ParquetFile(handle).metadata.num_row_groups))
    return counts


def examples(shard: RankShard, labels: tuple[int, ...], training: bool, seed: int) -> Iterator[tuple[bytes, int]]:
    """(stored image bytes, label) of the rank's share; forever in a new row-group order each pass when
    ``training``, else once in file order."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from visionlake.lake.filesystem import pyarrow_filesystem

    groups = rank_row_groups(_row_group_counts(shard.files), shard)
    columns = ["image", "label", "id"] if shard.shared_by_row else ["image", "label"]
    order = np.random.default_rng(seed + shard.rank)
    while True:
        for position in (order.permutation(len(groups)) if training else range(len(groups))):
            uri, index = groups[position]
            filesystem, path = pyarrow_filesystem(uri)
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
    """The rank's share as a ``tf.data.Dataset`` of (stored image bytes, int32 label)."""
    import tensorflow as tf

    return tf.data.Dataset.from_generator(
        lambda: examples(shard, labels, training, seed),
        output_signature=(tf.TensorSpec((), tf.string), tf.TensorSpec((), tf.int32)))
