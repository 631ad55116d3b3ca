"""A committed write of a table as the catalog records it: its version, size and rows,
and a new schema version when its columns changed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from lakebed.errors import MetastoreError
from lakebed.metastore.schema import schema_history as history_t
from lakebed.metastore.schema import tables as tables_t


@dataclass(frozen=True)
class Write:
    """A committed write of a table, as the catalog records it."""

    name: str
    version: int
    operation: str
    row_count: int | None
    size_bytes: int | None
    columns: list[dict[str, Any]]
    written_at: datetime | None = None


def record_write(conn: Connection, write: Write, *, dropped_ok: bool = False) -> None:
    at = _now() if write.written_at is None else _utc(write.written_at, "written_at")
    stored_form = _json_roundtrip(write.columns, "columns")
    where = tables_t.c.name == write.name
    # The row lock orders concurrent writers' schema checks on PostgreSQL.
    row = conn.execute(select(tables_t.c.version).where(where).with_for_update()).first()
    if row is None and dropped_ok:
        return
    if row is None:
        raise MetastoreError(
            f"table {write.name} is not in the metastore",
            hint="register it with upsert_table() before recording writes",
        )
    if row.version is not None and write.version < row.version:
        return  # a writer in another process already recorded a later version
    conn.execute(
        update(tables_t)
        .where(where)
        .values(
            version=write.version,
            row_count=write.row_count,
            size_bytes=write.size_bytes,
            last_write_at=at,
            last_operation=write.operation,
        )
    )
    latest = conn.execute(
        select(history_t.c.columns)
        .where(history_t.c.table_name == write.name)
        .order_by(history_t.c.table_version.desc(), history_t.c.id.desc())
        .limit(1)
    ).scalar()
    if latest != stored_form:
        conn.execute(
            insert(history_t).values(
                table_name=write.name,
                table_version=write.version,
                columns=stored_form,
                recorded_at=at,
            )
        )


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None:
        raise MetastoreError(
            f"{what} {value.isoformat()} has no timezone",
            hint="pass an aware datetime, e.g. datetime.now(timezone.utc)",
        )
    return value.astimezone(UTC)


def _json_roundtrip(value: Any, what: str) -> Any:
    """`value` as it will read back from the database, so comparisons match stored data."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise MetastoreError(
            f"{what} cannot be stored as JSON: {exc}", hint="use str, int, float, bool, list, dict"
        ) from exc
