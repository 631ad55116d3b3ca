"""Writer settings and key helpers shared by the table operations."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import ColumnProperties, CommitProperties, Transaction, WriterProperties

from lakebed.errors import StorageError, TableExistsError

# Row-group ("chunk") statistics are what Delta's file statistics and DuckDB's skipping
# use; page-level ones cost a third of the write time and nothing here reads them.
# DuckDB scans a file's row groups in parallel, one per thread: delta-rs's default (one
# group up to a million rows) reads a million-row file on one core; groups of 2^18 rows
# split it over four, at the same write cost.
ROW_GROUP_ROWS = 262_144
WRITER_PROPERTIES = WriterProperties(
    compression="SNAPPY",
    default_column_properties=ColumnProperties(statistics_enabled="CHUNK"),
    max_row_group_size=ROW_GROUP_ROWS,
)

# Delta (binary packed) encoding stores integers and times (ids, line numbers, event times,
# quantities) in a few bits each, where a dictionary is given up after hashing every value
# and the plain values are eight bytes; measurements (floats) rarely repeat, so a dictionary
# of them is built only to be dropped. Encoding by type writes a million-row model or
# bronze load a third faster into files a fifth smaller, which DuckDB also reads faster.
# Strings (and the rest) keep their dictionary: they repeat.
ORIGIN_ROW = "_origin_row"
_DELTA_ENCODED = ColumnProperties(
    dictionary_enabled=False, statistics_enabled="CHUNK", encoding="DELTA_BINARY_PACKED"
)
_PLAIN = ColumnProperties(dictionary_enabled=False, statistics_enabled="CHUNK")


def writer_properties(schema: pa.Schema) -> WriterProperties:
    """The writer settings for data with columns `schema`: `WRITER_PROPERTIES`, with every
    integer, date and timestamp column delta encoded and floats and booleans written plain
    (see above)."""
    columns = {
        f.name: _DELTA_ENCODED if _delta_encodable(f.type) else _PLAIN
        for f in schema
        if _delta_encodable(f.type) or pa.types.is_floating(f.type) or pa.types.is_boolean(f.type)
    }
    if not columns:
        return WRITER_PROPERTIES
    return WriterProperties(
        compression="SNAPPY",
        default_column_properties=ColumnProperties(statistics_enabled="CHUNK"),
        column_properties=columns,
        max_row_group_size=ROW_GROUP_ROWS,
    )


def parquet_options(schema: pa.Schema) -> dict[str, Any]:
    """`writer_properties` as `pyarrow.parquet.write_table` options (for files lakebed writes
    itself)."""
    encoded = {f.name: "DELTA_BINARY_PACKED" for f in schema if _delta_encodable(f.type)}
    plain = {
        f.name: "PLAIN"
        for f in schema
        if pa.types.is_floating(f.type) or pa.types.is_boolean(f.type)
    }
    dictionary = [f.name for f in schema if f.name not in encoded and f.name not in plain]
    return {
        "compression": "snappy",
        "row_group_size": ROW_GROUP_ROWS,
        "use_dictionary": dictionary,
        "column_encoding": {**encoded, **plain},
        "write_statistics": True,
    }


def _delta_encodable(dtype: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(dtype) or pa.types.is_timestamp(dtype) or pa.types.is_date(dtype)
    )


def first_commit_properties(
    app_transaction: tuple[str, int] | None, metadata: dict[str, Any] | None
) -> CommitProperties:
    """The commit properties of a table's first commit: its metadata and, for exactly-once
    writers, the application transaction (a new table holds none to repeat)."""
    txns = None
    if app_transaction is not None:
        app_id, txn_version = app_transaction
        txns = [Transaction(app_id, txn_version, int(time.time() * 1000))]
    return CommitProperties(custom_metadata=metadata, app_transactions=txns)


def creation_error(name: str, exc: Exception) -> StorageError:
    """The error for a table that could not be created: it exists, or why not."""
    if "exists" in str(exc).lower():
        return TableExistsError(name)
    return StorageError(f"cannot create {name}: {exc}", table=name)


def key_strings(table: pa.Table, keys: list[str]) -> pa.Array:
    """One comparable value per row for a (possibly composite) key: the key column itself
    when there is one (compare tables whose key columns have the same type), else a string."""
    if len(keys) == 1:
        return table.column(keys[0]).combine_chunks()
    parts = [pc.cast(table.column(k), pa.string()).fill_null("\x00") for k in keys]
    joined = pc.binary_join_element_wise(*parts, "\x1f")
    return joined.combine_chunks()


def last_per_key(data: pa.Table, keys: list[str]) -> pa.Table:
    """The last row of each key, in the order the rows came (a key sent twice: the later wins)."""
    if data.num_rows == 0:
        return data
    if len(keys) == 1 and distinct_keys(data, keys):
        return data  # every key once (as in most increments): a count is cheaper than a group-by
    indexed = data.append_column("__row", pa.array(np.arange(data.num_rows, dtype=np.int64)))
    last = indexed.group_by(keys).aggregate([("__row", "max")]).column("__row_max")
    if len(last) == data.num_rows:
        return data
    return data.take(pc.take(last, pc.sort_indices(last)))


def distinct_rows(data: pa.Table, keys: list[str]) -> pa.Table:
    """The distinct values of the `keys` columns (one column: a hash of it alone, about
    twice as fast as a group-by)."""
    if len(keys) == 1:
        return pa.table({keys[0]: pc.unique(data.column(keys[0]))})
    return data.select(keys).group_by(keys).aggregate([]).select(keys)


def distinct_keys(data: pa.Table, keys: Sequence[str]) -> bool:
    """Whether no two rows share a key (NULL a key like any other); False without keys or
    when one is not a column."""
    if not keys or not set(keys) <= set(data.column_names):
        return False
    if len(keys) == 1:
        count = int(pc.count_distinct(data.column(keys[0]), mode="all").as_py())
        return count == int(data.num_rows)
    return int(distinct_rows(data, list(keys)).num_rows) == int(data.num_rows)
