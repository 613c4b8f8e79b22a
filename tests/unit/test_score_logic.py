"""Batch scoring's pure pieces, without Spark."""
from __future__ import annotations

import pandas as pd
import pytest

from visionlake.score.job import _rebatch


def frames(*sizes: int) -> list[pd.DataFrame]:
    """Consecutive ids split into frames of these sizes, as Arrow hands a partition over."""
    out, start = [], 0
    for size in sizes:
        out.append(pd.DataFrame({"id": range(start, start + size)}, index=range(100, 100 + size)))
        start += size
    return out


@pytest.mark.parametrize("sizes, model_batch, expected", [
    ((3, 0, 7, 1, 5), 4, [4, 4, 4, 4]),   # frames smaller and larger than a batch, and an empty one
    ((3, 0, 7, 1, 6), 4, [4, 4, 4, 4, 1]),  # the remainder comes last
    ((2, 3), 10, [5]),                      # fewer rows than one batch
    ((), 4, []),
])
def test_rebatch_cuts_every_row_once_in_order_into_model_batches(sizes, model_batch, expected):
    batches = list(_rebatch(iter(frames(*sizes)), model_batch))

    assert [len(b) for b in batches] == expected
    ids = [i for batch in batches for i in batch["id"]]
    assert ids == list(range(sum(sizes)))  # nothing lost, repeated or reordered
