"""Finding the live rows of given keys in one version of a table, and where they lie
(file and row position): what a merge reads before it marks them deleted.

The key columns of the files that may hold a key (by the first key's statistics) are
scanned by DuckDB with its file and row numbers; rows an earlier deletion vector removed
are left out. A `KeyLookup` keeps what was found at one version, so a merge planned against
that version need not scan again.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lakebed.errors import StorageError
from lakebed.storage.snapshot import Snapshot
from lakebed.storage.table_support import key_strings

# DuckDB's virtual columns of a parquet scan: a table column of these names would hide them.
RESERVED = ("file_index", "file_row_number", "filename")
FILE, ROW = "__lakebed_file", "__lakebed_row"

_duckdb_lock = threading.Lock()
_duckdb: duckdb.DuckDBPyConnection | None = None


def connection() -> duckdb.DuckDBPyConnection:
    """The DuckDB database key rows are scanned with (one per process)."""
    global _duckdb
    with _duckdb_lock:
        if _duckdb is None:
            _duckdb = duckdb.connect(":memory:")
            _duckdb.execute("SET TimeZone = 'UTC'")
            _duckdb.execute("SET enable_progress_bar = false")
        return _duckdb


@dataclass(frozen=True)
class KeyLookup:
    """The live rows of given keys in one version of a table, found where they lie (file
    and row), whole (or, without a change feed to give pre-images to, only the columns
    asked for): what a merge of those keys (or fewer) at that version reads first."""

    version: int
    keys: tuple[str, ...]
    wanted: pa.Table  # the distinct keys looked for
    paths: tuple[str, ...]  # the files that may hold them
    found: pa.Table  # their rows, with the file (into `paths`) and row of each

    def rows(self) -> pa.Table:
        """The rows found, in the columns read."""
        return self.found.drop_columns([FILE, ROW])

    def holds(self, wanted: pa.Table, keys: list[str], columns: Sequence[str] = ()) -> bool:
        """Whether every key of `wanted` was looked for (so its rows, if any, were found),
        with `columns` of their rows."""
        if tuple(keys) != self.keys or not set(columns) <= set(self.found.column_names):
            return False
        try:
            wanted = wanted.select(keys).cast(self.wanted.schema)
        except (KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return False
        searched = key_strings(self.wanted, keys)
        return pc.all(pc.is_in(key_strings(wanted, keys), searched)).as_py() is not False


def candidates(snapshot: Snapshot, wanted: pa.Table, keys: list[str]) -> list[int]:
    """Indexes of the files that may hold a wanted key (by the first key's min/max)."""
    count = snapshot.num_files
    everything = list(range(count))
    first = keys[0]
    low, high = snapshot.stat("min", first), snapshot.stat("max", first)
    if low is None or high is None or not pa.types.is_integer(snapshot.schema.field(first).type):
        return everything
    try:
        values = np.sort(wanted.column(first).drop_null().cast(pa.int64()).to_numpy())
        lows = low.cast(pa.int64()).fill_null(0).to_numpy()
        highs = high.cast(pa.int64()).fill_null(0).to_numpy()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return everything  # unsigned keys beyond int64
    unknown = pc.or_(pc.is_null(low), pc.is_null(high)).to_numpy(zero_copy_only=False)
    nulls = snapshot.stat("null_count", first)
    if wanted.column(first).null_count:  # a NULL key is a key too: files that hold one
        held = pc.fill_null(pc.greater(nulls, 0), True) if nulls is not None else None
        unknown = unknown | (held.to_numpy(zero_copy_only=False) if held is not None else True)
    starts = np.searchsorted(values, lows, side="left")
    ends = np.searchsorted(values, highs, side="right")
    return [i for i in everything if unknown[i] or ends[i] > starts[i]]


def matches(
    snapshot: Snapshot, paths: list[str], wanted: pa.Table, keys: list[str], schema: pa.Schema
) -> pa.Table:
    """The live rows of `paths` whose key is in `wanted`, with their file (index into
    `paths`) and row position, in `schema`: whole rows (the change feed's pre-images), or
    only their keys (decoding every column of every file costs several times more)."""
    quoted = [f'"{k}"' for k in keys]
    on = " AND ".join(f"(__scan.{q} IS NOT DISTINCT FROM __wanted.{q})" for q in quoted)
    files = "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"
    whole = schema.names == snapshot.schema.names
    listed = ", ".join('"' + n.replace('"', '""') + '"' for n in schema.names)
    con = connection().cursor()  # a connection of its own: merges of two tables overlap
    try:
        con.register("__wanted", wanted)
        for scanned in ("*",) if whole else (listed, "*"):
            query = (
                f"SELECT * FROM (SELECT file_index AS {FILE}, file_row_number AS {ROW}, "
                f"{scanned} FROM read_parquet({files}, union_by_name=true)) AS __scan "
                f"SEMI JOIN __wanted ON {on}"
            )
            try:
                found = con.sql(query).to_arrow_table()
                break
            except duckdb.BinderException:
                if scanned == "*":
                    raise
                # A column schema evolution added, which no file named here holds.
    except duckdb.Error as exc:
        raise StorageError(
            f"cannot read the files of {snapshot.table}: {exc}", table=str(snapshot.table)
        ) from exc
    finally:
        con.close()
    columns: dict[str, pa.ChunkedArray | pa.Array] = {
        FILE: found.column(FILE).cast(pa.int64()),
        ROW: found.column(ROW).cast(pa.int64()),
    }
    for column in schema:
        if column.name in found.column_names:
            columns[column.name] = found.column(column.name).cast(column.type)
        else:
            columns[column.name] = pa.nulls(found.num_rows, column.type)
    matched = pa.table(columns)
    if not snapshot.deleted or matched.num_rows == 0:
        return matched
    # Rows an earlier deletion vector removed are not there to match.
    live = np.ones(matched.num_rows, dtype=bool)
    file_of = matched.column(FILE).to_numpy()
    row_of = matched.column(ROW).to_numpy()
    for index, path in enumerate(paths):
        gone = snapshot.deleted.get(path)
        if gone is not None:
            here = file_of == index
            live[here] = ~np.isin(row_of[here], gone.to_numpy(zero_copy_only=False))
    return matched.filter(pa.array(live))


def reused(
    looked_up: KeyLookup | None,
    snapshot: Snapshot,
    wanted: pa.Table,
    keys: list[str],
    schema: pa.Schema,
) -> tuple[list[int], pa.Table] | None:
    """What `matches` would find of `wanted` (in `schema`'s columns) and the snapshot's
    indexes of the files it searched, taken from a lookup that holds every `wanted` key
    at the snapshot's version; None when it does not."""
    if looked_up is None or looked_up.version != snapshot.version:
        return None
    if not set(schema.names) <= set(looked_up.found.column_names):
        return None  # it found fewer of the rows' columns than the merge reads
    if not looked_up.holds(wanted, keys):
        return None
    wanted_keys = key_strings(wanted.select(keys).cast(looked_up.wanted.schema), keys)
    index_of = {path: i for i, path in enumerate(snapshot.paths)}
    if any(path not in index_of for path in looked_up.paths):
        return None
    found = looked_up.found
    found = found.filter(pc.is_in(key_strings(found, keys), wanted_keys))
    return [index_of[path] for path in looked_up.paths], found.select([FILE, ROW, *schema.names])


def empty(schema: pa.Schema) -> pa.Table:
    columns: dict[str, pa.Array] = {
        FILE: pa.array([], pa.int64()),
        ROW: pa.array([], pa.int64()),
    }
    for column in schema:
        columns[column.name] = pa.array([], column.type)
    return pa.table(columns)
