"""Delta file statistics (`numRecords`, `minValues`, `maxValues`, `nullCount`) as delta-rs
writes them, for the files lakebed commits itself (see `merge_on_read`).

Values follow delta-rs's JSON: dates as `YYYY-MM-DD`, timestamps truncated to milliseconds
(readers widen the max by a millisecond), decimals as numbers. Columns whose bounds cannot
be written faithfully (binary, lists, maps, long strings, NaN-only floats) get none, which
readers take as "may hold anything".
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

# Longer strings are left without bounds rather than written out whole in the log.
_MAX_STRING_BOUND = 64


def _has_bounds(dtype: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(dtype)
        or pa.types.is_floating(dtype)
        or pa.types.is_decimal(dtype)
        or pa.types.is_string(dtype)
        or pa.types.is_large_string(dtype)
        or pa.types.is_boolean(dtype)
        or pa.types.is_date(dtype)
        or pa.types.is_timestamp(dtype)
    )


def _counts_nulls(dtype: pa.DataType) -> bool:
    return _has_bounds(dtype) or pa.types.is_struct(dtype)


def _json_value(value: Any, dtype: pa.DataType) -> Any:
    """A bound as delta-rs writes it, or None when it cannot be written."""
    if value is None:
        return None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, str):
        return value if len(value) <= _MAX_STRING_BOUND else None
    if isinstance(value, datetime):
        millis = value.replace(microsecond=value.microsecond // 1000 * 1000)
        if pa.types.is_timestamp(dtype) and dtype.tz is not None:
            text = millis.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds")
            return text + "Z"
        return millis.replace(tzinfo=None).isoformat(timespec="milliseconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool | int):
        return value
    return None


def _column_stats(
    column: pa.ChunkedArray | pa.Array, dtype: pa.DataType
) -> tuple[Any, Any, Any] | None:
    """(min, max, null count) of a column; nested dicts for structs; None for no stats."""
    if pa.types.is_struct(dtype):
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        lows, highs, nulls = _gather(
            (child.name, _column_stats(pc.struct_field(column, index), child.type))
            for index, child in enumerate(dtype)
        )
        return lows or None, highs or None, nulls
    if not _has_bounds(dtype):
        return None
    nulls_found = int(column.null_count)
    bounds = pc.min_max(column)
    low = _json_value(bounds["min"].as_py(), dtype)
    high = _json_value(bounds["max"].as_py(), dtype)
    if low is None or high is None:
        low = high = None
    return low, high, nulls_found


def stats_of(data: pa.Table) -> dict[str, Any]:
    """The statistics of a data file holding exactly `data`."""
    return _assemble(data, lambda field: _column_stats(data.column(field.name), field.type))


def _assemble(
    data: pa.Table, column_stats: Callable[[pa.Field], tuple[Any, Any, Any] | None]
) -> dict[str, Any]:
    """A file's statistics from (min, max, null count) of each column (None: no stats)."""
    lows, highs, nulls = _gather((field.name, column_stats(field)) for field in data.schema)
    return {"numRecords": data.num_rows, "minValues": lows, "maxValues": highs, "nullCount": nulls}


def _gather(
    found: Iterable[tuple[str, tuple[Any, Any, Any] | None]],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The min, max and null count maps of named (min, max, null count) results."""
    lows: dict[str, Any] = {}
    highs: dict[str, Any] = {}
    nulls: dict[str, Any] = {}
    for name, stats in found:
        if stats is None:
            continue
        low, high, count = stats
        if low is not None:
            lows[name] = low
        if high is not None:
            highs[name] = high
        nulls[name] = count
    return lows, highs, nulls


def stats_from_actions(row: dict[str, Any], schema: pa.Schema) -> dict[str, Any]:
    """The statistics of one file from its row of `get_add_actions(flatten=True)`."""

    def nested(prefix: str, fields: list[pa.Field]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for field in fields:
            key = f"{prefix}{field.name}"
            if pa.types.is_struct(field.type):
                inner = nested(key + ".", list(field.type))
                if inner:
                    found[field.name] = inner
            elif "." not in field.name:
                value = row.get(key)
                if prefix.startswith("null_count."):
                    if value is not None and _counts_nulls(field.type):
                        found[field.name] = int(value)
                else:
                    converted = _json_value(value, field.type) if _has_bounds(field.type) else None
                    if converted is not None:
                        found[field.name] = converted
        return found

    fields = list(schema)
    return {
        "numRecords": int(row["num_records"]),
        "minValues": nested("min.", fields),
        "maxValues": nested("max.", fields),
        "nullCount": nested("null_count.", fields),
    }


def stats_json(stats: dict[str, Any]) -> str:
    return json.dumps(stats, separators=(",", ":"))


def _parquet_bounds_usable(dtype: pa.DataType) -> bool:
    """Whether Parquet row-group statistics convert to the bounds `stats_of` computes
    (decimals come back in another form: they are computed from the values)."""
    return _has_bounds(dtype) and not pa.types.is_decimal(dtype)


def stats_of_written(data: pa.Table, metadata: pq.FileMetaData) -> dict[str, Any]:
    """`stats_of(data)` for a file just written with `data`, read from the row-group
    statistics its writer kept (a pass over every value, as `stats_of` makes, costs as much
    as a third of the write). Columns the metadata cannot answer for (nested, decimal, a
    group without statistics) are computed from `data`."""
    positions = {metadata.schema.column(i).path: i for i in range(metadata.num_columns)}

    def column_stats(field: pa.Field) -> tuple[Any, Any, Any] | None:
        index = positions.get(field.name)
        if index is not None and _parquet_bounds_usable(field.type):
            found = _parquet_stats(metadata, index, field.type)
            if found is not None:
                return found
        return _column_stats(data.column(field.name), field.type)

    return _assemble(data, column_stats)


def _parquet_stats(
    metadata: pq.FileMetaData, index: int, dtype: pa.DataType
) -> tuple[Any, Any, int] | None:
    """(min, max, null count) of one column over every row group, or None if some group
    kept no statistics (so only the values can tell)."""
    low: Any = None
    high: Any = None
    nulls = 0
    for group in range(metadata.num_row_groups):
        stats = metadata.row_group(group).column(index).statistics
        if stats is None or not stats.has_null_count:
            return None
        nulls += int(stats.null_count)
        if not stats.has_min_max:
            if stats.num_values > 0:
                return None  # values without bounds (all NaN, say): compute them instead
            continue
        low = stats.min if low is None or stats.min < low else low
        high = stats.max if high is None or stats.max > high else high
    json_low, json_high = _json_value(low, dtype), _json_value(high, dtype)
    if json_low is None or json_high is None:
        return None, None, nulls
    return json_low, json_high, nulls
