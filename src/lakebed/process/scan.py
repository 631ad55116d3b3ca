"""DuckDB SQL that reads one Delta snapshot: exactly its live files, with partition values."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from lakebed.errors import StorageError
from lakebed.storage import Snapshot


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_PLAIN_TYPES = {
    pa.int8(): "TINYINT",
    pa.int16(): "SMALLINT",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.uint8(): "UTINYINT",
    pa.uint16(): "USMALLINT",
    pa.uint32(): "UINTEGER",
    pa.uint64(): "UBIGINT",
    pa.float32(): "FLOAT",
    pa.float64(): "DOUBLE",
    pa.bool_(): "BOOLEAN",
    pa.string(): "VARCHAR",
    pa.large_string(): "VARCHAR",
    pa.binary(): "BLOB",
    pa.large_binary(): "BLOB",
    pa.date32(): "DATE",
    pa.timestamp("us"): "TIMESTAMP",
    pa.timestamp("ns"): "TIMESTAMP_NS",
    pa.timestamp("ms"): "TIMESTAMP_MS",
    pa.timestamp("s"): "TIMESTAMP_S",
    pa.time64("us"): "TIME",
}


def _plain_type(dtype: pa.DataType) -> str | None:
    """DuckDB's name for a flat Arrow type, as DuckDB gives it (None: ask DuckDB)."""
    if pa.types.is_timestamp(dtype) and dtype.tz is not None and dtype.unit == "us":
        return "TIMESTAMP WITH TIME ZONE"
    if pa.types.is_decimal128(dtype):
        return f"DECIMAL({dtype.precision},{dtype.scale})"
    return _PLAIN_TYPES.get(dtype)


def duckdb_types(con: duckdb.DuckDBPyConnection, schema: pa.Schema) -> dict[str, str]:
    """DuckDB's name for each column type: flat types from a table of names, nested ones
    asked of DuckDB (binding an empty Arrow table: the names of their parts come out as
    DuckDB writes them)."""
    names = {field.name: _plain_type(field.type) for field in schema}
    if all(names.values()):
        return {name: str(dtype) for name, dtype in names.items()}
    relation = con.from_arrow(schema.empty_table())
    return {name: str(dtype) for name, dtype in zip(schema.names, relation.dtypes, strict=True)}


def _hive_paths_match(snapshot: Snapshot) -> bool:
    """True when every file sits under `col=value/` folders holding its partition values, so
    DuckDB's hive partitioning reads them (delta-rs writes this layout; others need not)."""
    paths = snapshot.files.column("path").to_pylist()
    columns = [c for c in snapshot.partition_by if f"partition.{c}" in snapshot.files.column_names]
    values = {c: snapshot.files.column(f"partition.{c}").to_pylist() for c in columns}
    for index, raw in enumerate(paths):
        segments = unquote(raw).split("/")[:-1]
        found: dict[str, str] = {}
        for segment in segments:
            key, sep, folder_value = segment.partition("=")
            if sep:
                found[key] = folder_value
        for column in columns:
            value = values[column][index]
            text = found.get(column)
            if text is None:
                return False
            if value is None:
                if text != "__HIVE_DEFAULT_PARTITION__":
                    return False
            elif unquote(text) != str(value):
                return False
    return True


def _missing_stats(snapshot: Snapshot) -> bool:
    """True when some file may lack a column (written before schema evolution added it)."""
    names = snapshot.files.column_names
    for column in snapshot.schema.names:
        if column in snapshot.partition_by:
            continue
        exact = f"null_count.{column}"
        keys = [exact] if exact in names else [n for n in names if n.startswith(exact + ".")]
        if not keys:
            return True
        if any(snapshot.files.column(key).null_count for key in keys):
            return True
    return False


@dataclass(frozen=True)
class ScanLayout:
    """How to read the files of one table version (computed once per version)."""

    types: dict[str, str]
    hive: bool
    union_by_name: bool

    @classmethod
    def of(cls, con: duckdb.DuckDBPyConnection, snapshot: Snapshot) -> ScanLayout:
        hive = bool(snapshot.partition_by) and _hive_paths_match(snapshot)
        return cls(duckdb_types(con, snapshot.schema), hive, _missing_stats(snapshot))


def _file_list(paths: list[str]) -> str:
    return "[" + ", ".join(quote_literal(p) for p in paths) + "]"


# DuckDB's virtual columns of a parquet scan, used to leave out rows deletion vectors delete.
_POSITION_COLUMNS = ("file_index", "file_row_number")


def _scan_groups(
    snapshot: Snapshot, partitions: list[str], hive: bool
) -> list[tuple[tuple[object, ...], list[str]]]:
    """The file lists of the scan's `read_parquet` calls, in order, with their partition
    values: one call unless the files of a partitioned table sit outside hive folders (then
    one per distinct partition tuple)."""
    if not partitions or hive:
        return [((), snapshot.paths)]
    keys = pa.table({c: snapshot.files.column(f"partition.{c}") for c in partitions})
    groups: dict[tuple[object, ...], list[str]] = {}
    for index, row in enumerate(keys.to_pylist()):
        groups.setdefault(tuple(row[c] for c in partitions), []).append(snapshot.paths[index])
    return list(groups.items())


def _partitions(snapshot: Snapshot) -> list[str]:
    return [c for c in snapshot.partition_by if c in snapshot.schema.names]


def deleted_positions(snapshot: Snapshot, layout: ScanLayout) -> pa.Table | None:
    """The rows deletion vectors remove, as `scan_sql` joins them: `__part` (which
    `read_parquet` call), `__file` (the file's index in it) and `__pos` (the row), or None
    when no file of the snapshot has a deletion vector."""
    if not snapshot.deleted:
        return None
    parts, files, positions = [], [], []
    groups = _scan_groups(snapshot, _partitions(snapshot), layout.hive)
    for part, (_, paths) in enumerate(groups):
        for index, path in enumerate(paths):
            rows = snapshot.deleted.get(path)
            if rows is not None and len(rows):
                parts.append(pa.repeat(pa.scalar(part, pa.int32()), len(rows)))
                files.append(pa.repeat(pa.scalar(index, pa.int64()), len(rows)))
                positions.append(rows.cast(pa.int64()))
    if not positions:
        return None
    return pa.table(
        {
            "__part": pa.concat_arrays(parts),
            "__file": pa.concat_arrays(files),
            "__pos": pa.concat_arrays(positions),
        }
    )


def scan_sql(
    snapshot: Snapshot,
    layout: ScanLayout,
    *,
    empty_relation: str,
    missing_columns: frozenset[str] = frozenset(),
    deleted_relation: str | None = None,
) -> str:
    """A SELECT over the snapshot's files with the table's columns in the table's order.

    `empty_relation` names a registered empty Arrow table of the schema, used when the
    snapshot has no files. `missing_columns` are read as typed NULLs (in no file yet).
    `deleted_relation` names a registered `deleted_positions` table, needed when files of
    the snapshot have deletion vectors: their rows are left out.
    """
    schema = snapshot.schema
    if snapshot.num_files == 0:
        return f"SELECT * FROM {empty_relation}"
    types = layout.types
    partitions = _partitions(snapshot)
    options = [f"union_by_name={'true' if layout.union_by_name else 'false'}"]
    if deleted_relation is not None:
        clash = [c for c in _POSITION_COLUMNS if c in schema.names]
        if clash:
            raise StorageError(
                f"{snapshot.table} has deletion vectors and a column named {clash[0]}, "
                "which the scan needs for row positions",
                table=str(snapshot.table),
                hint="rename the column, or rewrite the table (optimize) to drop the vectors",
            )

    def source(paths: list[str], part: int) -> str:
        scan = f"read_parquet({_file_list(paths)}, {', '.join(options)}) AS __scan"
        if deleted_relation is None:
            return scan
        deleted = (
            f"(SELECT __file, __pos FROM {deleted_relation} WHERE __part = {part}) AS __deleted"
        )
        on = "__scan.file_index = __deleted.__file AND __scan.file_row_number = __deleted.__pos"
        return f"{scan} ANTI JOIN {deleted} ON {on}"

    def select_list() -> str:
        items = []
        for name in schema.names:
            if name in missing_columns:
                items.append(f"CAST(NULL AS {types[name]}) AS {quote_identifier(name)}")
            else:
                items.append(quote_identifier(name))
        return ", ".join(items)

    if not partitions:
        return f"SELECT {select_list()} FROM {source(snapshot.paths, 0)}"
    if layout.hive:
        hive_types = ", ".join(f"{quote_literal(c)}: {quote_literal(types[c])}" for c in partitions)
        options += ["hive_partitioning=true", f"hive_types={{{hive_types}}}"]
        return f"SELECT {select_list()} FROM {source(snapshot.paths, 0)}"
    # Files outside hive folders: one scan per distinct partition tuple, values as literals.
    options.append("hive_partitioning=false")
    parts = []
    for part, (values, paths) in enumerate(_scan_groups(snapshot, partitions, hive=False)):
        literals = {
            c: "NULL" if v is None else quote_literal(str(v))
            for c, v in zip(partitions, values, strict=True)
        }
        items = []
        for name in schema.names:
            if name in literals:
                items.append(f"CAST({literals[name]} AS {types[name]}) AS {quote_identifier(name)}")
            elif name in missing_columns:
                items.append(f"CAST(NULL AS {types[name]}) AS {quote_identifier(name)}")
            else:
                items.append(quote_identifier(name))
        parts.append(f"SELECT {', '.join(items)} FROM {source(paths, part)}")
    return " UNION ALL ".join(parts)


def file_columns(con: duckdb.DuckDBPyConnection, snapshot: Snapshot) -> set[str]:
    """Top-level column names present in at least one data file (reads footers only)."""
    relation = con.sql(
        "SELECT DISTINCT name FROM parquet_schema("
        + _file_list(snapshot.paths)
        + ") WHERE name IS NOT NULL"
    )
    return set(pc.cast(relation.to_arrow_table().column(0), pa.string()).to_pylist())
