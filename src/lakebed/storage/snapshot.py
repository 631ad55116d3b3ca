"""One committed version of a Delta table: its schema and the live data files with statistics.

Readers build their scans from a `Snapshot` rather than globbing the folder: the folder also
holds files that later commits removed (overwrites, deletes, merges) until vacuum runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc

from lakebed.storage.naming import TableName
from lakebed.storage.properties import CHANGE_FEED

STATS_PREFIXES = ("min.", "max.", "null_count.", "partition.")


def absolute_file_path(root: str, relative: str) -> str:
    """Resolve an add action's path (URL-encoded, relative to the table root) to a location."""
    if "://" in relative or relative.startswith("/"):
        return relative
    return f"{root.rstrip('/')}/{unquote(relative)}"


@dataclass(frozen=True)
class Snapshot:
    """The live files of `table` at `version`, as the Delta log lists them."""

    table: TableName
    root: str
    version: int
    schema: pa.Schema
    partition_by: list[str]
    # Flattened add actions: path, size_bytes, num_records, min.*, max.*, null_count.*,
    # partition.* columns (one row per live file).
    files: pa.Table
    properties: dict[str, str] = field(default_factory=dict)
    # Delta's table id: a table dropped and created again at the same path gets a new one.
    table_id: str = ""
    # Per file (absolute path) with a deletion vector: the row positions it deletes (int64).
    deleted: Mapping[str, pa.Array] = field(default_factory=dict)

    @cached_property
    def paths(self) -> list[str]:
        relative: list[str] = self.files.column("path").to_pylist()
        return [absolute_file_path(self.root, p) for p in relative]

    @property
    def keeps_change_feed(self) -> bool:
        """Whether the table records a change data feed (its merges write pre-images)."""
        return self.properties.get(CHANGE_FEED) == "true"

    @property
    def num_files(self) -> int:
        return int(self.files.num_rows)

    @property
    def num_rows(self) -> int:
        if self.files.num_rows == 0:
            return 0
        total = pc.sum(self.files.column("num_records").fill_null(0)).as_py()
        return int(total or 0) - sum(len(rows) for rows in self.deleted.values())

    @property
    def size_bytes(self) -> int:
        if self.files.num_rows == 0:
            return 0
        return int(pc.sum(self.files.column("size_bytes")).as_py() or 0)

    def stat(self, kind: str, column: str) -> pa.ChunkedArray | None:
        """Per-file `min`, `max` or `null_count` of a column, or None if not recorded."""
        name = f"{kind}.{column}"
        if name in self.files.column_names:
            return self.files.column(name)
        return None

    def select(self, mask: pa.Array | pa.ChunkedArray) -> Snapshot:
        """The same snapshot restricted to the files where `mask` is true (file skipping)."""
        files = self.files.filter(mask)
        deleted: Mapping[str, pa.Array] = {}
        if self.deleted:
            kept = {absolute_file_path(self.root, p) for p in files.column("path").to_pylist()}
            deleted = {path: rows for path, rows in self.deleted.items() if path in kept}
        return Snapshot(
            table=self.table,
            root=self.root,
            version=self.version,
            schema=self.schema,
            partition_by=self.partition_by,
            files=files,
            properties=self.properties,
            table_id=self.table_id,
            deleted=deleted,
        )
