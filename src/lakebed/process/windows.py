"""Streaming SQL: window table functions on event time, rewritten for micro-batches.

A pipeline's SQL reads one topic as `topic.NAME` and may window it in the FROM clause:

    TUMBLE(topic.orders, ts, INTERVAL '1 minute')                       fixed windows
    HOP(topic.orders, ts, INTERVAL '10 seconds', INTERVAL '1 minute')   sliding: slide, size
    SESSION(topic.orders, ts, INTERVAL '5 minutes', customer_id)        gap; keys to session by

Each adds `window_start` and `window_end` (end exclusive) to the topic's columns; the rest is
plain DuckDB SQL (aggregates, filters, joins with lakehouse tables). The processor assigns
windows itself (exact integer arithmetic on microseconds), hands the query the rows of the
windows it is emitting as the relation `__stream`, and runs the rewritten SQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import duckdb
import numpy as np
import pyarrow as pa
import sqlglot
from sqlglot import exp

from lakebed.errors import ConfigError

STREAM_RELATION = "__stream"
EVENT_TIME = "_event_time"
TIMESTAMP_US = pa.timestamp("us", tz="UTC")
_UNITS_US = {
    "us": 1,
    "microsecond": 1,
    "ms": 1_000,
    "millisecond": 1_000,
    "s": 1_000_000,
    "sec": 1_000_000,
    "second": 1_000_000,
    "m": 60_000_000,
    "min": 60_000_000,
    "minute": 60_000_000,
    "h": 3_600_000_000,
    "hour": 3_600_000_000,
    "d": 86_400_000_000,
    "day": 86_400_000_000,
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$")


def parse_duration_us(value: str | float | int) -> int:
    """`10 seconds`, `1 minute`, `500 ms`, `2h` or a number of seconds, in microseconds."""
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return int(value * 1_000_000)
    match = _DURATION.match(value.lower())
    unit = match.group(2) if match is not None else ""
    if unit not in _UNITS_US and unit.endswith("s"):
        unit = unit[:-1]  # plural
    if match is None or unit not in _UNITS_US:
        raise ValueError(f"expected a duration like `10 seconds`, `1 minute`, `500 ms`: {value!r}")
    return int(float(match.group(1)) * _UNITS_US[unit])


WindowKind = Literal["tumble", "hop", "session"]
_FUNCTIONS: dict[str, WindowKind] = {"TUMBLE": "tumble", "HOP": "hop", "SESSION_WINDOW": "session"}
# sqlglot reads SESSION as a keyword; the user writes SESSION(...), the parser sees this.
_SESSION_CALL = re.compile(r"\bSESSION\s*\(", re.IGNORECASE)


@dataclass(frozen=True)
class Window:
    """How events are assigned to windows, all times in microseconds since the epoch."""

    kind: WindowKind
    time_column: str
    size_us: int = 0
    slide_us: int = 0
    gap_us: int = 0
    keys: tuple[str, ...] = ()

    def last_end_us(self, times_us: np.ndarray) -> np.ndarray:
        """The end of the last window each event time falls in: past it, the event is late."""
        if self.kind == "session":
            return times_us + self.gap_us
        return (times_us // self.slide_us) * self.slide_us + self.size_us

    def assign(self, events: pa.Table) -> pa.Table:
        """`events` plus window_start and window_end; a hop repeats an event per window."""
        times = events.column(EVENT_TIME).cast(pa.int64()).to_numpy(zero_copy_only=False)
        if self.kind == "session":
            return _sessions(events, self)
        if self.kind == "tumble":
            starts = (times // self.size_us) * self.size_us
            return _with_windows(events, starts, self.size_us)
        # A hop window [k*slide, k*slide + size) holds t for k in (t - size)/slide < k <= t/slide.
        last = times // self.slide_us
        first = (times - self.size_us) // self.slide_us + 1
        counts = (last - first + 1).astype(np.int64)
        rows = np.repeat(np.arange(len(times)), counts)
        offsets = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
        starts = (np.repeat(first, counts) + offsets) * self.slide_us
        return _with_windows(events.take(pa.array(rows)), starts, self.size_us)


def _with_windows(events: pa.Table, starts: np.ndarray, size_us: int) -> pa.Table:
    start = pa.array(starts, pa.int64()).cast(TIMESTAMP_US)
    end = pa.array(starts + size_us, pa.int64()).cast(TIMESTAMP_US)
    return events.append_column("window_start", start).append_column("window_end", end)


def _sessions(events: pa.Table, window: Window) -> pa.Table:
    """Sessions per key: a gap longer than `gap_us` between two events starts a new one."""
    keys = ", ".join(f'"{k}"' for k in window.keys) or "NULL"
    gap = f"INTERVAL {window.gap_us} MICROSECONDS"
    con = duckdb.connect()
    try:
        con.register("__events", events)
        query = f"""
            WITH marked AS (
                SELECT *, CASE WHEN {EVENT_TIME} - lag({EVENT_TIME}) OVER w <= {gap}
                          THEN 0 ELSE 1 END AS __new
                FROM __events WINDOW w AS (PARTITION BY {keys} ORDER BY {EVENT_TIME}, _offset)
            ), numbered AS (
                SELECT *, sum(__new) OVER (PARTITION BY {keys} ORDER BY {EVENT_TIME}, _offset
                                           ROWS UNBOUNDED PRECEDING) AS __session
                FROM marked
            )
            SELECT * EXCLUDE (__new, __session),
                   min({EVENT_TIME}) OVER s AS window_start,
                   max({EVENT_TIME}) OVER s + {gap} AS window_end
            FROM numbered WINDOW s AS (PARTITION BY {keys}, __session)
        """
        result = con.sql(query).to_arrow_table()
    finally:
        con.close()
    for name in ("window_start", "window_end"):
        index = result.schema.get_field_index(name)
        result = result.set_column(index, name, result.column(name).cast(TIMESTAMP_US))
    return result


@dataclass(frozen=True)
class StreamQuery:
    """A parsed pipeline query: the topic it reads, its window, and SQL over `__stream`."""

    topic: str
    sql: str
    window: Window | None
    aggregates: bool
    group_columns: list[str] = field(default_factory=list)


def parse_stream_sql(sql: str) -> StreamQuery:
    """Parse a pipeline's SQL; errors say what is wrong and how to write it."""
    try:
        tree = sqlglot.parse_one(_SESSION_CALL.sub("SESSION_WINDOW(", sql), read="duckdb")
    except sqlglot.errors.ParseError as exc:
        raise ConfigError(f"the SQL does not parse: {exc}") from exc
    if not isinstance(tree, exp.Query):
        raise ConfigError("a pipeline's SQL must be a SELECT")
    topics: set[str] = set()
    windows: list[Window] = []
    for table in list(tree.find_all(exp.Table)):
        inner = table.this
        if isinstance(inner, exp.Anonymous) and inner.name.upper() in _FUNCTIONS:
            window, topic = _window(_FUNCTIONS[inner.name.upper()], inner)
            windows.append(window)
            topics.add(topic)
            replacement = exp.to_table(STREAM_RELATION)
            if table.alias:
                replacement.set("alias", table.args["alias"])
            table.replace(replacement)
        elif table.db.lower() == "topic":
            topics.add(table.name)
            replacement = exp.to_table(STREAM_RELATION)
            replacement.set("alias", table.args.get("alias") or exp.TableAlias(this=table.name))
            table.replace(replacement)
    if len(topics) != 1 or len(windows) > 1:
        raise ConfigError(
            "a pipeline's SQL reads exactly one topic, as topic.NAME, windowed at most once"
            f" (found topics: {', '.join(sorted(topics)) or 'none'})",
            hint="join lakehouse tables (silver.x) freely; chain pipelines to combine topics",
        )
    select = tree if isinstance(tree, exp.Select) else tree.find(exp.Select)
    aggregates, group_columns = False, []
    if select is not None:
        for projection in select.expressions:
            has_agg = any(
                node.find_ancestor(exp.Window) is None for node in projection.find_all(exp.AggFunc)
            )
            aggregates |= has_agg
            if not has_agg and projection.alias_or_name != "*":
                group_columns.append(projection.alias_or_name)
    if not aggregates:
        group_columns = []
    return StreamQuery(
        topic=topics.pop(),
        sql=tree.sql(dialect="duckdb"),
        window=windows[0] if windows else None,
        aggregates=aggregates,
        group_columns=group_columns,
    )


def _window(kind: WindowKind, call: exp.Anonymous) -> tuple[Window, str]:
    args = call.expressions
    usage = {
        "tumble": "TUMBLE(topic.NAME, time_column, INTERVAL '1 minute')",
        "hop": "HOP(topic.NAME, time_column, INTERVAL 'slide', INTERVAL 'size')",
        "session": "SESSION(topic.NAME, time_column, INTERVAL 'gap', key_column, ...)",
    }[kind]
    wanted = {"tumble": 3, "hop": 4, "session": 3}[kind]
    if len(args) < wanted or (kind != "session" and len(args) != wanted):
        raise ConfigError(f"{call.name} takes {wanted} arguments", hint=f"write {usage}")
    source, time_column = args[0], args[1]
    if not (isinstance(source, exp.Column) and source.table.lower() == "topic"):
        raise ConfigError(f"{call.name}'s first argument must be topic.NAME", hint=usage)
    if not isinstance(time_column, exp.Column):
        raise ConfigError(f"{call.name}'s second argument must be a column", hint=usage)
    durations = [_interval_us(arg, call.name, usage) for arg in args[2:wanted]]
    topic = source.name
    if kind == "tumble":
        window = Window(kind, time_column.name, size_us=durations[0], slide_us=durations[0])
    elif kind == "hop":
        slide, size = durations
        window = Window(kind, time_column.name, size_us=size, slide_us=slide)
    else:
        keys = []
        for arg in args[wanted:]:
            if not isinstance(arg, exp.Column):
                raise ConfigError("SESSION keys must be columns", hint=usage)
            keys.append(arg.name)
        window = Window(kind, time_column.name, gap_us=durations[0], keys=tuple(keys))
    return window, topic


def _interval_us(node: exp.Expression, function: str, usage: str) -> int:
    if isinstance(node, exp.Interval):
        unit = node.args.get("unit")
        text = f"{node.this.name} {unit.name if unit is not None else ''}".strip()
    elif isinstance(node, exp.Literal) and node.is_string:
        text = node.name
    else:
        raise ConfigError(f"{function}: expected an INTERVAL, got {node.sql()}", hint=usage)
    try:
        micros = parse_duration_us(text)
    except ValueError as exc:
        raise ConfigError(f"{function}: {exc}", hint=usage) from exc
    if micros <= 0:
        raise ConfigError(f"{function}: a window length must be positive", hint=usage)
    return micros
