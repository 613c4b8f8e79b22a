"""The arrow reader reads exactly the rows petastorm reads for the same planned shard."""
import hashlib
import itertools

import numpy as np
import pytest
import pyarrow as pa
import pyarrow.parquet as pq

from visionlake.lake.arrow_reader import examples, rank_row_groups
from visionlake.lake.reader import open_batch_reader
from visionlake.lake.shards import RankShard, row_rank

ROWS_PER_GROUP = 4


def write_lake_files(folder, rows_per_file=(10, 7, 13)) -> tuple[str, ...]:
    """Parquet files shaped like the images table: an ``id`` (sha256 hex), ``label`` and ``image`` (here the id's
    bytes, so a row is recognisable after any reader), in row groups of ``ROWS_PER_GROUP``."""
    files, start = [], 0
    for number, rows in enumerate(rows_per_file):
        ids = [hashlib.sha256(str(start + i).encode()).hexdigest() for i in range(rows)]
        table = pa.table({"id": ids, "label": np.arange(start, start + rows, dtype=np.int32) % 3,
                          "image": [i.encode() for i in ids]})
        path = folder / f"part-{number}.parquet"
        pq.write_table(table, path, row_group_size=ROWS_PER_GROUP)
        files.append(f"file:{path}")
        start += rows
    return tuple(files)


def petastorm_ids(files, shard: RankShard, labels=()) -> list[str]:
    """The ids petastorm reads for ``shard`` (one epoch), filtered the way the petastorm path filters them."""
    by_group = shard.shared_by_row_group
    with open_batch_reader([f.replace("file:", "file://") for f in files], num_epochs=1, workers_count=1,
                           schema_fields=["id", "label"], cur_shard=shard.rank if by_group else None,
                           shard_count=shard.ranks if by_group else None) as reader:
        rows = [(i, label) for batch in reader for i, label in zip(batch.id, batch.label)]
    return sorted(i for i, label in rows if (not labels or label in labels)
                  and (not shard.shared_by_row or row_rank([i], shard.ranks)[0] == shard.rank))


def arrow_ids(shard: RankShard, labels=()) -> list[str]:
    return sorted(image.decode() for image, _ in examples(shard, labels, training=False, seed=0))


def test_row_groups_are_dealt_round_robin_over_the_files_in_order():
    counts = [("a", 3), ("b", 2)]
    assert rank_row_groups(counts, RankShard(("a", "b"), 0, 2, "row_group")) == [("a", 0), ("a", 2), ("b", 1)]
    assert rank_row_groups(counts, RankShard(("a", "b"), 1, 2, "row_group")) == [("a", 1), ("b", 0)]
    everything = [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1)]
    assert rank_row_groups(counts, RankShard(("a", "b"), 1, 2, "row")) == everything
    assert rank_row_groups(counts, RankShard(("a", "b"))) == everything


def test_each_rank_reads_what_petastorm_reads_by_row_group_by_row_and_by_label(tmp_path):
    pytest.importorskip("petastorm", reason="compares with petastorm, which only the pinned stack has")
    files = write_lake_files(tmp_path)
    for by, labels in [("row_group", ()), ("row_group", (1,)), ("row", ()), ("row", (0, 2))]:
        shares = [arrow_ids(RankShard(files, rank, 2, by), labels) for rank in range(2)]
        assert shares == [petastorm_ids(files, RankShard(files, rank, 2, by), labels) for rank in range(2)], by
        assert not set(shares[0]) & set(shares[1]), "no row is read by two ranks"
    every_row = arrow_ids(RankShard(files))
    assert len(every_row) == 30 and every_row == petastorm_ids(files, RankShard(files))


def test_a_training_read_repeats_every_row_once_per_pass_in_a_new_row_group_order(tmp_path):
    files = write_lake_files(tmp_path)
    shard = RankShard(files, 0, 2, "row_group")
    once = arrow_ids(shard)
    stream = [image.decode() for image, _ in itertools.islice(examples(shard, (), True, seed=5), 3 * len(once))]
    passes = [stream[i * len(once):(i + 1) * len(once)] for i in range(3)]
    assert all(sorted(p) == once for p in passes)
    assert len({tuple(p) for p in passes}) > 1, "each pass visits the row groups in a new order"
