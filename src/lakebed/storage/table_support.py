"""Writer settings and key helpers shared by the table operations."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import ColumnProperties, WriterProperties

# Row-group ("chunk") statistics are what Delta's file statistics and DuckDB's skipping
# use; page-level ones cost a third of the write time and nothing here reads them.
WRITER_PROPERTIES = WriterProperties(
    compression="SNAPPY",
    default_column_properties=ColumnProperties(statistics_enabled="CHUNK"),
)

# Delta (binary packed) encoding stores rising or clustered integers and times (ids, line
# numbers, event times) in a few bits each, where a dictionary is given up after hashing
# every value and the plain values are eight bytes: on a typical bronze load, files a third
# smaller, written faster. Bronze's `_origin_row` (a record's line or index) always rises.
ORIGIN_ROW = "_origin_row"
_DELTA_ENCODED = ColumnProperties(
    dictionary_enabled=False, statistics_enabled="CHUNK", encoding="DELTA_BINARY_PACKED"
)


def writer_properties(schema: pa.Schema, *, delta_encode: bool = False) -> WriterProperties:
    """The writer settings for data with columns `schema`: `WRITER_PROPERTIES`, with
    `_origin_row`, and with `delta_encode` every integer, date and timestamp column, delta
    encoded (see above)."""
    encoded = [
        f.name
        for f in schema
        if _delta_encodable(f.type) and (delta_encode or f.name == ORIGIN_ROW)
    ]
    if not encoded:
        return WRITER_PROPERTIES
    return WriterProperties(
        compression="SNAPPY",
        default_column_properties=ColumnProperties(statistics_enabled="CHUNK"),
        column_properties=dict.fromkeys(encoded, _DELTA_ENCODED),
    )


def _delta_encodable(dtype: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(dtype) or pa.types.is_timestamp(dtype) or pa.types.is_date(dtype)
    )


def key_strings(table: pa.Table, keys: list[str]) -> pa.Array:
    """One comparable string per row for a (possibly composite) key."""
    parts = [pc.cast(table.column(k), pa.string()).fill_null("\x00") for k in keys]
    if len(parts) == 1:
        return parts[0].combine_chunks()
    joined = pc.binary_join_element_wise(*parts, "\x1f")
    return joined.combine_chunks()


def last_per_key(data: pa.Table, keys: list[str]) -> pa.Table:
    """The last row of each key, in the order the rows came (a key sent twice: the later wins)."""
    if data.num_rows == 0:
        return data
    indexed = data.append_column("__row", pa.array(range(data.num_rows), pa.int64()))
    last = indexed.group_by(keys).aggregate([("__row", "max")]).column("__row_max")
    if len(last) == data.num_rows:
        return data
    return data.take(pc.take(last, pc.sort_indices(last)))
