"""Merges that mark replaced rows deleted in place (deletion vectors) instead of rewriting
the files that hold them.

With copy-on-write, a merge rewrites every file holding one of its keys: keys spread over
the table (updates to old orders) touch every file, so a 1% change rewrites the table. Here
the matched rows stay in their files, marked deleted by a deletion vector in the log; the
new versions go to one new file and the change data feed gets the pre- and post-images,
all in one commit that lakebed writes itself (delta-rs writes no deletion vectors). The
commit holds the application transaction and commit metadata as delta-rs's would, so
exactly-once writers keep their guarantee. A table without a change feed needs no
pre-images: its matches are found by their keys alone.

Only local, unpartitioned tables with `delta.enableDeletionVectors` take this path, and only
merges without schema changes; a key that matches several rows (copy-on-write updates each
of them) goes back to delta-rs too. `None` tells the caller to merge with delta-rs.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable

from lakebed.errors import ConcurrentWriteError, StorageError
from lakebed.storage import deletion_vectors
from lakebed.storage.file_stats import stats_from_actions, stats_json
from lakebed.storage.files import read_files
from lakebed.storage.key_rows import (
    FILE,
    RESERVED,
    ROW,
    KeyLookup,
    candidates,
    empty,
    matches,
    reused,
)
from lakebed.storage.parallel_write import known_protocol, write_file
from lakebed.storage.snapshot import Snapshot
from lakebed.storage.table_support import distinct_rows, key_strings, parquet_options

if TYPE_CHECKING:
    from lakebed.storage.table import Table, WriteResult

# A commit that loses the race for its version number is planned again this many times.
COMMIT_RETRIES = 8
# A file whose deletion vector would cover more than this share of its rows is rewritten
# without them instead (keeps vectors, which the log repeats, and scans small).
REWRITE_SHARE = 0.2


class _ConflictError(Exception):
    """Another writer committed the version this merge was planned against."""


class _NoAtomicCommitError(Exception):
    """The file system cannot create the commit file atomically (no hard links)."""


@dataclass
class _Plan:
    """What one merge commit does, ready to be written."""

    version: int
    table_id: str
    predicate: str = ""  # the merge condition, for the commit's parameters
    actions: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)  # files to delete if the commit fails
    # The deleted rows of every file after the commit (what readers will decode from it).
    deleted: dict[str, pa.Array] = field(default_factory=dict)
    files_added: int = 0
    files_removed: int = 0
    vectors_added: int = 0
    rows_copied: int = 0  # by rewrites of files that lost many rows
    checkpoint_interval: int = 100  # the table's, at the version planned against
    after: tuple[int, int, pa.Schema] | None = None  # live rows, bytes, columns once committed
    timestamp: int = 0  # of the commit, milliseconds


def lookup(
    table: Table, wanted: pa.Table, keys: list[str], columns: Sequence[str] = ()
) -> KeyLookup | None:
    """The live rows of `wanted`'s keys (distinct) in the table's latest version, for
    a merge on `keys` to use; None when merges of the table do not take this path. The
    rows are whole when the table keeps a change feed (the merge's pre-images), else only
    their keys and `columns` (decoding every column costs several times more)."""
    if "://" in table.path or table.partition_by or not _writable(table.delta()):
        return None
    snapshot = table.snapshot()
    if any(name in snapshot.schema.names for name in RESERVED):
        return None
    try:
        key_schema = pa.schema([snapshot.schema.field(k) for k in keys])
        wanted = wanted.select(keys).cast(key_schema)
    except (KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None  # keys the table does not hold as such: the merge finds its own
    indexes = candidates(snapshot, wanted, keys) if wanted.num_rows else []
    paths = [snapshot.paths[i] for i in indexes]
    schema = snapshot.schema
    if not snapshot.keeps_change_feed:
        named = {c.lower() for c in columns}
        kept = [f for f in schema if f.name in keys or f.name.lower() in named]
        schema = pa.schema(kept)
    found = matches(snapshot, paths, wanted, keys, schema) if paths else empty(schema)
    return KeyLookup(snapshot.version, tuple(keys), wanted, tuple(paths), found)


def merge_on_read(
    table: Table,
    source: pa.Table,
    keys: list[str],
    delete_keys: pa.Table | None,
    app_transaction: tuple[str, int] | None,
    metadata: dict[str, Any] | None,
    looked_up: KeyLookup | None = None,
    on_planned: Callable[[int], None] | None = None,
) -> WriteResult | None:
    """Upsert `source` by `keys` (and delete `delete_keys`) with deletion vectors, in one
    commit; None when the table or the merge does not qualify (see the module docstring).
    `looked_up` saves finding the rows again when it holds every key of the merge at the
    version it plans against. `on_planned(version)` is told, once, the version the commit
    is planned as, as soon as its change rows are known (before its files are written): a
    reader in this process may compute from them meanwhile (see `Table.changes`)."""
    if "://" in table.path:
        return None
    for tries in range(COMMIT_RETRIES):
        dt = table.delta()
        if not _writable(dt) or table.partition_by:
            return None
        table._commit_properties(app_transaction, metadata)  # refuses a repeated transaction
        plan = _plan(table, source, keys, delete_keys, looked_up, on_planned)
        on_planned = None  # told once: a plan made again after a lost race is not
        if plan is None:
            return None
        try:
            return _commit(table, plan, app_transaction, metadata)
        except BaseException as exc:
            _discard(plan)
            table._forget_changes(plan.table_id, plan.version + 1)
            if isinstance(exc, _NoAtomicCommitError):
                return None
            if not isinstance(exc, _ConflictError):
                raise
            time.sleep(min(2.0, 0.02 * 2**tries) * (0.5 + random.random()))
    raise ConcurrentWriteError(
        f"merge on {table.name} lost {COMMIT_RETRIES} races for a commit to concurrent writers",
        table=str(table.name),
        hint="run it again; the table is unchanged by this attempt",
    )


def _writable(dt: DeltaTable) -> bool:
    """Whether this writer may commit to the table: deletion vectors enabled, and nothing in
    the table's protocol or properties that it does not enforce."""
    return deletion_vectors.enabled(dt) and known_protocol(dt)


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


def _data_file(table: Table, data: pa.Table) -> tuple[str, dict[str, Any]]:
    """Write `data` as a new parquet file of the table: its location and add action."""
    name = f"part-00000-{uuid.uuid4()}-c000.snappy.parquet"
    location, size, stats = write_file(table.path, name, data)
    action = {
        "path": name,
        "partitionValues": {},
        "size": size,
        "modificationTime": int(time.time() * 1000),
        "dataChange": True,
        "stats": stats_json(stats),
    }
    return location, action


def _plan(
    table: Table,
    source: pa.Table,
    keys: list[str],
    delete_keys: pa.Table | None,
    looked_up: KeyLookup | None = None,
    on_planned: Callable[[int], None] | None = None,
) -> _Plan | None:
    snapshot = table.snapshot()
    schema = snapshot.schema
    if any(name in schema.names for name in RESERVED) or source.schema.names != schema.names:
        return None
    key_schema = pa.schema([schema.field(k) for k in keys])
    source_keys = key_strings(source, keys)
    wanted = source.select(keys)
    if delete_keys is not None and delete_keys.num_rows:
        doomed = delete_keys.select(keys).cast(key_schema)
        # A key both deleted and sent is kept with the new row.
        doomed = doomed.filter(pc.invert(pc.is_in(key_strings(doomed, keys), source_keys)))
        wanted = pa.concat_tables([wanted, doomed])
    wanted = distinct_rows(wanted, keys)
    feed = snapshot.keeps_change_feed
    read = schema if feed else key_schema
    found = reused(looked_up, snapshot, wanted, keys, read)  # what a lookup already found
    if found is not None:
        indexes = found[0]
    else:
        indexes = candidates(snapshot, wanted, keys) if wanted.num_rows else []
    paths = [snapshot.paths[i] for i in indexes]
    predicate = " AND ".join(f'(t."{k}" IS NOT DISTINCT FROM s."{k}")' for k in keys)
    plan = _Plan(version=snapshot.version, table_id=snapshot.table_id, predicate=predicate)
    plan.checkpoint_interval = int(snapshot.properties.get("delta.checkpointInterval") or 100)
    plan.deleted = dict(snapshot.deleted)
    plan.timestamp = int(time.time() * 1000)
    scanning = found is None and bool(paths)
    # Scanning, the new rows' file is written on a thread while the scan looks for the rows
    # they replace; else here, after the plan is announced (on a thread of its own, it
    # would wait for this one's interpreter lock at every step).
    pool = ThreadPoolExecutor(max_workers=1) if scanning else None
    new_file = pool.submit(_data_file, table, source) if pool and source.num_rows else None
    try:
        if found is not None:
            matched = found[1]
        elif paths:
            matched = matches(snapshot, paths, wanted, keys, read)
        else:
            matched = empty(read)
        matched_keys = key_strings(matched, keys)
        if len(pc.unique(matched_keys)) != matched.num_rows:
            _abandon(plan, new_file)
            return None  # a key held by several rows: copy-on-write semantics, from delta-rs
        if not _mark_deleted(table, snapshot, plan, indexes, matched):
            _abandon(plan, new_file)
            return None
        data = matched.drop_columns([FILE, ROW])
        updated = pc.is_in(source_keys, matched_keys)
        replaced = pc.is_in(matched_keys, source_keys)
        changes = _change_rows(source, data, updated, replaced) if feed else None
        if changes is not None:
            # Readers in this process find the feed of the version to come at hand (one
            # told by `on_planned` reads it before the commit; a failed commit forgets it).
            table._remember_changes(plan.table_id, plan.version + 1, changes, plan.timestamp)
        if on_planned is not None:
            on_planned(plan.version + 1)
        if new_file is not None:
            written: tuple[str, dict[str, Any]] | None = new_file.result()
        else:
            written = _data_file(table, source) if source.num_rows else None
    except BaseException:
        _abandon(plan, new_file)
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    if written is not None:
        plan.written.append(written[0])
        plan.actions.append({"add": written[1]})
        plan.files_added += 1
    if changes is not None and data.num_rows:
        # With only new rows none is written: the feed reads a commit without change data
        # files from its added files, every row an insert (the Delta protocol's rule, as
        # delta-rs and Spark read it).
        _record_changes(table, plan, changes)
    inserted = source.num_rows - int(pc.sum(updated.cast(pa.int64())).as_py() or 0)
    added = sum(int(a["add"]["size"]) for a in plan.actions if "add" in a)
    removed = sum(int(a["remove"]["size"]) for a in plan.actions if "remove" in a)
    rows = snapshot.num_rows + source.num_rows - data.num_rows
    plan.after = (rows, snapshot.size_bytes + added - removed, snapshot.schema)
    plan.metrics = {
        "num_source_rows": source.num_rows,
        "num_target_rows_inserted": inserted,
        "num_target_rows_updated": source.num_rows - inserted,
        "num_target_rows_deleted": data.num_rows - (source.num_rows - inserted),
        "num_target_rows_copied": plan.rows_copied,
        "num_output_rows": source.num_rows,
        "num_target_files_scanned": len(paths),
        "num_target_files_skipped_during_scan": snapshot.num_files - len(paths),
        "num_target_files_added": plan.files_added,
        "num_target_files_removed": plan.files_removed,
        "num_deletion_vectors_added": plan.vectors_added,
    }
    return plan


def _discard(plan: _Plan) -> None:
    for path in plan.written:
        _remove_quietly(path)


def _abandon(plan: _Plan, new_file: Future[tuple[str, dict[str, Any]]] | None) -> None:
    """Remove what a plan given up wrote (its rewrites, and the new rows' file)."""
    _discard(plan)
    if new_file is not None and new_file.exception() is None:
        _remove_quietly(new_file.result()[0])


def _mark_deleted(
    table: Table, snapshot: Snapshot, plan: _Plan, indexes: list[int], matched: pa.Table
) -> bool:
    """Add the actions that take the matched rows out of their files: a remove of each
    file as it was and an add of it with its new deletion vector, or of a rewrite without
    the deleted rows once they are many. False when the log cannot be read for it."""
    now = int(time.time() * 1000)
    if matched.num_rows == 0:
        return True
    file_of = matched.column(FILE).to_numpy()
    row_of = matched.column(ROW).to_numpy()
    descriptors: dict[str, dict[str, Any]] | None = None
    for index in np.unique(file_of):
        path = snapshot.paths[indexes[int(index)]]
        record = snapshot.files.slice(indexes[int(index)], 1).to_pylist()[0]
        relative = str(record["path"])
        positions = row_of[file_of == index]
        earlier = snapshot.deleted.get(path)
        if earlier is not None:
            positions = np.union1d(positions, earlier.to_numpy(zero_copy_only=False))
        removal: dict[str, Any] = {
            "path": relative,
            "dataChange": True,
            "deletionTimestamp": now,
            "extendedFileMetadata": True,
            "partitionValues": {},
            "size": int(record["size_bytes"]),
        }
        if earlier is not None:
            # The remove names the file as it is now: with its current deletion vector.
            if descriptors is None:
                descriptors = _log_vectors(table, snapshot.version)
            if relative not in descriptors:
                return False
            removal["deletionVector"] = descriptors[relative]
        plan.actions.append({"remove": removal})
        plan.files_removed += 1
        plan.deleted.pop(path, None)
        total = int(record["num_records"])
        if len(positions) >= total:
            continue  # every row of the file is gone
        if len(positions) > REWRITE_SHARE * total:
            kept = read_files(
                table.path, [path], snapshot.schema, [], deleted={path: pa.array(positions)}
            )
            if kept is None:
                raise StorageError(f"cannot read {path} of {table.name}", table=str(table.name))
            location, action = _data_file(table, kept)
            plan.written.append(location)
            plan.actions.append({"add": action})
            plan.files_added += 1
            plan.rows_copied += kept.num_rows
            continue
        stats = stats_from_actions(record, snapshot.schema)
        stats["tightBounds"] = False  # the bounds still count the deleted rows
        plan.actions.append(
            {
                "add": {
                    "path": relative,
                    "partitionValues": {},
                    "size": int(record["size_bytes"]),
                    "modificationTime": int(record["modification_time"]),
                    "dataChange": True,
                    "stats": stats_json(stats),
                    "deletionVector": deletion_vectors.inline_descriptor(positions),
                }
            }
        )
        plan.vectors_added += 1
        plan.deleted[path] = pa.array(positions.astype(np.int64))
    return True


def _record_changes(table: Table, plan: _Plan, changes: pa.Table) -> None:
    """Write the change data feed file of the merge and add it to the plan."""
    os.makedirs(f"{table.path}/_change_data", exist_ok=True)
    name = f"_change_data/cdc-00000-{uuid.uuid4()}.c000.snappy.parquet"
    location = f"{table.path}/{name}"
    pq.write_table(changes, location, **parquet_options(changes.schema))
    plan.written.append(location)
    plan.actions.append(
        {
            "cdc": {
                "path": name,
                "partitionValues": {},
                "size": os.path.getsize(location),
                "dataChange": False,
            }
        }
    )


def _log_vectors(table: Table, until: int) -> dict[str, dict[str, Any]]:
    """The deletion vector descriptor each file (relative path) carries at version `until`,
    read from the log (delta-rs hands out the deleted rows, not the descriptor a remove must
    repeat): the last checkpoint, then the JSON commits after it."""
    log = f"{table.path}/_delta_log"
    found: dict[str, dict[str, Any]] = {}
    try:
        with open(f"{log}/_last_checkpoint", encoding="utf-8") as handle:
            start = int(json.load(handle)["version"])
        checkpoint = pq.read_table(f"{log}/{start:020d}.checkpoint.parquet", columns=["add"])
        for entry in checkpoint.column("add").to_pylist():
            if entry and entry.get("deletionVector"):
                found[str(entry["path"])] = _descriptor(entry["deletionVector"])
        start += 1
    except (OSError, KeyError, ValueError, pa.ArrowException):
        # No checkpoint, or one of another form (multi-part, v2): the JSON commits alone.
        found, start = {}, 0
    for version in range(start, until + 1):
        try:
            with open(f"{log}/{version:020d}.json", encoding="utf-8") as handle:
                actions = [json.loads(line) for line in handle if line.strip()]
        except FileNotFoundError:
            break
        # Within a commit a file removed and added again (a new vector) ends up added.
        for action in actions:
            if "remove" in action:
                found.pop(action["remove"]["path"], None)
        for action in actions:
            if "add" in action and action["add"].get("deletionVector"):
                found[action["add"]["path"]] = _descriptor(action["add"]["deletionVector"])
    return found


def _descriptor(raw: dict[str, Any]) -> dict[str, Any]:
    descriptor = {
        "storageType": raw["storageType"],
        "pathOrInlineDv": raw["pathOrInlineDv"],
        "sizeInBytes": int(raw["sizeInBytes"]),
        "cardinality": int(raw["cardinality"]),
    }
    if raw.get("offset") is not None:
        descriptor["offset"] = int(raw["offset"])
    return descriptor


def _change_rows(
    source: pa.Table,
    matched: pa.Table,
    updated: pa.ChunkedArray | pa.Array,
    replaced: pa.ChunkedArray | pa.Array,
) -> pa.Table:
    """The change data feed rows of the merge: pre- and post-images of updated rows, new
    rows inserted, matched rows without a new version deleted."""

    def kind(rows: pa.Table, name: str) -> pa.Table:
        return rows.append_column("_change_type", pa.repeat(pa.scalar(name), rows.num_rows))

    parts = [
        kind(matched.filter(replaced), "update_preimage"),
        kind(source.filter(updated), "update_postimage"),
        kind(source.filter(pc.invert(updated)), "insert"),
        kind(matched.filter(pc.invert(replaced)), "delete"),
    ]
    return pa.concat_tables(parts)


def _commit(
    table: Table,
    plan: _Plan,
    app_transaction: tuple[str, int] | None,
    metadata: dict[str, Any] | None,
) -> WriteResult:
    from lakebed.storage.table import WriteResult

    now = plan.timestamp
    info: dict[str, Any] = {
        "timestamp": now,
        "operation": "MERGE",
        "operationParameters": {"predicate": plan.predicate, "deletionVectors": "true"},
        "readVersion": plan.version,
        "isolationLevel": "Serializable",
        "isBlindAppend": False,
        "operationMetrics": plan.metrics,
        "engineInfo": "lakebed",
        "clientVersion": "lakebed",
    }
    for key, value in (metadata or {}).items():
        info.setdefault(key, value)
    actions: list[dict[str, Any]] = [{"commitInfo": info}]
    if app_transaction is not None:
        app_id, txn_version = app_transaction
        actions.append({"txn": {"appId": app_id, "version": txn_version, "lastUpdated": now}})
    actions += plan.actions
    version = plan.version + 1
    log = f"{table.path}/_delta_log"
    target = f"{log}/{version:020d}.json"
    staged = f"{log}/.{version:020d}.{uuid.uuid4().hex}.json.tmp"
    with open(staged, "w", encoding="utf-8") as handle:
        for action in actions:
            handle.write(json.dumps(action, separators=(",", ":")) + "\n")
    try:
        # A hard link creates the commit file only if no other writer took the version.
        os.link(staged, target)
    except FileExistsError as exc:
        raise _ConflictError from exc
    except OSError as exc:
        raise _NoAtomicCommitError from exc
    finally:
        _remove_quietly(staged)
    # The handle reads the new version when next asked (a reader, or the catalog's record
    # on a thread of its own), not here: refreshing it replays the log.
    if version % plan.checkpoint_interval == 0:
        table.delta().create_checkpoint()
    table._deleted = ((plan.table_id, version), plan.deleted)
    if plan.after is not None:
        table._written_schema = (version, plan.after[2])
    result = WriteResult(str(table.name), version, "MERGE", dict(plan.metrics), plan.after)
    if table._on_commit is not None:
        table._on_commit(table, result)
    return result
