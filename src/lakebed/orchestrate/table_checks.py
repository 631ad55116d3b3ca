"""Checks declared on tables in lakebed.yml (`checks:`), for tables no model builds: the
bronze tables ingestion loads, the tables stream pipelines write.

Their rows are committed already, so there is nothing to hold back: a run judges a table
before the models that read it, and a failed check of severity `fail` skips those models
(as Dagster's blocking asset checks do). A table is judged again only at a new version, or
when its checks change (or read other tables too); the results, with the version they
judged, go to the metastore like a model's.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from lakebed.errors import CheckConfigError, LakebedError
from lakebed.govern import Check, CheckResult, audit, parse_checks
from lakebed.process.scan import quote_identifier
from lakebed.storage import TableName
from lakebed.transform.materialize import Workspace

__all__ = ["TableChecks", "blocking", "judge", "parse_table_checks"]

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
    also reads other tables), else fresh ones, recorded."""
    digests = {check.name: _digest(check) for check in checks}
    if not again and all(check.self_contained for check in checks):
        version = ws.table(table).version()
        recorded = [
            r
            for r in ws.metastore.latest_check_results(str(table))
            if r.table_version == version and digests.get(r.check) == r.check_digest
        ]
        if {r.check for r in recorded} == set(digests):
            return recorded
    columns = _read(checks, ws.table(table).schema().names)
    result = ws.sql(f"select {columns} from {table}")
    outcome = audit(result.arrow(), checks, table=str(table), lookup=lambda q: ws.sql(q).arrow())
    judged = result.versions[str(table)]
    results = [
        dataclasses.replace(r, table_version=judged, check_digest=digests[r.check])
        for r in outcome.results
    ]
    ws.metastore.record_check_results(results, run_id=run_id)
    return results


def _digest(check: Check) -> str:
    """A hash of what the check is (its kind and every option): a changed check judges the
    table again though the table did not change."""
    return hashlib.sha256(repr(check).encode()).hexdigest()[:16]


def _read(checks: list[Check], names: list[str]) -> str:
    """The select list that gives the checks what they look at: only their columns when
    they say which (a table's other columns can be most of its bytes), else all."""
    by_lower = {name.lower(): name for name in names}
    wanted: list[str] = []
    for check in checks:
        columns = check.judged_columns()
        if columns is None or any(c.lower() not in by_lower for c in columns):
            return "*"  # unknown columns too: the check itself says what is missing
        wanted += [by_lower[c.lower()] for c in columns]
    chosen = list(dict.fromkeys(wanted)) or names[:1]  # row_count alone: any one column
    return ", ".join(quote_identifier(c) for c in chosen)


def blocking(results: list[CheckResult]) -> list[CheckResult]:
    """The results that keep the models reading the table from building."""
    return [r for r in results if r.severity == "fail" and r.status in ("fail", "error")]
