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
    written = table._written_changes
    if written is not None and from_version == to_version:
        # The one commit asked for was written by this handle (with the feed on): its rows
        # are at hand, and the handle need not read the new version first.
        (table_id, version), rows = written
        if version == to_version and table_id == table.table_id():
            return rows
    dt = table.delta()
    if table.properties().get(CHANGE_FEED) != "true":
        return None
    appended = _appended_feed(table, from_version, to_version)
    if appended is not None:
        return appended
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


# Actions a commit that only appends rows may hold besides its added files.
_APPEND_ONLY = frozenset({"commitInfo", "add", "txn"})


def _appended_feed(table: Table, from_version: int, to_version: int) -> pa.Table | None:
    """The feed of versions that only appended files (an ingestion's loads, most often),
    read from those files as the Delta protocol reads them: every row an insert, at its
    commit's version and time. None when a commit did more, or its log entry is gone:
    delta-rs reads the feed then (its reader costs several times more for a few files)."""
    if "://" in table.path or table.version() != to_version:
        return None
    schema, partition_by = table.schema(), table.partition_by
    parts: list[pa.Table] = []
    for version in range(from_version, to_version + 1):
        lines = table.log_entry(version)
        if lines is None:
            return None
        actions = [json.loads(line) for line in lines if line.strip()]
        if any(set(action) - _APPEND_ONLY for action in actions):
            return None
        added = [a["add"] for a in actions if "add" in a]
        info = [a["commitInfo"] for a in actions if "commitInfo" in a]
        if not info or "timestamp" not in info[0] or not all(a.get("dataChange") for a in added):
            return None
        paths = [absolute_file_path(table.path, a["path"]) for a in added]
        rows = read_files(table.path, paths, schema, partition_by)
        if rows is None:
            return None
        # delta-rs gives partition columns last.
        names = rows.column_names
        parted = set(partition_by)
        rows = rows.select(
            [n for n in names if n not in parted] + [n for n in names if n in parted]
        )
        inserts = rows.append_column("_change_type", pa.repeat(pa.scalar("insert"), rows.num_rows))
        parts.append(stamped(inserts, version, int(info[0]["timestamp"])))
    return pa.concat_tables(parts) if parts else None


def stamped(rows: pa.Table, version: int, timestamp_ms: int) -> pa.Table:
    """Change rows of one commit with its `_commit_version` and `_commit_timestamp`, typed
    as delta-rs's feed reader gives them."""
    count = rows.num_rows
    return rows.append_column(
        "_commit_version", pa.repeat(pa.scalar(version, pa.uint64()), count)
    ).append_column(
        "_commit_timestamp", pa.repeat(pa.scalar(timestamp_ms, pa.timestamp("ms")), count)
    )


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
