"""The lakehouse facade: one project folder's tables, catalog and SQL engine together."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast

import pyarrow as pa

from lakebed.bus import Bus, Record, open_bus
from lakebed.bus.records import encode_records
from lakebed.config import CONFIG_FILE, STATE_DIR, ProjectConfig, default_config_text, load_config
from lakebed.conflicts import refuse_model_table
from lakebed.errors import (
    ConfigError,
    LakebedError,
    StorageError,
    TableNotFoundError,
)
from lakebed.ingest import (
    IngestRun,
    IngestSummary,
    SourceSpec,
    load_sources,
    rewind_state,
    source_named,
    source_state,
)
from lakebed.lakehouse_models import ModelsMixin
from lakebed.metastore import Metastore, SchemaVersion, TableRecord
from lakebed.metastore.deferred import Deferred
from lakebed.metastore.lineage_store import WHOLE_TABLE, LineageEdge
from lakebed.metastore.schema import VIEW_PROPERTY
from lakebed.metastore.table_writes import Write
from lakebed.process import DuckDBEngine, QueryResult
from lakebed.process.stream_metrics import PipelineMetrics, read_status
from lakebed.process.stream_runner import run_pipelines
from lakebed.process.stream_spec import PipelineSpec, load_pipelines, pipelines_named
from lakebed.storage import (
    LAYERS,
    AsOf,
    DeltaStore,
    Snapshot,
    Table,
    TableName,
    WriteResult,
    columns_of,
    to_arrow,
)

PROJECT_ENV = "LAKEBED_PROJECT"
# Catalog properties holding column descriptions: `lakebed.column.<name>`.
COLUMN_PROPERTY = "lakebed.column."


def project_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The project folder: `path`, else $LAKEBED_PROJECT, else the current folder."""
    chosen = path if path is not None else os.environ.get(PROJECT_ENV) or "."
    return Path(chosen).expanduser().resolve()


def init_project(path: str | os.PathLike[str], *, name: str | None = None) -> Path:
    """Write a new project folder (lakebed.yml, layer folders); refuse to overwrite one."""
    root = Path(path).expanduser().resolve()
    config_path = root / CONFIG_FILE
    if config_path.exists():
        raise ConfigError(
            "a project already exists here", file=str(config_path), hint="open it instead"
        )
    root.mkdir(parents=True, exist_ok=True)
    config_path.write_text(default_config_text(name or root.name), encoding="utf-8")
    (root / ".gitignore").write_text(f"{STATE_DIR}/\nlakehouse/\n", encoding="utf-8")
    for folder in ("models/bronze", "models/silver", "models/gold"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    Lakehouse(root).close()
    return root


class Lakehouse(ModelsMixin):
    """A project's lakehouse: `sql()` over snapshots, `table()` handles, the catalog."""

    def __init__(self, root: str | os.PathLike[str], config: ProjectConfig | None = None):
        self.root = Path(root).expanduser().resolve()
        self.config = config if config is not None else load_config(self.root)
        storage = self.config.storage
        self.storage_root = storage if "://" in storage else str((self.root / storage).resolve())
        self.state_dir = self.root / STATE_DIR
        self.metastore = Metastore.for_project(self.state_dir, self.config.metastore)
        self.storage = DeltaStore(self.storage_root, on_commit=self._record_commit)
        self._handles: dict[TableName, Table] = {}
        self._snapshots: dict[TableName, Snapshot] = {}
        # Tables known to be in the catalog: a run opens and commits to a dozen tables, and
        # asking the metastore each time costs a query (only this process drops entries).
        self._catalogued: set[TableName] = set()
        self._lock = threading.RLock()
        self._catalog_writes = Deferred(self._record_writes)
        self.engine = DuckDBEngine(self._snapshot, self._table_names, view_sql=self.view_sql)
        self._sources: dict[str, SourceSpec] | None = None
        self._pipelines: dict[str, PipelineSpec] | None = None
        self._bus: Bus | None = None
        if self.config.sources:
            self.sources()  # validate every source's options when the project opens

    # -- context management -----------------------------------------------------------------

    def close(self) -> None:
        if self._bus is not None:
            self._bus.close()
        self.engine.close()
        self.metastore.close()

    def __enter__(self) -> Lakehouse:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Lakehouse({str(self.root)!r})"

    # -- catalog ----------------------------------------------------------------------------

    def views(self) -> dict[TableName, str]:
        """The lakehouse views (models materialized as `view`): name → SELECT."""
        return {
            TableName.parse(record.name): record.view_sql
            for record in self.metastore.list_tables()
            if record.view_sql is not None
        }

    def view_sql(self, name: TableName) -> str | None:
        """The SELECT of a view, or None for a table (a table handle already open costs
        no lookup: queries ask this for every name they read)."""
        with self._lock:
            if name in self._handles:
                return None
        if "://" not in self.storage.root and self.storage.exists(name):
            return None  # a table on local disk, for a stat (no view can take its name)
        record = self.metastore.get_table(str(name))
        return None if record is None else record.view_sql

    def register_view(
        self,
        name: str | TableName,
        sql: str,
        *,
        description: str | None = None,
        owner: str | None = None,
        domain: str | None = None,
        tags: list[str] | None = None,
    ) -> TableRecord:
        """Enter a view in the catalog: queries read it as `layer.name`, computed each time."""
        table_name = TableName.parse(name)
        if self.storage.exists(table_name):
            raise StorageError(
                f"{table_name} is a table; a view cannot take its name",
                table=str(table_name),
                hint="drop the table first, or give the view another name",
            )
        self.sql(f"select * from ({sql}) as __lakebed_view limit 0")  # it must bind
        return self.metastore.upsert_table(
            str(table_name),
            layer=table_name.layer,
            path="",
            domain=domain,
            owner=owner,
            description=description,
            tags=tags,
            properties={VIEW_PROPERTY: sql},
        )

    def describe_table(
        self,
        name: str | TableName,
        *,
        description: str | None = None,
        owner: str | None = None,
        domain: str | None = None,
        tags: list[str] | None = None,
        columns: dict[str, str] | None = None,
    ) -> None:
        """Bring a table's catalog entry to what is declared of it (a model's settings):
        each of these given replaces the one stored, `columns` (what each column means,
        for `lakebed describe`) all of them; written only when something differs."""
        record = self.metastore.get_table(str(TableName.parse(name)))
        if record is None:
            return
        owner = self._owner(owner, domain)
        properties = None
        if columns:
            kept = {k: v for k, v in record.properties.items() if not k.startswith(COLUMN_PROPERTY)}
            properties = kept | {f"{COLUMN_PROPERTY}{c}": d for c, d in columns.items()}
        wanted: dict[str, Any] = {
            "description": description,
            "owner": owner,
            "domain": domain,
            "tags": tags,
            "properties": properties,
        }
        changes = {k: v for k, v in wanted.items() if v is not None and v != getattr(record, k)}
        if changes:
            self.metastore.upsert_table(
                record.name, layer=record.layer, path=record.path, **changes
            )

    def _table_names(self) -> list[str]:
        return self.metastore.table_names()

    def _record_commit(self, table: Table, result: WriteResult) -> None:
        with self._lock:
            # The committing handle has the table open at this version: later reads use it.
            self._handles.setdefault(table.name, table)
        self._ensure_catalogued(table)
        if result.operation == "RESTORE" and "restored_version" in result.metrics:
            for spec in self.sources().values() if self.config.sources else ():
                if spec.target == table.name:
                    rewind_state(self, spec, int(result.metrics["restored_version"]))
        self._catalog_writes.submit((table, result))

    def _record_writes(self, commits: Sequence[tuple[Table, WriteResult]]) -> None:
        writes: list[Write] = []
        for table, result in commits:
            name, operation = str(table.name), result.operation
            if result.after is not None:  # the write knows what it left
                rows, size, schema = result.after
                writes.append(
                    Write(name, result.version, operation, rows, size, columns_of(schema))
                )
                continue
            try:
                snapshot = table.snapshot()  # the latest: a later commit records its own
            except TableNotFoundError:
                continue  # dropped since its commit
            with self._lock:
                self._snapshots[table.name] = snapshot
            columns = columns_of(snapshot.schema)
            size = snapshot.size_bytes
            writes.append(
                Write(name, snapshot.version, operation, snapshot.num_rows, size, columns)
            )
        self.metastore.record_writes(writes, dropped_ok=True)

    def deferring_catalog_writes(self) -> AbstractContextManager[None]:
        """Record commits in the catalog when this ends, together (a run's)."""
        return self._catalog_writes.deferring()

    def flush_catalog_writes(self) -> None:
        """Record the commits deferred so far."""
        self._catalog_writes.flush()

    def _owner(self, owner: str | None, domain: str | None) -> str | None:
        """The owner given, else the owner of the declared domain a table is in."""
        if owner is None and domain is not None and domain in self.config.domains:
            return self.config.domains[domain].owner
        return owner

    def _register(
        self,
        table: Table,
        *,
        domain: str | None = None,
        owner: str | None = None,
        description: str | None = None,
        tags: list[str] | None = None,
    ) -> TableRecord:
        owner = self._owner(owner, domain)
        record = self.metastore.upsert_table(
            str(table.name),
            layer=table.name.layer,
            path=table.path,
            domain=domain,
            owner=owner,
            description=description,
            tags=tags,
            partition_by=table.partition_by,
            properties=table.properties(),
        )
        with self._lock:
            self._catalogued.add(table.name)
        return record

    def tables(self, layer: str | None = None) -> list[TableRecord]:
        """The catalog: every table with its owner, description, size and last write."""
        if layer is not None and layer not in LAYERS:
            raise StorageError(f"unknown layer {layer!r}", hint=f"layers are {', '.join(LAYERS)}")
        return self.metastore.list_tables(layer)

    def describe(self, name: str) -> TableRecord:
        """The catalog entry of one table or view."""
        record = self.metastore.get_table(str(TableName.parse(name)))
        if record is not None and VIEW_PROPERTY in record.properties:
            return record  # a view
        table = self.table(name)  # enters a table found on disk in the catalog
        record = record or self.metastore.get_table(str(table.name))
        return record if record is not None else self._register(table)

    def schema(self, name: str) -> pa.Schema:
        """The columns of a table, or of a view (as its SELECT returns them now)."""
        table_name = TableName.parse(name)
        if not self.storage.exists(table_name) and self.view_sql(table_name) is not None:
            return self.sql(f"select * from {table_name} limit 0").arrow().schema
        return self.table(table_name).schema()

    def schema_history(self, name: str) -> list[SchemaVersion]:
        """The schemas a table has had, oldest first, with the version where each appeared
        (none for a view)."""
        return self.metastore.schema_history(self.describe(name).name)

    # -- ingestion --------------------------------------------------------------------------

    def sources(self) -> dict[str, SourceSpec]:
        """The sources declared in lakebed.yml, validated (connector options included)."""
        if self._sources is None:
            self._sources = load_sources(self.config.sources, self.root)
        return self._sources

    def ingest(
        self,
        name: str,
        *,
        report: Callable[[str, int, int | None], None] | None = None,
    ) -> IngestSummary:
        """Load what is new in one source into its bronze table, exactly once.

        `report(unit, done, total)` is called as the connector reads files, pages or rows.
        """
        spec = source_named(self.sources(), name)
        refuse_model_table(self.root, spec.target, f"source {name!r}")
        summary = IngestRun(self, spec, report).run()
        self._record_feeds(spec.target)
        return summary

    def _record_feeds(self, table: TableName) -> None:
        """The table lineage of a table loaded from outside: the sources and topics that
        feed it (`source:<name>`, `topic:<name>`), so lineage reaches past bronze."""
        feeds = [f"source:{n}" for n, s in self.sources().items() if s.target == table]
        with contextlib.suppress(LakebedError):  # a broken pipeline stops streams, not loads
            feeds += [f"topic:{p.topic}" for p in self.pipelines().values() if p.target == table]
        edges = [LineageEdge(str(table), WHOLE_TABLE, f, WHOLE_TABLE, "table") for f in feeds]
        self.metastore.replace_lineage(str(table), edges)

    def source_state(self, name: str) -> Mapping[str, Any]:
        """What a source has loaded so far (manifest, cursor), as committed."""
        return source_state(self, self.sources()[name])

    # -- streams ----------------------------------------------------------------------------

    @property
    def bus(self) -> Bus:
        """The event bus of `bus:` in lakebed.yml (the embedded log by default)."""
        if self._bus is None:
            self._bus = open_bus(self.config.bus, self.root)
        return self._bus

    def produce(
        self,
        topic: str,
        records: Iterable[Mapping[str, Any]] | Iterable[Record],
        *,
        key: str | None = None,
    ) -> int:
        """Send events to a topic as JSON (or ready-made `Record`s); returns how many were
        acknowledged. `key` names the field whose value keys (and so partitions) each one."""
        items = list(records)
        encoded = (
            cast(list[Record], items)
            if all(isinstance(item, Record) for item in items)
            else encode_records(cast(list[Mapping[str, Any]], items), key)
        )
        producer = self.bus.producer()
        try:
            producer.produce(topic, encoded)
            producer.flush()
        finally:
            producer.close()
        return len(encoded)

    def pipelines(self) -> dict[str, PipelineSpec]:
        """The stream pipelines declared in lakebed.yml, validated (SQL parsed)."""
        if self._pipelines is None:
            self._pipelines = load_pipelines(self.config.pipelines, self.root)
        return self._pipelines

    def stream(
        self,
        names: Sequence[str] | None = None,
        *,
        stop: threading.Event | None = None,
        until_caught_up: bool = False,
    ) -> list[PipelineMetrics]:
        """Run pipelines (default: all) until `stop` is set; with `until_caught_up`, return
        once each has processed everything on its topic."""
        specs = pipelines_named(self.pipelines(), list(names) if names else None)
        for spec in specs:
            refuse_model_table(self.root, spec.target, f"pipeline {spec.name!r}")
            self._record_feeds(spec.target)
        return run_pipelines(
            self, specs, self.bus, stop or threading.Event(), until_caught_up=until_caught_up
        )

    def stream_status(self) -> list[PipelineMetrics]:
        """What each pipeline last reported (from any process), with lag recomputed now."""
        statuses = read_status(self.state_dir)
        for status in statuses:
            try:
                ends = self.bus.end_offsets(status.topic)
            except LakebedError:
                continue
            status.lag = {
                str(p): max(0, end - status.positions.get(str(p), 0)) for p, end in ends.items()
            }
        return statuses

    # -- tables -----------------------------------------------------------------------------

    def table(self, name: str | TableName) -> Table:
        """A handle on an existing table; unknown names raise with the closest matches."""
        table_name = TableName.parse(name)
        with self._lock:
            handle = self._handles.get(table_name)
            if handle is None:
                if not self.storage.exists(table_name):
                    if self.view_sql(table_name) is not None:
                        raise StorageError(
                            f"{table_name} is a view, not a table: it has no files, versions "
                            "or history",
                            table=str(table_name),
                            hint="query it with `lakebed sql`; `lakebed describe` shows it",
                        )
                    raise TableNotFoundError(str(table_name), self._table_names())
                handle = self.storage.table(table_name)
                self._handles[table_name] = handle
        self._ensure_catalogued(handle)
        return handle

    def _ensure_catalogued(self, table: Table) -> None:
        """Enter a table found on disk in the catalog, unless it is there already."""
        with self._lock:
            if table.name in self._catalogued:
                return
        if self.metastore.get_table(str(table.name)) is None:
            self._register(table)  # which enters it in _catalogued
            return
        with self._lock:
            self._catalogued.add(table.name)

    def create_table(
        self,
        name: str | TableName,
        schema: pa.Schema,
        *,
        partition_by: list[str] | None = None,
        description: str | None = None,
        owner: str | None = None,
        domain: str | None = None,
        tags: list[str] | None = None,
        properties: dict[str, str] | None = None,
        exist_ok: bool = False,
    ) -> Table:
        """Create an empty Delta table and enter it in the catalog."""
        table_name = TableName.parse(name)
        with self._lock:
            known = self._handles.get(table_name) if exist_ok else None
        if known is not None and self.storage.exists(table_name):
            self._register(known, domain=domain, owner=owner, description=description, tags=tags)
            return known
        table = self.storage.create(
            table_name,
            schema,
            partition_by=partition_by,
            description=description,
            properties=properties,
            exist_ok=exist_ok,
        )
        self._register(table, domain=domain, owner=owner, description=description, tags=tags)
        with self._lock:
            self._handles[table_name] = table
        return table

    def write(
        self,
        name: str | TableName,
        data: Any,
        *,
        mode: Literal["append", "overwrite", "merge"] = "append",
        keys: list[str] | None = None,
        partition_by: list[str] | None = None,
        description: str | None = None,
        owner: str | None = None,
        domain: str | None = None,
        tags: list[str] | None = None,
    ) -> WriteResult:
        """Write data to a table, creating it (schema from the data) when it is new."""
        table_name = TableName.parse(name)
        if mode == "merge" and not keys:
            raise StorageError("mode='merge' needs keys=[...]", table=str(table_name))
        arrow = to_arrow(data)
        if not self.storage.exists(table_name):
            table = self.create_table(
                table_name,
                arrow.schema,
                partition_by=partition_by,
                description=description,
                owner=owner,
                domain=domain,
                tags=tags,
                exist_ok=True,
            )
        else:
            table = self.table(table_name)
        if mode == "append":
            return table.append(arrow)
        if mode == "overwrite":
            return table.overwrite(arrow)
        return table.merge(arrow, keys or [])

    def drop_table(self, name: str | TableName) -> None:
        """Delete a table, its files, its catalog entry and the lineage recorded into it (a
        view: its catalog entry and lineage)."""
        table_name = TableName.parse(name)
        if self.view_sql(table_name) is None or self.storage.exists(table_name):
            self.storage.drop(table_name)  # a view has no files
        self.metastore.drop_table(str(table_name))
        self.metastore.replace_lineage(str(table_name), [])
        with self._lock:
            self._handles.pop(table_name, None)
            self._snapshots.pop(table_name, None)
            self._catalogued.discard(table_name)
        self.engine.forget(table_name)

    # -- SQL --------------------------------------------------------------------------------

    def _snapshot(self, name: TableName, as_of: AsOf | None) -> Snapshot:
        table = self.table(name)
        if as_of is not None:
            return table.snapshot(as_of)
        version = table.version()
        with self._lock:
            cached = self._snapshots.get(name)
            if cached is not None and cached.version == version:
                return cached
        snapshot = table.snapshot()
        with self._lock:
            self._snapshots[name] = snapshot
        return snapshot

    def sql(
        self,
        query: str,
        *,
        as_of: AsOf | None = None,
        params: list[Any] | None = None,
        relations: Mapping[str, pa.Table] | None = None,
    ) -> QueryResult:
        """Run a read-only SQL query (DuckDB dialect) over one snapshot of each table.

        Tables are named `layer.name`. `as_of` (a version or timestamp) reads every table
        as it was then.
        """
        return self.engine.sql(query, as_of=as_of, params=params, relations=relations)

    def warm(self, tables: Iterable[TableName] = ()) -> None:
        """Prepare the query engine for the queries to come, and their scans of `tables`."""
        self.engine.warm(tables)


def open(path: str | os.PathLike[str] | None = None) -> Lakehouse:
    """Open the lakehouse of a project folder (default: $LAKEBED_PROJECT or the current one)."""
    return Lakehouse(project_dir(path))
