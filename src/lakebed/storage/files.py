"""Reading a Delta table's live files with pyarrow (delta-rs's own reader goes through a
Python filesystem shim that aborts the interpreter at exit)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa


def read_files(
    root: str,
    paths: list[str],
    schema: pa.Schema,
    partition_by: list[str],
    columns: list[str] | None = None,
    deleted: Mapping[str, pa.Array] | None = None,
) -> pa.Table | None:
    """The rows of `paths` (files of the table at `root`) in the table's schema, partition
    values taken from the hive folders; None when a partition value does not cast.

    `deleted` holds, per file with a deletion vector, the row positions to leave out.
    """
    if deleted and any(path in deleted for path in paths):
        return _without_deleted(root, paths, schema, partition_by, columns, deleted)
    if not paths:
        empty = schema.empty_table()
        return empty.select(columns) if columns else empty
    if not partition_by and len(paths) <= _FEW_FILES:
        few = _read_few(paths, schema, columns)
        if few is not None:
            return few
    # Imported here: pyarrow.dataset (and pandas, which it imports) is a tenth of a second
    # of start-up that most commands never need.
    import pyarrow.dataset as pa_dataset

    # Partition values are read as the text in the folder names, then cast.
    read_schema = pa.schema(
        [f.with_type(pa.string()) if f.name in partition_by else f for f in schema]
    )
    partitioning = None
    if partition_by:
        partitioning = pa_dataset.HivePartitioning(
            pa.schema([read_schema.field(c) for c in partition_by]),
            null_fallback="__HIVE_DEFAULT_PARTITION__",
            segment_encoding="uri",
        )
    dataset = pa_dataset.dataset(
        paths,
        schema=read_schema,
        format="parquet",
        partitioning=partitioning,
        partition_base_dir=root,
    )
    table = dataset.to_table(columns=columns)
    try:
        return table.cast(pa.schema([schema.field(name) for name in table.column_names]))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _without_deleted(
    root: str,
    paths: list[str],
    schema: pa.Schema,
    partition_by: list[str],
    columns: list[str] | None,
    deleted: Mapping[str, pa.Array],
) -> pa.Table | None:
    """`read_files` file by file where deletion vectors apply, keeping the files' order."""
    pieces: list[pa.Table] = []
    plain: list[str] = []
    for path in [*paths, None]:
        if path is not None and path not in deleted:
            plain.append(path)
            continue
        if plain:
            piece = read_files(root, plain, schema, partition_by, columns)
            if piece is None:
                return None
            pieces.append(piece)
            plain = []
        if path is None:
            break
        piece = read_files(root, [path], schema, partition_by, columns)
        if piece is None:
            return None
        keep = np.ones(piece.num_rows, dtype=bool)
        keep[deleted[path].to_numpy(zero_copy_only=False)] = False
        pieces.append(piece.filter(pa.array(keep)))
    return pa.concat_tables(pieces)


# Up to this many files (an increment's), each is read on its own: pyarrow's dataset costs
# milliseconds to set up, several times the read of a small file.
_FEW_FILES = 4


def _read_few(paths: list[str], schema: pa.Schema, columns: list[str] | None) -> pa.Table | None:
    """The files' rows in the table's schema, each file read whole by its own reader; None
    when a file's columns are not the table's (schema evolution: the dataset fills them)."""
    import pyarrow.parquet as pq

    wanted = columns if columns is not None else schema.names
    pieces = []
    for path in paths:
        piece = pq.ParquetFile(path).read(columns=wanted if columns is not None else None)
        if set(piece.column_names) != set(wanted):
            return None
        try:
            pieces.append(piece.select(wanted).cast(pa.schema([schema.field(n) for n in wanted])))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, KeyError):
            return None
    return pa.concat_tables(pieces)
