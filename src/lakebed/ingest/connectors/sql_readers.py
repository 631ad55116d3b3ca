"""Reading a SQL source into Arrow: the read plan and the readers.

The plan fixes each column's Arrow type from the database's own metadata (result column
types on PostgreSQL, the reflected table elsewhere) so every reader returns the same table:

    ADBC        PostgreSQL, binary COPY straight into Arrow; binds the cursor parameter
    ConnectorX  PostgreSQL, full loads only (it cannot bind parameters)
    SQLAlchemy  any database: a streamed cursor, `fetchmany(chunk_size)` into column arrays

Types a Delta table cannot hold, or that the readers do not all handle alike (json, uuid,
time, interval, arrays, enums, unconstrained numeric), are read as text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from difflib import get_close_matches
from typing import Any, cast

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.types import TypeEngine

__all__ = [
    "PlanError",
    "PlannedColumn",
    "ReadPlan",
    "read_adbc",
    "read_connectorx",
    "read_sqlalchemy",
    "resolve_plan",
]

# Where the SQL text holds the cursor parameter; each reader puts its own placeholder there.
_CURSOR_SLOT = "\x00cursor\x00"
_QUERY_ALIAS = "_lakebed_query"
_MAX_DECIMAL128_PRECISION = 38
_UNKNOWN_PRECISION = 65535  # psycopg2's precision for `numeric` without a typmod

_UTC_TIMESTAMP = pa.timestamp("us", tz="UTC")
# PostgreSQL type OIDs that map onto an Arrow type; everything else is read as text.
_PG_TYPES: dict[int, pa.DataType] = {
    16: pa.bool_(),
    17: pa.binary(),
    20: pa.int64(),
    21: pa.int16(),
    23: pa.int32(),
    25: pa.string(),
    700: pa.float32(),
    701: pa.float64(),
    1042: pa.string(),
    1043: pa.string(),
    1082: pa.date32(),
    1114: pa.timestamp("us"),
    1184: _UTC_TIMESTAMP,
}
_PG_NUMERIC = 1700


class PlanError(Exception):
    """A table, column or query the source names is not there, or a value does not convert."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message)


@dataclass(frozen=True)
class PlannedColumn:
    name: str
    quoted: str
    arrow_type: pa.DataType | None  # None: inferred from the values read
    as_text: bool = False  # selected as CAST(... AS TEXT)
    sa_type: TypeEngine[Any] | None = None  # result processing of a reflected column


@dataclass(frozen=True)
class ReadPlan:
    """What to select from where, with each column's Arrow type."""

    source_sql: str  # a quoted table name, or "(<query>) _lakebed_query"
    columns: tuple[PlannedColumn, ...]
    cursor: PlannedColumn | None
    chunk_size: int
    postgres: bool
    sqlite: bool = False

    @property
    def schema(self) -> pa.Schema | None:
        """The Arrow schema every reader returns; None when some types are inferred."""
        if any(column.arrow_type is None for column in self.columns):
            return None
        return pa.schema([(column.name, column.arrow_type) for column in self.columns])

    def select_sql(self, *, incremental: bool, numeric_as_text: bool = False) -> str:
        """The SELECT, with `_CURSOR_SLOT` where the cursor parameter goes."""
        items = []
        for column in self.columns:
            text = column.as_text or (numeric_as_text and pa.types.is_decimal(column.arrow_type))
            items.append(
                f"CAST({column.quoted} AS TEXT) AS {column.quoted}" if text else column.quoted
            )
        sql = f"SELECT {', '.join(items)} FROM {self.source_sql}"
        if incremental and self.cursor is not None:
            quoted = self.cursor.quoted
            kind = self.cursor.arrow_type
            slot = _CURSOR_SLOT
            if (
                self.sqlite
                and kind is not None
                and (pa.types.is_timestamp(kind) or pa.types.is_date(kind))
            ):
                # SQLite keeps times as text in whatever format was written ('T' or ' '):
                # compare them as instants, not as strings.
                quoted, slot = f"julianday({quoted})", f"julianday({_CURSOR_SLOT})"
            sql += f" WHERE {quoted} >= {slot} ORDER BY {quoted}"
        return sql


def resolve_plan(
    conn: Connection,
    *,
    table: str | None,
    query: str | None,
    columns: Sequence[str] | None,
    cursor: str | None,
    chunk_size: int,
) -> ReadPlan:
    """Check that the table and columns exist and fix each column's Arrow type."""
    preparer = conn.dialect.identifier_preparer
    postgres = conn.dialect.name == "postgresql"
    reflected: sa.Table | None = None
    if table is not None:
        schema, _, name = table.rpartition(".")
        _check_table(conn, name, schema or None, table)
        source_sql = preparer.quote(name)
        if schema:
            source_sql = f"{preparer.quote_schema(schema)}.{source_sql}"
        if not postgres:
            reflected = sa.Table(name, sa.MetaData(), schema=schema or None, autoload_with=conn)
    else:
        assert query is not None
        # A new line before ")": the query may end in a -- comment. No AS: Oracle has none.
        source_sql = f"({query.strip().rstrip(';')}\n) {_QUERY_ALIAS}"

    if reflected is not None:
        found = [
            PlannedColumn(c.name, preparer.quote(c.name), _arrow_type_of(c.type), sa_type=c.type)
            for c in reflected.columns
        ]
    else:
        found = _probe_columns(conn, source_sql, preparer.quote, postgres)

    by_name = {column.name: column for column in found}
    if columns is not None:
        _check_columns(columns, by_name, table or "the query")
        found = [by_name[name] for name in columns]
    planned_cursor = None
    if cursor is not None:
        _check_columns([cursor], by_name, table or "the query")
        planned_cursor = by_name[cursor]
        kind = planned_cursor.arrow_type
        if planned_cursor.as_text or (kind is not None and not _is_cursor_type(kind)):
            raise PlanError(
                f"cursor column {cursor} is not an integer, timestamp or date column",
                hint="pick a column whose values only grow, such as updated_at or an id",
            )
    sqlite = conn.dialect.name == "sqlite"
    return ReadPlan(source_sql, tuple(found), planned_cursor, chunk_size, postgres, sqlite)


def _is_cursor_type(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(kind)
        or pa.types.is_timestamp(kind)
        or pa.types.is_date(kind)
        or pa.types.is_string(kind)
    )


def _check_table(conn: Connection, name: str, schema: str | None, table: str) -> None:
    inspector = sa.inspect(conn)
    if inspector.has_table(name, schema=schema):
        return
    try:
        known = inspector.get_table_names(schema=schema) + inspector.get_view_names(schema=schema)
    except sa.exc.SQLAlchemyError:
        known = []
    matches = get_close_matches(name, known, n=3, cutoff=0.5)
    prefix = f"{schema}." if schema else ""
    hint = (
        f"did you mean {', '.join(prefix + m for m in matches)}?"
        if matches
        else "check `table:` (schema-qualify it as schema.table if needed)"
    )
    raise PlanError(f"table {table} does not exist", hint=hint)


def _check_columns(wanted: Sequence[str], by_name: dict[str, PlannedColumn], where: str) -> None:
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise PlanError(
            f"column {', '.join(missing)} not found in {where}",
            hint=f"its columns are {', '.join(by_name)}",
        )


def _probe_columns(
    conn: Connection, source_sql: str, quote: Callable[[str], str], postgres: bool
) -> list[PlannedColumn]:
    """The result columns of `SELECT *` (with their types on PostgreSQL), reading no rows."""
    result = conn.execute(sa.text(_escape(f"SELECT * FROM {source_sql} WHERE 1 = 0")))
    try:
        names = list(result.keys())
        description = result.cursor.description if postgres and result.cursor else None
    finally:
        result.close()
    if description is None:
        return [PlannedColumn(name, quote(name), None) for name in names]
    planned = []
    for name, entry in zip(names, description, strict=True):
        oid = entry[1]
        arrow_type = _pg_arrow_type(oid, entry[4], entry[5]) if isinstance(oid, int) else None
        planned.append(
            PlannedColumn(name, quote(name), arrow_type or pa.string(), as_text=arrow_type is None)
        )
    return planned


def _pg_arrow_type(oid: int, precision: int | None, scale: int | None) -> pa.DataType | None:
    if oid == _PG_NUMERIC:
        if precision is None or precision in (-1, _UNKNOWN_PRECISION):
            return None
        if precision > _MAX_DECIMAL128_PRECISION:
            return None
        return pa.decimal128(precision, scale or 0)
    return _PG_TYPES.get(oid)


def _arrow_type_of(kind: TypeEngine[Any]) -> pa.DataType | None:
    """The Arrow type of a reflected SQLAlchemy column type; None to infer from values."""
    if isinstance(kind, sa.Boolean):
        return pa.bool_()
    if isinstance(kind, sa.SmallInteger):
        return pa.int16()
    if isinstance(kind, sa.Integer):  # BigInteger too; SQLite integers are 64-bit
        return pa.int64()
    if isinstance(kind, sa.Float):
        return pa.float64()
    if isinstance(kind, sa.Numeric):
        if kind.precision is None or kind.precision > _MAX_DECIMAL128_PRECISION:
            return pa.string()
        return pa.decimal128(kind.precision, kind.scale or 0)
    if isinstance(kind, sa.DateTime):
        return _UTC_TIMESTAMP if kind.timezone else pa.timestamp("us")
    if isinstance(kind, sa.Date):
        return pa.date32()
    if isinstance(kind, sa.LargeBinary):
        return pa.binary()
    if isinstance(kind, sa.JSON | sa.String | sa.Uuid | sa.Time | sa.Interval):
        return pa.string()
    return None


# -- readers ---------------------------------------------------------------------------------


def read_adbc(uri: str, plan: ReadPlan, last: Any) -> Iterator[pa.RecordBatch]:
    """PostgreSQL through the ADBC driver (libpq binary COPY into Arrow)."""
    import adbc_driver_postgresql.dbapi as adbc

    sql = plan.select_sql(incremental=last is not None).replace(_CURSOR_SLOT, "$1")
    with adbc.connect(uri) as conn, conn.cursor() as cursor:
        cursor.execute(sql, None if last is None else (last,))
        for batch in cursor.fetch_record_batch():
            yield conform(batch, plan)


def read_connectorx(uri: str, plan: ReadPlan) -> Iterator[pa.RecordBatch]:
    """PostgreSQL through ConnectorX; full loads only."""
    import connectorx

    # ConnectorX reads numeric as decimal(38, 10), losing digits past the tenth.
    sql = plan.select_sql(incremental=False, numeric_as_text=True)
    try:
        table = cast(pa.Table, connectorx.read_sql(uri, sql, return_type="arrow"))
    except Exception:
        raise
    except BaseException as exc:
        # A Rust panic in ConnectorX arrives as a BaseException; report it as a driver error.
        if type(exc).__name__ != "PanicException":
            raise
        raise RuntimeError(f"ConnectorX failed: {exc}") from exc
    for batch in table.to_batches(max_chunksize=plan.chunk_size):
        yield conform(batch, plan)


def read_sqlalchemy(conn: Connection, plan: ReadPlan, last: Any) -> Iterator[pa.RecordBatch]:
    """Any database: a server-side cursor read `chunk_size` rows at a time into columns."""
    sql = _escape(plan.select_sql(incremental=last is not None))
    text = sa.text(sql.replace(_CURSOR_SLOT, ":lakebed_cursor"))
    if last is not None:
        bind_type = plan.cursor.sa_type if plan.cursor is not None else None
        text = text.bindparams(
            sa.bindparam("lakebed_cursor", last, type_=bind_type or _bind_type(last))
        )
    statement: sa.Executable = text
    if all(column.sa_type is not None for column in plan.columns):
        # Typed result columns: SQLAlchemy parses what SQLite stores as text (dates, decimals).
        statement = text.columns(*(sa.column(c.name, c.sa_type) for c in plan.columns))
    streamed = conn.execution_options(stream_results=True, max_row_buffer=plan.chunk_size)
    result = streamed.execute(statement)
    try:
        while rows := result.fetchmany(plan.chunk_size):
            values = list(zip(*rows, strict=True))
            arrays = [_to_arrow(values[i], column) for i, column in enumerate(plan.columns)]
            yield pa.RecordBatch.from_arrays(arrays, names=[c.name for c in plan.columns])
    finally:
        result.close()


def conform(batch: pa.RecordBatch, plan: ReadPlan) -> pa.RecordBatch:
    """`batch` with the plan's column types (drivers differ: opaque numerics, time zones)."""
    arrays = []
    for array, column in zip(batch.columns, plan.columns, strict=True):
        if isinstance(array.type, pa.ExtensionType):
            array = array.storage
        if column.arrow_type is not None and array.type != column.arrow_type:
            try:
                array = array.cast(column.arrow_type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise _conversion_error(column, exc) from exc
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, names=[c.name for c in plan.columns])


def _to_arrow(values: Sequence[Any], column: PlannedColumn) -> pa.Array:
    target = column.arrow_type
    try:
        return pa.array(values, type=target)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        if target is None or pa.types.is_string(target):
            # Mixed values (a SQLite column holding ints and text), dicts of a JSON column.
            return pa.array([None if v is None else _as_text(v) for v in values], pa.string())
        if pa.types.is_binary(target):
            return pa.array([None if v is None else bytes(v) for v in values], target)
        raise _conversion_error(column, exc) from exc


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value)
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    return str(value)


def _bind_type(value: Any) -> TypeEngine[Any]:
    if isinstance(value, datetime):
        return sa.DateTime(timezone=value.tzinfo is not None)
    if isinstance(value, date):
        return sa.Date()
    if isinstance(value, int):
        return sa.BigInteger()
    return sa.String()


def _conversion_error(column: PlannedColumn, exc: Exception) -> PlanError:
    return PlanError(
        f"column {column.name}: values do not convert to {column.arrow_type}: {exc}",
        hint="select the column cast to text in `query:`",
    )


def _escape(sql: str) -> str:
    """SQL for `sa.text` with every colon literal (casts, strings), so none is a bind name."""
    return sql.replace(":", "\\:")
