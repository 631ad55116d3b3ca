"""Snapshot SQL over the lakehouse with DuckDB in-process.

Each query sees one committed version of every table it reads: the engine finds the
`layer.name` references (sqlglot), pins a Delta snapshot of each, skips files by their
statistics, and exposes each as a DuckDB view over exactly the live files. The user's SQL
runs unchanged.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from difflib import get_close_matches
from functools import lru_cache
from typing import Any

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from lakebed.errors import QueryError, SqlSyntaxError, StorageError, TableNotFoundError
from lakebed.process.pruning import Reference, prune, references, table_name_of
from lakebed.process.result import QueryResult
from lakebed.process.scan import (
    ScanLayout,
    deleted_positions,
    file_columns,
    quote_identifier,
    scan_sql,
)
from lakebed.storage import LAYERS, AsOf, Snapshot, TableName

# Resolves a table to the snapshot a query reads (latest, or as of a version/time).
SnapshotResolver = Callable[[TableName, AsOf | None], Snapshot]

_READ_ONLY = (exp.Query, exp.Describe, exp.Pivot, exp.Summarize)
_COMMAND_PREFIXES = ("explain", "summarize", "describe", "show", "pragma", "from")
_MISSING_COLUMN = re.compile(r'Referenced column "?([^"]+?)"? not found', re.IGNORECASE)


@lru_cache(maxsize=512)
def _parse_statements(query: str) -> tuple[exp.Expr, ...]:
    # Dashboards repeat the same queries: parse each text once.
    return tuple(s for s in sqlglot.parse(query, read="duckdb") if s is not None)


@dataclass
class _Workspace:
    """A connection of the engine with a catalog of its own for the `layer.name` views, so
    queries on different workspaces run at the same time (the views of one query cannot
    be replaced under it by another's)."""

    con: duckdb.DuckDBPyConnection
    # Per view: the files it reads (root, table id, version, paths).
    views: dict[TableName, tuple[str, str, int, tuple[str, ...]]] = field(default_factory=dict)
    stale: set[TableName] = field(default_factory=set)  # dropped tables: drop their views


@dataclass
class _Query:
    """What one query pinned: a snapshot per table, and the views it reads through."""

    as_of: AsOf | None
    pinned: dict[TableName, Snapshot] = field(default_factory=dict)
    # The SELECT of each referenced name that is a view (None: a table).
    view_sql: dict[TableName, str | None] = field(default_factory=dict)
    view_order: list[TableName] = field(default_factory=list)


class DuckDBEngine:
    """One in-process DuckDB database; thread-safe: concurrent queries run at the same time,
    each on a workspace (connection and view catalog) of its own."""

    def __init__(
        self,
        resolve: SnapshotResolver,
        known_tables: Callable[[], Iterable[str]],
        *,
        threads: int | None = None,
        memory_limit: str | None = None,
        view_sql: Callable[[TableName], str | None] | None = None,
    ) -> None:
        self._resolve = resolve
        self._known_tables = known_tables
        self._view_of = view_sql or (lambda name: None)
        self._lock = threading.RLock()
        self._con = duckdb.connect(":memory:")
        self._session = [
            # Naive timestamps in SQL mean UTC, the same as in file skipping.
            "SET TimeZone = 'UTC'",
            # The CLI owns the terminal: DuckDB's own progress bar would land in query output.
            "SET enable_progress_bar = false",
        ]
        for statement in self._session:
            self._con.execute(statement)
        self._con.execute("SET parquet_metadata_cache = true")
        if threads:
            self._con.execute(f"SET threads = {int(threads)}")
        if memory_limit:
            self._con.execute(f"SET memory_limit = '{memory_limit}'")
        for layer in LAYERS:
            self._con.execute(f"CREATE SCHEMA IF NOT EXISTS {layer}")
        # Per table version: how to scan it (shared by the workspaces).
        self._layouts: dict[tuple[str, str, int], ScanLayout] = {}
        self._workspaces: list[_Workspace] = []
        self._idle: list[_Workspace] = []
        self._closed = False

    def close(self) -> None:
        """Close the database; a query still running finishes first (its workspace closes
        when it is done)."""
        with self._lock:
            self._closed = True
            for workspace in self._idle:
                workspace.con.close()
                self._workspaces.remove(workspace)
            self._idle.clear()
            if not self._workspaces:
                self._con.close()

    def forget(self, name: TableName) -> None:
        """Drop what the engine keeps about a table (after the table is dropped)."""
        with self._lock:
            for workspace in self._workspaces:
                workspace.stale.add(name)

    def warm(self, tables: Iterable[TableName] = ()) -> None:
        """Open a workspace now (a DuckDB cursor with its catalog and schemas), and in it
        the scans of `tables` at their latest versions, so that the queries to come find
        them ready (creating a scan's view reads its files' footers)."""
        workspace = self._acquire()
        try:
            for name in tables:
                snapshot = self._resolve(name, None)
                self._create_view(workspace, name, snapshot, snapshot)
        finally:
            self._release(workspace)

    def _acquire(self) -> _Workspace:
        with self._lock:
            if self._closed:
                raise QueryError("the lakehouse is closed", hint="open it again to query it")
            workspace = self._idle.pop() if self._idle else None
            if workspace is None:
                con = self._con.cursor()
                for statement in self._session:
                    con.execute(statement)
                catalog = f"__lakebed_workspace_{len(self._workspaces)}"
                con.execute(f"ATTACH ':memory:' AS {catalog}")
                con.execute(f"USE {catalog}")
                for layer in LAYERS:
                    con.execute(f"CREATE SCHEMA IF NOT EXISTS {layer}")
                workspace = _Workspace(con)
                self._workspaces.append(workspace)
            stale, workspace.stale = workspace.stale, set()
        for name in stale:
            workspace.views.pop(name, None)
            view = f"{name.layer}.{quote_identifier(name.name)}"
            workspace.con.execute(f"DROP VIEW IF EXISTS {view}")
        return workspace

    def _release(self, workspace: _Workspace) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(workspace)
                return
            workspace.con.close()
            self._workspaces.remove(workspace)
            if not self._workspaces:
                self._con.close()

    # -- planning ---------------------------------------------------------------------------

    def _parse(self, con: duckdb.DuckDBPyConnection, query: str) -> exp.Expr | None:
        """The query's syntax tree; None when sqlglot cannot read it but DuckDB may."""
        try:
            statements = _parse_statements(query)
        except ParseError:
            self._raise_duckdb_syntax(con, query)
            return None
        if len(statements) != 1:
            raise QueryError(
                f"expected one SQL statement, got {len(statements)}",
                query=query,
                hint="run statements one at a time",
            )
        statement = statements[0]
        if isinstance(statement, exp.Command):
            if str(statement.this).lower() in _COMMAND_PREFIXES:
                return None
        elif isinstance(statement, _READ_ONLY):
            tree: exp.Expr = statement
            return tree
        raise QueryError(
            f"lakehouse SQL is read-only; got a {statement.key.upper()} statement",
            query=query,
            hint="write with lh.table('layer.name').append/merge/overwrite/delete/update",
        )

    def _raise_duckdb_syntax(self, con: duckdb.DuckDBPyConnection, query: str) -> None:
        try:
            con.extract_statements(query)
        except duckdb.ParserException as exc:
            raise SqlSyntaxError(str(exc), query=query) from exc
        except duckdb.Error:
            return

    def _view(self, state: _Query, name: TableName) -> str | None:
        if name not in state.view_sql:
            state.view_sql[name] = self._view_of(name)
        return state.view_sql[name]

    def _expand_views(
        self, state: _Query, names: set[TableName]
    ) -> tuple[set[TableName], list[TableName]]:
        """The tables behind the views among `names`, and those views, dependencies first."""
        tables: set[TableName] = set()
        ordered: list[TableName] = []
        seen: set[TableName] = set()

        def visit(name: TableName) -> None:
            if name in seen:
                return
            seen.add(name)
            sql = self._view(state, name)
            if sql is None:
                tables.add(name)
                return
            tree = _parse_statements(sql)[0]
            for inner in map(table_name_of, tree.find_all(exp.Table)):
                if inner is not None:
                    visit(inner)
            ordered.append(name)

        for name in sorted(names):
            visit(name)
        return tables, ordered

    def _referenced(
        self, state: _Query, tree: exp.Expr | None, query: str
    ) -> dict[TableName, list[Reference]]:
        if tree is not None:
            schemas: dict[TableName, set[str]] = {}

            def columns_of(name: TableName) -> set[str]:
                if name not in state.pinned:
                    return set()  # a view: its rows are not filtered by file statistics
                if name not in schemas:
                    schemas[name] = set(state.pinned[name].schema.names)
                return schemas[name]

            # Pin snapshots before analysing predicates (the analysis needs their schemas).
            names = {n for n in map(table_name_of, tree.find_all(exp.Table)) if n is not None}
            tables, state.view_order = self._expand_views(state, names)
            self._pin(state, tables)
            found = references(tree, columns_of)
            refs = {n: r for n, r in found.items() if self._view(state, n) is None}
            behind_views, _ = self._expand_views(
                state, {n for n in names if self._view(state, n) is not None}
            )
            for name in behind_views:
                refs.setdefault(name, []).append([])  # read through a view: all files
            return {n: r for n, r in refs.items() if n in tables}
        # Statements sqlglot cannot analyse: expose every table named in the text.
        known = [TableName.parse(n) for n in self._known_tables()]
        lowered = query.lower()
        tables, state.view_order = self._expand_views(
            state, {n for n in known if str(n) in lowered}
        )
        self._pin(state, tables)
        return {name: [[]] for name in tables}

    def _pin(self, state: _Query, names: Iterable[TableName]) -> None:
        known: list[str] | None = None
        for name in sorted(names):
            if name in state.pinned:
                continue
            try:
                state.pinned[name] = self._resolve(name, state.as_of)
            except TableNotFoundError as exc:
                known = known if known is not None else list(self._known_tables())
                raise TableNotFoundError(str(name), known) from exc

    def _layout(self, con: duckdb.DuckDBPyConnection, snapshot: Snapshot) -> ScanLayout:
        key = (snapshot.root, snapshot.table_id, snapshot.version)
        with self._lock:
            layout = self._layouts.get(key)
        if layout is None:
            layout = ScanLayout.of(con, snapshot)
            with self._lock:
                if len(self._layouts) > 1024:
                    self._layouts.clear()
                self._layouts[key] = layout
        return layout

    def _create_view(
        self, workspace: _Workspace, name: TableName, snapshot: Snapshot, full: Snapshot
    ) -> None:
        state = (snapshot.root, snapshot.table_id, snapshot.version, tuple(snapshot.paths))
        if workspace.views.get(name) == state:
            return  # the view already reads exactly these files
        workspace.views.pop(name, None)
        con = workspace.con
        empty_name = f"__empty_{name.layer}_{name.name}"
        if snapshot.num_files == 0:
            con.register(empty_name, snapshot.schema.empty_table())
        layout = self._layout(con, full)
        # Rows deletion vectors remove: the view anti-joins their positions, registered here.
        deleted_name: str | None = None
        deleted = deleted_positions(snapshot, layout)
        if deleted is not None:
            deleted_name = f"__deleted_{name.layer}_{name.name}"
            con.register(deleted_name, deleted)
        missing: frozenset[str] = frozenset()
        for _ in range(2):
            body = scan_sql(
                snapshot,
                layout,
                empty_relation=empty_name,
                missing_columns=missing,
                deleted_relation=deleted_name,
            )
            view = f"{name.layer}.{quote_identifier(name.name)}"
            try:
                con.execute(f"CREATE OR REPLACE VIEW {view} AS {body}")
                workspace.views[name] = state
                return
            except duckdb.BinderException as exc:
                if missing or not _MISSING_COLUMN.search(str(exc)):
                    raise
                # A column added by schema evolution that no file holds yet.
                in_files = file_columns(con, snapshot) | set(snapshot.partition_by)
                missing = frozenset(set(snapshot.schema.names) - in_files)

    # -- running ----------------------------------------------------------------------------

    def sql(
        self,
        query: str,
        *,
        as_of: AsOf | None = None,
        params: Sequence[Any] | None = None,
        relations: Mapping[str, pa.Table] | None = None,
    ) -> QueryResult:
        """Run a read-only query against one snapshot of each table it references.

        `relations` are extra Arrow tables the query may name (e.g. the changed rows an
        incremental model reads instead of a whole table); they exist for this query only.
        """
        workspace = self._acquire()
        try:
            for relation_name, relation in (relations or {}).items():
                workspace.con.register(relation_name, relation)
            try:
                return self._sql(workspace, query, as_of, params)
            finally:
                for relation_name in relations or {}:
                    workspace.con.unregister(relation_name)
        finally:
            self._release(workspace)

    def _sql(
        self,
        workspace: _Workspace,
        query: str,
        as_of: AsOf | None,
        params: Sequence[Any] | None,
    ) -> QueryResult:
        state = _Query(as_of)
        con = workspace.con
        tree = self._parse(con, query)
        refs = self._referenced(state, tree, query)
        scanned: dict[str, int] = {}
        total: dict[str, int] = {}
        for name, table_refs in refs.items():
            full = state.pinned[name]
            pruned = prune(full, table_refs)
            scanned[str(name)] = pruned.num_files
            total[str(name)] = full.num_files
            try:
                self._create_view(workspace, name, pruned, full)
            except duckdb.IOException as exc:
                raise StorageError(
                    f"cannot read the files of {name} version {full.version}: {exc}",
                    table=str(name),
                    hint="vacuum removes the files of old versions; read a newer version",
                ) from exc
            except duckdb.Error as exc:
                raise QueryError(f"cannot scan {name}: {exc}", query=query) from exc
        for view in state.view_order:
            workspace.views.pop(view, None)  # the name now holds a lakehouse view, not files
            target = f"{view.layer}.{quote_identifier(view.name)}"
            try:
                con.execute(f"CREATE OR REPLACE VIEW {target} AS {self._view(state, view)}")
            except duckdb.Error as exc:
                raise QueryError(f"view {view} does not bind: {exc}", query=query) from exc
        try:
            relation = con.sql(query, params=params)
            table = relation.to_arrow_table() if relation is not None else pa.table({})
        except duckdb.ParserException as exc:
            raise SqlSyntaxError(str(exc), query=query) from exc
        except duckdb.CatalogException as exc:
            raise self._catalog_error(exc, query) from exc
        except duckdb.IOException as exc:
            raise StorageError(
                f"cannot read a data file: {exc}",
                hint="vacuum removes the files of old versions; read a newer version",
            ) from exc
        except duckdb.Error as exc:
            raise QueryError(str(exc), query=query) from exc
        versions = {str(n): s.version for n, s in state.pinned.items()}
        return QueryResult(table, query, versions, scanned, total)

    def _catalog_error(self, exc: duckdb.CatalogException, query: str) -> Exception:
        match = re.search(r"Table with name (\S+) does not exist", str(exc))
        if match is None:
            return QueryError(str(exc), query=query)
        missing = match.group(1).strip("\"'!").lower()
        known = list(self._known_tables())
        by_name = {str(k).split(".", 1)[1]: str(k) for k in known}
        close = get_close_matches(missing, list(by_name), n=3, cutoff=0.6)
        error = TableNotFoundError(missing, known)
        if close:
            error.hint = f"did you mean {', '.join(by_name[c] for c in close)}? "
            error.hint += "lakehouse tables are named layer.name"
            error.args = (f"{error.message}\n  hint: {error.hint}",)
        return error
