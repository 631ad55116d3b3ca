"""Checks declared on tables in lakebed.yml (`checks:`), for tables no model builds: the
bronze tables ingestion loads, the tables stream pipelines write.

Their rows are committed already, so there is nothing to hold back: a run judges a table
before the models that read it, and a failed check of severity `fail` skips those models
(as Dagster's blocking asset checks do). A table is judged again only at a new version, or
when its checks change (or read other tables too), and row checks of a table that only
grew judge just its new rows; the results, with the version they judged, go to the
metastore like a model's.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

from lakebed.errors import CheckConfigError, LakebedError
from lakebed.govern import Check, CheckResult, RowCheck, add_row_results, audit, parse_checks
from lakebed.process.scan import quote_identifier
from lakebed.storage import Table, TableName
from lakebed.transform.materialize import Workspace

__all__ = ["TableChecks", "judge", "parse_table_checks"]

TableChecks = dict[TableName, list[Check]]


def parse_table_checks(
    declared: Mapping[str, Any], *, models: Iterable[TableName], file: str
) -> TableChecks:
    """The `checks:` section of lakebed.yml, validated; `CheckConfigError` names the table,
    the check and the fix."""
    built = set(models)
    found: TableChecks = {}
    for key, raw in declared.items():
        try:
            name = TableName.parse(key)
        except LakebedError as exc:
            raise CheckConfigError(
                exc.message, table=str(key), check="checks", file=file, hint=exc.hint
            ) from exc
        if name in built:
            layer, table = name.layer, name.name
            raise CheckConfigError(
                f"{name} is built by a model: its checks belong in models/{layer}/{table}.yml",
                table=str(name),
                check="checks",
                file=file,
                hint="there they judge the new rows before they are published",
            )
        checks = parse_checks(raw, table=str(name), file=file)
        for check in checks:
            if check.severity == "drop":
                raise CheckConfigError(
                    "severity drop takes rows out before they are published; a table's "
                    "committed rows are judged with warn or fail",
                    table=str(name),
                    check=check.name,
                    file=file,
                    hint="use severity warn (record) or fail (skip the models that read it)",
                )
        found[name] = checks
    return found


def judge(
    ws: Workspace,
    table: TableName,
    checks: list[Check],
    *,
    run_id: str | None,
    again: bool = False,
) -> list[CheckResult]:
    """The results of `checks` on the table's latest version: recorded ones when every
    check, as it is defined now, already judged that version (unless `again`, or a check
    also reads other tables), else fresh ones, recorded.

    Row checks of a table that only had rows appended since they last judged it judge the
    new rows alone, and add their counts to the earlier ones."""
    digests = {check.name: _digest(check) for check in checks}
    handle = ws.table(table)

    def lookup(query: str) -> pa.Table:  # relationships read their target with it
        return ws.sql(query).arrow()

    if not again and all(check.self_contained for check in checks):
        version = handle.version()
        recorded = {
            r.check: r
            for r in ws.metastore.latest_check_results(str(table))
            if digests.get(r.check) == r.check_digest and r.table_version is not None
        }
        if set(recorded) == set(digests):
            judged = {r.table_version for r in recorded.values()}
            if judged == {version}:
                return [recorded[check.name] for check in checks]
            appended = _appended_since(handle, checks, judged, version)
            if appended is not None:
                outcome = audit(appended, checks, table=str(table), lookup=lookup)
                added = [
                    add_row_results(check, recorded[check.name], result)
                    for check, result in zip(checks, outcome.results, strict=True)
                    if isinstance(check, RowCheck)
                ]
                return _record(ws, added, version, digests, run_id)
    columns = _read(checks, handle.schema().names)
    result = ws.sql(f"select {', '.join(map(quote_identifier, columns)) or '*'} from {table}")
    outcome = audit(result.arrow(), checks, table=str(table), lookup=lookup)
    return _record(ws, outcome.results, result.versions[str(table)], digests, run_id)


def _appended_since(
    table: Table, checks: list[Check], judged: set[int | None], version: int
) -> pa.Table | None:
    """The rows appended since the one version every check last judged, with the columns
    the checks look at, when they are all row checks and the table only grew since; else
    None (judge the whole table)."""
    if len(judged) != 1 or not all(isinstance(check, RowCheck) for check in checks):
        return None
    (earlier,) = judged
    if earlier is None or earlier >= version:
        return None
    rows = table.appended_rows(earlier + 1, version)
    if rows is None:
        return None
    columns = _read(checks, rows.column_names)
    return rows.select(columns) if columns else rows


def _record(
    ws: Workspace,
    results: list[CheckResult],
    version: int,
    digests: dict[str, str],
    run_id: str | None,
) -> list[CheckResult]:
    stamped = [
        dataclasses.replace(r, table_version=version, check_digest=digests[r.check])
        for r in results
    ]
    ws.metastore.record_check_results(stamped, run_id=run_id)
    return stamped


def _digest(check: Check) -> str:
    """A hash of what the check is (its kind and every option): a changed check judges the
    table again though the table did not change."""
    return hashlib.sha256(repr(check).encode()).hexdigest()[:16]


def _read(checks: list[Check], names: list[str]) -> list[str]:
    """The columns that give the checks what they look at: only theirs when they say which
    (a table's other columns can be most of its bytes); empty for all of them."""
    by_lower = {name.lower(): name for name in names}
    wanted: list[str] = []
    for check in checks:
        columns = check.judged_columns()
        if columns is None or any(c.lower() not in by_lower for c in columns):
            return []  # unknown columns too: the check itself says what is missing
        wanted += [by_lower[c.lower()] for c in columns]
    return list(dict.fromkeys(wanted)) or names[:1]  # row_count alone: any one column
