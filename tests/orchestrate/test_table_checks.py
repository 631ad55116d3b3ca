"""Checks declared on tables in lakebed.yml: judged before the models that read them, again
only at a new version; a failed check of severity fail skips those models."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from typer.testing import CliRunner

import lakebed
from helpers import write_model
from lakebed import Lakehouse
from lakebed.cli import app
from lakebed.errors import CheckConfigError, ConfigError
from lakebed.govern import parse_checks
from lakebed.orchestrate import table_checks
from lakebed.orchestrate.table_checks import _read

CHECKS = """\
checks:
  bronze.events:
    - not_null: kind
    - range: {column: amount, min: 0, severity: warn}
    - row_count: {min: 1}
"""


def _open(tmp_path: Path, config: str) -> Lakehouse:
    root = lakebed.init_project(tmp_path / "p")
    (root / "lakebed.yml").write_text(config)
    lake = lakebed.open(root)
    lake.write("bronze.events", {"id": [1, 2], "kind": ["a", "b"], "amount": [1.0, -2.0]})
    lake.write("bronze.other", {"id": [1]})
    write_model(root, "silver.events", "select id, kind, amount from bronze.events")
    write_model(root, "gold.kinds", "select kind, count(*) as n from silver.events group by kind")
    write_model(root, "silver.other", "select id from bronze.other")
    return lake


@pytest.fixture
def lh(tmp_path: Path) -> Lakehouse:
    return _open(tmp_path, CHECKS)


def test_a_passing_table_is_judged_and_its_readers_build(lh: Lakehouse) -> None:
    summary = lh.run()
    assert summary.ok
    results = summary.table_checks["bronze.events"]
    status = {r.check: r.status for r in results}
    assert status == {"not_null(kind)": "pass", "range(amount)": "warn", "row_count": "pass"}
    assert {r.table_version for r in results} == {lh.table("bronze.events").version()}
    assert "bronze.other" not in summary.table_checks  # no checks declared on it


def test_a_failed_fail_check_skips_the_models_that_read_the_table(lh: Lakehouse) -> None:
    lh.table("bronze.events").append({"id": [3], "kind": [None], "amount": [1.0]})
    summary = lh.run()
    assert not summary.ok
    nodes = {n.model: n for n in summary.nodes}
    assert nodes["silver.events"].status == "skipped"
    assert nodes["silver.events"].error == (
        "checks of bronze.events failed: not_null(kind) (1 row)"
    )
    assert nodes["gold.kinds"].status == "skipped"
    assert nodes["silver.other"].status == "success"  # reads an unjudged table
    assert "silver.events" not in [t.name for t in lh.tables()]
    run = lh.runs(kind="run")[0]
    assert run.status == "failed"
    assert "not_null(kind)" in (run.error or "")


def test_a_table_is_judged_again_only_at_a_new_version(lh: Lakehouse) -> None:
    assert lh.run().ok
    first = {r.check: r.checked_at for r in lh.metastore.latest_check_results("bronze.events")}
    assert lh.run().ok
    again = {r.check: r.checked_at for r in lh.metastore.latest_check_results("bronze.events")}
    assert again == first  # same version: the recorded results stand
    lh.table("bronze.events").append({"id": [3], "kind": ["c"], "amount": [5.0]})
    summary = lh.run()
    latest = lh.metastore.latest_check_results("bronze.events")
    assert all(r.checked_at > first[r.check] for r in latest)
    assert {r.table_version for r in latest} == {lh.table("bronze.events").version()}
    assert {r.total_rows for r in summary.table_checks["bronze.events"]} == {3}


def test_a_changed_check_judges_an_unchanged_table_again(lh: Lakehouse) -> None:
    assert lh.run().ok
    config = lh.root / "lakebed.yml"
    config.write_text(config.read_text().replace("min: 0, severity: warn", "min: -5"))
    changed = lakebed.open(lh.root)
    summary = changed.run()
    results = {r.check: r for r in summary.table_checks["bronze.events"]}
    assert results["range(amount)"].status == "pass"  # -2.0 is above the new minimum
    assert results["range(amount)"].severity == "fail"


def test_checks_reading_other_tables_judge_every_run(tmp_path: Path) -> None:
    lake = _open(
        tmp_path,
        "checks:\n  bronze.events:\n"
        "    - relationships: {column: id, to: bronze.other, field: id, severity: warn}\n",
    )
    first = lake.run().table_checks["bronze.events"][0]
    assert (first.status, first.failing_rows) == ("warn", 1)  # id 2 is not in bronze.other
    lake.table("bronze.other").append({"id": [2]})
    again = lake.run().table_checks["bronze.events"][0]
    assert (again.status, again.failing_rows) == ("pass", 0)  # bronze.events did not change


def test_check_tables_judges_now_and_names_tables_without_checks(lh: Lakehouse) -> None:
    judged = lh.check_tables()
    assert list(judged) == ["bronze.events"]
    assert judged["bronze.events"][0].table_version == lh.table("bronze.events").version()
    with pytest.raises(ConfigError, match=r"no checks are declared on bronze\.other"):
        lh.check_tables("bronze.other")


def test_checks_of_a_table_nothing_writes_stop_the_run(tmp_path: Path) -> None:
    lh = _open(tmp_path, CHECKS + "  bronze.evnts:\n    - row_count: {min: 1}\n")
    with pytest.raises(CheckConfigError, match=r"bronze\.evnts, which no table") as info:
        lh.run()  # a misspelt name would never be judged
    assert info.value.hint == "did you mean bronze.events?"
    # A table a source will write is known before it exists.
    (lh.root / "lakebed.yml").write_text(
        CHECKS + "  bronze.later:\n    - row_count: {min: 1}\n"
        "sources:\n  later: {kind: files, path: later/*.csv, target: bronze.later}\n"
    )
    assert lakebed.open(lh.root).run().ok


def test_check_tables_judges_every_row_of_a_model_by_its_checks(lh: Lakehouse) -> None:
    assert lh.run().ok  # silver.events holds the event of amount -2.0
    checks = "checks:\n  - range: {column: amount, min: 0, severity: %s}\n"
    sql = "select id, kind, amount from bronze.events"
    write_model(lh.root, "silver.events", sql, checks % "drop")  # added after the build
    [result] = lh.check_tables("silver.events")["silver.events"]
    # Nothing left to hold back: the row published before the check came is reported.
    assert (result.status, result.severity, result.failing_rows) == ("warn", "warn", 1)
    assert result.table_version == lh.table("silver.events").version()
    write_model(lh.root, "silver.events", sql, checks % "fail")
    [result] = lh.check_tables("silver.events")["silver.events"]
    assert (result.status, result.total_rows) == ("fail", 2)
    write_model(lh.root, "gold.kinds", "select 1 as n", "materialized: view\n" + checks % "warn")
    with pytest.raises(lakebed.errors.TransformError, match=r"gold\.kinds is a view"):
        lh.check_tables("gold.kinds")


@pytest.mark.parametrize(
    ("config", "text"),
    [
        ("checks:\n  silver.events: [{not_null: id}]\n", "models/silver/events.yml"),
        ("checks:\n  bronze.events: [{not_null: {column: id, severity: drop}}]\n", "warn or fail"),
        ("checks:\n  events: [{not_null: id}]\n", "layer"),
        ("checks:\n  bronze.events: [{not_nul: id}]\n", "did you mean not_null"),
    ],
    ids=["a model's table", "drop", "no layer", "unknown kind"],
)
def test_bad_table_checks_name_the_file_and_the_fix(tmp_path: Path, config: str, text: str) -> None:
    lake = _open(tmp_path, config)
    with pytest.raises(CheckConfigError) as caught:
        lake.run()
    assert str(lake.root / "lakebed.yml") in str(caught.value)
    assert text in str(caught.value)


def test_checks_run_from_the_terminal_exits_1_when_a_fail_check_fails(lh: Lakehouse) -> None:
    env = {"COLUMNS": "250", "NO_COLOR": "1", "LAKEBED_PROJECT": None}
    passed = CliRunner().invoke(app, ["-p", str(lh.root), "checks", "--run"], env=env)
    assert passed.exit_code == 0, passed.output
    assert "row_count" in passed.output
    lh.table("bronze.events").append({"id": [3], "kind": [None], "amount": [1.0]})
    failed = CliRunner().invoke(app, ["-p", str(lh.root), "checks", "--run"], env=env)
    assert failed.exit_code == 1
    assert "1 of 3 rows fail: kind is null" in failed.output


@pytest.mark.parametrize(
    ("specs", "select"),
    [
        ([{"not_null": "Kind"}, {"unique": ["id", "kind"]}], ["kind", "id"]),
        ([{"row_count": {"min": 1}}], ["id"]),
        ([{"not_null": "kind"}, {"expression": {"sql": "amount > 0"}}], []),
        ([{"not_null": "missing"}], []),
    ],
    ids=["their columns", "row count alone", "an expression", "an unknown column"],
)
def test_a_table_is_read_for_the_columns_its_checks_look_at(
    specs: list[dict[str, object]], select: list[str]
) -> None:
    checks = parse_checks(specs, table="bronze.events")
    assert _read(checks, ["id", "kind", "amount"]) == select


def test_row_checks_of_a_growing_table_judge_only_the_new_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = _open(
        tmp_path,
        "checks:\n  bronze.events:\n"
        "    - not_null: {column: kind, severity: warn}\n"
        "    - range: {column: amount, min: 0, severity: warn}\n",
    )
    seen: list[int] = []
    real_audit = table_checks.audit

    def audit(data: pa.Table, *args: Any, **kwargs: Any) -> Any:
        seen.append(data.num_rows)
        return real_audit(data, *args, **kwargs)

    monkeypatch.setattr(table_checks, "audit", audit)
    events = lake.table("bronze.events")
    lake.run()
    events.append({"id": [3, 4], "kind": [None, "d"], "amount": [5.0, -1.0]})
    grown = {r.check: r for r in lake.run().table_checks["bronze.events"]}
    assert seen == [2, 2]  # the first two rows, then only the two appended
    assert (grown["not_null(kind)"].failing_rows, grown["not_null(kind)"].total_rows) == (1, 4)
    assert grown["range(amount)"].message == "2 of 4 rows fail: amount is below 0"
    assert {r.table_version for r in grown.values()} == {events.version()}
    # Rows deleted: the table did not only grow, so all of it is judged again.
    events.delete("id = 2")
    shrunk = {r.check: r for r in lake.run().table_checks["bronze.events"]}
    assert seen[-1] == 3
    assert shrunk["range(amount)"].message == "1 of 3 rows fail: amount is below 0"


def _queries(lake: Lakehouse, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL the lakehouse runs from now on."""
    seen: list[str] = []
    real_sql = lake.sql

    def sql(query: str, **kwargs: Any) -> Any:
        seen.append(query)
        return real_sql(query, **kwargs)

    monkeypatch.setattr(lake, "sql", sql)
    return seen


def test_row_count_and_freshness_are_judged_from_the_delta_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = lakebed.init_project(tmp_path / "p")
    (root / "lakebed.yml").write_text(
        "checks:\n  bronze.visits:\n"
        "    - row_count: {min: 3, severity: warn}\n"
        "    - freshness: {column: seen_at, max_age: 1 day, severity: warn}\n"
        "    - not_null: {column: page, severity: warn}\n"
    )
    lake = lakebed.open(root)
    old = [datetime(2026, 1, 1, h, tzinfo=UTC) for h in (1, 2)]
    lake.write("bronze.visits", {"page": ["a", None], "seen_at": old})
    model = "select page from bronze.visits"
    write_model(root, "silver.pages", model)
    queries = _queries(lake, monkeypatch)
    first = {r.check: r for r in lake.run().table_checks["bronze.visits"]}
    assert (first["row_count"].status, first["row_count"].message) == (
        "warn",
        "2 rows, fewer than the minimum 3",
    )
    assert first["freshness(seen_at)"].status == "warn"
    assert "newest seen_at 2026-01-01T02:00:00+00:00" in first["freshness(seen_at)"].message
    # The row check reads its column; row count and freshness read nothing.
    assert queries == ['select "page" from bronze.visits', model]
    now = datetime.now(UTC).replace(microsecond=0)
    lake.table("bronze.visits").append({"page": ["c"], "seen_at": [now]})
    queries.clear()
    grown = {r.check: r for r in lake.run().table_checks["bronze.visits"]}
    assert queries == [model]  # the appended rows are read from their file
    assert (grown["row_count"].status, grown["row_count"].total_rows) == ("pass", 3)
    assert grown["freshness(seen_at)"].status == "pass"
    assert f"newest seen_at {now.isoformat()}" in grown["freshness(seen_at)"].message
    assert (grown["not_null(page)"].failing_rows, grown["not_null(page)"].total_rows) == (1, 3)


def test_freshness_of_a_partition_column_is_asked_of_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = lakebed.init_project(tmp_path / "p")
    (root / "lakebed.yml").write_text(
        "checks:\n  bronze.days:\n    - freshness: {column: day, max_age: 1 day}\n"
    )
    lake = lakebed.open(root)
    days = [date(2026, 1, 1), date(2026, 1, 3)]
    lake.write("bronze.days", {"day": days, "n": [1, 2]}, partition_by=["day"])
    queries = _queries(lake, monkeypatch)
    [result] = lake.check_tables()["bronze.days"]
    assert result.status == "fail"
    assert "newest day 2026-01-03T00:00:00+00:00" in result.message
    assert queries == ['select count(*), max("day") from bronze.days']


def test_a_summarized_check_on_a_missing_column_lists_the_tables_columns(
    tmp_path: Path,
) -> None:
    lh = _open(
        tmp_path, "checks:\n  bronze.events:\n    - freshness: {column: ts, max_age: 1 day}\n"
    )
    result = lh.check_tables("bronze.events")["bronze.events"][0]
    assert result.status == "error"
    assert "(columns: id, kind, amount)" in (result.message or ""), result.message


def test_a_check_added_to_an_up_to_date_model_on_a_column_it_lacks_fails_the_model(
    lh: Lakehouse,
) -> None:
    # An incremental model's new checks judge its next rows: it stays up to date till then.
    sql = "select id, kind, amount from bronze.events"
    merged = "materialized: incremental\nunique_key: id\n"
    write_model(lh.root, "silver.events", sql, merged)
    assert lh.run().ok
    # A warn check that cannot run is recorded when it runs; it stops nothing.
    write_model(
        lh.root,
        "silver.events",
        sql,
        merged + "checks:\n  - not_null: {column: knd, severity: warn}\n",
    )
    assert {n.model: n.status for n in lh.run().nodes}["silver.events"] == "up_to_date"
    write_model(lh.root, "silver.events", sql, merged + "checks:\n  - not_null: knd\n")
    nodes = {n.model: n for n in lh.run().nodes}
    assert nodes["silver.events"].status == "failed"
    error = nodes["silver.events"].error or ""
    assert "check not_null(knd) names 'knd', which silver.events does not have" in error
    assert "(its columns: id, kind, amount)" in error
    assert nodes["gold.kinds"].status == "skipped"
    # A check that does not parse fails its model alone, not the whole run.
    write_model(lh.root, "silver.events", sql, merged + "checks:\n  - not_nul: kind\n")
    nodes = {n.model: n for n in lh.run().nodes}
    assert nodes["silver.events"].status == "failed"
    assert "unknown check kind not_nul" in (nodes["silver.events"].error or "")
    assert nodes["silver.other"].status == "up_to_date"


def test_a_table_dropped_and_written_anew_is_judged_again(lh: Lakehouse) -> None:
    assert lh.run().ok
    version = lh.table("bronze.events").version()
    lh.drop_table("bronze.events")
    lh.write("bronze.events", {"id": [1, 2], "kind": ["a", None], "amount": [1.0, 2.0]})
    assert lh.table("bronze.events").version() == version  # as many commits as before
    summary = lh.run()
    status = {r.check: r.status for r in summary.table_checks["bronze.events"]}
    assert status["not_null(kind)"] == "fail"
    assert not summary.ok


def test_freshness_is_judged_again_while_the_table_does_not_change(tmp_path: Path) -> None:
    config = (
        "checks:\n  bronze.events:\n"
        "    - freshness: {column: seen_at, max_age: 2 seconds, severity: warn}\n"
        "    - not_null: kind\n"
    )
    lh = _open(tmp_path, config)
    lh.table("bronze.events").overwrite(
        {"id": [1], "kind": ["a"], "amount": [1.0], "seen_at": [datetime.now(UTC)]},
        schema_mode="overwrite",
    )
    first = {r.check: r for r in lh.run().table_checks["bronze.events"]}
    assert first["freshness(seen_at)"].status == "pass"
    time.sleep(2.5)  # no new version: only the time moves on
    second = {r.check: r for r in lh.run().table_checks["bronze.events"]}
    assert second["freshness(seen_at)"].status == "warn"
    # The row check's result stands for the version it judged: not judged again.
    assert second["not_null(kind)"].checked_at == first["not_null(kind)"].checked_at
