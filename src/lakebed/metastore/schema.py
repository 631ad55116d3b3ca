"""The metastore's tables as they are after the latest migration, and the records read from them.

Queries use these definitions; `migrations.py` changes the database to match them. When a
migration alters a table, change the definition here in the same commit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    RowMapping,
    String,
    Table,
    Text,
    TypeDecorator,
)

__all__ = [
    "JsonText",
    "RunRecord",
    "SchemaVersion",
    "TableRecord",
    "UtcDateTime",
    "check_results",
    "lineage",
    "metadata",
    "run_record",
    "runs",
    "schema_history",
    "schema_version",
    "schema_version_record",
    "table_record",
    "tables",
]


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite keeps naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the metastore stores aware UTC times")
        value = value.astimezone(UTC)
        # SQLite has no timezone type; a fixed UTC convention keeps values comparable.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class JsonText(TypeDecorator[Any]):
    """JSON kept as TEXT, so SQLite and PostgreSQL store and return the same thing."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else json.dumps(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None else json.loads(value)


metadata = MetaData()

# One row per applied migration; the schema version is the highest one. Never alter this
# table: every lakebed release, old or new, reads it to decide whether it may proceed.
schema_version = Table(
    "lakebed_schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", Text, nullable=False),
    Column("applied_at", UtcDateTime, nullable=False),
)

tables = Table(
    "lakebed_tables",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("layer", String(64), nullable=False),
    Column("path", Text, nullable=False),
    Column("domain", String(255)),
    Column("owner", String(255)),
    Column("description", Text),
    Column("tags", JsonText, nullable=False),
    Column("partition_by", JsonText, nullable=False),
    Column("properties", JsonText, nullable=False),
    Column("version", BigInteger),
    Column("row_count", BigInteger),
    Column("size_bytes", BigInteger),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_write_at", UtcDateTime),
    Column("last_operation", String(64)),
    Index("ix_lakebed_tables_layer", "layer"),
    Index("ix_lakebed_tables_domain", "domain"),
)

schema_history = Table(
    "lakebed_schema_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "table_name",
        String(255),
        ForeignKey("lakebed_tables.name", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("table_version", BigInteger, nullable=False),
    Column("columns", JsonText, nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    Index("ix_lakebed_schema_history_table", "table_name", "table_version"),
)

# What each source has loaded: a cache of the state committed with the bronze data itself.
source_state = Table(
    "lakebed_source_state",
    metadata,
    Column("source", String(255), primary_key=True),
    Column("target", String(255), nullable=False),
    Column("txn_version", BigInteger, nullable=False),
    Column("state", JsonText, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

runs = Table(
    "lakebed_runs",
    metadata,
    # A surrogate key orders runs that start within the same clock tick.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), nullable=False, unique=True),
    Column("kind", String(64), nullable=False),
    Column("target", String(255)),
    Column("status", String(16), nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
    Column("row_count", BigInteger),
    Column("size_bytes", BigInteger),
    Column("error", Text),
    Column("params", JsonText, nullable=False),
    Index("ix_lakebed_runs_started", "started_at"),
    Index("ix_lakebed_runs_kind", "kind", "started_at"),
    Index("ix_lakebed_runs_target", "target", "started_at"),
)

# Column lineage: `downstream_table.downstream_column` is computed from an upstream column.
# Who is building what: a lease expires so a crashed holder never blocks for good.
leases = Table(
    "lakebed_leases",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("holder", String(64), nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
)

lineage = Table(
    "lakebed_lineage",
    metadata,
    Column("downstream_table", String(255), primary_key=True),
    Column("downstream_column", String(255), primary_key=True),
    Column("upstream_table", String(255), primary_key=True),
    Column("upstream_column", String(255), primary_key=True),
    Column("transform", String(32), nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    Index("ix_lakebed_lineage_downstream", "downstream_table"),
    Index("ix_lakebed_lineage_upstream", "upstream_table"),
)

# One row per check per audit: what the quality checks found in the new data of a write.
check_results = Table(
    "lakebed_check_results",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32)),
    Column("table_name", String(255), nullable=False),
    Column("check_name", Text, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("failing_rows", BigInteger, nullable=False),
    Column("total_rows", BigInteger, nullable=False),
    Column("message", Text, nullable=False),
    Column("checked_at", UtcDateTime, nullable=False),
    Column("table_version", BigInteger),  # checks of a committed table version (v6)
    Column("check_digest", String(64)),  # a hash of the check's definition (v6)
    Index("ix_lakebed_check_results_table", "table_name", "checked_at"),
)


# Catalog property holding a view's SELECT.
VIEW_PROPERTY = "lakebed.view"


@dataclass(frozen=True)
class TableRecord:
    """A catalog entry for one lakehouse table."""

    name: str
    layer: str
    path: str
    domain: str | None
    owner: str | None
    description: str | None
    tags: list[str]
    partition_by: list[str]
    properties: dict[str, str]
    version: int | None
    row_count: int | None
    size_bytes: int | None
    created_at: datetime
    last_write_at: datetime | None
    last_operation: str | None

    @property
    def view_sql(self) -> str | None:
        """The SELECT of a view (None for a table)."""
        return self.properties.get(VIEW_PROPERTY)


@dataclass(frozen=True)
class SchemaVersion:
    """The columns of a table from the Delta version where they first appeared."""

    table: str
    table_version: int
    columns: list[dict[str, Any]]
    recorded_at: datetime


@dataclass(frozen=True)
class RunRecord:
    """One pipeline run: what ran, on what, how it ended."""

    run_id: str
    kind: str
    target: str | None
    status: str
    started_at: datetime
    finished_at: datetime | None
    rows: int | None
    bytes: int | None
    error: str | None
    params: dict[str, Any]


def table_record(row: RowMapping) -> TableRecord:
    """A `tables` row as a `TableRecord`."""
    return TableRecord(
        name=row["name"],
        layer=row["layer"],
        path=row["path"],
        domain=row["domain"],
        owner=row["owner"],
        description=row["description"],
        tags=row["tags"],
        partition_by=row["partition_by"],
        properties=row["properties"],
        version=row["version"],
        row_count=row["row_count"],
        size_bytes=row["size_bytes"],
        created_at=row["created_at"],
        last_write_at=row["last_write_at"],
        last_operation=row["last_operation"],
    )


def schema_version_record(row: RowMapping) -> SchemaVersion:
    """A `schema_history` row as a `SchemaVersion`."""
    return SchemaVersion(
        table=row["table_name"],
        table_version=row["table_version"],
        columns=row["columns"],
        recorded_at=row["recorded_at"],
    )


def run_record(row: RowMapping) -> RunRecord:
    """A `runs` row as a `RunRecord`."""
    return RunRecord(
        run_id=row["run_id"],
        kind=row["kind"],
        target=row["target"],
        status=row["status"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        rows=row["row_count"],
        bytes=row["size_bytes"],
        error=row["error"],
        params=row["params"],
    )
