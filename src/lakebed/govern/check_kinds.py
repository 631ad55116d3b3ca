"""The kinds of quality check: each is a `Check` subclass registered under its YAML key.

A row-level kind (`RowCheck`) gives a SQL boolean over `this` (the new data) that is TRUE
for failing rows, so its failures can be counted, warned about or dropped to quarantine. A
table-level kind (`TableCheck`) judges the data as a whole and cannot drop rows. A new kind
is one new class with `@register`, here or, table-level, in `check_table_kinds`; it reads
its options through `check_config.Spec`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import duckdb
import pyarrow as pa

from lakebed.errors import InvalidTableNameError
from lakebed.storage import TableName

if TYPE_CHECKING:
    from lakebed.govern.check_config import Spec

__all__ = [
    "CHECK_KINDS",
    "KINDS",
    "SEVERITIES",
    "Check",
    "Context",
    "EvaluationError",
    "Outcome",
    "RowCheck",
    "Severity",
    "TableCheck",
    "Tolerance",
    "plural",
    "quote_identifier",
    "quote_literal",
    "register",
    "single_select",
]

Severity = Literal["warn", "drop", "fail"]
SEVERITIES: tuple[Severity, ...] = ("warn", "drop", "fail")

Scalar = str | int | float | bool
Bound = int | float | str | date | datetime

KINDS: dict[str, type[Check]] = {}
_C = TypeVar("_C", bound="type[Check]")


def register(cls: _C) -> _C:
    """Make a `Check` subclass available under its `kind` in check configurations."""
    KINDS[cls.kind] = cls
    return cls


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: Bound | bool) -> str:
    """A SQL literal for a configured value (YAML gives str, numbers, bools, dates)."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):
        kind = "TIMESTAMPTZ" if value.tzinfo is not None else "TIMESTAMP"
        return f"{kind} '{value.isoformat()}'"
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    return "'" + value.replace("'", "''") + "'"


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


class EvaluationError(Exception):
    """A check could not be evaluated on this data; its result gets status `error`."""


@dataclass(frozen=True)
class Outcome:
    """What a table-level check found."""

    failed: bool
    failing_rows: int
    message: str


@dataclass
class Context:
    """What checks see while auditing: `this` in a private DuckDB connection, and more."""

    con: duckdb.DuckDBPyConnection
    data: pa.Table
    table: str
    now: datetime
    lookup: Callable[[str], pa.Table] | None
    # The rows judged, when `data` stands for them rather than being them (a committed
    # table judged from its summary: one row with the newest value of each column).
    count: int | None = None
    # The table's columns, when `data` holds only some of them (its summary).
    columns: list[str] | None = None

    @property
    def rows(self) -> int:
        return self.data.num_rows if self.count is None else self.count

    def scalar(self, sql: str) -> Any:
        row = self.con.execute(sql).fetchone()
        return None if row is None else row[0]

    def column(self, name: str) -> str:
        """The data's own spelling of a column (DuckDB matches names case-insensitively)."""
        names: list[str] = self.data.column_names
        for actual in names:
            if actual.lower() == name.lower():
                return actual
        known = names if self.columns is None else self.columns
        raise EvaluationError(
            f"column {name!r} is not in the data of {self.table} "
            f"(columns: {', '.join(known) or 'none'})"
        )


# Parse-time validation of user SQL and patterns; DuckDB connections are not thread-safe.
_validator_lock = threading.Lock()
_validator: duckdb.DuckDBPyConnection | None = None


def _validate(work: Callable[[duckdb.DuckDBPyConnection], object]) -> None:
    global _validator
    with _validator_lock:
        if _validator is None:
            _validator = duckdb.connect(":memory:", config={"enable_external_access": False})
        work(_validator)


def single_select(spec: Spec, sql: str, *, shown: str) -> None:
    try:
        statements: list[Any] = []
        _validate(lambda con: statements.extend(con.extract_statements(sql)))
    except duckdb.Error as exc:
        raise spec.error(f"`sql` does not parse: {exc}") from exc
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise spec.error(
            f"`sql` must be {shown}, got {len(statements)} statement(s)",
            hint="checks only read; write one expression or one SELECT, without `;`",
        )


# -- the check kinds ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Check:
    """One configured check on a table: a kind, a unique name and a severity."""

    kind: ClassVar[str]
    # The positional form's field: `- not_null: customer_id` means `column: customer_id`.
    primary: ClassVar[str | None] = None
    example: ClassVar[str]
    options: ClassVar[tuple[str, ...]]  # the keys it takes besides name and severity
    no_drop: ClassVar[str | None] = "a table-level check has no failing rows to drop"
    # False when its verdict also depends on other tables or on the time (it may change
    # while this table does not).
    self_contained: ClassVar[bool] = True
    # True when a table's row count and the newest value of its `judged_columns` are all
    # it needs (a committed table's are in its Delta log: no rows are read).
    summarizable: ClassVar[bool] = False

    name: str
    severity: Severity = "fail"

    @classmethod
    def read(cls, spec: Spec, *, name: str | None, severity: Severity) -> Check:
        """Build the check from its options (`name` None: the kind's default name)."""
        raise NotImplementedError

    def judged_columns(self) -> tuple[str, ...] | None:
        """The only columns it looks at (so a table can be judged reading just those);
        None when it may look at any (a SQL expression or query)."""
        column = getattr(self, "column", None)
        if isinstance(column, str):
            return (column,)
        columns = getattr(self, "columns", None)
        return columns if isinstance(columns, tuple) else None


@dataclass(frozen=True)
class Tolerance:
    """How many failing rows a row check lets pass (`max_failing: 10` or `max_failing: 2%`
    of the rows judged): within it a check's verdict is one step milder; beyond it a drop
    check fails (nothing is published: that many bad rows mean a broken input)."""

    rows: int | None = None
    share: float | None = None  # a fraction of the rows judged, 0..1

    def allows(self, failing: int, total: int) -> bool:
        if self.rows is not None:
            return failing <= self.rows
        assert self.share is not None
        return failing <= self.share * total

    def __str__(self) -> str:
        if self.rows is not None:
            return f"{self.rows:,}"
        return f"{(self.share or 0) * 100:g}%"


@dataclass(frozen=True, kw_only=True)
class RowCheck(Check):
    """A check of each row: failing rows can be counted, warned about or dropped."""

    no_drop: ClassVar[str | None] = None

    max_failing: Tolerance | None = None

    def failing_sql(self) -> str:
        """A SQL boolean over `this` that is TRUE for a failing row (NULL counts as passing)."""
        raise NotImplementedError

    def reason(self) -> str:
        """Why a row fails, in words, for messages and quarantine's `_reason`."""
        raise NotImplementedError

    def relations(self, ctx: Context) -> dict[str, pa.Table]:
        """Extra relations `failing_sql` reads, registered only while this check runs."""
        return {}

    def reads(self) -> tuple[str, ...]:
        """The columns of `this` it needs (looked up first, for a clear error)."""
        return self.judged_columns() or ()


@dataclass(frozen=True, kw_only=True)
class TableCheck(Check):
    """A check of the data as a whole."""

    def evaluate(self, ctx: Context) -> Outcome:
        raise NotImplementedError


@register
@dataclass(frozen=True, kw_only=True)
class NotNull(RowCheck):
    """None of `column`/`columns` is NULL (`not_null: [customer_id, product_id]`)."""

    kind = "not_null"
    options = ("column", "columns")
    primary = "column"
    example = "- not_null: customer_id"
    columns: tuple[str, ...]

    @classmethod
    def read(cls, spec: Spec, *, name: str | None, severity: Severity) -> NotNull:
        columns = spec.columns()
        label = f"not_null({', '.join(columns)})"
        return cls(name=name or label, severity=severity, columns=columns)

    def failing_sql(self) -> str:
        return " OR ".join(f"{quote_identifier(c)} IS NULL" for c in self.columns)

    def reason(self) -> str:
        return f"{' or '.join(self.columns)} is null"


@register
@dataclass(frozen=True, kw_only=True)
class AcceptedValues(RowCheck):
    kind = "accepted_values"
    options = ("column", "values")
    example = "- accepted_values: {column: status, values: [placed, paid]}"
    column: str
    values: tuple[Scalar, ...]

    @classmethod
    def read(cls, spec: Spec, *, name: str | None, severity: Severity) -> AcceptedValues:
        column, values = spec.column(), spec.values("values")
        name = name or f"accepted_values({column})"
        return cls(name=name, severity=severity, column=column, values=values)

    def failing_sql(self) -> str:
        listed = ", ".join(quote_literal(v) for v in self.values)
        return f"{quote_identifier(self.column)} NOT IN ({listed})"

    def reason(self) -> str:
        return f"{self.column} is not one of {', '.join(map(str, self.values))}"


@register
@dataclass(frozen=True, kw_only=True)
class Range(RowCheck):
    """`min <= column <= max` (either bound may be left out); NULL passes."""

    kind = "range"
    options = ("column", "min", "max")
    example = "- range: {column: amount, min: 0, max: 10000}"
    column: str
    min: Bound | None = None
    max: Bound | None = None

    @classmethod
    def read(cls, spec: Spec, *, name: str | None, severity: Severity) -> Range:
        column, low, high = spec.column(), spec.bound("min"), spec.bound("max")
        if low is None and high is None:
            raise spec.error("range needs `min`, `max` or both", hint=cls.example)
        if low is not None and high is not None:
            try:
                inverted = low > high  # type: ignore[operator]
            except TypeError as exc:
                raise spec.error(f"`min` {low!r} and `max` {high!r} are not comparable") from exc
            if inverted:
                raise spec.error(f"`min` {low!r} is greater than `max` {high!r}")
        name = name or f"range({column})"
        return cls(name=name, severity=severity, column=column, min=low, max=high)

    def failing_sql(self) -> str:
        column = quote_identifier(self.column)
        sides = []
        if self.min is not None:
            sides.append(f"{column} < {quote_literal(self.min)}")
        if self.max is not None:
            sides.append(f"{column} > {quote_literal(self.max)}")
        return " OR ".join(sides)

    def reason(self) -> str:
        if self.max is None:
            return f"{self.column} is below {self.min}"
        if self.min is None:
            return f"{self.column} is above {self.max}"
        return f"{self.column} is outside [{self.min}, {self.max}]"


@register
@dataclass(frozen=True, kw_only=True)
class Regex(RowCheck):
    """The value (as text) must contain a match; anchor the pattern with ^…$ for all of it."""

    kind = "regex"
    options = ("column", "pattern")
    example = "- regex: {column: email, pattern: '^[^@]+@[^@]+$'}"
    column: str
    pattern: str

    @classmethod
    def read(cls, spec: Spec, *, name: str | None, severity: Severity) -> Regex:
        column, pattern = spec.column(), spec.get("pattern", True)
        if not isinstance(pattern, str):
            raise spec.error(f"`pattern` must be a string, got {pattern!r}")
        try:
            _validate(lambda con: con.execute("SELECT regexp_matches('', ?)", [pattern]))
        except duckdb.Error as exc:
            raise spec.error(
                f"`pattern` is not a valid regular expression: {exc}",
                hint="patterns use RE2 syntax (no look-around or back-references)",
            ) from exc
        name = name or f"regex({column})"
        return cls(name=name, severity=severity, column=column, pattern=pattern)

    def failing_sql(self) -> str:
        value = f"CAST({quote_identifier(self.column)} AS VARCHAR)"
        return f"NOT regexp_matches({value}, {quote_literal(self.pattern)})"

    def reason(self) -> str:
        return f"{self.column} does not match {self.pattern}"


_REFERENCED = "__lakebed_referenced_keys"


@register
@dataclass(frozen=True, kw_only=True)
class Relationships(RowCheck):
    """Each non-NULL `column` value must exist in `to`.`field` (foreign-key semantics)."""

    kind = "relationships"
    self_contained = False
    options = ("column", "to", "field")
    example = "- relationships: {column: customer_id, to: silver.customers, field: customer_id}"
    column: str
    to: str
    field: str

    @classmethod
    def read(cls, spec: Spec, *, name: str | None, severity: Severity) -> Relationships:
        column, target = spec.column(), spec.text("to")
        assert target is not None
        try:
            to = str(TableName.parse(target))
        except InvalidTableNameError as exc:
            raise spec.error(f"`to`: {exc.message}", hint=exc.hint) from exc
        field = spec.text("field", required=False) or column
        name = name or f"relationships({column})"
        return cls(name=name, severity=severity, column=column, to=to, field=field)

    def relations(self, ctx: Context) -> dict[str, pa.Table]:
        if ctx.lookup is None:
            raise EvaluationError(f"cannot read {self.to}: the audit was given no lookup")
        query = f"select distinct {quote_identifier(self.field)} from {self.to}"
        try:
            keys = ctx.lookup(query)
        except Exception as exc:  # whatever the lookup raises, the check reports it
            raise EvaluationError(f"cannot read {self.to}.{self.field}: {exc}") from exc
        if keys.num_columns != 1:
            raise EvaluationError(f"the lookup of {self.to}.{self.field} gave no single column")
        return {_REFERENCED: keys.rename_columns(["key"])}

    def failing_sql(self) -> str:
        column = quote_identifier(self.column)
        keys = f"SELECT key FROM {_REFERENCED} WHERE key IS NOT NULL"
        return f"{column} IS NOT NULL AND {column} NOT IN ({keys})"

    def reason(self) -> str:
        return f"{self.column} has no match in {self.to}.{self.field}"


@register
@dataclass(frozen=True, kw_only=True)
class Expression(RowCheck):
    """A SQL boolean over the row's columns; a row where it is not TRUE (FALSE or NULL) fails."""

    kind = "expression"
    options = ("sql",)
    primary = "sql"
    example = "- expression: {sql: 'quantity > 0', name: positive_quantity}"
    sql: str

    @classmethod
    def read(cls, spec: Spec, *, name: str | None, severity: Severity) -> Expression:
        sql = spec.text("sql")
        assert sql is not None
        single_select(spec, f"SELECT ({sql}) FROM this", shown="one SQL expression")
        return cls(name=name or f"expression({' '.join(sql.split())})", severity=severity, sql=sql)

    def failing_sql(self) -> str:
        return f"({self.sql}) IS NOT TRUE"

    def reason(self) -> str:
        return f"{' '.join(self.sql.split())} is not true"


# The table-level kinds register themselves when their module is imported (it needs the
# classes above, so it comes last).
from lakebed.govern import check_table_kinds  # noqa: E402, F401

CHECK_KINDS: tuple[str, ...] = tuple(KINDS)
