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
from lakebed.process.scan import ScanLayout, file_columns, quote_identifier, scan_sql
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


class DuckDBEngine:
    """One in-process DuckDB database; thread-safe (queries run one at a time)."""

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
        # Per query: the SELECT of each referenced name that is a view (None: a table).
        self._view_sql: dict[TableName, str | None] = {}
        self._view_order: list[TableName] = []
        self._lock = threading.RLock()
        self._con = duckdb.connect(":memory:")
        # Naive timestamps in SQL mean UTC, the same as in file skipping.
        self._con.execute("SET TimeZone = 'UTC'")
        self._con.execute("SET parquet_metadata_cache = true")
        # The CLI owns the terminal: DuckDB's own progress bar would land in query output.
        self._con.execute("SET enable_progress_bar = false")
        if threads:
            self._con.execute(f"SET threads = {int(threads)}")
        if memory_limit:
            self._con.execute(f"SET memory_limit = '{memory_limit}'")
        for layer in LAYERS:
            self._con.execute(f"CREATE SCHEMA IF NOT EXISTS {layer}")
        # Per table version: how to scan it; per view: what it currently reads.
        self._layouts: dict[tuple[str, str, int], ScanLayout] = {}
        self._views: dict[TableName, tuple[str, str, int, tuple[str, ...]]] = {}

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def forget(self, name: TableName) -> None:
        """Drop what the engine keeps about a table (after the table is dropped)."""
        with self._lock:
            self._views.pop(name, None)
            self._con.execute(f"DROP VIEW IF EXISTS {name.layer}.{quote_identifier(name.name)}")

    # -- planning ---------------------------------------------------------------------------

    def _parse(self, query: str) -> exp.Expr | None:
        """The query's syntax tree; None when sqlglot cannot read it but DuckDB may."""
        try:
            statements = _parse_statements(query)
        except ParseError:
            self._raise_duckdb_syntax(query)
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

    def _raise_duckdb_syntax(self, query: str) -> None:
        try:
            self._con.extract_statements(query)
        except duckdb.ParserException as exc:
            raise SqlSyntaxError(str(exc), query=query) from exc
        except duckdb.Error:
            return

    def _view(self, name: TableName) -> str | None:
        if name not in self._view_sql:
            self._view_sql[name] = self._view_of(name)
        return self._view_sql[name]

    def _expand_views(self, names: set[TableName]) -> tuple[set[TableName], list[TableName]]:
        """The tables behind the views among `names`, and those views, dependencies first."""
        tables: set[TableName] = set()
        ordered: list[TableName] = []
        seen: set[TableName] = set()

        def visit(name: TableName) -> None:
            if name in seen:
                return
            seen.add(name)
            sql = self._view(name)
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

    def _referenced(self, tree: exp.Expr | None, query: str) -> dict[TableName, list[Reference]]:
        if tree is not None:
            schemas: dict[TableName, set[str]] = {}

            def columns_of(name: TableName) -> set[str]:
                if name not in self._pinned:
                    return set()  # a view: its rows are not filtered by file statistics
                if name not in schemas:
                    schemas[name] = set(self._pinned[name].schema.names)
                return schemas[name]

            # Pin snapshots before analysing predicates (the analysis needs their schemas).
            names = {n for n in map(table_name_of, tree.find_all(exp.Table)) if n is not None}
            tables, self._view_order = self._expand_views(names)
            self._pin(tables)
            found = references(tree, columns_of)
            refs = {n: r for n, r in found.items() if self._view(n) is None}
            behind_views, _ = self._expand_views({n for n in names if self._view(n) is not None})
            for name in behind_views:
                refs.setdefault(name, []).append([])  # read through a view: all files
            return {n: r for n, r in refs.items() if n in tables}
        # Statements sqlglot cannot analyse: expose every table named in the text.
        known = [TableName.parse(n) for n in self._known_tables()]
        lowered = query.lower()
        tables, self._view_order = self._expand_views({n for n in known if str(n) in lowered})
        self._pin(tables)
        return {name: [[]] for name in tables}

    def _pin(self, names: Iterable[TableName]) -> None:
        known: list[str] | None = None
        for name in sorted(names):
            if name in self._pinned:
                continue
            try:
                self._pinned[name] = self._resolve(name, self._as_of)
            except TableNotFoundError as exc:
                known = known if known is not None else list(self._known_tables())
                raise TableNotFoundError(str(name), known) from exc

    def _layout(self, snapshot: Snapshot) -> ScanLayout:
        key = (snapshot.root, snapshot.table_id, snapshot.version)
        layout = self._layouts.get(key)
        if layout is None:
            if len(self._layouts) > 1024:
                self._layouts.clear()
            layout = self._layouts[key] = ScanLayout.of(self._con, snapshot)
        return layout

    def _create_view(self, name: TableName, snapshot: Snapshot, full: Snapshot) -> None:
        state = (snapshot.root, snapshot.table_id, snapshot.version, tuple(snapshot.paths))
        if self._views.get(name) == state:
            return  # the view already reads exactly these files
        self._views.pop(name, None)
        empty_name = f"__empty_{name.layer}_{name.name}"
        if snapshot.num_files == 0:
            self._con.register(empty_name, snapshot.schema.empty_table())
        layout = self._layout(full)
        missing: frozenset[str] = frozenset()
        for _ in range(2):
            body = scan_sql(snapshot, layout, empty_relation=empty_name, missing_columns=missing)
            view = f"{name.layer}.{quote_identifier(name.name)}"
            try:
                self._con.execute(f"CREATE OR REPLACE VIEW {view} AS {body}")
                self._views[name] = state
                return
            except duckdb.BinderException as exc:
                if missing or not _MISSING_COLUMN.search(str(exc)):
                    raise
                # A column added by schema evolution that no file holds yet.
                in_files = file_columns(self._con, snapshot) | set(snapshot.partition_by)
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
        with self._lock:
            for relation_name, relation in (relations or {}).items():
                self._con.register(relation_name, relation)
            try:
                return self._sql(query, as_of, params)
            finally:
                for relation_name in relations or {}:
                    self._con.unregister(relation_name)

    def _sql(self, query: str, as_of: AsOf | None, params: Sequence[Any] | None) -> QueryResult:
        self._pinned: dict[TableName, Snapshot] = {}
        self._as_of = as_of
        self._view_sql = {}
        self._view_order = []
        tree = self._parse(query)
        refs = self._referenced(tree, query)
        scanned: dict[str, int] = {}
        total: dict[str, int] = {}
        for name, table_refs in refs.items():
            full = self._pinned[name]
            pruned = prune(full, table_refs)
            scanned[str(name)] = pruned.num_files
            total[str(name)] = full.num_files
            try:
                self._create_view(name, pruned, full)
            except duckdb.IOException as exc:
                raise StorageError(
                    f"cannot read the files of {name} version {full.version}: {exc}",
                    table=str(name),
                    hint="vacuum removes the files of old versions; read a newer version",
                ) from exc
            except duckdb.Error as exc:
                raise QueryError(f"cannot scan {name}: {exc}", query=query) from exc
        for view in self._view_order:
            self._views.pop(view, None)  # the name now holds a lakehouse view, not files
            target = f"{view.layer}.{quote_identifier(view.name)}"
            try:
                self._con.execute(f"CREATE OR REPLACE VIEW {target} AS {self._view(view)}")
            except duckdb.Error as exc:
                raise QueryError(f"view {view} does not bind: {exc}", query=query) from exc
        try:
            relation = self._con.sql(query, params=params)
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
        versions = {str(n): s.version for n, s in self._pinned.items()}
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
