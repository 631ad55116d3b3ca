"""Parsing streaming SQL and assigning events to windows (exact microsecond arithmetic)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from lakebed.errors import ConfigError
from lakebed.process.windows import (
    EVENT_TIME,
    TIMESTAMP_US,
    parse_duration_us,
    parse_stream_sql,
)

S = 1_000_000


def _events(seconds: list[float], **columns: list[object]) -> pa.Table:
    micros = pa.array([int(s * S) for s in seconds], pa.int64()).cast(TIMESTAMP_US)
    return pa.table(
        {EVENT_TIME: micros, "_offset": list(range(len(seconds))), **columns}  # type: ignore[dict-item]
    )


def _windows(table: pa.Table) -> list[tuple[float, float, float]]:
    starts = table.column("window_start").cast(pa.int64()).to_pylist()
    ends = table.column("window_end").cast(pa.int64()).to_pylist()
    times = table.column(EVENT_TIME).cast(pa.int64()).to_pylist()
    return sorted((t / S, s / S, e / S) for t, s, e in zip(times, starts, ends, strict=True))


def test_tumble_rewrites_to_the_stream_relation_and_finds_group_columns() -> None:
    query = parse_stream_sql(
        "SELECT window_start, customer, count(*) AS n, sum(amount) AS total "
        "FROM TUMBLE(topic.orders, ts, INTERVAL '1 minute') GROUP BY ALL"
    )
    assert query.topic == "orders"
    assert query.window is not None
    assert query.window.kind == "tumble"
    assert query.window.size_us == 60 * S
    assert query.window.time_column == "ts"
    assert "__stream" in query.sql
    assert "TUMBLE" not in query.sql.upper()
    assert query.aggregates
    assert query.group_columns == ["window_start", "customer"]


def test_plain_topic_reference_keeps_its_name_as_alias() -> None:
    query = parse_stream_sql("SELECT o.id FROM topic.orders AS o WHERE o.amount > 5")
    assert query.window is None
    assert not query.aggregates
    assert query.sql == "SELECT o.id FROM __stream AS o WHERE o.amount > 5"


def test_session_is_accepted_as_written_with_keys() -> None:
    query = parse_stream_sql(
        "SELECT customer, count(*) FROM SESSION(topic.clicks, ts, INTERVAL '30 seconds', "
        "customer) GROUP BY ALL"
    )
    assert query.window is not None
    assert query.window.kind == "session"
    assert query.window.gap_us == 30 * S
    assert query.window.keys == ("customer",)


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT * FROM silver.orders", "exactly one topic"),
        ("SELECT * FROM topic.a JOIN topic.b USING (id)", "exactly one topic"),
        ("SELECT * FROM TUMBLE(topic.a, ts)", "TUMBLE takes 3 arguments"),
        ("SELECT * FROM TUMBLE(silver.a, ts, INTERVAL '1 minute')", "first argument"),
        ("SELECT * FROM TUMBLE(topic.a, ts, INTERVAL '0 seconds')", "must be positive"),
        ("SELECT * FROM HOP(topic.a, ts, 5, INTERVAL '1 minute')", "expected an INTERVAL"),
        ("SELEC * FROM topic.a", "does not parse"),
        ("DELETE FROM x", "must be a SELECT"),
    ],
)
def test_bad_stream_sql_says_what_to_write(sql: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_stream_sql(sql)


def test_tumbling_windows_are_aligned_and_end_exclusive() -> None:
    window = parse_stream_sql("SELECT * FROM TUMBLE(topic.t, ts, INTERVAL '10 seconds')").window
    assert window is not None
    assigned = window.assign(_events([0, 9.999999, 10, 25, -0.5]))
    assert _windows(assigned) == [
        (-0.5, -10, 0),
        (0, 0, 10),
        (9.999999, 0, 10),
        (10, 10, 20),
        (25, 20, 30),
    ]


def test_hopping_windows_repeat_an_event_in_each_window_holding_it() -> None:
    window = parse_stream_sql(
        "SELECT * FROM HOP(topic.t, ts, INTERVAL '10 seconds', INTERVAL '30 seconds')"
    ).window
    assert window is not None
    assigned = window.assign(_events([25]))
    assert _windows(assigned) == [(25, 0, 30), (25, 10, 40), (25, 20, 50)]
    assert window.last_end_us(pa.array([25 * S]).to_numpy()).tolist() == [50 * S]


def test_sessions_split_on_gaps_per_key() -> None:
    window = parse_stream_sql("SELECT * FROM SESSION(topic.t, ts, INTERVAL '5 seconds', k)").window
    assert window is not None
    assigned = window.assign(_events([0, 3, 9, 1, 20], k=["a", "a", "a", "b", "a"]))
    rows = sorted(
        (
            row["k"],
            row[EVENT_TIME].timestamp(),
            row["window_start"].timestamp(),
            row["window_end"].timestamp(),
        )
        for row in assigned.to_pylist()
    )
    assert rows == [
        ("a", 0, 0, 8),
        ("a", 3, 0, 8),
        ("a", 9, 9, 14),
        ("a", 20, 20, 25),
        ("b", 1, 1, 6),
    ]


@pytest.mark.parametrize(
    ("text", "micros"),
    [("10 seconds", 10 * S), ("1 minute", 60 * S), ("500 ms", 500_000), ("2h", 7200 * S)],
)
def test_durations(text: str, micros: int) -> None:
    assert parse_duration_us(text) == micros


def test_a_duration_must_have_a_known_unit() -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration_us("ten fortnights")
