"""`--backfill` windows: periods taken whole, values compared as the column compares them."""

from __future__ import annotations

import pyarrow as pa
import pytest

from lakebed.errors import TransformError
from lakebed.transform.backfill import Backfill

DATE, TS, TEXT, INT = pa.date32(), pa.timestamp("us"), pa.string(), pa.int64()


@pytest.mark.parametrize(
    ("window", "dtype", "condition"),
    [
        # A month takes each of its days, a year each of its months.
        ("2025-01..2025-03", DATE, "\"d\" >= '2025-01-01' AND \"d\" < '2025-04-01'"),
        ("2025..2025", DATE, "\"d\" >= '2025-01-01' AND \"d\" < '2026-01-01'"),
        ("2024-12..2024-12", DATE, "\"d\" >= '2024-12-01' AND \"d\" < '2025-01-01'"),
        ("2025-01-31", DATE, "\"d\" >= '2025-01-31' AND \"d\" < '2025-02-01'"),
        ("2024-02", DATE, "\"d\" >= '2024-02-01' AND \"d\" < '2024-03-01'"),
        ("2025-01-20..2025-01", DATE, "\"d\" >= '2025-01-20' AND \"d\" < '2025-02-01'"),
        # An hour of a date column is within its day: the day is recomputed.
        ("2025-01-31 06", DATE, "\"d\" >= '2025-01-31' AND \"d\" < '2025-02-01'"),
        # A timestamp column is cut at the periods' edges.
        (
            "2025-01-31..2025-01-31T06",
            TS,
            "\"d\" >= '2025-01-31 00:00:00' AND \"d\" < '2025-01-31 07:00:00'",
        ),
        ("2025-03", TS, "\"d\" >= '2025-03-01 00:00:00' AND \"d\" < '2025-04-01 00:00:00'"),
        # Dates written as text sort as dates do; a month takes the days under it.
        ("2025-01..2025-02", TEXT, "\"d\" >= '2025-01' AND \"d\" < '2025-03'"),
        ("2025-01-30..2025-01-31", TEXT, "\"d\" >= '2025-01-30' AND \"d\" < '2025-02-01'"),
        (
            "2025-01-31T22..2025-01-31T23",
            TEXT,
            "\"d\" >= '2025-01-31T22' AND \"d\" < '2025-02-01T00'",
        ),
        # Other values: both ends included, compared as the column compares them.
        ("eu..us", TEXT, "\"d\" >= 'eu' AND \"d\" <= 'us'"),
        ("o'hare..paris", TEXT, "\"d\" >= 'o''hare' AND \"d\" <= 'paris'"),
        ("9..10", INT, '"d" >= 9 AND "d" <= 10'),
        ("2025", INT, '"d" >= 2025 AND "d" <= 2025'),
    ],
)
def test_a_window_selects_its_partitions(window: str, dtype: pa.DataType, condition: str) -> None:
    assert Backfill.parse(window).predicate("d", dtype) == condition


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ("2025-13..2025-14", "2025-13 is not a date"),
        ("2025-02-30", "2025-02-30 is not a date"),
        ("2025-03..2025-01", "ends before it starts"),
        ("2025-02-01..2025-01", "ends before it starts"),
        ("10..9", "ends before it starts"),
        ("..2025-01", "START..END"),
        ("2025-01..", "START..END"),
    ],
)
def test_a_window_that_selects_nothing_is_an_error(window: str, message: str) -> None:
    with pytest.raises(TransformError, match=message):
        Backfill.parse(window)


def test_reversed_bounds_say_the_right_order() -> None:
    with pytest.raises(TransformError) as info:
        Backfill.parse("2025-03..2025-01")
    assert info.value.hint == "write the earlier bound first: 2025-01..2025-03"


@pytest.mark.parametrize(
    ("window", "dtype", "message"),
    [
        ("eu..us", DATE, "are not dates, and d is a date32"),
        ("2025-01..2025-02", INT, "are not numbers, and d is a int64"),
    ],
)
def test_bounds_of_another_kind_than_the_column_are_an_error(
    window: str, dtype: pa.DataType, message: str
) -> None:
    with pytest.raises(TransformError, match=message):
        Backfill.parse(window).predicate("d", dtype)
