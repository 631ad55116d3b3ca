"""Behaviour of `Metastore`, run identically against SQLite and a real PostgreSQL server."""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from lakebed.errors import MetastoreError
from lakebed.metastore import MIGRATIONS, Metastore, TableRecord
from lakebed.metastore.table_writes import Write
from services.postgres import PostgresServer

ORDERS_V1 = [
    {"name": "order_id", "type": "int64", "nullable": False},
    {"name": "amount", "type": "double", "nullable": True},
]
ORDERS_V2 = [*ORDERS_V1, {"name": "currency", "type": "string", "nullable": True}]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def metastore_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'metastore.db'}"
    url: str = request.getfixturevalue("postgres_url")
    # A non-UTC session zone proves timestamps come back in UTC whatever the server says.
    server = request.getfixturevalue("postgres_server")
    server.execute(
        f"ALTER DATABASE \"{make_url(url).database}\" SET timezone TO 'America/New_York'"
    )
    return url


@pytest.fixture
def metastore(metastore_url: str) -> Iterator[Metastore]:
    """An upgraded, empty metastore on each backend."""
    with Metastore(metastore_url) as store:
        store.upgrade()
        yield store


def _assert_utc(value: datetime | None) -> None:
    assert value is not None
    assert value.tzinfo is not None
    assert value.utcoffset() == timedelta(0)


def _register_orders(store: Metastore) -> TableRecord:
    return store.upsert_table(
        "silver.orders",
        layer="silver",
        path="/lake/silver/orders",
        domain="sales",
        owner="ana@example.com",
        description="One row per order",
        tags=["pii", "core"],
        partition_by=["order_date"],
        properties={"retention": "30d"},
    )


def test_upsert_then_get_returns_the_stored_record(metastore: Metastore) -> None:
    before = datetime.now(UTC)
    created = _register_orders(metastore)

    assert metastore.get_table("silver.orders") == created
    assert created.name == "silver.orders"
    assert created.layer == "silver"
    assert created.path == "/lake/silver/orders"
    assert (created.domain, created.owner) == ("sales", "ana@example.com")
    assert created.description == "One row per order"
    assert created.tags == ["pii", "core"]
    assert created.partition_by == ["order_date"]
    assert created.properties == {"retention": "30d"}
    assert (created.version, created.row_count, created.size_bytes) == (None, None, None)
    assert (created.last_write_at, created.last_operation) == (None, None)
    _assert_utc(created.created_at)
    assert before - timedelta(seconds=5) <= created.created_at <= datetime.now(UTC)


def test_upsert_of_new_table_defaults_collections_to_empty(metastore: Metastore) -> None:
    record = metastore.upsert_table("bronze.events", layer="bronze", path="/lake/bronze/events")

    assert (record.tags, record.partition_by, record.properties) == ([], [], {})
    assert (record.domain, record.owner, record.description) == (None, None, None)


def test_upsert_with_none_keeps_stored_values(metastore: Metastore) -> None:
    created = _register_orders(metastore)

    updated = metastore.upsert_table("silver.orders", layer="silver", path="/lake2/orders")

    assert updated.path == "/lake2/orders"
    assert updated.domain == "sales"
    assert updated.owner == "ana@example.com"
    assert updated.description == "One row per order"
    assert updated.tags == ["pii", "core"]
    assert updated.partition_by == ["order_date"]
    assert updated.properties == {"retention": "30d"}
    assert updated.created_at == created.created_at


def test_upsert_replaces_the_values_it_is_given(metastore: Metastore) -> None:
    _register_orders(metastore)

    updated = metastore.upsert_table(
        "silver.orders",
        layer="silver",
        path="/lake/silver/orders",
        owner="bo@example.com",
        tags=[],
        properties={"retention": "90d", "tier": "gold"},
    )

    assert updated.owner == "bo@example.com"
    assert updated.tags == []
    assert updated.properties == {"retention": "90d", "tier": "gold"}
    assert updated.domain == "sales"
    assert metastore.get_table("silver.orders") == updated


def test_get_table_of_unknown_name_is_none(metastore: Metastore) -> None:
    assert metastore.get_table("gold.nothing") is None


def test_list_tables_is_sorted_by_name_and_filters_by_layer(metastore: Metastore) -> None:
    for name in ["silver.orders", "bronze.orders", "silver.customers", "gold.revenue"]:
        metastore.upsert_table(name, layer=name.split(".")[0], path=f"/lake/{name}")

    assert [t.name for t in metastore.list_tables()] == [
        "bronze.orders",
        "gold.revenue",
        "silver.customers",
        "silver.orders",
    ]
    assert [t.name for t in metastore.list_tables("silver")] == [
        "silver.customers",
        "silver.orders",
    ]
    assert metastore.list_tables("quarantine") == []


def test_drop_table_removes_the_table_and_its_schema_history(metastore: Metastore) -> None:
    _register_orders(metastore)
    metastore.upsert_table("silver.customers", layer="silver", path="/lake/customers")
    metastore.record_write(
        "silver.orders", version=0, operation="WRITE", row_count=1, size_bytes=1, columns=ORDERS_V1
    )

    metastore.drop_table("silver.orders")
    metastore.drop_table("silver.never_existed")  # dropping an unknown name is a no-op

    assert metastore.get_table("silver.orders") is None
    assert metastore.schema_history("silver.orders") == []
    assert [t.name for t in metastore.list_tables()] == ["silver.customers"]
    # Re-registering starts a fresh history rather than inheriting the dropped one.
    _register_orders(metastore)
    assert metastore.schema_history("silver.orders") == []


def test_record_write_updates_version_stats_and_last_write(metastore: Metastore) -> None:
    _register_orders(metastore)
    written_at = datetime(2025, 3, 1, 12, 30, tzinfo=UTC)

    metastore.record_write(
        "silver.orders",
        version=3,
        operation="MERGE",
        row_count=1200,
        size_bytes=48_000,
        columns=ORDERS_V1,
        written_at=written_at,
    )

    record = metastore.get_table("silver.orders")
    assert record is not None
    assert (record.version, record.row_count, record.size_bytes) == (3, 1200, 48_000)
    assert record.last_operation == "MERGE"
    assert record.last_write_at == written_at
    _assert_utc(record.last_write_at)


def test_record_writes_records_several_at_once_passing_over_dropped_tables(
    metastore: Metastore,
) -> None:
    _register_orders(metastore)
    metastore.upsert_table("silver.customers", layer="silver", path="/lake/customers")
    writes = [
        Write("silver.orders", 2, "MERGE", 20, 200, ORDERS_V1),
        Write("silver.gone", 1, "WRITE", 1, 1, ORDERS_V1),  # dropped after its commit
        Write("silver.customers", 4, "WRITE", 40, 400, ORDERS_V1),
    ]
    with pytest.raises(MetastoreError, match=r"silver\.gone is not in the metastore"):
        metastore.record_writes(writes)
    # The failed transaction recorded nothing.
    orders = metastore.get_table("silver.orders")
    assert orders is not None
    assert orders.version is None
    metastore.record_writes(writes, dropped_ok=True)
    recorded = {t.name: (t.version, t.row_count) for t in metastore.list_tables()}
    assert recorded == {"silver.customers": (4, 40), "silver.orders": (2, 20)}


def test_record_write_of_an_older_version_does_not_move_the_catalog_back(
    metastore: Metastore,
) -> None:
    # Writers in two processes may record out of order; the catalog keeps the newest.
    _register_orders(metastore)
    for version, rows in ((5, 500), (4, 400)):
        metastore.record_write(
            "silver.orders",
            version=version,
            operation="APPEND",
            row_count=rows,
            size_bytes=rows * 10,
            columns=ORDERS_V1,
        )
    record = metastore.get_table("silver.orders")
    assert record is not None
    assert (record.version, record.row_count) == (5, 500)


def test_record_write_without_time_uses_now(metastore: Metastore) -> None:
    _register_orders(metastore)
    before = datetime.now(UTC)

    metastore.record_write(
        "silver.orders", version=0, operation="WRITE", row_count=None, size_bytes=None, columns=[]
    )

    record = metastore.get_table("silver.orders")
    assert record is not None
    assert record.last_write_at is not None
    assert before - timedelta(seconds=5) <= record.last_write_at <= datetime.now(UTC)
    assert (record.row_count, record.size_bytes) == (None, None)


def test_schema_history_grows_only_when_columns_change(metastore: Metastore) -> None:
    _register_orders(metastore)

    def write(version: int, columns: list[dict[str, Any]]) -> None:
        metastore.record_write(
            "silver.orders",
            version=version,
            operation="WRITE",
            row_count=10,
            size_bytes=100,
            columns=columns,
        )

    write(0, ORDERS_V1)
    write(1, [dict(column) for column in ORDERS_V1])  # equal content, new objects
    write(2, ORDERS_V2)
    write(3, ORDERS_V2)
    write(4, ORDERS_V1)  # back to the old columns is a change from the latest schema

    history = metastore.schema_history("silver.orders")
    assert [h.table_version for h in history] == [0, 2, 4]
    assert [h.columns for h in history] == [ORDERS_V1, ORDERS_V2, ORDERS_V1]
    assert {h.table for h in history} == {"silver.orders"}
    for entry in history:
        _assert_utc(entry.recorded_at)


def test_record_write_to_unknown_table_raises(metastore: Metastore) -> None:
    with pytest.raises(MetastoreError, match=r"silver\.ghost is not in the metastore"):
        metastore.record_write(
            "silver.ghost", version=0, operation="WRITE", row_count=0, size_bytes=0, columns=[]
        )
    assert metastore.schema_history("silver.ghost") == []


def test_record_write_rejects_a_naive_time(metastore: Metastore) -> None:
    _register_orders(metastore)
    with pytest.raises(MetastoreError, match="no timezone"):
        metastore.record_write(
            "silver.orders",
            version=0,
            operation="WRITE",
            row_count=0,
            size_bytes=0,
            columns=[],
            written_at=datetime(2025, 1, 1, 12, 0),
        )


def test_times_in_other_zones_come_back_as_the_same_instant_in_utc(metastore: Metastore) -> None:
    _register_orders(metastore)
    in_berlin = datetime(2025, 6, 1, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))

    metastore.record_write(
        "silver.orders",
        version=0,
        operation="WRITE",
        row_count=0,
        size_bytes=0,
        columns=[],
        written_at=in_berlin,
    )

    record = metastore.get_table("silver.orders")
    assert record is not None
    assert record.last_write_at == in_berlin
    assert record.last_write_at == datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)
    _assert_utc(record.last_write_at)


def test_start_run_records_a_running_run(metastore: Metastore) -> None:
    run_id = metastore.start_run("model", target="gold.revenue", params={"full": True, "n": [1]})

    [run] = metastore.runs()
    assert len(run_id) == 32
    int(run_id, 16)  # uuid4 hex
    assert run.run_id == run_id
    assert (run.kind, run.target, run.status) == ("model", "gold.revenue", "running")
    assert run.params == {"full": True, "n": [1]}
    assert (run.finished_at, run.rows, run.bytes, run.error) == (None, None, None, None)
    _assert_utc(run.started_at)


def test_finish_run_records_outcome_and_counts(metastore: Metastore) -> None:
    ok = metastore.start_run("ingest", target="bronze.orders")
    bad = metastore.start_run("ingest", target="bronze.orders")

    metastore.finish_run(ok, status="success", rows=500, bytes=20_000)
    metastore.finish_run(bad, status="failed", error="source timed out")

    runs = {run.run_id: run for run in metastore.runs()}
    assert (runs[ok].status, runs[ok].rows, runs[ok].bytes, runs[ok].error) == (
        "success",
        500,
        20_000,
        None,
    )
    assert (runs[bad].status, runs[bad].error) == ("failed", "source timed out")
    for run in runs.values():
        _assert_utc(run.finished_at)
        assert run.finished_at is not None
        assert run.finished_at >= run.started_at


def test_runs_are_newest_first_and_filter_by_kind_and_target(metastore: Metastore) -> None:
    started = [
        metastore.start_run("ingest", target="bronze.orders"),
        metastore.start_run("model", target="silver.orders"),
        metastore.start_run("ingest", target="bronze.customers"),
        metastore.start_run("model", target="silver.orders"),
        metastore.start_run("check"),
    ]

    assert [r.run_id for r in metastore.runs()] == started[::-1]
    assert [r.run_id for r in metastore.runs(limit=2)] == [started[4], started[3]]
    assert [r.run_id for r in metastore.runs(kind="ingest")] == [started[2], started[0]]
    assert [r.run_id for r in metastore.runs(target="silver.orders")] == [started[3], started[1]]
    assert [r.run_id for r in metastore.runs(kind="ingest", target="bronze.orders")] == [started[0]]
    assert metastore.runs(kind="backfill") == []


def test_finish_run_rejects_unknown_run_and_unknown_status(metastore: Metastore) -> None:
    run_id = metastore.start_run("model")

    with pytest.raises(MetastoreError, match="is not in the metastore"):
        metastore.finish_run("0" * 32, status="success")
    with pytest.raises(MetastoreError, match="'done'") as caught:
        metastore.finish_run(run_id, status="done")
    assert caught.value.hint == "use one of failed, success"
    assert metastore.runs()[0].status == "running"


def test_values_persist_across_reopening(metastore: Metastore, metastore_url: str) -> None:
    _register_orders(metastore)
    run_id = metastore.start_run("model")

    with Metastore(metastore_url) as reopened:
        assert reopened.get_table("silver.orders") == metastore.get_table("silver.orders")
        assert [r.run_id for r in reopened.runs()] == [run_id]
        assert reopened.schema_version() == MIGRATIONS[-1].version


def test_for_project_creates_a_sqlite_file_in_the_state_folder(tmp_path: Path) -> None:
    state_dir = tmp_path / "project" / ".lakebed"

    with Metastore.for_project(state_dir) as store:
        assert store.schema_version() == MIGRATIONS[-1].version
        assert store.url == f"sqlite:///{(state_dir / 'metastore.db').resolve()}"
        store.upsert_table("bronze.events", layer="bronze", path="/lake/bronze/events")

    assert (state_dir / "metastore.db").is_file()


def test_sqlite_metastore_file_is_in_wal_mode(tmp_path: Path) -> None:
    with Metastore(f"sqlite:///{tmp_path / 'm.db'}") as store:
        store.upgrade()

    # WAL is a property of the file, so a plain connection sees it too.
    with closing(sqlite3.connect(tmp_path / "m.db")) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_url_masks_the_password() -> None:
    store = Metastore("postgresql://lakebed:hunter2@db.example.com:5432/meta")
    try:
        assert store.url == "postgresql://lakebed:***@db.example.com:5432/meta"
        assert "hunter2" not in repr(store)
    finally:
        store.close()


def test_unreachable_postgres_raises_metastore_error_without_the_password() -> None:
    with socket.socket() as sock:  # a port nobody listens on once the socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = Metastore(f"postgresql://lakebed:s3cret-pw@127.0.0.1:{port}/meta")

    with pytest.raises(MetastoreError) as caught:
        store.upgrade()

    message = str(caught.value)
    assert message.startswith(
        f"cannot reach metastore at postgresql://lakebed:***@127.0.0.1:{port}"
    )
    assert "s3cret-pw" not in message
    assert caught.value.hint is not None
    assert "server is running" in caught.value.hint
    store.close()


def test_invalid_url_raises_metastore_error() -> None:
    with pytest.raises(MetastoreError, match="not a SQLAlchemy URL"):
        Metastore("not a url")
    with pytest.raises(MetastoreError, match="cannot use metastore"):
        Metastore("nosuchdb://somewhere/x")


@pytest.mark.postgres
def test_metastore_reconnects_after_postgres_crashes_and_restarts(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    with Metastore(postgres_url) as store:
        store.upgrade()
        _register_orders(store)

        postgres_server.kill()
        with pytest.raises(MetastoreError, match="cannot reach metastore"):
            store.get_table("silver.orders")
        postgres_server.start()

        assert store.get_table("silver.orders") is not None  # committed before the crash


def test_calls_made_together_commit_as_one_transaction(metastore: Metastore) -> None:
    """`together` makes a lease and a run record one transaction: both land, or, when
    something inside fails, neither."""
    with metastore.together():
        assert metastore.acquire_lease("model:a", "me", seconds=60) is None
        run_id = metastore.start_run("model", "a")
    assert metastore.acquire_lease("model:a", "other", seconds=60) == "me"
    assert [r.run_id for r in metastore.runs(target="a")] == [run_id]

    def lease_and_record_then_fail() -> None:
        with metastore.together():
            metastore.acquire_lease("model:b", "me", seconds=60)
            metastore.start_run("model", "b")
            metastore.finish_run("no-such-run", status="success")  # fails: undoes both

    with pytest.raises(MetastoreError):
        lease_and_record_then_fail()
    assert metastore.acquire_lease("model:b", "other", seconds=60) is None
    assert metastore.runs(target="b") == []
