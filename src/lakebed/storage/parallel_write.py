"""Rows already in memory (a model's result), written as one Parquet file per core at once
and committed as one Delta transaction of their add actions.

delta-rs writes a table's rows through one writer, on one core: for a million-row model the
write is as long as the query that computed it. Here the rows are cut into a few slices of
whole row groups, each written by pyarrow on a thread of its own (the writer releases the
GIL), with the file statistics read back from the Parquet footer rather than recomputed;
delta-rs then commits the add actions (with the application transaction and commit
metadata, as its own writes would). A failed commit deletes the files it would have added.

Only local, unpartitioned tables take this path: object stores and partitioned tables are
written by delta-rs.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable, Schema
from deltalake.exceptions import DeltaError
from deltalake.transaction import AddAction, create_table_with_add_actions

from lakebed.storage.file_stats import stats_json, stats_of_written
from lakebed.storage.table_support import (
    ROW_GROUP_ROWS,
    creation_error,
    first_commit_properties,
    parquet_options,
)

if TYPE_CHECKING:
    from lakebed.storage.table import Table, WriteResult

# Writer features this path may commit to (delta-rs lists variantType on every table it
# creates); a table with any other (constraints, generated columns, column mapping...) is
# written by delta-rs, which enforces them.
_KNOWN_WRITER_FEATURES = frozenset(
    {"appendOnly", "invariants", "changeDataFeed", "deletionVectors", "timestampNtz", "variantType"}
)


def writers() -> int:
    """How many files to write at once: one per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _slices(data: pa.Table, count: int) -> list[pa.Table]:
    """`data` cut into at most `count` equal slices, none smaller than a row group (a
    small table is one file, as delta-rs would write it)."""
    if data.num_rows == 0:
        return []
    count = max(1, min(count, data.num_rows // ROW_GROUP_ROWS))
    per_slice = -(-data.num_rows // count)
    return [data.slice(start, per_slice) for start in range(0, data.num_rows, per_slice)]


def write_file(path: str, name: str, rows: pa.Table) -> tuple[str, int, dict[str, Any]]:
    """Write `rows` as the data file `name` of the table at `path`: its location, size and
    statistics (read from the footer the writer kept)."""
    location = f"{path}/{name}"
    collected: list[pq.FileMetaData] = []
    pq.write_table(rows, location, metadata_collector=collected, **parquet_options(rows.schema))
    return location, os.path.getsize(location), stats_of_written(rows, collected[0])


def _write_one(path: str, rows: pa.Table, index: int) -> tuple[str, AddAction]:
    name = f"part-{index:05d}-{uuid.uuid4()}-c000.snappy.parquet"
    location, size, stats = write_file(path, name, rows)
    action = AddAction(name, size, {}, int(time.time() * 1000), True, stats_json(stats))
    return location, action


def write_files(path: str, data: pa.Table) -> tuple[list[str], list[AddAction]]:
    """Write `data` as new files of the table at `path` (none for no rows): their locations
    and add actions."""
    os.makedirs(path, exist_ok=True)
    pieces = _slices(data, writers())
    written: list[tuple[str, AddAction]] = []
    if len(pieces) <= 1:
        written.extend(_write_one(path, piece, 0) for piece in pieces)
    else:
        with ThreadPoolExecutor(max_workers=len(pieces)) as pool:
            futures = [pool.submit(_write_one, path, piece, i) for i, piece in enumerate(pieces)]
            failure: BaseException | None = None
            for future in futures:
                try:
                    written.append(future.result())
                except BaseException as exc:  # keep going: every written file is removed
                    failure = failure or exc
            if failure is not None:
                remove([location for location, _ in written])
                raise failure
    return [location for location, _ in written], [action for _, action in written]


def remove(locations: list[str]) -> None:
    for location in locations:
        with contextlib.suppress(OSError):
            os.remove(location)


def create(
    table: Table,
    data: pa.Table,
    *,
    description: str | None,
    configuration: dict[str, str | None],
    app_transaction: tuple[str, int] | None,
    metadata: dict[str, Any] | None,
) -> WriteResult:
    """A new table whose first commit holds `data` (`table` is the handle of the table to be)."""
    name = str(table.name)
    locations, actions = write_files(table.path, data)
    try:
        create_table_with_add_actions(
            table.path,
            Schema.from_arrow(data.schema),
            actions,
            mode="error",
            name=table.name.name,
            description=description,
            configuration=configuration,
            storage_options=table._storage_options,
            commit_properties=first_commit_properties(app_transaction, metadata),
        )
    except (DeltaError, OSError) as exc:
        remove(locations)
        raise creation_error(name, exc) from exc
    except BaseException:
        remove(locations)
        raise
    return table._latest("CREATE TABLE", _metrics(data, actions))


def known_protocol(dt: DeltaTable) -> bool:
    """Whether a writer that only adds and removes files (and deletion vectors) may commit
    to the table: nothing in its protocol or properties that such a writer would have to
    enforce (append-only, constraints, invariants, column mapping, unknown features)."""
    configuration = dt.metadata().configuration
    if configuration.get("delta.appendOnly") == "true":
        return False
    if any(key.startswith("delta.constraints.") for key in configuration):
        return False
    if configuration.get("delta.columnMapping.mode", "none") != "none":
        return False
    if set(dt.protocol().writer_features or []) - _KNOWN_WRITER_FEATURES:
        return False
    fields = pa.schema(dt.schema().to_arrow())
    return not any(b"delta.invariants" in (f.metadata or {}) for f in fields)


def overwritable(path: str, dt: DeltaTable, data: pa.Table) -> bool:
    """Whether replacing the table's rows with `data` may take this path: a local,
    unpartitioned table with the same columns as `data` and a protocol `known_protocol`."""
    if "://" in path or dt.metadata().partition_columns:
        return False
    return pa.schema(dt.schema().to_arrow()) == data.schema and known_protocol(dt)


def overwrite(
    table: Table,
    dt: DeltaTable,
    data: pa.Table,
    *,
    app_transaction: tuple[str, int] | None,
    metadata: dict[str, Any] | None,
) -> WriteResult:
    """Replace every row of the table with `data` in one commit."""
    properties = table._commit_properties(app_transaction, metadata)
    locations, actions = write_files(table.path, data)
    before = int(dt.version())
    try:
        with table._errors("overwrite"):
            dt.create_write_transaction(
                list(actions), "overwrite", data.schema, commit_properties=properties
            )
    except BaseException:
        remove(locations)
        raise
    # delta-rs leaves the handle where it was: find our commit, the first overwrite after
    # it (a concurrent writer's later commits are not ours to report).
    dt.update_incremental()
    ours = [
        int(entry["version"])
        for entry in dt.history(int(dt.version()) - before)
        if int(entry["version"]) > before
        and (entry.get("operationParameters") or {}).get("mode") == "Overwrite"
    ]
    version = min(ours) if ours else int(dt.version())
    from lakebed.storage.table import WriteResult  # table.py imports this module

    result = WriteResult(str(table.name), version, "OVERWRITE", _metrics(data, actions))
    if table._on_commit is not None:
        table._on_commit(table, result)
    return result


def _metrics(data: pa.Table, actions: list[AddAction]) -> dict[str, Any]:
    return {"num_added_rows": data.num_rows, "num_added_files": len(actions)}
