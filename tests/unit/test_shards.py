"""The shard planner: row groups when that stays fair, rows otherwise, and exactly what petastorm reads."""
import numpy as np
import pytest

from visionlake.lake.shards import RowGroupStats, plan_records, plan_shards, row_rank


def group(file: str, index: int, per_label: dict[int, tuple[int, int]]) -> RowGroupStats:
    """A row group with rows per label, split (rank 0 rows, rank 1 rows) for row-level sharding over 2 ranks."""
    counts = tuple((label, rank, n) for label, split in sorted(per_label.items()) for rank, n in enumerate(split) if n)
    return RowGroupStats(file, index, counts)


def test_row_groups_go_round_robin_in_file_order_like_petastorm():
    groups = [group("b", 0, {0: (5, 5)}), group("a", 1, {0: (5, 5)}), group("a", 0, {1: (5, 5)}),
              group("b", 1, {1: (5, 5)})]
    plan = plan_shards(groups, 2)
    assert [s.by for s in plan.shards] == ["row_group", "row_group"]
    assert plan.shards[0].files == plan.shards[1].files == ("a", "b")
    # enumeration a0, a1, b0, b1: rank 0 gets a0 and b0, rank 1 gets a1 and b1
    assert plan.rows == (20, 20)
    assert plan.steps_per_epoch(8) == 2


def test_fewer_row_groups_than_ranks_falls_back_to_rows():
    plan = plan_shards([group("a", 0, {0: (30, 28), 1: (10, 12)})], 2)
    assert [s.by for s in plan.shards] == ["row", "row"]
    assert plan.rows == (40, 40)
    assert [s.rank for s in plan.shards] == [0, 1] and all(s.ranks == 2 for s in plan.shards)


def test_a_label_subset_in_too_few_row_groups_falls_back_to_rows():
    groups = [group("a", i, {0: (50, 50)}) for i in range(4)] + [group("a", 4, {3: (6, 4)})]
    everything = plan_shards(groups, 2)
    assert everything.shards[0].by == "row_group"
    normal_only = plan_shards(groups, 2, labels=(3,))
    assert [s.by for s in normal_only.shards] == ["row", "row"] and normal_only.rows == (6, 4)
    assert normal_only.shards[0].files == ("a",)


def test_unbalanced_row_groups_prefer_rows_but_evaluation_keeps_row_groups():
    groups = [group("a", 0, {0: (500, 500)}), group("b", 0, {0: (5, 5)})]
    assert plan_shards(groups, 2).shards[0].by == "row"
    evaluation = plan_shards(groups, 2, min_row_group_share=0.0)
    assert evaluation.shards[0].by == "row_group"  # each rank reads its share whole: no need to read twice
    even = [group("a", 0, {0: (50, 50)}), group("b", 0, {0: (45, 45)})]
    assert plan_shards(even, 2).shards[0].by == "row_group" and plan_shards(even, 2).rows == (100, 90)


def test_no_wanted_rows_gives_empty_shares():
    plan = plan_shards([group("a", 0, {0: (5, 5)})], 2, labels=(7,))
    assert plan.rows == (0, 0) and plan.steps_per_epoch(1) == 0
    assert all(not s.files for s in plan.shards)


def test_single_rank_reads_everything_by_row_group():
    plan = plan_shards([group("a", 0, {0: (5, 5)})], 1)
    assert plan.shards[0].by == "row_group" and plan.rows == (10,)


def test_records_are_shared_evenly():
    plan = plan_records(("x.tfrecord",), 101, 2)
    assert plan.rows == (50, 50) and {s.by for s in plan.shards} == {"record"}


def test_row_rank_is_the_id_prefix_modulo_ranks_and_balanced():
    ids = [f"{i:08x}" + "0" * 56 for i in range(10)]
    assert row_rank(ids, 3).tolist() == [i % 3 for i in range(10)]
    rng = np.random.default_rng(0)
    random_ids = [rng.bytes(32).hex() for _ in range(4000)]
    shares = np.bincount(row_rank(random_ids, 4), minlength=4)
    assert shares.min() > 900 and shares.max() < 1100


@pytest.mark.parametrize("ranks", [2, 3])
def test_every_wanted_row_goes_to_exactly_one_rank(ranks):
    rng = np.random.default_rng(ranks)
    groups = [RowGroupStats(f"f{i // 3}", i % 3, tuple((label, r, int(rng.integers(1, 9)))
                                                        for label in range(3) for r in range(ranks)))
              for i in range(7)]
    for labels in ((), (1,), (0, 2)):
        plan = plan_shards(groups, ranks, labels)
        assert sum(plan.rows) == sum(g.rows(labels) for g in groups)
