"""Delta Lake tables (delta-rs) addressed as `layer.name`: reads, writes and time travel
(maintenance in `table_upkeep`)."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar

import pyarrow as pa
from deltalake import (
    CommitProperties,
    DeltaTable,
    Transaction,
    write_deltalake,
)
from deltalake import Field as DeltaField
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.exceptions import SchemaMismatchError as DeltaSchemaMismatchError
from deltalake.exceptions import TableNotFoundError as DeltaTableNotFoundError

from lakebed.errors import (
    ConcurrentWriteError,
    DuplicateTransactionError,
    SchemaMismatchError,
    StorageError,
    TableNotFoundError,
    VersionNotFoundError,
)
from lakebed.storage import (
    changes,
    deletion_vectors,
    merge_on_read,
    merges,
    parallel_write,
    streams,
)
from lakebed.storage.files import read_files
from lakebed.storage.key_rows import KeyLookup
from lakebed.storage.naming import TableName
from lakebed.storage.properties import check_properties
from lakebed.storage.schema import normalise, reconcile, to_arrow
from lakebed.storage.snapshot import Snapshot
from lakebed.storage.table_log import LogReading, newest_commit
from lakebed.storage.table_support import WRITER_PROPERTIES, writer_properties
from lakebed.storage.table_upkeep import Upkeep

AsOf = int | str | datetime
T = TypeVar("T")

# Appends never conflict logically, so lost races are retried this many times with backoff.
APPEND_RETRIES = 8


@dataclass(frozen=True)
class WriteResult:
    """What a committed write did: the new version and delta-rs's operation metrics."""

    table: str
    version: int
    operation: str
    metrics: dict[str, Any] = field(default_factory=dict)
    # The table's live rows, bytes and columns at `version`, when the write knows them
    # without reading the new version (lakebed's own merges do).
    after: tuple[int, int, pa.Schema] | None = None

    @property
    def rows_written(self) -> int:
        for key in ("num_added_rows", "num_target_rows_inserted", "num_output_rows"):
            if key in self.metrics:
                return int(self.metrics[key])
        return 0


def _arrow_schema(dt: DeltaTable) -> pa.Schema:
    return pa.schema(dt.schema().to_arrow())


def _parse_as_of(as_of: AsOf) -> int | datetime:
    if isinstance(as_of, int | datetime):
        return as_of
    text = as_of.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise VersionNotFoundError(
            f"cannot read {as_of!r} as a version or a timestamp",
            hint="give a version number (3) or an ISO timestamp (2026-01-31T12:00:00Z)",
        ) from exc
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment


# Called after every successful commit (the lakehouse updates its catalog from it).
CommitHook = Callable[["Table", "WriteResult"], None]


class Table(LogReading, Upkeep):
    """A handle on one Delta table; every method reads or commits the latest version."""

    def __init__(
        self,
        name: TableName,
        path: str,
        storage_options: dict[str, str] | None = None,
        on_commit: CommitHook | None = None,
    ):
        self.name = name
        self.path = path
        self._storage_options = storage_options
        self._on_commit = on_commit
        self._dt: DeltaTable | None = None
        self._lock = threading.RLock()
        # The deleted rows of the last version asked for: (table id, version) → per file.
        self._deleted: tuple[tuple[str, int], dict[str, pa.Array]] | None = None
        self._snapshot: Snapshot | None = None  # the last one taken
        # The change feed rows of the last commit this handle wrote itself: (table id,
        # version) → rows, so a model reading what its input just changed need not read the
        # files back (see `changes`).
        self._written_changes: tuple[tuple[str, int], pa.Table] | None = None
        # The columns at the version of the last commit this handle wrote itself, when it
        # knows them without reading that version (its merges do).
        self._written_schema: tuple[int, pa.Schema] | None = None

    def __repr__(self) -> str:
        return f"Table({self.name}, path={self.path!r})"

    # -- reading -----------------------------------------------------------------------------

    def delta(self, *, refresh: bool = True) -> DeltaTable:
        """The underlying delta-rs table at its latest version (kept open between calls)."""
        with self._lock:
            try:
                if self._dt is None:
                    self._dt = DeltaTable(self.path, storage_options=self._storage_options)
                elif refresh and self._may_have_new_commits(self._dt):
                    self._dt.update_incremental()
            except DeltaTableNotFoundError as exc:
                raise TableNotFoundError(str(self.name)) from exc
            return self._dt

    def _may_have_new_commits(self, dt: DeltaTable) -> bool:
        # Every commit writes the next numbered log file: on local disk one stat() tells,
        # where listing the log (update_incremental) costs far more per query.
        if "://" in self.path:
            return True
        return os.path.exists(f"{self.path}/_delta_log/{int(dt.version()) + 1:020d}.json")

    def _at(self, as_of: AsOf | None) -> DeltaTable:
        if as_of is None:
            return self.delta()
        target = self._version_of(as_of)
        latest = self.delta()
        if int(latest.version()) == target:
            return latest  # the handle kept open is at that version: no replay of the log
        try:
            dt = DeltaTable(self.path, storage_options=self._storage_options)
            dt.load_as_version(target)
        except DeltaTableNotFoundError as exc:
            raise TableNotFoundError(str(self.name)) from exc
        except (DeltaError, ValueError, OSError) as exc:
            raise VersionNotFoundError(
                f"{self.name} has no version {as_of}: {exc}",
                table=str(self.name),
                hint=f"`lakebed history {self.name}` lists its versions",
            ) from exc
        return dt

    def _version_of(self, as_of: AsOf) -> int:
        """The version current at `as_of`: a version number, or the last commit at or before
        a timestamp (by the commit's own timestamp, as `history()` shows it)."""
        target = _parse_as_of(as_of)
        if isinstance(target, int):
            return target
        moment_ms = target.timestamp() * 1000
        found = [int(e["version"]) for e in self.history() if e["timestamp"] <= moment_ms]
        if not found:
            raise VersionNotFoundError(
                f"{self.name} did not exist yet at {target.isoformat()}",
                table=str(self.name),
                hint=f"`lakebed history {self.name}` lists its versions",
            )
        return max(found)

    def version(self) -> int:
        if "://" not in self.path:
            # On local disk the commit files tell, where opening the table or bringing an
            # open handle up to date replays its log (a run asks this of every input).
            dt = self._dt
            if dt is not None:
                version = int(dt.version())  # one stat per newer commit
                while os.path.exists(f"{self.path}/_delta_log/{version + 1:020d}.json"):
                    version += 1
                return version
            newest = newest_commit(self.path)
            if newest is not None:
                return newest
        return int(self.delta().version())

    def schema(self, as_of: AsOf | None = None) -> pa.Schema:
        written = self._written_schema
        if as_of is None and written is not None and written[0] == self.version():
            return written[1]  # no newer commit: no need to read the log again
        return _arrow_schema(self._at(as_of))

    @property
    def partition_by(self) -> list[str]:
        return list(self.delta(refresh=False).metadata().partition_columns)

    def properties(self) -> dict[str, str]:
        return dict(self.delta().metadata().configuration)

    def description(self) -> str | None:
        value = self.delta().metadata().description
        return str(value) if value else None

    def snapshot(self, as_of: AsOf | None = None) -> Snapshot:
        """The committed files of one version (latest, or `as_of` a version or timestamp)."""
        dt = self._at(as_of)
        with self._lock:
            version = int(dt.version())
            metadata = dt.metadata()
            table_id = str(metadata.id)
            cached = self._snapshot
            if cached is not None and (cached.table_id, cached.version) == (table_id, version):
                return cached  # a version's files never change: queries and commits share it
            files = pa.table(dt.get_add_actions(flatten=True))
            snapshot = Snapshot(
                table=self.name,
                root=self.path,
                version=version,
                schema=_arrow_schema(dt),
                partition_by=list(metadata.partition_columns),
                files=files,
                properties=dict(metadata.configuration),
                table_id=table_id,
                deleted=self._deleted_rows(dt),
            )
            self._snapshot = snapshot
            return snapshot

    def read(self, *, as_of: AsOf | None = None, columns: list[str] | None = None) -> pa.Table:
        """Read the whole table into Arrow (use the lakehouse's SQL for queries).

        Local tables are read by pyarrow from the Delta log's live files: delta-rs's own
        reader goes through a Python filesystem shim that aborts the interpreter at exit.
        """
        dt = self._at(as_of)
        if "://" in self.path:
            return dt.to_pyarrow_table(columns=columns)
        schema = _arrow_schema(dt)
        deleted = self._deleted_rows(dt)
        table = read_files(
            self.path,
            dt.file_uris(),
            schema,
            list(dt.metadata().partition_columns),
            columns,
            deleted,
        )
        if table is None:
            if deleted:
                return pa.table(dt.scan(columns=columns))
            return dt.to_pyarrow_table(columns=columns)
        return table

    def _deleted_rows(self, dt: DeltaTable) -> dict[str, pa.Array]:
        """`deletion_vectors.deleted_rows` of `dt`, kept for its version (every query and
        commit takes a snapshot; decoding the vectors each time would add up)."""
        key = (str(dt.metadata().id), int(dt.version()))
        cached = self._deleted
        if cached is not None and cached[0] == key:
            return cached[1]
        found = deletion_vectors.deleted_rows(dt, self.path)
        self._deleted = (key, found)
        return found

    def history(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Commits, newest first: version, timestamp, operation, parameters and metrics."""
        return [dict(entry) for entry in self.delta().history(limit)]

    def transaction_version(self, app_id: str) -> int | None:
        """The last version committed by an application transaction (exactly-once writers)."""
        value = self.delta().transaction_version(app_id)
        return None if value is None else int(value)

    # -- writing -----------------------------------------------------------------------------

    def _commit_properties(
        self, app_transaction: tuple[str, int] | None, metadata: dict[str, Any] | None
    ) -> CommitProperties:
        txns = None
        if app_transaction is not None:
            app_id, txn_version = app_transaction
            # delta-rs accepts a repeated version silently; refuse it here instead.
            current = self.transaction_version(app_id)
            if current is not None and txn_version <= current:
                raise DuplicateTransactionError(
                    f"transaction {app_id!r} version {txn_version} was already committed "
                    f"to {self.name} (last committed: {current})",
                    table=str(self.name),
                    hint="this batch was already written: skip it",
                )
            txns = [Transaction(app_id, txn_version, int(time.time() * 1000))]
        return CommitProperties(custom_metadata=metadata, app_transactions=txns)

    @contextmanager
    def _errors(self, operation: str) -> Iterator[None]:
        try:
            yield
        except CommitFailedError as exc:
            raise ConcurrentWriteError(
                f"{operation} on {self.name} conflicted with a concurrent commit: {exc}",
                table=str(self.name),
                hint="run it again; the table is unchanged by this attempt",
            ) from exc
        except DeltaSchemaMismatchError as exc:
            raise SchemaMismatchError(str(self.name), [str(exc)]) from exc
        except DeltaTableNotFoundError as exc:
            raise TableNotFoundError(str(self.name)) from exc
        except (DeltaError, OSError) as exc:
            raise StorageError(
                f"{operation} on {self.name} failed: {exc}", table=str(self.name)
            ) from exc

    def _retrying(self, operation: str, attempt: Callable[[], T]) -> T:
        for tries in range(APPEND_RETRIES):
            try:
                with self._errors(operation):
                    return attempt()
            except ConcurrentWriteError:
                if tries == APPEND_RETRIES - 1:
                    raise
                time.sleep(min(2.0, 0.02 * 2**tries) * (0.5 + random.random()))
                self.delta()
        raise AssertionError("unreachable")

    def _latest(self, operation: str, metrics: dict[str, Any] | None = None) -> WriteResult:
        # delta-rs leaves the handle at the version it committed; refreshing here would
        # report a concurrent writer's later commit as ours.
        dt = self.delta(refresh=False)
        version = int(dt.version())
        if metrics is None:
            ours = [h for h in dt.history(8) if h.get("version") == version]
            metrics = dict(ours[0].get("operationMetrics") or {}) if ours else {}
        result = WriteResult(str(self.name), version, operation, dict(metrics))
        if self._on_commit is not None:
            self._on_commit(self, result)
        return result

    def _evolve(self, data: pa.Table, new_columns: list[str]) -> bool:
        """Prepare to add `new_columns`; True when the write itself must merge the schema.

        delta-rs's schema merge moves partition columns last, so a partitioned table gets
        its new columns in a commit of their own, keeping the column order users see.
        """
        if not new_columns:
            return False
        if not self.partition_by:
            return True
        fields = [DeltaField.from_arrow(data.schema.field(name)) for name in new_columns]
        with self._errors("add columns"):
            self.delta().alter.add_columns(fields)
        return False

    def append(
        self,
        data: Any,
        *,
        allow_missing_columns: bool = False,
        app_transaction: tuple[str, int] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> WriteResult:
        """Append rows; new columns are added to the table, missing ones are an error."""
        dt = self.delta()
        fitted = reconcile(
            str(self.name),
            _arrow_schema(dt),
            to_arrow(data),
            allow_missing_columns=allow_missing_columns,
            partition_by=self.partition_by,
        )

        merge_schema = self._evolve(fitted.data, fitted.new_columns)

        def attempt() -> WriteResult:
            write_deltalake(
                self.delta(),
                fitted.data,
                mode="append",
                schema_mode="merge" if merge_schema else None,
                commit_properties=self._commit_properties(app_transaction, metadata),
                writer_properties=writer_properties(fitted.data.schema),
            )
            return self._latest("APPEND")

        return self._retrying("append", attempt)

    def append_stream(
        self,
        schema: pa.Schema,
        pieces: Iterable[pa.Table],
        *,
        allow_missing_columns: bool = False,
        app_transaction: tuple[str, int] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> WriteResult:
        """Append rows as they arrive, in one commit, without holding them all in memory:
        each piece (with columns `schema`) is checked and cast as `append` does and written
        while the next is produced.

        An exception raised by `pieces` (or a piece that does not fit) stops the write and
        propagates as it is: nothing is committed. A stream is read once, so a commit that
        loses a race raises `ConcurrentWriteError` rather than being retried.
        """
        return streams.append_stream(
            self,
            schema,
            pieces,
            allow_missing_columns=allow_missing_columns,
            app_transaction=app_transaction,
            metadata=metadata,
        )

    def overwrite(
        self,
        data: Any,
        *,
        predicate: str | None = None,
        schema_mode: Literal["overwrite"] | None = None,
        partition_by: list[str] | None = None,
        allow_missing_columns: bool = False,
        app_transaction: tuple[str, int] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> WriteResult:
        """Replace the whole table, or only the rows matching `predicate` (SQL, delta-rs).

        `schema_mode="overwrite"` replaces the schema too (drop or retype columns), keeping
        the partitioning unless `partition_by` gives a new one.
        """
        dt = self.delta()
        table = to_arrow(data)
        evolve: Literal["merge", "overwrite"] | None
        if schema_mode == "overwrite":
            if predicate is not None:
                raise StorageError(
                    "schema_mode='overwrite' replaces the whole table; it cannot take a predicate",
                    table=str(self.name),
                )
            fitted_data, evolve = normalise(table, table=str(self.name)), "overwrite"
            partition_by = self.partition_by if partition_by is None else partition_by
            lost = [c for c in partition_by if c not in fitted_data.column_names]
            if lost:
                raise SchemaMismatchError(
                    str(self.name),
                    [f"partition column {c} is missing from the data" for c in lost],
                    hint="pass partition_by=[...] with the new partition columns ([] for none)",
                )
        else:
            fitted = reconcile(
                str(self.name),
                _arrow_schema(dt),
                table,
                allow_missing_columns=allow_missing_columns,
                partition_by=self.partition_by,
            )
            merge_schema = self._evolve(fitted.data, fitted.new_columns)
            fitted_data, evolve = fitted.data, ("merge" if merge_schema else None)
            dt = self.delta()
        if (
            predicate is None
            and not partition_by
            and evolve != "merge"
            and parallel_write.overwritable(self.path, dt, fitted_data)
        ):
            return parallel_write.overwrite(
                self, dt, fitted_data, app_transaction=app_transaction, metadata=metadata
            )
        with self._errors("overwrite"):
            write_deltalake(
                dt,
                fitted_data,
                mode="overwrite",
                predicate=predicate,
                schema_mode=evolve,
                partition_by=partition_by if schema_mode == "overwrite" else None,
                commit_properties=self._commit_properties(app_transaction, metadata),
                writer_properties=writer_properties(fitted_data.schema),
            )
        return self._latest("OVERWRITE")

    def merge(
        self,
        data: Any,
        keys: list[str] | str,
        *,
        when_matched: Literal["update", "ignore", "delete"] = "update",
        when_not_matched: Literal["insert", "ignore"] = "insert",
        delete_unmatched_target: bool = False,
        allow_missing_columns: bool = False,
        delete_keys: pa.Table | None = None,
        app_transaction: tuple[str, int] | None = None,
        metadata: dict[str, Any] | None = None,
        looked_up: KeyLookup | None = None,
        on_planned: Callable[[int], None] | None = None,
    ) -> WriteResult:
        """Upsert by key columns: matched rows are updated, new keys inserted.

        `delete_unmatched_target` also deletes target rows whose key is absent from `data`
        (a full sync); `delete_keys` (key columns only) deletes those keys in the same commit.
        Duplicate keys in `data` are an error: which row would win is undefined. A NULL key
        matches a NULL key (as GROUP BY groups them).

        On a local table with `delta.enableDeletionVectors`, an upsert marks the rows it
        replaces in deletion vectors instead of rewriting their files (`merge_on_read`);
        `looked_up` (from `lookup`, at the version merged into) saves finding them again;
        `on_planned(version)` hears the version it is planned as (`merge_on_read`).
        """
        key_list = [keys] if isinstance(keys, str) else list(keys)
        return merges.upsert(
            self,
            to_arrow(data),
            key_list,
            when_matched=when_matched,
            when_not_matched=when_not_matched,
            delete_unmatched_target=delete_unmatched_target,
            allow_missing_columns=allow_missing_columns,
            delete_keys=delete_keys,
            app_transaction=app_transaction,
            metadata=metadata,
            looked_up=looked_up,
            on_planned=on_planned,
        )

    def lookup(
        self, wanted: pa.Table, keys: list[str], columns: Sequence[str] = ()
    ) -> KeyLookup | None:
        """The live rows of `wanted`'s keys, found where they lie, for a merge on `keys`
        at this version to use (None when its merges do not mark rows in place): whole
        with a change feed, else their keys and `columns`."""
        return merge_on_read.lookup(self, wanted, keys, columns)

    def apply_history(
        self,
        changes: pa.Table,
        keys: list[str],
        *,
        app_transaction: tuple[str, int] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> WriteResult:
        """Apply slowly-changing-dimension (type 2) changes in one commit.

        `changes` holds rows with an `__action` column: `close` ends the current version of
        a key (sets `valid_to`, clears `is_current`), `insert` adds a new current version.
        """
        return merges.apply_history(self, changes, keys, app_transaction, metadata)

    def _remember_changes(
        self, table_id: str, version: int, rows: pa.Table, timestamp_ms: int
    ) -> None:
        """Keep the change feed rows a commit of this handle wrote, as `changes` returns
        them (with `_commit_version` and `_commit_timestamp`)."""
        self._written_changes = ((table_id, version), changes.stamped(rows, version, timestamp_ms))

    def _forget_changes(self, table_id: str, version: int) -> None:
        """Drop the kept feed rows of a version this handle planned and did not commit."""
        written = self._written_changes
        if written is not None and written[0] == (table_id, version):
            self._written_changes = None

    def changes(self, from_version: int, to_version: int) -> pa.Table | None:
        """Rows changed in versions `from_version`..`to_version` from the change data feed
        (`_change_type`, `_commit_version` columns), or None when the table does not record
        one for that whole range."""
        return changes.change_feed(self, from_version, to_version)

    def appended_rows(self, from_version: int, to_version: int) -> pa.Table | None:
        """Rows added by versions `from_version`..`to_version` when every one of them was a
        plain append (so no row was changed or removed); None otherwise."""
        return changes.appended_rows(self, from_version, to_version)

    def delete(self, predicate: str | None = None) -> WriteResult:
        """Delete the rows matching a SQL predicate (all rows when None)."""
        with self._errors("delete"):
            metrics = self.delta().delete(predicate, writer_properties=WRITER_PROPERTIES)
        return self._latest("DELETE", metrics)

    def update(self, set: dict[str, str], predicate: str | None = None) -> WriteResult:
        """Set columns to SQL expressions (`{"status": "'shipped'"}`) where `predicate` holds."""
        unknown = [c for c in set if c not in self.schema().names]
        if unknown:
            raise SchemaMismatchError(
                str(self.name), [f"column {c} does not exist" for c in unknown]
            )
        with self._errors("update"):
            metrics = self.delta().update(
                updates=set, predicate=predicate, writer_properties=WRITER_PROPERTIES
            )
        return self._latest("UPDATE", metrics)

    def set_properties(self, properties: dict[str, str]) -> None:
        """Set Delta table properties (`delta.logRetentionDuration`...), checked first."""
        check_properties(str(self.name), properties)
        with self._errors("set properties"):
            self.delta().alter.set_table_properties(properties, raise_if_not_exists=False)
