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
