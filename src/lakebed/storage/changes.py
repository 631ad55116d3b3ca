"""What changed in a table between two versions: its change data feed, or the rows its
appends added (tables without a feed, such as bronze)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pyarrow as pa
from deltalake.exceptions import DeltaError

from lakebed.errors import StorageError
from lakebed.storage.files import read_files
from lakebed.storage.properties import CHANGE_FEED
from lakebed.storage.snapshot import absolute_file_path

if TYPE_CHECKING:
    from lakebed.storage.table import Table


def change_feed(table: Table, from_version: int, to_version: int) -> pa.Table | None:
    """See `Table.changes`."""
    dt = table.delta()
    if table.properties().get(CHANGE_FEED) != "true":
        return None
    written = table._written_changes
    if written is not None and from_version == to_version:
        # The one commit asked for was written by this handle: its rows are at hand.
        (table_id, version), rows = written
        if version == to_version and table_id == str(dt.metadata().id):
            return rows
    try:
        reader = dt.load_cdf(starting_version=from_version, ending_version=to_version)
        found = pa.table(reader.read_all())
    except (DeltaError, OSError, ValueError):
        return None
    # The feed comes with view types (string_view); the rest of lakebed uses plain ones.
    fields = [
        f.with_type(pa.string()) if pa.types.is_string_view(f.type) else f for f in found.schema
    ]
    fields = [f.with_type(pa.binary()) if pa.types.is_binary_view(f.type) else f for f in fields]
    return found.cast(pa.schema(fields))


def appended_rows(table: Table, from_version: int, to_version: int) -> pa.Table | None:
    """See `Table.appended_rows`."""
    newest = table.version()
    for entry in table.history(max(1, newest - from_version + 1)):
        version = int(entry.get("version", -1))
        if from_version <= version <= to_version:
            mode = (entry.get("operationParameters") or {}).get("mode")
            if entry.get("operation") not in ("WRITE", "CREATE TABLE") or mode not in (
                "Append",
                "ErrorIfExists",
                None,
            ):
                return None
    after = table.snapshot(to_version)
    added = _added_paths(table, from_version, to_version)
    if added is None:
        before = set(table.snapshot(from_version - 1).paths) if from_version > 0 else set()
        added = [p for p in after.paths if p not in before]
    rows = read_files(table.path, added, after.schema, after.partition_by, deleted=after.deleted)
    if rows is None:
        raise StorageError(f"cannot read the partition values of {table.name}")
    return rows


def _added_paths(table: Table, from_version: int, to_version: int) -> list[str] | None:
    """The files the commits `from_version`..`to_version` added, read from their log
    entries (local tables; None when an entry is gone or removes a file): cheaper than
    comparing two snapshots, each a replay of the log."""
    added: list[str] = []
    for version in range(from_version, to_version + 1):
        lines = table.log_entry(version)
        if lines is None:
            return None
        for line in lines:
            action = json.loads(line)
            if "remove" in action:
                return None
            if "add" in action:
                added.append(absolute_file_path(table.path, action["add"]["path"]))
    return added
