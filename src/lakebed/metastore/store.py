"""`Metastore`: the table catalog, schema history and run log in SQLite or PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    delete,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, SQLAlchemyError

from lakebed.errors import MetastoreError
from lakebed.metastore import checks as quality
from lakebed.metastore import engines, lineage_store, migrations
from lakebed.metastore.checks import CheckResult
from lakebed.metastore.lineage_store import LineageEdge
from lakebed.metastore.schema import (
    RunRecord,
    SchemaVersion,
    TableRecord,
    run_record,
    schema_version_record,
    table_record,
)
from lakebed.metastore.schema import leases as leases_t
from lakebed.metastore.schema import runs as runs_t
from lakebed.metastore.schema import schema_history as history_t
from lakebed.metastore.schema import source_state as state_t
from lakebed.metastore.schema import tables as tables_t
from lakebed.metastore.table_writes import Write, _json_roundtrip, _now, _utc, record_write

__all__ = ["RUN_STATUSES", "Metastore"]

RUN_STATUSES = ("running", "success", "failed")
_FINISHED = frozenset(RUN_STATUSES) - {"running"}
_RACE_RETRIES = 3
_SQLITE_BUSY_TIMEOUT_MS = 30_000
_WRITE = "lakebed_write"
_T = TypeVar("_T")


class Metastore:
    """The catalog database behind a project: SQLite by default, PostgreSQL to share it."""

    def __init__(self, url: str) -> None:
        try:
            self._url: URL = make_url(url)
        except ArgumentError as exc:
            raise MetastoreError(
                "the metastore URL is not a SQLAlchemy URL",
                hint="use sqlite:///path/to/metastore.db or postgresql://user@host:5432/db",
            ) from exc
        self._masked = self._url.render_as_string(hide_password=True)
        backend = self._url.get_backend_name()
        # A server may drop idle connections; a SQLite file has none to drop.
        options: dict[str, Any] = {"pool_pre_ping": backend != "sqlite"}
        if backend == "sqlite":
            _create_parent_folder(self._url, self._masked)
        elif backend == "postgresql":
            # Fail instead of hanging when the host drops packets.
            options["connect_args"] = {"connect_timeout": 10}
        driver_url = self._url
        if driver_url.drivername == "postgresql":
            # SQLAlchemy 2.1 would pick psycopg 3; lakebed ships with psycopg2.
            driver_url = driver_url.set(drivername="postgresql+psycopg2")
        sqlite = backend == "sqlite"

        def make() -> Engine:
            made = create_engine(driver_url, **options)
            if sqlite:
                event.listen(made, "connect", _sqlite_on_connect)
                event.listen(made, "begin", _sqlite_on_begin)
            return made

        try:
            self._engine = engines.acquire(driver_url, options, make)
        except (ArgumentError, ImportError) as exc:
            raise MetastoreError(
                f"cannot use metastore at {self._masked}: {exc}",
                hint="supported: sqlite:///path or postgresql://user@host/db",
            ) from exc
        self._writes = threading.RLock() if sqlite else None
        self._local = threading.local()  # the transaction of `together`, per thread

    @classmethod
    def for_project(cls, state_dir: Path, url: str | None = None) -> Metastore:
        """Open (and upgrade) a project's metastore; default a SQLite file in `state_dir`."""
        if url is None:
            try:
                state_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise MetastoreError(f"cannot create {state_dir}: {exc}") from exc
            url = f"sqlite:///{(state_dir / 'metastore.db').resolve()}"
        store = cls(url)
        try:
            store.upgrade()
        except BaseException:
            store.close()
            raise
        return store

    @property
    def url(self) -> str:
        """The database URL with its password masked, for display."""
        return self._masked

    def __repr__(self) -> str:
        return f"Metastore({self._masked!r})"

    def __enter__(self) -> Metastore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close pooled connections; the object must not be used afterwards."""
        engines.release(self._engine)

    # -- schema ----------------------------------------------------------------------------

    def upgrade(self) -> int:
        """Apply pending migrations and return the schema version; safe to race."""
        return self._write_retrying("upgrade", migrations.apply_pending)

    def schema_version(self) -> int:
        """The version of the database schema; 0 before the first `upgrade()`."""
        with self._guard("schema_version"), self._begin() as conn:
            return migrations.current_version(conn)

    # -- tables ----------------------------------------------------------------------------

    def upsert_table(
        self,
        name: str,
        *,
        layer: str,
        path: str,
        domain: str | None = None,
        owner: str | None = None,
        description: str | None = None,
        tags: list[str] | None = None,
        partition_by: list[str] | None = None,
        properties: dict[str, str] | None = None,
    ) -> TableRecord:
        """Register or update a table; arguments left as None keep their stored values."""
        optional: dict[str, Any] = {
            "domain": domain,
            "owner": owner,
            "description": description,
            "tags": None if tags is None else list(tags),
            "partition_by": None if partition_by is None else list(partition_by),
            "properties": None if properties is None else dict(properties),
        }
        changes = {"layer": layer, "path": path} | {
            key: value for key, value in optional.items() if value is not None
        }
        empty: dict[str, Any] = {"tags": [], "partition_by": [], "properties": {}}
        new_row = empty | changes | {"name": name, "created_at": _now()}
        where = tables_t.c.name == name

        def upsert(conn: Connection) -> TableRecord:
            if not conn.execute(update(tables_t).where(where).values(changes)).rowcount:
                conn.execute(insert(tables_t).values(new_row))
            return table_record(conn.execute(select(tables_t).where(where)).mappings().one())

        return self._write_retrying("upsert_table", upsert)

    def record_write(
        self,
        name: str,
        *,
        version: int,
        operation: str,
        row_count: int | None,
        size_bytes: int | None,
        columns: list[dict[str, Any]],
        written_at: datetime | None = None,
    ) -> None:
        """Record a committed write; a changed schema adds a `SchemaVersion`."""
        write = Write(name, version, operation, row_count, size_bytes, columns, written_at)
        self.record_writes([write])

    def record_writes(self, writes: Sequence[Write], *, dropped_ok: bool = False) -> None:
        """`record_write` of each write, in one transaction; with `dropped_ok`, the writes
        of tables no longer in the catalog (dropped since) are passed over."""
        with self._guard("record_write"), self._begin(write=True) as conn:
            for write in writes:
                record_write(conn, write, dropped_ok=dropped_ok)

    def get_table(self, name: str) -> TableRecord | None:
        """The catalog entry for `name`, or None."""
        with self._guard("get_table"), self._begin() as conn:
            row = conn.execute(select(tables_t).where(tables_t.c.name == name)).mappings().first()
        return None if row is None else table_record(row)

    def table_names(self) -> list[str]:
        """The name of every registered table, sorted (cheaper than `list_tables`)."""
        query = select(tables_t.c.name).order_by(tables_t.c.name)
        with self._guard("table_names"), self._begin() as conn:
            return [str(name) for name in conn.execute(query).scalars()]

    def list_tables(self, layer: str | None = None) -> list[TableRecord]:
        """Every registered table (optionally of one layer), sorted by name."""
        query = select(tables_t).order_by(tables_t.c.name)
        if layer is not None:
            query = query.where(tables_t.c.layer == layer)
        with self._guard("list_tables"), self._begin() as conn:
            return [table_record(row) for row in conn.execute(query).mappings()]

    def drop_table(self, name: str) -> None:
        """Forget a table and its schema history; unknown names are ignored."""
        with self._guard("drop_table"), self._begin(write=True) as conn:
            conn.execute(delete(history_t).where(history_t.c.table_name == name))
            conn.execute(delete(tables_t).where(tables_t.c.name == name))

    def schema_history(self, name: str) -> list[SchemaVersion]:
        """The schemas a table has had, oldest first."""
        query = (
            select(history_t)
            .where(history_t.c.table_name == name)
            .order_by(history_t.c.table_version, history_t.c.id)
        )
        with self._guard("schema_history"), self._begin() as conn:
            return [schema_version_record(row) for row in conn.execute(query).mappings()]

    # -- source state ----------------------------------------------------------------------

    def get_source_state(self, source: str) -> tuple[str, int, dict[str, Any]] | None:
        """(target table, transaction version, state) last recorded for a source, or None."""
        with self._guard("get_source_state"), self._begin() as conn:
            row = conn.execute(
                select(state_t.c.target, state_t.c.txn_version, state_t.c.state).where(
                    state_t.c.source == source
                )
            ).first()
        return None if row is None else (row.target, int(row.txn_version), dict(row.state))

    def set_source_state(
        self, source: str, *, target: str, txn_version: int, state: dict[str, Any]
    ) -> None:
        """Record a source's progress after its bronze commit (never moves backwards)."""
        values = {
            "target": target,
            "txn_version": txn_version,
            "state": _json_roundtrip(state, "state"),
            "updated_at": _now(),
        }
        where = state_t.c.source == source
        with self._guard("set_source_state"), self._begin(write=True) as conn:
            row = conn.execute(select(state_t.c.txn_version).where(where).with_for_update()).first()
            if row is None:
                conn.execute(insert(state_t).values(source=source, **values))
            elif txn_version >= row.txn_version:
                conn.execute(update(state_t).where(where).values(values))

    def clear_source_state(self, source: str) -> None:
        with self._guard("clear_source_state"), self._begin(write=True) as conn:
            conn.execute(delete(state_t).where(state_t.c.source == source))

    # -- leases ----------------------------------------------------------------------------

    def acquire_lease(
        self, name: str, holder: str, *, seconds: float, stale_holder: str | None = None
    ) -> str | None:
        """Take the lease `name` for `holder`; None on success, else the current holder.

        `stale_holder` names a holder known to be dead whose lease may be taken over.
        """
        now = _now()
        until = now + timedelta(seconds=seconds)
        where = leases_t.c.name == name
        with self._guard("acquire_lease"), self._begin(write=True) as conn:
            row = conn.execute(
                select(leases_t.c.holder, leases_t.c.expires_at).where(where).with_for_update()
            ).first()
            if row is None:
                conn.execute(insert(leases_t).values(name=name, holder=holder, expires_at=until))
                return None
            taken_over = stale_holder is not None and row.holder == stale_holder
            if row.holder != holder and row.expires_at > now and not taken_over:
                return str(row.holder)
            conn.execute(update(leases_t).where(where).values(holder=holder, expires_at=until))
        return None

    def release_lease(self, name: str, holder: str) -> None:
        with self._guard("release_lease"), self._begin(write=True) as conn:
            conn.execute(
                delete(leases_t).where(leases_t.c.name == name, leases_t.c.holder == holder)
            )

    # -- runs ------------------------------------------------------------------------------

    def start_run(
        self, kind: str, target: str | None = None, params: dict[str, Any] | None = None
    ) -> str:
        """Record a run as `running` and return its id."""
        run_id = uuid.uuid4().hex
        values = {
            "run_id": run_id,
            "kind": kind,
            "target": target,
            "status": "running",
            "started_at": _now(),
            "params": _json_roundtrip(params or {}, "params"),
        }
        with self._guard("start_run"), self._begin(write=True) as conn:
            conn.execute(insert(runs_t).values(values))
        return run_id

    def finish_run(
        self,
        run_id: str,
        *,
        status: str,
        rows: int | None = None,
        bytes: int | None = None,
        error: str | None = None,
    ) -> None:
        """Mark a run `success` or `failed` with what it processed."""
        if status not in _FINISHED:
            raise MetastoreError(
                f"cannot finish run {run_id} with status {status!r}",
                hint=f"use one of {', '.join(sorted(_FINISHED))}",
            )
        values = {
            "status": status,
            "finished_at": _now(),
            "row_count": rows,
            "size_bytes": bytes,
            "error": error,
        }
        with self._guard("finish_run"), self._begin(write=True) as conn:
            found = conn.execute(update(runs_t).where(runs_t.c.run_id == run_id).values(values))
            if not found.rowcount:
                raise MetastoreError(f"run {run_id} is not in the metastore")

    def record_finished_runs(
        self,
        kind: str,
        entries: list[tuple[str, datetime, datetime]],
        params: dict[str, Any] | None = None,
    ) -> list[str]:
        """Record runs that are already over and succeeded, (target, started, finished) each,
        in one transaction (a model run's up-to-date models): their ids."""
        if not entries:
            return []
        stored = _json_roundtrip(params or {}, "params")
        rows = [
            {
                "run_id": uuid.uuid4().hex,
                "kind": kind,
                "target": target,
                "status": "success",
                "started_at": _utc(started, "started_at"),
                "finished_at": _utc(finished, "finished_at"),
                "params": stored,
            }
            for target, started, finished in entries
        ]
        with self._guard("record_finished_runs"), self._begin(write=True) as conn:
            conn.execute(insert(runs_t), rows)
        return [str(row["run_id"]) for row in rows]

    def runs(
        self,
        *,
        limit: int = 50,
        kind: str | None = None,
        target: str | None = None,
        status: str | None = None,
    ) -> list[RunRecord]:
        """Recent runs, newest first, optionally of one kind, target and/or status."""
        query = select(runs_t).order_by(runs_t.c.started_at.desc(), runs_t.c.id.desc())
        if kind is not None:
            query = query.where(runs_t.c.kind == kind)
        if target is not None:
            query = query.where(runs_t.c.target == target)
        if status is not None:
            query = query.where(runs_t.c.status == status)
        with self._guard("runs"), self._begin() as conn:
            return [run_record(row) for row in conn.execute(query.limit(limit)).mappings()]

    # -- lineage ---------------------------------------------------------------------------

    def replace_lineage(self, table: str, edges: Iterable[LineageEdge | Mapping[str, Any]]) -> None:
        """Make `edges` the column lineage of `table` (every edge's downstream), atomically."""
        given = list(edges)  # the write may be retried: read the edges once
        self._write_retrying(
            "replace_lineage", lambda conn: lineage_store.replace_lineage(conn, table, given)
        )

    def lineage_edges(
        self, *, downstream: str | None = None, upstream: str | None = None
    ) -> list[LineageEdge]:
        """Lineage edges into `downstream` and/or out of `upstream` (all if neither), sorted."""
        with self._guard("lineage_edges"), self._begin() as conn:
            return lineage_store.lineage_edges(conn, downstream=downstream, upstream=upstream)

    # -- quality checks --------------------------------------------------------------------

    def record_check_results(self, results: list[CheckResult], *, run_id: str | None) -> None:
        """Store what one audit's checks found (in the run `run_id`, if any)."""
        with self._guard("record_check_results"), self._begin(write=True) as conn:
            quality.record(conn, results, run_id)

    def latest_check_results(self, table: str | None = None) -> list[CheckResult]:
        """The latest result of each check, of one table or of all, by table then check."""
        with self._guard("latest_check_results"), self._begin() as conn:
            return quality.latest(conn, table)

    # -- plumbing --------------------------------------------------------------------------

    def _write_retrying(self, action: str, work: Callable[[Connection], _T]) -> _T:
        """Run `work` in a write transaction; again if it lost a create/insert race."""
        with self._guard(action):
            for attempt in range(1, _RACE_RETRIES + 1):
                try:
                    with self._begin(write=True) as conn:
                        return work(conn)
                except DBAPIError as exc:
                    # Another process created the same row or table first; a new try sees it
                    # (not inside `together`, whose transaction the error ends).
                    inside = getattr(self._local, "conn", None) is not None
                    if attempt == _RACE_RETRIES or not _is_race(exc) or inside:
                        raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    @contextmanager
    def together(self) -> Iterator[None]:
        """Make the calls inside (on this thread) one write transaction: all or none, and
        one commit rather than one each."""
        if getattr(self._local, "conn", None) is not None:
            yield  # already inside one
            return
        with self._guard("together"), self._begin(write=True) as conn:
            self._local.conn = conn
            try:
                yield
            finally:
                self._local.conn = None

    @contextmanager
    def _begin(self, *, write: bool = False) -> Iterator[Connection]:
        shared = getattr(self._local, "conn", None)
        if shared is not None:  # inside `together`
            yield shared
            return
        if write and self._writes is not None:
            # SQLite takes one writer at a time: this process's writers queue here, where
            # they are woken as soon as the lock is free, rather than in SQLite's busy
            # handler, which sleeps a millisecond and more at each try.
            with self._writes, self._begin_now(write=write) as conn:
                yield conn
            return
        with self._begin_now(write=write) as conn:
            yield conn

    @contextmanager
    def _begin_now(self, *, write: bool) -> Iterator[Connection]:
        try:
            conn = self._engine.connect()
        except SQLAlchemyError as exc:
            raise MetastoreError(
                f"cannot reach metastore at {self._masked}: {self._reason(exc)}",
                hint=_unreachable_hint(self._url),
            ) from exc
        with conn:
            if write:
                conn.execution_options(**{_WRITE: True})
            with conn.begin():
                yield conn

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        """Turn SQLAlchemy/driver errors into `MetastoreError` at the API boundary."""
        try:
            yield
        except SQLAlchemyError as exc:
            reason = self._reason(exc)
            missing = "no such table" in reason or "does not exist" in reason
            raise MetastoreError(
                f"metastore {action} failed at {self._masked}: {reason}",
                hint="run `Metastore.upgrade()` (opening the project does it)" if missing else None,
            ) from exc

    def _reason(self, exc: SQLAlchemyError) -> str:
        reason = str(exc.orig) if isinstance(exc, DBAPIError) else str(exc)
        reason = " ".join(reason.split())
        # Drivers do not echo passwords today; this keeps it that way if one ever does.
        password = self._url.password
        if password:
            for form in {str(password), quote(str(password), safe="")}:
                reason = reason.replace(form, "***")
        return reason


def _create_parent_folder(url: URL, masked: str) -> None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MetastoreError(f"cannot create the folder for {masked}: {exc}") from exc


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    # Take BEGIN away from sqlite3, which skips it for SELECT and DDL (see _sqlite_on_begin).
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    # Wait for other processes' locks instead of failing at once.
    cursor.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_TIMEOUT_MS}")
    # Readers and one writer proceed together across processes. Switching a new database
    # to WAL takes a lock the busy timeout does not wait for: retry while others connect.
    for attempt in range(200):
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc).lower() or attempt == 199:
                raise
            time.sleep(0.05)
    # In WAL mode, NORMAL loses no committed transaction when a process dies (only, at
    # worst, the last ones on a power cut) and spares an fsync per transaction. The Delta
    # log is the truth the metastore is rebuilt from, so that trade is the usual one.
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    # Writers take the write lock up front: upgrading a read lock later fails without waiting.
    write = conn.get_execution_options().get(_WRITE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _unreachable_hint(url: URL) -> str:
    if url.get_backend_name() == "sqlite":
        return "check that the folder of the database file exists and is writable"
    return (
        "check that the server is running and that `metastore` in lakebed.yml "
        "(or LAKEBED_METASTORE) points at it"
    )


def _is_race(exc: DBAPIError) -> bool:
    return isinstance(exc, IntegrityError) or "already exists" in str(exc.orig).lower()
