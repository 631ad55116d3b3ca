"""Write-audit-publish quality checks: audit new data before it commits.

`parse_checks` (in `check_config`) reads the checks of a model's settings; `audit` runs
them over the new data in a private DuckDB connection where the data is the table `this`:

- `warn`: failures are recorded and everything is published;
- `drop`: failing rows go to quarantine with `_check` and `_reason`; the rest publish;
- `fail`: a failure (or a check that cannot be evaluated) means nothing may be published.

A row check's `max_failing` (a count, or a percentage of the rows judged) tolerates that
many failing rows: within it `fail` only warns and `warn` passes; beyond it `drop` fails.

Example::

    checks = parse_checks([{"not_null": "customer_id"}], table="silver.orders")
    result = audit(new_rows, checks, table="silver.orders")
    result.raise_if_failed()
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lakebed.errors import CheckConfigError, CheckFailedError
from lakebed.govern.check_config import Spec, parse_checks
from lakebed.govern.check_kinds import (
    CHECK_KINDS,
    Check,
    Context,
    EvaluationError,
    RowCheck,
    Severity,
    TableCheck,
)
from lakebed.metastore.checks import CheckResult, CheckStatus

__all__ = [
    "CHECK_KINDS",
    "Audit",
    "Check",
    "CheckResult",
    "Spec",
    "audit",
    "audit_summary",
    "parse_checks",
]

CHECK_COLUMN = "_check"
REASON_COLUMN = "_reason"

# -- auditing -----------------------------------------------------------------------------


@dataclass
class Audit:
    """What the checks made of new data: what to publish, what to quarantine, the results."""

    passed: pa.Table
    quarantined: pa.Table
    results: list[CheckResult]

    @property
    def failed(self) -> bool:
        """A check of severity fail failed (or could not run): nothing may be published."""
        return bool(self.failures)

    @property
    def failures(self) -> list[CheckResult]:
        """The results that block publishing."""
        return blocking(self.results)

    def raise_if_failed(self) -> None:
        """Raise `CheckFailedError` naming the blocking checks, their counts and messages."""
        raise_if_blocking(self.results)


def raise_if_blocking(results: Iterable[CheckResult]) -> None:
    """Raise `CheckFailedError` naming the `blocking` results, their counts and messages."""
    failures = blocking(results)
    if failures:
        raise CheckFailedError(
            failures[0].table,
            {r.check: r.failing_rows for r in failures},
            reasons={r.check: r.message for r in failures},
            unevaluated=any(r.status == "error" for r in failures),
        )


def blocking(results: Iterable[CheckResult]) -> list[CheckResult]:
    """The results that block: checks that failed (of severity fail, or drop beyond their
    `max_failing`), and checks of severity fail or drop that could not run (a drop check
    that cannot judge the rows would let through every row it exists to take out)."""
    return [
        r
        for r in results
        if r.status == "fail" or (r.severity in ("fail", "drop") and r.status == "error")
    ]


def audit(
    data: pa.Table,
    checks: list[Check],
    *,
    table: str,
    lookup: Callable[[str], pa.Table] | None = None,
    now: datetime | None = None,
) -> Audit:
    """Run `checks` over `data` (the new rows of `table`) before it is published.

    `lookup` runs SQL over the lakehouse (relationships read the referenced keys with it);
    `now` (aware) is the time freshness is judged against and results are stamped with.
    """
    if now is not None and now.tzinfo is None:
        raise ValueError(f"now={now!r} has no timezone; pass an aware datetime")
    at = (now or datetime.now(UTC)).astimezone(UTC)
    names = [check.name for check in checks]
    for name in names:
        if names.count(name) > 1:
            raise CheckConfigError(
                "two checks have this name", table=table, check=name, hint="rename one of them"
            )
    for check in checks:
        if not isinstance(check, RowCheck | TableCheck):
            raise TypeError(f"{check!r} is neither a RowCheck nor a TableCheck")
    # Drop checks decide what would be published; every other check judges those rows, so
    # e.g. `unique` passes when a drop check removes the duplicates.
    drop_checks = [c for c in checks if isinstance(c, RowCheck) and c.severity == "drop"]
    results: dict[str, CheckResult] = {}
    with _private_connection(data) as con:
        ctx = Context(con=con, data=data, table=table, now=at, lookup=lookup)
        failing = _failing_rows(ctx, drop_checks)
        for check in drop_checks:
            results[check.name] = _row_result(ctx, check, failing[check.name])
    drops = [
        (check, rows)
        for check in drop_checks
        if isinstance(rows := failing[check.name], np.ndarray)
    ]
    passed, quarantined = _split(data, drops)
    rest = [c for c in checks if c.name not in results]
    with _private_connection(passed) as con:
        ctx = Context(con=con, data=passed, table=table, now=at, lookup=lookup)
        row_checks = [c for c in rest if isinstance(c, RowCheck)]
        failing = _failing_rows(ctx, row_checks)
        for check in rest:
            if isinstance(check, RowCheck):
                results[check.name] = _row_result(ctx, check, failing[check.name])
            elif isinstance(check, TableCheck):
                results[check.name] = _table_result(ctx, check)
    ordered = [results[check.name] for check in checks]
    return Audit(passed=passed, quarantined=quarantined, results=ordered)


def audit_summary(
    rows: int,
    newest: pa.Table,
    checks: list[TableCheck],
    *,
    table: str,
    columns: list[str],
    now: datetime | None = None,
) -> list[CheckResult]:
    """Judge `summarizable` checks of a committed table from its summary alone: its row
    count and `newest`, one row with the newest value of each column they look at (of the
    table's `columns`)."""
    at = (now or datetime.now(UTC)).astimezone(UTC)
    for check in checks:
        if not check.summarizable:
            raise TypeError(f"{check.name} cannot be judged from a summary of {table}")
    with _private_connection(newest) as con:
        ctx = Context(
            con=con, data=newest, table=table, now=at, lookup=None, count=rows, columns=columns
        )
        return [_table_result(ctx, check) for check in checks]


# Row checks read `this` with each row's position, because DuckDB does not keep row order
# through joins and window functions.
_INDEXED = "__lakebed_indexed"
_ROW = "__lakebed_row"


@contextmanager
def _private_connection(data: pa.Table) -> Iterator[duckdb.DuckDBPyConnection]:
    # User SQL (expression, query) sees the new data and nothing else: no files, network,
    # extensions, settings or Python variables.
    con = duckdb.connect(
        ":memory:",
        config={
            "enable_external_access": False,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "python_enable_replacements": False,
        },
    )
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("this", data)
        positions = pa.array(np.arange(data.num_rows, dtype=np.int64))
        con.register(_INDEXED, data.append_column(_ROW, positions))
        con.execute("SET lock_configuration = true")
        yield con
    finally:
        con.close()


# The positions of a check's failing rows, or why they could not be found.
Failing: TypeAlias = "np.ndarray[Any, np.dtype[np.int64]] | str"


def _failing_rows(ctx: Context, checks: list[RowCheck]) -> dict[str, Failing]:
    """Each row check's failing rows: plain checks in one pass, the others one at a time."""
    failing: dict[str, Failing] = {}
    together: list[RowCheck] = []
    for check in checks:
        try:
            for column in check.reads():
                ctx.column(column)
            relations = check.relations(ctx)
        except EvaluationError as exc:
            failing[check.name] = str(exc)
            continue
        if relations:
            failing[check.name] = _alone(ctx, check, relations)
        else:
            together.append(check)
    if together:
        try:
            failing.update(_failing_query(ctx, together))
        except duckdb.Error:
            # One check's SQL is broken: evaluate each alone to tell which.
            for check in together:
                failing[check.name] = _alone(ctx, check, {})
    return failing


def _alone(ctx: Context, check: RowCheck, relations: dict[str, pa.Table]) -> Failing:
    for name, relation in relations.items():
        ctx.con.register(name, relation)
    try:
        return _failing_query(ctx, [check])[check.name]
    except duckdb.Error as exc:
        return " ".join(str(exc).split())
    finally:
        for name in relations:
            ctx.con.unregister(name)


def _failing_query(ctx: Context, checks: list[RowCheck]) -> dict[str, Failing]:
    """One scan of `this` that returns the position and failed checks of each failing row."""
    flags = [f'coalesce(({c.failing_sql()}), false) AS "f{i}"' for i, c in enumerate(checks)]
    any_flag = " OR ".join(f'"f{i}"' for i in range(len(checks)))
    found = ctx.con.sql(
        f"SELECT * FROM (SELECT {_ROW}, {', '.join(flags)} FROM {_INDEXED} AS this) "
        f"WHERE {any_flag}"
    ).to_arrow_table()
    rows = found.column(0).to_numpy()
    return {
        check.name: rows[found.column(i + 1).to_numpy(zero_copy_only=False)]
        for i, check in enumerate(checks)
    }


def _row_result(ctx: Context, check: RowCheck, rows: Failing) -> CheckResult:
    if isinstance(rows, str):
        return _result(ctx, check, "error", 0, f"could not evaluate: {rows}")
    status, message = _row_verdict(check, len(rows), ctx.rows)
    return _result(ctx, check, status, len(rows), message)


def _row_verdict(check: RowCheck, failing: int, total: int) -> tuple[CheckStatus, str]:
    if not failing:
        return "pass", f"all {total:,} rows pass" if total else "no rows to check"
    message = f"{failing:,} of {total:,} rows fail: {check.reason()}"
    tolerance = check.max_failing
    if tolerance is not None and not tolerance.allows(failing, total):
        message += f" (more than max_failing {tolerance})"
        return ("warn" if check.severity == "warn" else "fail"), message
    if check.severity == "drop":
        message += " (dropped to quarantine)"
    if tolerance is not None:
        message += f" (within max_failing {tolerance})"
        return ("pass" if check.severity == "warn" else "warn"), message
    return _failed_status(check.severity), message


def add_row_results(check: RowCheck, earlier: CheckResult, later: CheckResult) -> CheckResult:
    """A row check's result over two sets of rows judged apart (a table's rows up to one
    version, then the rows appended since): `later`, with the counts of both."""
    if later.status == "error" or earlier.status == "error":
        return later if later.status == "error" else earlier
    failing = earlier.failing_rows + later.failing_rows
    total = earlier.total_rows + later.total_rows
    status, message = _row_verdict(check, failing, total)
    return dataclasses.replace(
        later, status=status, failing_rows=failing, total_rows=total, message=message
    )


def _table_result(ctx: Context, check: TableCheck) -> CheckResult:
    try:
        outcome = check.evaluate(ctx)
    except EvaluationError as exc:
        return _result(ctx, check, "error", 0, f"could not evaluate: {exc}")
    except duckdb.Error as exc:
        message = " ".join(str(exc).split())
        return _result(ctx, check, "error", 0, f"could not evaluate: {message}")
    status = _failed_status(check.severity) if outcome.failed else "pass"
    return _result(ctx, check, status, outcome.failing_rows, outcome.message)


def _failed_status(severity: Severity) -> CheckStatus:
    return "fail" if severity == "fail" else "warn"


def _result(
    ctx: Context, check: Check, status: CheckStatus, failing: int, message: str
) -> CheckResult:
    return CheckResult(
        table=ctx.table,
        check=check.name,
        kind=check.kind,
        severity=check.severity,
        status=status,
        failing_rows=failing,
        total_rows=ctx.rows,
        message=message,
        checked_at=ctx.now,
    )


def _split(data: pa.Table, drops: list[tuple[RowCheck, Any]]) -> tuple[pa.Table, pa.Table]:
    """(rows to publish, dropped rows with `_check` and `_reason`): each row once, in order."""
    dropped = np.zeros(data.num_rows, dtype=bool)
    hits = []
    for _, rows in drops:
        hit = np.zeros(data.num_rows, dtype=bool)
        hit[rows] = True
        dropped |= hit
        hits.append(hit)
    quarantined = data.filter(pa.array(dropped))
    names, reasons = [], []
    none = pa.scalar(None, pa.string())
    for (check, _), hit in zip(drops, hits, strict=True):
        here = pa.array(hit[dropped])
        names.append(pc.if_else(here, pa.scalar(check.name), none))
        reasons.append(pc.if_else(here, pa.scalar(check.reason()), none))
    passed = data.filter(pa.array(~dropped)) if dropped.any() else data
    return passed, _with_reasons(quarantined, names, reasons)


def _with_reasons(rows: pa.Table, names: list[Any], reasons: list[Any]) -> pa.Table:
    def joined(parts: list[Any], separator: str) -> pa.Array:
        if not parts:
            return pa.array([], pa.string())
        return pc.binary_join_element_wise(*parts, separator, null_handling="skip")

    # Columns of those names in the data itself would be ambiguous in quarantine.
    rows = rows.drop_columns([c for c in (CHECK_COLUMN, REASON_COLUMN) if c in rows.column_names])
    rows = rows.append_column(CHECK_COLUMN, joined(names, ", "))
    return rows.append_column(REASON_COLUMN, joined(reasons, "; "))
