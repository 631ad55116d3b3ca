"""Checks declared on tables in lakebed.yml (`checks:`), for tables no model builds: the
bronze tables ingestion loads, the tables stream pipelines write.

Their rows are committed already, so there is nothing to hold back: a run judges a table
before the models that read it, and a failed check of severity `fail` skips those models
(as Dagster's blocking asset checks do). A table is judged again only at a new version, or
when its checks change (or read other tables too); row checks of a table that only grew
judge just its new rows, and `row_count` and `freshness` read the Delta log's statistics,
not rows. The results, with the version they judged, go to the metastore like a model's.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lakebed.errors import CheckConfigError, LakebedError, ModelError
from lakebed.govern import (
    Check,
    CheckResult,
    RowCheck,
    TableCheck,
    add_row_results,
    audit,
    audit_summary,
    parse_checks,
)
from lakebed.process.scan import quote_identifier
from lakebed.storage import Snapshot, Table, TableName
from lakebed.transform import Model
from lakebed.transform.graph import close_matches
from lakebed.transform.materialize import Workspace

__all__ = ["TableChecks", "judge", "model_checks", "parse_table_checks", "published_checks"]

TableChecks = dict[TableName, list[Check]]


def parse_table_checks(
    declared: Mapping[str, Any],
    *,
    models: Iterable[TableName],
    file: str,
    known: Iterable[TableName] | None = None,
) -> TableChecks:
    """The `checks:` section of lakebed.yml, validated; `CheckConfigError` names the table,
    the check and the fix. With `known` (the tables there are, or that a source or pipeline
    writes), checks of any other table are an error: a misspelt name would never be judged."""
    built = set(models)
    tables = None if known is None else {str(t) for t in known}
    found: TableChecks = {}
    for key, raw in declared.items():
        try:
            name = TableName.parse(key)
        except LakebedError as exc:
            raise CheckConfigError(
                exc.message, table=str(key), check="checks", file=file, hint=exc.hint
            ) from exc
        if tables is not None and name not in built and str(name) not in tables:
            close = close_matches(str(name), tables)
            raise CheckConfigError(
                f"checks are declared on {name}, which no table, source or pipeline is",
                table=str(name),
                check="checks",
                file=file,
                hint=f"did you mean {', '.join(close)}?"
                if close
                else "declare the source or pipeline that writes it, or fix the name",
            )
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


def model_checks(model: Model) -> list[Check]:
    """A model's checks, parsed from its settings (errors name its .yml)."""
    return parse_checks(
        model.config.checks, table=str(model.name), file=str(model.path.with_suffix(".yml"))
    )


def unjudgeable(model: Model, columns: Iterable[str]) -> ModelError | None:
    """The error to give when a check of severity fail or drop names a column the model's
    table (of `columns`) lacks: such a check could never judge a row, so the model's next
    rows would be held back, or let through unjudged (caught here, before new rows come)."""
    have = {c.lower() for c in columns}
    problems = [
        f"check {check.name} names {column!r}, which {model.name} does not have"
        for check in model_checks(model)
        if check.severity in ("fail", "drop")
        for column in check.judged_columns() or ()
        if column.lower() not in have
    ]
    if not problems:
        return None
    return ModelError(
        "; ".join(problems) + f" (its columns: {', '.join(columns)})",
        file=str(model.path.with_suffix(".yml")),
        model=str(model.name),
        hint="name one of its columns in the check, or return the column from the model",
    )


def published_checks(model: Model) -> list[Check]:
    """A model's checks as they judge the rows its table holds (`lakebed checks --run`,
    as `dbt test` does): a drop check reports the rows that fail it (published before it
    was added) as a warning, as there is nothing left to hold back."""
    return [
        dataclasses.replace(c, severity="warn") if c.severity == "drop" else c
        for c in model_checks(model)
    ]


def judge(
    ws: Workspace,
    table: TableName,
    checks: list[Check],
    *,
    run_id: str | None,
    again: bool = False,
) -> list[CheckResult]:
    """The results of `checks` on the table's latest version: the recorded one of a check,
    as it is defined now, that already judged that version (unless `again`, or its verdict
    also depends on other tables or on the time: `relationships`, `query`, `freshness`),
    else a fresh one, recorded.

    `row_count` and `freshness` are judged from the table's Delta log (row counts and
    column maxima of its files) where it holds them exactly, else from one aggregate query:
    no rows are read. Row checks of a table that only had rows appended since they last
    judged it judge the new rows alone, and add their counts to the earlier ones."""
    snapshot = ws.table(table).snapshot()
    # A result stands for the check as defined now, on this table: not on one dropped
    # before it and written anew, whose versions count from the start again.
    digests = {check.name: _digest(check, snapshot.table_id) for check in checks}
    recorded: dict[str, CheckResult] = {}
    if not again:
        own = {check.name for check in checks if check.self_contained}
        recorded = {
            r.check: r
            for r in ws.metastore.latest_check_results(str(table))
            if r.check in own and digests[r.check] == r.check_digest and r.table_version is not None
        }
    standing = {n: r for n, r in recorded.items() if r.table_version == snapshot.version}
    if len(standing) == len(checks):
        return [standing[check.name] for check in checks]
    judged = [c for c in checks if c.name not in standing]
    summarized = [c for c in judged if isinstance(c, TableCheck) and c.summarizable]
    rest = [c for c in judged if c not in summarized]
    results: dict[str, CheckResult] = {}
    if summarized:
        rows, newest = _summary(ws, snapshot, summarized)
        summary = audit_summary(
            rows, newest, summarized, table=str(table), columns=snapshot.schema.names
        )
        results.update((r.check, r) for r in summary)
    if rest:
        results.update(_judge_rows(ws, snapshot, rest, recorded))
    fresh = _record(ws, [results[c.name] for c in judged], snapshot.version, digests, run_id)
    now = standing | {r.check: r for r in fresh}
    return [now[check.name] for check in checks]


def _judge_rows(
    ws: Workspace, snapshot: Snapshot, checks: list[Check], recorded: dict[str, CheckResult]
) -> dict[str, CheckResult]:
    """Checks that look at the table's rows: the rows appended since they last judged it,
    added to their earlier results, when that is all that changed; else every row (only
    the columns they look at)."""
    table = snapshot.table

    def lookup(query: str) -> pa.Table:  # relationships read their target with it
        return ws.sql(query).arrow()

    if all(check.name in recorded for check in checks):
        judged = {recorded[check.name].table_version for check in checks}
        appended = _appended_since(ws.table(table), checks, judged, snapshot.version)
        if appended is not None:
            outcome = audit(appended, checks, table=str(table), lookup=lookup)
            return {
                check.name: add_row_results(check, recorded[check.name], result)
                for check, result in zip(checks, outcome.results, strict=True)
                if isinstance(check, RowCheck)
            }
    columns = _read(checks, snapshot.schema.names)
    quoted = ", ".join(map(quote_identifier, columns)) or "*"
    data = ws.sql(f"select {quoted} from {table}", as_of=snapshot.version).arrow()
    outcome = audit(data, checks, table=str(table), lookup=lookup)
    return {result.check: result for result in outcome.results}


def _summary(ws: Workspace, snapshot: Snapshot, checks: list[TableCheck]) -> tuple[int, pa.Table]:
    """The table's row count, and one row with the newest value of each column the checks
    look at: from the Delta log where its statistics are exact, else by one query."""
    by_lower = {f.name.lower(): f for f in snapshot.schema}
    fields = {}
    for check in checks:
        for column in check.judged_columns() or ():
            if column.lower() in by_lower:  # else the check reports the missing column
                found = by_lower[column.lower()]
                fields[found.name] = found
    rows = _logged_rows(snapshot)
    newest = {name: _logged_max(snapshot, name) for name in fields}
    unknown = [name for name, value in newest.items() if value is None]
    if rows is None or unknown:
        parts = ["count(*)", *(f"max({quote_identifier(n)})" for n in unknown)]
        query = f"select {', '.join(parts)} from {snapshot.table}"
        found_row = ws.sql(query, as_of=snapshot.version).arrow()
        rows = int(found_row.column(0)[0].as_py())
        for position, name in enumerate(unknown, start=1):
            newest[name] = found_row.column(position)[0]
    columns = {}
    for name, value in newest.items():
        assert value is not None
        columns[name] = pa.array([value.as_py()], value.type).cast(fields[name].type)
    return rows, pa.table(columns) if columns else pa.table({"_": [None]})


def _logged_rows(snapshot: Snapshot) -> int | None:
    """The live rows by the log (records per file, less deletion vectors); None when a
    file's count is not recorded."""
    if snapshot.num_files and snapshot.files.column("num_records").null_count:
        return None
    return snapshot.num_rows


def _logged_max(snapshot: Snapshot, column: str) -> pa.Scalar | None:
    """The column's largest value by the files' statistics (a null scalar when it holds
    none), or None when they cannot tell it exactly: a file without statistics for it, a
    partition column, or deleted rows (a deletion vector may hide the largest value)."""
    if snapshot.num_files == 0:
        return pa.scalar(None, snapshot.schema.field(column).type)
    if snapshot.deleted or column in snapshot.partition_by:
        return None
    high = snapshot.stat("max", column)
    nulls = snapshot.stat("null_count", column)
    if high is None or nulls is None:
        return None
    only_nulls = pc.equal(nulls, snapshot.files.column("num_records")).fill_null(False)
    if pc.any(pc.and_(pc.is_null(high), pc.invert(only_nulls))).as_py():
        return None
    return pc.max(high)


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


def _digest(check: Check, table_id: str) -> str:
    """A hash of what the check is (its kind and every option) and of the table it judges:
    a changed check judges the table again though the table did not change."""
    return hashlib.sha256(f"{check!r} {table_id}".encode()).hexdigest()[:16]


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
