"""Schema checks for writes: new columns evolve the table, anything else needs an opt-in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from lakebed.errors import SchemaMismatchError, StorageError


def to_arrow(data: Any) -> pa.Table:
    """Accept the tabular types users hold (Arrow, pandas, Polars, rows, columns) as Arrow."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, pa.RecordBatchReader):
        return data.read_all()
    if isinstance(data, list):
        return pa.Table.from_pylist(data)
    if isinstance(data, dict):
        return pa.Table.from_pydict(data)
    # pandas before the PyCapsule protocol: through it any index would become a column.
    if type(data).__module__.startswith("pandas"):
        return _from_pandas(data)
    if hasattr(data, "__arrow_c_stream__"):
        # Polars, DuckDB relations and other Arrow PyCapsule producers.
        return pa.table(data)
    raise StorageError(
        f"cannot write data of type {type(data).__name__}",
        hint="pass a pyarrow Table, a pandas or Polars DataFrame, a list of dicts "
        "or a dict of columns",
    )


def _from_pandas(frame: Any) -> pa.Table:
    """A pandas frame's columns, and its named index levels as columns (the keys of
    `set_index` or `groupby` are data); an unnamed index (row numbers, or what filtering
    left of them) is not."""
    if not hasattr(frame, "columns") and hasattr(frame, "to_frame"):
        frame = frame.to_frame()  # a Series: one column
    index = getattr(frame, "index", None)
    named = [name for name in getattr(index, "names", []) if name is not None]
    if named and hasattr(frame, "reset_index"):
        frame = frame.reset_index(level=named)
    return pa.Table.from_pandas(frame, preserve_index=False)


def _normalise_type(dtype: pa.DataType) -> pa.DataType:
    """Delta stores timestamps in microseconds and strings as one type: match what it keeps."""
    if pa.types.is_timestamp(dtype) and dtype.unit != "us":
        return pa.timestamp("us", tz=dtype.tz)
    if pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype):
        return pa.string()
    if pa.types.is_large_binary(dtype) or pa.types.is_binary_view(dtype):
        return pa.binary()
    if pa.types.is_dictionary(dtype):
        return _normalise_type(dtype.value_type)
    return dtype


def _widens(source: pa.DataType, target: pa.DataType) -> bool:
    """True when values of `source` always fit `target` without loss."""
    if source == target or pa.types.is_null(source):
        return True
    if pa.types.is_integer(source) and pa.types.is_integer(target):
        if pa.types.is_signed_integer(source) == pa.types.is_signed_integer(target):
            return bool(source.bit_width <= target.bit_width)
        # Unsigned fits signed only with a spare bit; signed never fits unsigned.
        return bool(pa.types.is_signed_integer(target) and source.bit_width < target.bit_width)
    if pa.types.is_floating(source) and pa.types.is_floating(target):
        return bool(source.bit_width <= target.bit_width)
    if pa.types.is_integer(source) and pa.types.is_floating(target):
        # SQL store-assignment rules: any integer into a double, small ones into a float.
        limit = 16 if target.bit_width == 32 else 64
        return bool(source.bit_width <= limit)
    if pa.types.is_date(source) and pa.types.is_date(target):
        return True
    if pa.types.is_timestamp(source) and pa.types.is_timestamp(target):
        return (source.tz is None) == (target.tz is None)
    return False


@dataclass(frozen=True)
class Reconciled:
    """Data cast to the table schema, and whether the write adds columns."""

    data: pa.Table
    new_columns: list[str]


def reconcile(
    table: str,
    target: pa.Schema,
    data: pa.Table,
    *,
    allow_missing_columns: bool = False,
    partition_by: list[str] | None = None,
) -> Reconciled:
    """Cast `data` to the table schema `target`; new columns are kept, others must match.

    A missing column or a type that cannot widen raises `SchemaMismatchError` naming each
    column; `allow_missing_columns` fills absent nullable columns with nulls instead.
    """
    problems: list[str] = []
    arrays: list[pa.ChunkedArray] = []
    fields: list[pa.Field] = []
    data_names = data.column_names
    duplicates = {name for name in data_names if data_names.count(name) > 1}
    if duplicates:
        raise SchemaMismatchError(table, [f"column {name} appears twice" for name in duplicates])
    lowered = {name.lower(): name for name in data_names}
    for field in target:
        name = field.name
        if name not in data_names:
            if name.lower() in lowered:
                problems.append(
                    f"column {name} is spelled {lowered[name.lower()]} in the data "
                    "(names are case-sensitive)"
                )
            elif allow_missing_columns and field.nullable and name not in (partition_by or []):
                arrays.append(pa.chunked_array([pa.nulls(data.num_rows, field.type)]))
                fields.append(field)
            else:
                problems.append(f"column {name} ({field.type}) is missing from the data")
            continue
        column = data.column(name)
        source_type = _normalise_type(column.type)
        if source_type != field.type and not _widens(source_type, field.type):
            problems.append(f"column {name} is {field.type} in the table but {source_type}")
            continue
        try:
            column = column.cast(field.type) if column.type != field.type else column
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            problems.append(f"column {name} cannot be stored as {field.type}: {exc}")
            continue
        arrays.append(column)
        fields.append(field)
        if column.null_count and not field.nullable:
            problems.append(f"column {name} is NOT NULL but has {column.null_count} nulls")
    target_names = set(target.names)
    new_columns = [name for name in data_names if name not in target_names]
    for name in new_columns:
        column = data.column(name)
        dtype = _normalise_type(column.type)
        if pa.types.is_null(dtype):
            problems.append(f"new column {name} has only nulls, so its type is unknown")
            continue
        reason = _no_delta_type(dtype)
        if reason is not None:
            problems.append(f"new column {name} is {dtype}: {reason}")
            continue
        try:
            arrays.append(column.cast(dtype) if dtype != column.type else column)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            problems.append(f"new column {name} cannot be stored as {dtype}: {exc}")
            continue
        fields.append(pa.field(name, dtype, nullable=True))
    if problems:
        hint = None
        if any("missing" in p for p in problems):
            hint = "pass allow_missing_columns=True to write nulls, or overwrite with "
            hint += "schema_mode='overwrite' to drop columns"
        elif any("in the table but" in p for p in problems):
            hint = "cast the data to the table's types, or overwrite with schema_mode='overwrite'"
        raise SchemaMismatchError(table, problems, hint=hint)
    return Reconciled(pa.Table.from_arrays(arrays, schema=pa.schema(fields)), new_columns)


def unstorable(schema: pa.Schema) -> list[str]:
    """What keeps `schema` from being a Delta table's: names that differ only in case,
    and types Delta has none for (time of day, intervals, unions...)."""
    problems: list[str] = []
    seen: dict[str, str] = {}
    for name in schema.names:
        earlier = seen.setdefault(name.lower(), name)
        if earlier is not name:
            same = "twice" if earlier == name else f"as {earlier} and {name}"
            problems.append(f"column {name} appears {same} (Delta ignores case in names)")
    for field in schema:
        reason = _no_delta_type(field.type)
        if reason is not None:
            problems.append(f"column {field.name} is {field.type}: {reason}")
    return problems


def _no_delta_type(dtype: pa.DataType) -> str | None:
    """Why Delta cannot store `dtype`, or None when it can (after `_normalise_type`)."""
    if pa.types.is_time(dtype):
        return "Delta has no time-of-day type; cast it to a string, or keep a timestamp"
    if pa.types.is_duration(dtype) or pa.types.is_interval(dtype):
        return "Delta has no interval type; store a number, e.g. epoch(x) for seconds"
    if pa.types.is_union(dtype):
        return "Delta has no union type; cast its members to one type"
    if pa.types.is_decimal(dtype) and dtype.precision > 38:
        return "Delta decimals hold at most 38 digits; cast to a double or a narrower decimal"
    if pa.types.is_float16(dtype):
        return "Delta has no half-precision float; cast it to float or double"
    if pa.types.is_dictionary(dtype):
        return _no_delta_type(dtype.value_type)
    if pa.types.is_struct(dtype):
        return next(filter(None, (_no_delta_type(f.type) for f in dtype)), None)
    if pa.types.is_map(dtype):
        return _no_delta_type(dtype.key_type) or _no_delta_type(dtype.item_type)
    if isinstance(dtype, pa.ListType | pa.LargeListType | pa.FixedSizeListType):
        return _no_delta_type(dtype.value_type)
    return None


def normalise(data: pa.Table, *, table: str = "") -> pa.Table:
    """Cast types Delta does not keep as they are (ns timestamps, large strings); a column
    of only nulls has no type to store, and `unstorable` ones none Delta has: refused."""
    untyped = [f.name for f in data.schema if pa.types.is_null(f.type)]
    if untyped:
        raise SchemaMismatchError(
            table,
            [f"column {name} has only nulls, so its type is unknown" for name in untyped],
            hint="give the column a type (a pyarrow schema, or cast it) before writing",
        )
    problems = unstorable(data.schema)
    if problems:
        raise SchemaMismatchError(
            table,
            problems,
            hint="rename or cast those columns (in a model: in its SELECT)",
            lead="cannot be stored in Delta",
        )
    fields = [pa.field(f.name, _normalise_type(f.type), f.nullable) for f in data.schema]
    target = pa.schema(fields)
    if target == data.schema:
        return data
    problems = []
    for f, wanted in zip(data.schema, target, strict=True):
        if f.type != wanted.type:
            try:
                data.column(f.name).cast(wanted.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                problems.append(f"column {f.name} cannot be stored as {wanted.type}: {exc}")
    if problems:
        raise SchemaMismatchError(table, problems)
    return data.cast(target)


def columns_of(schema: pa.Schema) -> list[dict[str, Any]]:
    """A JSON-friendly description of a schema for the catalog's schema history."""
    return [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema]
