"""Quality check results in the metastore: what each check found in each audit of a table.

One row per check per audit, kept as history; `latest_check_results` answers "what is the
status of each check now". The functions take a connection inside the caller's
transaction; `Metastore` wraps them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, cast, get_args

from sqlalchemy import Connection, RowMapping, func, insert, select

from lakebed.errors import MetastoreError
from lakebed.metastore.schema import check_results as results_t

__all__ = ["CHECK_STATUSES", "CheckResult", "CheckStatus", "latest", "record"]

CheckStatus = Literal["pass", "warn", "fail", "error"]
CHECK_STATUSES: tuple[CheckStatus, ...] = get_args(CheckStatus)


@dataclass(frozen=True)
class CheckResult:
    """What one quality check found in the new data of a table.

    `status` is `fail` only for a failed check of severity `fail`; a failed `warn` or `drop`
    check is `warn`; `error` means the check could not be evaluated (`message` says why).
    """

    table: str
    check: str
    kind: str
    severity: str
    status: CheckStatus
    failing_rows: int
    total_rows: int
    message: str
    checked_at: datetime
    # The table version judged, when the checks ran on a committed table (not new rows),
    # and a hash of the check's definition then: a result stands while both are current.
    table_version: int | None = None
    check_digest: str | None = None


def record(conn: Connection, results: list[CheckResult], run_id: str | None) -> None:
    """Insert one audit's results (of the run `run_id`, if any)."""
    rows = [_row(result, run_id) for result in results]
    if rows:
        conn.execute(insert(results_t), rows)


def latest(conn: Connection, table: str | None) -> list[CheckResult]:
    """The latest result of each (table, check), by table and then the order checks ran."""
    rank = func.row_number().over(
        partition_by=(results_t.c.table_name, results_t.c.check_name),
        order_by=(results_t.c.checked_at.desc(), results_t.c.id.desc()),
    )
    ranked = select(results_t, rank.label("rank"))
    if table is not None:
        ranked = ranked.where(results_t.c.table_name == table)
    newest = ranked.subquery()
    query = select(newest).where(newest.c.rank == 1).order_by(newest.c.table_name, newest.c.id)
    return [_result(row) for row in conn.execute(query).mappings()]


def _row(result: CheckResult, run_id: str | None) -> dict[str, object]:
    if result.status not in CHECK_STATUSES:
        raise MetastoreError(
            f"check {result.check} on {result.table} has status {result.status!r}",
            hint=f"use one of {', '.join(CHECK_STATUSES)}",
        )
    if result.checked_at.tzinfo is None:
        raise MetastoreError(
            f"check {result.check} on {result.table}: checked_at has no timezone",
            hint="pass an aware datetime, e.g. datetime.now(timezone.utc)",
        )
    return {
        "run_id": run_id,
        "table_name": result.table,
        "check_name": result.check,
        "kind": result.kind,
        "severity": result.severity,
        "status": result.status,
        "failing_rows": result.failing_rows,
        "total_rows": result.total_rows,
        "message": result.message,
        "checked_at": result.checked_at.astimezone(UTC),
        "table_version": result.table_version,
        "check_digest": result.check_digest,
    }


def _result(row: RowMapping) -> CheckResult:
    return CheckResult(
        table=row["table_name"],
        check=row["check_name"],
        kind=row["kind"],
        severity=row["severity"],
        status=cast(CheckStatus, row["status"]),
        failing_rows=row["failing_rows"],
        total_rows=row["total_rows"],
        message=row["message"],
        checked_at=row["checked_at"],
        table_version=row["table_version"],
        check_digest=row["check_digest"],
    )
