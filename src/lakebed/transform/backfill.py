"""`--backfill`: the partitions of a partitioned model to recompute, as a window of periods
(`2025-01..2025-03`: January to March, whole) or of values (`10..12`).

A bound written as a date or part of one (`2025`, `2025-01`, `2025-01-31`, `2025-01-31 06`)
is a period: the window runs from the start of the first period to the end of the last, so
a month selects every day of a date column and every hour of a timestamp column, as
Dagster's partition ranges do. Other bounds are values, compared as the column compares
them, both ends included.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyarrow as pa

from lakebed.errors import TransformError

# YYYY, YYYY-MM, YYYY-MM-DD, then an hour, minute and second after a space or a T.
_PERIOD = re.compile(
    r"^(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:(?P<sep>[T ])(?P<hour>\d{2})(?::(?P<minute>\d{2})(?::(?P<second>\d{2}))?)?)?)?)?$"
)
_FORMS = "YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DD HH[:MM[:SS]]"


@dataclass(frozen=True)
class _Period:
    """A calendar period written as a bound: its first instant, the next period's first
    instant, and how it was written (to write the next one alike)."""

    first: datetime
    after: datetime
    unit: str  # year, month, day, hour, minute, second
    sep: str

    def text(self, moment: datetime) -> str:
        """`moment` written to this period's precision, as the bound was."""
        if self.unit == "year":
            return f"{moment.year:04d}"
        if self.unit == "month":
            return f"{moment.year:04d}-{moment.month:02d}"
        day = moment.strftime("%Y-%m-%d")
        if self.unit == "day":
            return day
        time = {"hour": "%H", "minute": "%H:%M", "second": "%H:%M:%S"}[self.unit]
        return day + self.sep + moment.strftime(time)


def _period(bound: str) -> _Period | None:
    """The period `bound` writes; None when it is not written as one (a plain value);
    TransformError when it is but names no date (`2025-13`, `2025-02-30`)."""
    found = _PERIOD.match(bound)
    if found is None:
        return None
    parts = {k: int(v) for k, v in found.groupdict().items() if v is not None and k != "sep"}
    if set(parts) == {"year"}:
        if not 1 <= parts["year"] <= 9998:
            return None
        first = datetime(parts["year"], 1, 1)
        return _Period(first, datetime(parts["year"] + 1, 1, 1), "year", "")
    try:
        first = datetime(
            parts["year"],
            parts["month"],
            parts.get("day", 1),
            parts.get("hour", 0),
            parts.get("minute", 0),
            parts.get("second", 0),
        )
    except ValueError as exc:
        raise TransformError(
            f"--backfill bound {bound} is not a date: {exc}",
            hint=f"write each bound as {_FORMS}, or as a value of the partition column",
        ) from exc
    unit = next(u for u in ("second", "minute", "hour", "day", "month") if u in parts)
    if unit == "month":
        after = datetime(first.year + first.month // 12, first.month % 12 + 1, 1)
    else:
        after = first + timedelta(**{f"{unit}s": 1})
    return _Period(first, after, unit, found.group("sep") or " ")


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class Backfill:
    """Recompute only the partitions in the window from `start` to `end` (both included)."""

    start: str
    end: str

    @classmethod
    def parse(cls, text: str) -> Backfill:
        """`START..END`, or one bound alone for one period or value."""
        start, sep, end = text.partition("..")
        start, end = start.strip(), end.strip()
        if not sep:
            end = start
        if not start or not end:
            raise TransformError(
                f"--backfill takes START..END (or one partition), got {text!r}",
                hint="for example 2025-01..2025-03, 2025-01-01..2025-01-31 or 2025-01-31",
            )
        first, last = _period(start), _period(end)
        low, high = _number(start), _number(end)
        if first is not None and last is not None:
            reversed_ = first.first >= last.after
        elif low is not None and high is not None:
            reversed_ = low > high
        else:  # values written alike compare as their text
            reversed_ = len(start) == len(end) and start > end
        if reversed_:
            raise TransformError(
                f"--backfill {text} ends before it starts: it would recompute no partition",
                hint=f"write the earlier bound first: {end}..{start}",
            )
        return cls(start, end)

    def predicate(self, column: str, dtype: pa.DataType) -> str:
        """The condition (DuckDB and delta-rs SQL) selecting these partitions of `column`."""
        quoted = '"' + column.replace('"', '""') + '"'
        first, last = _period(self.start), _period(self.end)
        if pa.types.is_integer(dtype) or pa.types.is_floating(dtype):
            if _number(self.start) is None or _number(self.end) is None:
                raise TransformError(
                    f"--backfill bounds {self.start}..{self.end} are not numbers, and "
                    f"{column} is a {dtype} column",
                    hint=f"give values of {column}, for example 3..7",
                )
            return f"{quoted} >= {self.start} AND {quoted} <= {self.end}"
        if pa.types.is_date(dtype) or pa.types.is_timestamp(dtype):
            if first is None or last is None:
                raise TransformError(
                    f"--backfill bounds {self.start}..{self.end} are not dates, and "
                    f"{column} is a {dtype} column",
                    hint=f"write each bound as {_FORMS}",
                )
            if pa.types.is_date(dtype):
                # A date column holds whole days: a bound within a day takes the whole day.
                low = first.first.date()
                high = (last.after - timedelta(microseconds=1)).date() + timedelta(days=1)
                return f"{quoted} >= '{low.isoformat()}' AND {quoted} < '{high.isoformat()}'"
            low_text = first.first.strftime("%Y-%m-%d %H:%M:%S")
            high_text = last.after.strftime("%Y-%m-%d %H:%M:%S")
            return f"{quoted} >= '{low_text}' AND {quoted} < '{high_text}'"
        if first is not None and last is not None:
            # Text written as dates (`2025-01-31`, `2025-01`) sorts as they do: a month
            # bound takes every day written under it.
            low_text, high_text = first.text(first.first), last.text(last.after)
            return f"{quoted} >= {_text(low_text)} AND {quoted} < {_text(high_text)}"
        return f"{quoted} >= {_text(self.start)} AND {quoted} <= {_text(self.end)}"


def _text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
