"""Ordered, append-only migrations of the metastore schema, and the code that applies them.

To change the schema: append `Migration(N + 1, "what changes", _vN_plus_1)` to `MIGRATIONS`,
write `_vN_plus_1(conn)` with the DDL/data changes (`add_column` helps), and update
`schema.py` to match (tests/metastore/test_migrations.py checks that they agree). Never
edit an applied migration: databases in the field have run it.
Each migration runs inside the upgrade transaction, together with its version row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.schema import CreateColumn

from lakebed.errors import MetastoreError
from lakebed.metastore.schema import JsonText, UtcDateTime
from lakebed.metastore.schema import schema_version as version_t

__all__ = [
    "MIGRATIONS",
    "Migration",
    "add_column",
    "apply_pending",
    "current_version",
    "latest_version",
]

# Any constant works as long as every lakebed process uses the same one.
_PG_UPGRADE_LOCK = 0x6C616B65626564


@dataclass(frozen=True)
class Migration:
    """One schema step: `apply` moves a database from `version - 1` to `version`."""

    version: int
    description: str
    apply: Callable[[Connection], None]


def add_column(conn: Connection, table: str, column: Column[Any]) -> None:
    """`ALTER TABLE table ADD COLUMN column`, rendered for the connection's backend."""
    quoted = conn.dialect.identifier_preparer.quote(table)
    ddl = CreateColumn(column).compile(dialect=conn.dialect)
    conn.exec_driver_sql(f"ALTER TABLE {quoted} ADD COLUMN {ddl}")


def _v1_catalog(conn: Connection) -> None:
    # Spelled out rather than taken from schema.py: this must create the version-1 tables
    # forever, while schema.py moves on with later migrations.
    md = MetaData()
    Table(
        "lakebed_tables",
        md,
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
    Table(
        "lakebed_schema_history",
        md,
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
    Table(
        "lakebed_runs",
        md,
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
    md.create_all(conn)


def _v2_source_state(conn: Connection) -> None:
    md = MetaData()
    Table(
        "lakebed_source_state",
        md,
        Column("source", String(255), primary_key=True),
        Column("target", String(255), nullable=False),
        Column("txn_version", BigInteger, nullable=False),
        Column("state", JsonText, nullable=False),
        Column("updated_at", UtcDateTime, nullable=False),
    )
    md.create_all(conn)


def _v3_check_results(conn: Connection) -> None:
    md = MetaData()
    Table(
        "lakebed_check_results",
        md,
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
        Index("ix_lakebed_check_results_table", "table_name", "checked_at"),
    )
    md.create_all(conn)


def _v4_lineage(conn: Connection) -> None:
    md = MetaData()
    Table(
        "lakebed_lineage",
        md,
        Column("downstream_table", String(255), primary_key=True),
        Column("downstream_column", String(255), primary_key=True),
        Column("upstream_table", String(255), primary_key=True),
        Column("upstream_column", String(255), primary_key=True),
        Column("transform", String(32), nullable=False),
        Column("recorded_at", UtcDateTime, nullable=False),
        Index("ix_lakebed_lineage_downstream", "downstream_table"),
        Index("ix_lakebed_lineage_upstream", "upstream_table"),
    )
    md.create_all(conn)


def _v5_leases(conn: Connection) -> None:
    md = MetaData()
    Table(
        "lakebed_leases",
        md,
        Column("name", String(255), primary_key=True),
        Column("holder", String(64), nullable=False),
        Column("expires_at", UtcDateTime, nullable=False),
    )
    md.create_all(conn)


def _v6_checked_versions(conn: Connection) -> None:
    add_column(conn, "lakebed_check_results", Column("table_version", BigInteger))
    add_column(conn, "lakebed_check_results", Column("check_digest", String(64)))


MIGRATIONS: list[Migration] = [
    Migration(1, "catalog tables, schema history and run log", _v1_catalog),
    Migration(
        2, "ingestion progress per source (a cache of what bronze commits hold)", _v2_source_state
    ),
    Migration(3, "quality check results", _v3_check_results),
    Migration(4, "column lineage edges", _v4_lineage),
    Migration(5, "leases: one process builds a model at a time", _v5_leases),
    Migration(
        6, "the table version and the check definition each result judged", _v6_checked_versions
    ),
]


def latest_version() -> int:
    """The schema version a database has once every migration has run."""
    return MIGRATIONS[-1].version if MIGRATIONS else 0


def current_version(conn: Connection) -> int:
    """The schema version of the connected database; 0 before the first upgrade."""
    if not inspect(conn).has_table(version_t.name):
        return 0
    return int(conn.execute(select(func.max(version_t.c.version))).scalar() or 0)


def apply_pending(conn: Connection) -> int:
    """Run the migrations the database lacks, in the caller's transaction; returns the version."""
    if conn.dialect.name == "postgresql":
        # Serialises upgrades across processes; released when the transaction ends.
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_UPGRADE_LOCK})
    version_t.create(conn, checkfirst=True)
    current = current_version(conn)
    if current > latest_version():
        where = conn.engine.url.render_as_string(hide_password=True)
        raise MetastoreError(
            f"the metastore at {where} has schema version {current}, "
            f"newer than this lakebed knows ({latest_version()})",
            hint="upgrade lakebed (pip install -U lakebed) to use this metastore",
        )
    for step in MIGRATIONS:
        if step.version > current:
            step.apply(conn)
            conn.execute(
                insert(version_t).values(
                    version=step.version, description=step.description, applied_at=datetime.now(UTC)
                )
            )
            current = step.version
    return current
