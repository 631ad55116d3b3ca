"""Key helpers shared by merges and increments."""

from __future__ import annotations

import pyarrow as pa
import pytest

from lakebed.storage import distinct_keys


@pytest.mark.parametrize(
    ("ids", "expected"),
    [([1, 2, 3], True), ([1, 2, 1], False), ([1, None], True), ([None, None], False), ([], True)],
)
def test_distinct_keys_counts_a_null_key_as_a_key(ids: list[int | None], expected: bool) -> None:
    rows = pa.table({"id": pa.array(ids, pa.int64()), "v": list(range(len(ids)))})
    assert distinct_keys(rows, ["id"]) is expected
    pairs = pa.table({"a": pa.array(ids, pa.int64()), "b": [0] * len(ids)})
    assert distinct_keys(pairs, ["a", "b"]) is expected
    assert distinct_keys(rows, []) is False
    assert distinct_keys(rows, ["missing"]) is False
