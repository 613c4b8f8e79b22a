"""Which rows of a lake table each Horovod rank reads, planned once on the driver.

Ranks share a split **by row group** when they can: row group *i* of the split's sorted file list goes to rank
*i mod ranks*, which is exactly what petastorm's ``cur_shard``/``shard_count`` read. When the wanted rows (a split,
or a label subset of it such as an anomaly detector's normal class) sit in too few row groups for that to be fair,
ranks share them **by row** instead: rank = the image id's hash mod ranks, every rank reading every row group that
holds wanted rows and keeping its own. Ingest writes rows in a pseudo-random order (``lake.in_shuffled_order``), so
every row group is a fair sample of the labels and each rank sees every label in about its global proportion.

The planner is pure (``plan_shards`` over ``RowGroupStats``); ``read_row_group_stats`` gathers the statistics
from the Parquet footers and the ``label``/``id`` columns in one Spark job on the executors.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Iterator, Literal

import numpy as np
import pandas as pd

# The row-group plan is kept while the ranks' equal share (the smallest rank's rows x ranks) is at least this
# part of the wanted rows; below it the row plan feeds more rows per epoch, at the cost of every rank reading
# every row group.
MIN_ROW_GROUP_SHARE = 0.9

_STATS_SCHEMA = "file string, row_group int, label int, rank int, rows long"


@dataclass(frozen=True)
class RowGroupStats:
    """One Parquet row group: its rows per (label, row-level rank) for a given number of ranks."""
    file: str
    index: int
    counts: tuple[tuple[int, int, int], ...]  # (label, rank its rows go to when sharded by row, rows)

    def rows(self, labels: tuple[int, ...] = (), rank: int | None = None) -> int:
        return sum(n for label, row_rank, n in self.counts
                   if (not labels or label in labels) and (rank is None or row_rank == rank))


@dataclass(frozen=True)
class RankShard:
    """What one rank reads: ``files`` opened by one reader, and the rank's part of them.

    ``by``: ``row_group`` (petastorm's cur_shard/shard_count over the files' row groups), ``row`` (rows whose
    ``row_rank`` is ``rank``), ``record`` (every ``ranks``-th TFRecord record), or ``all`` (everything).
    """
    files: tuple[str, ...]
    rank: int = 0
    ranks: int = 1
    by: Literal["row_group", "row", "record", "all"] = "all"
    rows: int = -1  # the rank's rows after the label filter; -1 = not counted

    @property
    def shared_by_row_group(self) -> bool:
        return self.by == "row_group" and self.ranks > 1

    @property
    def shared_by_row(self) -> bool:
        return self.by == "row" and self.ranks > 1


def whole(files) -> RankShard:
    """All of ``files`` for a single reader (evaluation on one process)."""
    return RankShard(tuple(files))


@dataclass(frozen=True)
class ShardPlan:
    shards: tuple[RankShard, ...]

    @property
    def rows(self) -> tuple[int, ...]:
        return tuple(shard.rows for shard in self.shards)

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(sorted({f for shard in self.shards for f in shard.files}))

    def steps_per_epoch(self, batch_size: int) -> int:
        """The same on every rank: the smallest share's full batches, so no rank waits for a collective."""
        return min(self.rows) // batch_size if self.shards else 0


def row_rank(ids, ranks: int) -> np.ndarray:
    """The rank a row goes to when sharding by row: the first 32 bits of its sha256 id, mod ``ranks``."""
    return np.fromiter((int(str(i)[:8], 16) % ranks for i in ids), np.int64, count=len(ids))


def plan_shards(row_groups: list[RowGroupStats], ranks: int, labels: tuple[int, ...] = (),
                min_row_group_share: float = MIN_ROW_GROUP_SHARE) -> ShardPlan:
    """Shards the row groups that hold wanted rows over ``ranks``: by row group when that stays fair, else by row.

    ``min_row_group_share`` = 0 keeps the row-group plan whenever every rank gets a row group (evaluation splits,
    where each rank reads its share whole and the shares need not be equal).
    """
    wanted = sorted((g for g in row_groups if g.rows(labels)), key=lambda g: (g.file, g.index))
    files = tuple(sorted({g.file for g in wanted}))
    if not wanted:
        return ShardPlan(tuple(RankShard((), r, ranks, "row_group", 0) for r in range(ranks)))
    # petastorm numbers every row group of the files it opens, in file order, and keeps those i with i % ranks == r.
    in_files = sorted((g for g in row_groups if g.file in set(files)), key=lambda g: (g.file, g.index))
    by_group = [sum(g.rows(labels) for i, g in enumerate(in_files) if i % ranks == r) for r in range(ranks)]
    by_row = [sum(g.rows(labels, rank=r) for g in wanted) for r in range(ranks)]
    total = sum(by_group)
    keep_groups = len(in_files) >= ranks and (min(by_group) * ranks >= min_row_group_share * total
                                              or min(by_group) >= min(by_row))
    if keep_groups or ranks == 1:
        return ShardPlan(tuple(RankShard(files, r, ranks, "row_group", by_group[r]) for r in range(ranks)))
    return ShardPlan(tuple(RankShard(files, r, ranks, "row", by_row[r]) for r in range(ranks)))


def plan_records(files: tuple[str, ...], label_rows: int, ranks: int) -> ShardPlan:
    """TFRecord shards: every rank reads all files and keeps every ``ranks``-th record."""
    return ShardPlan(tuple(RankShard(files, r, ranks, "record", label_rows // ranks) for r in range(ranks)))


# ---- statistics from the lake (executors) ----------------------------------------------------------------------------
def _row_group_counts(batches: Iterator[pd.DataFrame], ranks: int) -> Iterator[pd.DataFrame]:
    """mapInPandas body: per file URI, the rows of each row group by (label, row rank)."""
    import pyarrow.parquet as pq

    from visionlake.lake.filesystem import pyarrow_filesystem

    for batch in batches:
        parts = []
        for uri in batch["file"]:
            filesystem, path = pyarrow_filesystem(uri)
            with filesystem.open_input_file(path) as handle:
                parquet = pq.ParquetFile(handle)
                for index in range(parquet.num_row_groups):
                    table = parquet.read_row_group(index, columns=["label", "id"]).to_pandas()
                    table["rank"] = row_rank(table["id"], ranks)
                    counts = table.groupby(["label", "rank"]).size().reset_index(name="rows")
                    parts.append(counts.assign(file=uri, row_group=index))
        if parts:
            yield pd.concat(parts)[["file", "row_group", "label", "rank", "rows"]]


def read_row_group_stats(spark, files: list[str], ranks: int) -> list[RowGroupStats]:
    """Row-group statistics of lake Parquet files (footers plus the small ``label``/``id`` columns), read by the
    executors, which reach the lake as the ranks will; only the counts travel back."""
    if not files:
        return []
    frame = spark.createDataFrame([(f,) for f in files], "file string")
    frame = frame.repartition(min(len(files), spark.sparkContext.defaultParallelism))
    rows = frame.mapInPandas(partial(_row_group_counts, ranks=ranks), _STATS_SCHEMA).collect()
    grouped: dict[tuple[str, int], list[tuple[int, int, int]]] = {}
    for row in rows:
        grouped.setdefault((row.file, row.row_group), []).append((row.label, row.rank, row.rows))
    return [RowGroupStats(file, index, tuple(sorted(counts))) for (file, index), counts in sorted(grouped.items())]
