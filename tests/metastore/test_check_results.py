"""Quality check results in the metastore, on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from lakebed.errors import MetastoreError
from lakebed.metastore import Metastore, schema
from lakebed.metastore.checks import CheckResult

T0 = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def metastore_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'metastore.db'}"
    url: str = request.getfixturevalue("postgres_url")
    # A non-UTC session zone proves timestamps come back in UTC whatever the server says.
    server = request.getfixturevalue("postgres_server")
    server.execute(
        f"ALTER DATABASE \"{make_url(url).database}\" SET timezone TO 'America/New_York'"
    )
    return url


@pytest.fixture
def metastore(metastore_url: str) -> Iterator[Metastore]:
    with Metastore(metastore_url) as store:
        store.upgrade()
        yield store


def _result(
    check: str,
    *,
    table: str = "silver.orders",
    status: str = "pass",
    failing: int = 0,
    at: datetime = T0,
) -> CheckResult:
    return CheckResult(
        table=table,
        check=check,
        kind=check.split("(")[0],
        severity="fail",
        status=status,  # type: ignore[arg-type]
        failing_rows=failing,
        total_rows=1_000,
        message=f"{failing} failing",
        checked_at=at,
    )


def test_record_then_latest_round_trips(metastore: Metastore) -> None:
    results = [
        _result("not_null(customer_id)", status="fail", failing=3),
        _result("unique(order_id)"),
        _result("expression(amount > 0 and note <> 'it''s')", status="warn", failing=2**40),
    ]
    metastore.record_check_results(results, run_id="a" * 32)
    assert metastore.latest_check_results("silver.orders") == results


def test_latest_is_the_newest_result_per_table_and_check(metastore: Metastore) -> None:
    first = [_result("not_null(a)", status="fail", failing=5), _result("row_count")]
    metastore.record_check_results(first, run_id="run1")
    second = [
        _result("not_null(a)", failing=0, at=T0 + timedelta(hours=1)),
        _result("row_count", status="warn", at=T0 + timedelta(hours=1)),
    ]
    metastore.record_check_results(second, run_id="run2")
    metastore.record_check_results([_result("unique(id)", table="gold.sales")], run_id=None)

    assert metastore.latest_check_results("silver.orders") == second
    assert metastore.latest_check_results("gold.sales") == [
        _result("unique(id)", table="gold.sales")
    ]
    # All tables: by table name, then in the order the checks ran.
    assert [(r.table, r.check) for r in metastore.latest_check_results()] == [
        ("gold.sales", "unique(id)"),
        ("silver.orders", "not_null(a)"),
        ("silver.orders", "row_count"),
    ]
    assert metastore.latest_check_results("bronze.nothing") == []


def test_latest_goes_by_check_time_then_recording_order(metastore: Metastore) -> None:
    later = _result("not_null(a)", status="fail", failing=1, at=T0 + timedelta(minutes=5))
    metastore.record_check_results([later], run_id=None)
    metastore.record_check_results([_result("not_null(a)", at=T0)], run_id=None)
    assert metastore.latest_check_results() == [later]

    same_time = replace(later, status="pass", failing_rows=0)
    metastore.record_check_results([same_time], run_id=None)
    assert metastore.latest_check_results() == [same_time]


def test_times_come_back_aware_utc(metastore: Metastore) -> None:
    tokyo = timezone(timedelta(hours=9))
    at = datetime(2024, 3, 10, 21, 0, tzinfo=tokyo)
    metastore.record_check_results([_result("row_count", at=at)], run_id=None)
    (stored,) = metastore.latest_check_results()
    assert stored.checked_at == at
    assert stored.checked_at.utcoffset() == timedelta(0)


def test_run_id_is_stored(metastore: Metastore, metastore_url: str) -> None:
    metastore.record_check_results([_result("row_count")], run_id="run-7")
    metastore.record_check_results([_result("row_count", at=T0 + timedelta(1))], run_id=None)
    engine = sa.create_engine(metastore_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    try:
        with engine.connect() as conn:
            table = schema.check_results
            run_ids = conn.execute(sa.select(table.c.run_id).order_by(table.c.id)).scalars().all()
    finally:
        engine.dispose()
    assert run_ids == ["run-7", None]


def test_nothing_to_record_is_fine(metastore: Metastore) -> None:
    metastore.record_check_results([], run_id=None)
    assert metastore.latest_check_results() == []


def test_bad_results_are_refused_without_storing_any(metastore: Metastore) -> None:
    good = _result("row_count")
    with pytest.raises(MetastoreError, match="checked_at has no timezone"):
        metastore.record_check_results(
            [good, replace(good, checked_at=datetime(2024, 1, 1))], run_id=None
        )
    with pytest.raises(MetastoreError, match="status 'broken'"):
        metastore.record_check_results([good, _result("x", status="broken")], run_id=None)
    assert metastore.latest_check_results() == []


def test_before_upgrade_the_error_says_to_upgrade(tmp_path: Path) -> None:
    store = Metastore(f"sqlite:///{tmp_path / 'fresh.db'}")
    with store, pytest.raises(MetastoreError) as caught:
        store.latest_check_results()
    assert caught.value.hint is not None
    assert "upgrade()" in caught.value.hint
