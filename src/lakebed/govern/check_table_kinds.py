"""The table-level kinds of quality check: they judge the new data as a whole (unique keys,
row count bounds, freshness, a query's failing rows) and cannot drop rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from lakebed.govern.check_kinds import (
    Context,
    EvaluationError,
    Outcome,
    Severity,
    TableCheck,
    plural,
    quote_identifier,
    register,
    single_select,
)

if TYPE_CHECKING:
    from lakebed.govern.check_config import Spec


@register
@dataclass(frozen=True, kw_only=True)
class Unique(TableCheck):
    """No two rows share the value(s) of `column`/`columns`; rows with a NULL key pass."""

    kind = "unique"
    options = ("column", "columns")
    primary = "column"
    example = "- unique: order_id"
    no_drop = (
        "unique cannot drop rows: which duplicate to keep is the model's decision "
        "(deduplicate in SQL, e.g. QUALIFY row_number() OVER (PARTITION BY key ORDER BY ...) = 1)"
    )
    columns: tuple[str, ...]

    def judged_columns(self) -> tuple[str, ...] | None:
        return self.columns

    @classmethod
    def read(cls, spec: Spec, *, name: str | None, severity: Severity) -> Unique:
        columns = spec.columns()
        return cls(name=name or f"unique({', '.join(columns)})", severity=severity, columns=columns)

    def evaluate(self, ctx: Context) -> Outcome:
        columns = [quote_identifier(ctx.column(c)) for c in self.columns]
        keys = ", ".join(columns)
        present = " AND ".join(f"{c} IS NOT NULL" for c in columns)
        row = ctx.con.execute(
            f"SELECT count(*), coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM this "
            f"WHERE {present} GROUP BY {keys} HAVING count(*) > 1)"
        ).fetchone()
        groups, rows = (0, 0) if row is None else (int(row[0]), int(row[1]))
        shown = ", ".join(self.columns)
        if not groups:
            return Outcome(False, 0, f"{shown} is unique across {ctx.rows:,} rows")
        duplicated = plural(groups, "duplicated value")
        return Outcome(True, rows, f"{plural(rows, 'row')} share {duplicated} of {shown}")


@register
@dataclass(frozen=True, kw_only=True)
class RowCount(TableCheck):
    """The number of new rows lies within [min, max]."""

    kind = "row_count"
    options = ("min", "max")
    example = "- row_count: {min: 1, max: 10000000}"
    min: int | None = None
    max: int | None = None

    summarizable = True

    def judged_columns(self) -> tuple[str, ...] | None:
        return ()  # it counts rows

    @classmethod
    def read(cls, spec: Spec, *, name: str | None, severity: Severity) -> RowCount:
        low, high = spec.count("min"), spec.count("max")
        if low is None and high is None:
            raise spec.error("row_count needs `min`, `max` or both", hint=cls.example)
        if low is not None and high is not None and low > high:
            raise spec.error(f"`min` {low} is greater than `max` {high}")
        return cls(name=name or "row_count", severity=severity, min=low, max=high)

    def evaluate(self, ctx: Context) -> Outcome:
        rows = ctx.rows
        if self.min is not None and rows < self.min:
            return Outcome(True, 0, f"{plural(rows, 'row')}, fewer than the minimum {self.min:,}")
        if self.max is not None and rows > self.max:
            return Outcome(True, 0, f"{plural(rows, 'row')}, more than the maximum {self.max:,}")
        return Outcome(False, 0, f"{plural(rows, 'row')}, within bounds")


@register
@dataclass(frozen=True, kw_only=True)
class Freshness(TableCheck):
    """The newest value of a timestamp or date column is at most `max_age` old."""

    kind = "freshness"
    options = ("column", "max_age")
    example = "- freshness: {column: ordered_at, max_age: 2 days}"
    summarizable = True
    self_contained = False  # a table that stops changing grows stale
    column: str
    max_age: timedelta

    @classmethod
    def read(cls, spec: Spec, *, name: str | None, severity: Severity) -> Freshness:
        column, max_age = spec.column(), spec.duration("max_age")
        name = name or f"freshness({column})"
        return cls(name=name, severity=severity, column=column, max_age=max_age)

    def evaluate(self, ctx: Context) -> Outcome:
        column = ctx.data.column(ctx.column(self.column))
        newest = _newest(column, self.column)
        if newest is None:
            return Outcome(True, 0, f"no {self.column} values to judge freshness by")
        age = ctx.now - newest
        shown = f"newest {self.column} {newest.isoformat()} is {_words(age)} old"
        if age > self.max_age:
            return Outcome(True, 0, f"{shown}, older than {_words(self.max_age)}")
        return Outcome(False, 0, f"{shown}, within {_words(self.max_age)}")


def _newest(column: pa.ChunkedArray, name: str) -> datetime | None:
    """The latest value as an aware UTC time (naive timestamps mean UTC, dates midnight)."""
    kind = column.type
    if not (pa.types.is_timestamp(kind) or pa.types.is_date(kind)):
        raise EvaluationError(f"freshness needs a timestamp or date column; {name} is {kind}")
    newest = pc.max(column)
    if not newest.is_valid:
        return None
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    if pa.types.is_date(kind):
        days = newest.cast(pa.date32()).value
        return epoch + timedelta(days=days)
    micros = newest.cast(pa.timestamp("us", tz=kind.tz), safe=False).value
    return epoch + timedelta(microseconds=micros)


def _words(age: timedelta) -> str:
    seconds = age.total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if abs(seconds) >= 2 * size:  # "36 hours" reads better than "1.5 days"
            amount = seconds / size
            return f"{amount:.3g} {unit}{'' if amount == 1 else 's'}"
    return f"{seconds:.3g} seconds"


@register
@dataclass(frozen=True, kw_only=True)
class Query(TableCheck):
    """A SELECT over `this` (the new data); every row it returns is a failure."""

    kind = "query"
    self_contained = False
    options = ("sql",)
    primary = "sql"
    example = "- query: {sql: 'select * from this where amount < 0', name: no_negative}"
    sql: str

    @classmethod
    def read(cls, spec: Spec, *, name: str | None, severity: Severity) -> Query:
        sql = spec.text("sql")
        assert sql is not None
        sql = sql.rstrip().rstrip(";").rstrip()
        single_select(spec, sql, shown="one SELECT statement")
        if _one_row_always(sql):
            raise spec.error(
                "`sql` always returns one row (an aggregate without GROUP BY), so the check "
                "would always fail: every row the query returns is a failure",
                hint="return the failing rows (select * from this where amount < 0), or "
                "keep the aggregate's row only when it fails (... having count(*) > 0)",
            )
        return cls(name=name or f"query({' '.join(sql.split())})", severity=severity, sql=sql)

    def evaluate(self, ctx: Context) -> Outcome:
        rows = int(ctx.scalar(f"SELECT count(*) FROM ({self.sql}) AS failing") or 0)
        if rows:
            return Outcome(True, rows, f"the query returned {plural(rows, 'failing row')}")
        return Outcome(False, 0, "the query returned no rows")


def _one_row_always(sql: str) -> bool:
    """Whether a SELECT aggregates without GROUP BY, HAVING, LIMIT 0 or a set operation
    (`select count(*) from this where ...`): it returns exactly one row."""
    try:
        tree = sqlglot.parse_one(sql, dialect="duckdb")
    except SqlglotError:
        return False  # DuckDB parsed it: judged when it runs
    if not isinstance(tree, exp.Select) or any(
        tree.args.get(key) for key in ("group", "having", "limit", "qualify")
    ):
        return False
    return all(
        e.find(exp.AggFunc) is not None and e.find(exp.Window) is None for e in tree.expressions
    )
