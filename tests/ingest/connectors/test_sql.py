"""The `sql` connector against real databases: a SQLite file and the PostgreSQL harness.

Each test calls `SqlConnector.batches(state, IngestProgress())` and folds `state_delta`
into the state with `deep_merge`, as the runner does after each commit.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg2
import pyarrow as pa
import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from lakebed.errors import IngestError, SourceAuthError, SourceUnavailableError
from lakebed.ingest.base import (
    Batch,
    IngestProgress,
    RowOrigins,
    SourceContext,
    connector_for,
    deep_merge,
)
from lakebed.ingest.connectors import sql as sql_module
from lakebed.ingest.connectors.sql import SqlConnector, SqlOptions
from services.postgres import PostgresServer

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
PG_READERS = ["adbc", "connectorx", "sqlalchemy"]
PG_CURSOR_READERS = ["auto", "adbc", "sqlalchemy"]  # ConnectorX cannot bind the cursor


def connector(tmp_path: Path, **options: Any) -> SqlConnector:
    return SqlConnector(SqlOptions.model_validate(options), SourceContext("shop", tmp_path))


def run(
    tmp_path: Path, state: dict[str, Any] | None = None, **options: Any
) -> tuple[list[Batch], dict[str, Any]]:
    """One run: the batches and the state after committing them."""
    state = dict(state or {})
    batches = list(connector(tmp_path, **options).batches(state, IngestProgress()))
    for batch in batches:
        state = deep_merge(state, batch.state_delta)
    return batches, state


def only_table(batches: list[Batch]) -> pa.Table:
    assert len(batches) == 1
    return batches[0].data


# -- SQLite -----------------------------------------------------------------------------------


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture
def shop_db(tmp_path: Path) -> Iterator[tuple[str, sa.Engine]]:
    """A SQLite file with `orders` (many column types) written through SQLAlchemy."""
    path = tmp_path / "shop.db"
    engine = sa.create_engine(sqlite_url(path))
    metadata = sa.MetaData()
    orders = sa.Table(
        "orders",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("customer_id", sa.BigInteger),
        sa.Column("amount", sa.Numeric(12, 2)),
        sa.Column("ratio", sa.Float),
        sa.Column("status", sa.String(20)),
        sa.Column("paid", sa.Boolean),
        sa.Column("due", sa.Date),
        sa.Column("updated_at", sa.DateTime),
        sa.Column("details", sa.JSON),
        sa.Column("receipt", sa.LargeBinary),
    )
    metadata.create_all(engine)
    rows = [
        {
            "id": i,
            "customer_id": 10_000_000_000 + i,
            "amount": Decimal(f"{i}.25"),
            "ratio": i / 4,
            "status": "paid" if i % 2 else "new",
            "paid": bool(i % 2),
            "due": date(2024, 1, i),
            "updated_at": datetime(2024, 3, 1, 12, i),
            "details": {"items": i},
            "receipt": bytes([i]),
        }
        for i in range(1, 4)
    ]
    rows.append({"id": 4, **{key: None for key in rows[0] if key != "id"}})
    rows[-1]["updated_at"] = datetime(2024, 3, 1, 12, 3)  # the max, shared with id 3
    with engine.begin() as conn:
        conn.execute(orders.insert(), rows)
    yield sqlite_url(path), engine
    engine.dispose()


def test_sqlite_full_load_keeps_the_column_types(tmp_path: Path, shop_db: tuple) -> None:
    url, _ = shop_db
    batches, state = run(tmp_path, url=url, table="orders")

    table = only_table(batches)
    assert table.schema == pa.schema(
        [
            ("id", pa.int64()),
            ("customer_id", pa.int64()),
            ("amount", pa.decimal128(12, 2)),
            ("ratio", pa.float64()),
            ("status", pa.string()),
            ("paid", pa.bool_()),
            ("due", pa.date32()),
            ("updated_at", pa.timestamp("us")),
            ("details", pa.string()),
            ("receipt", pa.binary()),
        ]
    )
    first = table.to_pylist()[0]
    assert first == {
        "id": 1,
        "customer_id": 10_000_000_001,
        "amount": Decimal("1.25"),
        "ratio": 0.25,
        "status": "paid",
        "paid": True,
        "due": date(2024, 1, 1),
        "updated_at": datetime(2024, 3, 1, 12, 1),
        "details": '{"items": 1}',
        "receipt": b"\x01",
    }
    assert table.column("amount").null_count == 1
    assert state == {}, "a full load keeps no state"
    assert batches[0].label == "orders"


def test_sqlite_full_load_rereads_everything_and_origins_are_row_numbers(
    tmp_path: Path, shop_db: tuple
) -> None:
    url, _ = shop_db
    first, state = run(tmp_path, url=url, table="orders")
    second, _ = run(tmp_path, state, url=url, table="orders")
    assert only_table(second).equals(only_table(first))
    origins = first[0].origins
    assert isinstance(origins, RowOrigins)
    assert origins.location == "orders"
    assert origins.position.to_pylist() == [1, 2, 3, 4]


def test_sqlite_columns_option_selects_and_orders(tmp_path: Path, shop_db: tuple) -> None:
    url, _ = shop_db
    table = only_table(run(tmp_path, url=url, table="orders", columns=["status", "id"])[0])
    assert table.column_names == ["status", "id"]
    assert table.to_pylist()[0] == {"status": "paid", "id": 1}


def test_sqlite_query_mode(tmp_path: Path, shop_db: tuple) -> None:
    url, _ = shop_db
    query = "select id, status || ':x' as tagged, amount * 2 as doubled from orders where id < 3;"
    batches, _ = run(tmp_path, url=url, query=query)
    table = only_table(batches)
    assert table.column_names == ["id", "tagged", "doubled"]
    assert table.column("tagged").to_pylist() == ["paid:x", "new:x"]
    assert table.column("doubled").to_pylist() == [2.5, 4.5]
    assert batches[0].label == "shop", "a query is labelled with the source name"


def test_sqlite_incremental_by_id(tmp_path: Path, shop_db: tuple) -> None:
    url, engine = shop_db
    options = {"url": url, "table": "orders", "incremental": {"cursor_column": "id"}}

    batches, state = run(tmp_path, **options)
    assert only_table(batches).column("id").to_pylist() == [1, 2, 3, 4]
    assert state["cursor"] == 4
    assert len(state["boundary"]) == 1
    origins = batches[0].origins
    assert isinstance(origins, RowOrigins)
    assert origins.position.to_pylist() == [1, 2, 3, 4], "an integer cursor is the position"

    assert run(tmp_path, state, **options)[0] == [], "nothing new: no batch"

    with engine.begin() as conn:
        conn.exec_driver_sql("insert into orders (id, status) values (5, 'late'), (6, 'later')")
    batches, state = run(tmp_path, state, **options)
    assert only_table(batches).column("id").to_pylist() == [5, 6]
    assert state["cursor"] == 6


def test_sqlite_incremental_by_timestamp_takes_late_rows_at_the_max(
    tmp_path: Path, shop_db: tuple
) -> None:
    url, engine = shop_db
    options = {"url": url, "table": "orders", "incremental": {"cursor_column": "updated_at"}}

    batches, state = run(tmp_path, **options)
    assert only_table(batches).num_rows == 4
    assert state["cursor"] == "2024-03-01T12:03:00"
    assert len(state["boundary"]) == 2, "ids 3 and 4 share the max"
    assert run(tmp_path, state, **options)[0] == []

    orders = sa.Table("orders", sa.MetaData(), autoload_with=engine)
    with engine.begin() as conn:
        conn.execute(
            orders.insert(),
            [
                {"id": 7, "status": "same time", "updated_at": datetime(2024, 3, 1, 12, 3)},
                {"id": 8, "status": "newer", "updated_at": datetime(2024, 3, 1, 12, 4)},
            ],
        )
    batches, state = run(tmp_path, state, **options)
    assert only_table(batches).column("id").to_pylist() == [7, 8]
    assert state["cursor"] == "2024-03-01T12:04:00"
    assert run(tmp_path, state, **options)[0] == []


def test_sqlite_incremental_query_mode_and_initial(tmp_path: Path, shop_db: tuple) -> None:
    url, _ = shop_db
    options = {
        "url": url,
        "query": "select id, status from orders",
        "incremental": {"cursor_column": "id", "initial": 3},
    }
    batches, state = run(tmp_path, **options)
    assert only_table(batches).column("id").to_pylist() == [3, 4]
    assert state["cursor"] == 4
    assert run(tmp_path, state, **options)[0] == []


def test_sqlite_rows_without_a_cursor_value_go_to_quarantine(
    tmp_path: Path, shop_db: tuple
) -> None:
    url, engine = shop_db
    with engine.begin() as conn:
        conn.exec_driver_sql("insert into orders (id, status) values (9, 'no time')")
    options = {"url": url, "table": "orders", "incremental": {"cursor_column": "updated_at"}}
    batches, _ = run(tmp_path, **options)
    assert len(batches) == 1
    assert 9 not in batches[0].data.column("id").to_pylist()
    [reject] = batches[0].rejects
    assert "updated_at is NULL" in reject.error
    assert json.loads(reject.raw)["id"] == 9


def test_sqlite_missing_table_and_column_are_named(tmp_path: Path, shop_db: tuple) -> None:
    url, _ = shop_db
    with pytest.raises(IngestError, match="table ordres does not exist") as caught:
        run(tmp_path, url=url, table="ordres")
    assert "orders" in str(caught.value.hint)
    with pytest.raises(IngestError, match="column colour not found"):
        run(tmp_path, url=url, table="orders", columns=["id", "colour"])
    with pytest.raises(IngestError, match="column changed_at not found"):
        run(tmp_path, url=url, table="orders", incremental={"cursor_column": "changed_at"})


def test_sqlite_bad_query_is_an_ingest_error(tmp_path: Path, shop_db: tuple) -> None:
    url, _ = shop_db
    with pytest.raises(IngestError, match="no such column: nope") as caught:
        run(tmp_path, url=url, query="select nope from orders")
    assert not isinstance(caught.value, SourceUnavailableError)


def test_sqlite_missing_file_is_unavailable_and_not_created(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    with pytest.raises(SourceUnavailableError, match="no such file"):
        run(tmp_path, url=sqlite_url(path), table="orders")
    assert not path.exists()


def test_sqlite_relative_path_is_relative_to_the_project(tmp_path: Path, shop_db: tuple) -> None:
    table = only_table(run(tmp_path, url="sqlite:///shop.db", table="orders")[0])
    assert table.num_rows == 4


def test_progress_counts_rows_per_chunk(tmp_path: Path, shop_db: tuple) -> None:
    url, _ = shop_db
    reports: list[tuple[str, int, int | None]] = []
    progress = IngestProgress(lambda unit, done, total: reports.append((unit, done, total)))
    source = connector(tmp_path, url=url, table="orders", chunk_size=3)
    assert len(list(source.batches({}, progress))) == 1, "all chunks make one batch"
    assert reports == [("rows", 3, None), ("rows", 4, None)]


def test_describe_state(tmp_path: Path, shop_db: tuple) -> None:
    url, _ = shop_db
    incremental = connector(
        tmp_path, url=url, table="orders", incremental={"cursor_column": "updated_at"}
    )
    assert incremental.describe_state({}) == "nothing loaded yet"
    state = {"cursor": "2024-03-01T12:03:00", "boundary": ["ab"]}
    assert incremental.describe_state(state) == "cursor updated_at = 2024-03-01T12:03:00"
    assert connector(tmp_path, url=url, table="orders").describe_state({}) == ("full load each run")


# -- options ---------------------------------------------------------------------------------


def test_sql_is_a_registered_kind() -> None:
    assert connector_for("sql") is SqlConnector


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"table": "t", "query": "select 1"}, "exactly one of `table` and `query`"),
        ({}, "exactly one of `table` and `query`"),
        ({"query": "select 1", "columns": ["a"]}, "`columns` selects from `table`"),
        ({"table": "t", "columns": []}, "`columns` is empty"),
        (
            {"table": "t", "columns": ["a"], "incremental": {"cursor_column": "b"}},
            "must include the cursor column b",
        ),
        (
            {"table": "t", "reader": "connectorx", "incremental": {"cursor_column": "b"}},
            "cannot bind",
        ),
        ({"table": "t", "colour": "red"}, "Extra inputs are not permitted"),
        ({"table": "t", "chunk_size": 0}, "greater than 0"),
    ],
)
def test_options_are_validated(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SqlOptions.model_validate({"url": "postgresql://u:pw@localhost/db", **options})


def test_fast_readers_are_for_postgresql_only() -> None:
    with pytest.raises(ValidationError, match="reads PostgreSQL only"):
        SqlOptions.model_validate({"url": "sqlite:///x.db", "table": "t", "reader": "adbc"})


def test_url_must_parse_and_stays_secret() -> None:
    with pytest.raises(ValidationError, match="not a SQLAlchemy URL"):
        SqlOptions.model_validate({"url": "not a url", "table": "t"})
    options = SqlOptions.model_validate(
        {"url": "postgresql://u:hunter2secret@localhost/db", "table": "t"}
    )
    assert "hunter2secret" not in repr(options)
    assert "hunter2secret" not in str(options.model_dump())


# -- PostgreSQL -------------------------------------------------------------------------------

TYPES_DDL = """
create type mood as enum ('sad', 'happy');
create table public.types (
    i2 smallint, i4 integer, i8 bigint primary key, f4 real, f8 double precision,
    amount numeric(12, 2), exact numeric, huge numeric(50, 5),
    name text, code varchar(10), flag boolean,
    day date, local_ts timestamp, ts timestamptz, at_time time,
    doc json, docb jsonb, uid uuid, raw bytea, ints integer[], span interval, feeling mood
);
insert into public.types values
    (1, 2, 3, 1.5, 2.5, 12.34, 1.2345678901234567890123, 123.45,
     'text: with a colon', 'v', true, '2024-01-02', '2024-01-02 03:04:05.123456',
     '2024-01-02 03:04:05.123456+02', '10:11:12', '{"a": 1}', '{"b": [1, 2]}',
     'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\xdeadbeef', '{1,2}', '1 day 2 hours', 'happy'),
    (null, null, 4, null, null, null, null, null, null, null, null, null, null, null, null,
     null, null, null, null, null, null, null);
"""

TYPES_SCHEMA = pa.schema(
    [
        ("i2", pa.int16()),
        ("i4", pa.int32()),
        ("i8", pa.int64()),
        ("f4", pa.float32()),
        ("f8", pa.float64()),
        ("amount", pa.decimal128(12, 2)),
        ("exact", pa.string()),  # unconstrained numeric: no fixed precision, kept exact
        ("huge", pa.string()),  # precision above decimal128's 38 digits
        ("name", pa.string()),
        ("code", pa.string()),
        ("flag", pa.bool_()),
        ("day", pa.date32()),
        ("local_ts", pa.timestamp("us")),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("at_time", pa.string()),  # Delta tables have no time type
        ("doc", pa.string()),
        ("docb", pa.string()),
        ("uid", pa.string()),
        ("raw", pa.binary()),
        ("ints", pa.string()),
        ("span", pa.string()),
        ("feeling", pa.string()),
    ]
)


def pg_execute(url: str, sql: str, params: Any = None) -> None:
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cursor:
            cursor.execute(sql, params)
    finally:
        conn.close()


@pytest.fixture
def pg_types(postgres_url: str) -> str:
    pg_execute(postgres_url, TYPES_DDL)
    return postgres_url


@pytest.fixture
def pg_orders(postgres_url: str) -> str:
    """`shop.orders` with ids 1..5; ids 4 and 5 share the latest `updated_at`."""
    pg_execute(
        postgres_url,
        """
        create schema shop;
        create table shop.orders (
            id bigint primary key, customer_id bigint, amount numeric(12, 2), status text,
            updated_at timestamptz
        );
        insert into shop.orders
        select i, 100 + i, i * 1.5, 'new', %s::timestamptz + least(i, 4) * interval '1 minute'
        from generate_series(1, 5) as i;
        """,
        (T0,),
    )
    return postgres_url


@pytest.mark.postgres
@pytest.mark.parametrize("reader", ["auto", *PG_READERS])
def test_postgres_full_load_keeps_the_column_types(
    tmp_path: Path, pg_types: str, reader: str
) -> None:
    table = only_table(run(tmp_path, url=pg_types, table="public.types", reader=reader)[0])
    assert table.schema == TYPES_SCHEMA
    first, second = table.to_pylist()
    assert first == {
        "i2": 1,
        "i4": 2,
        "i8": 3,
        "f4": 1.5,
        "f8": 2.5,
        "amount": Decimal("12.34"),
        "exact": "1.2345678901234567890123",
        "huge": "123.45000",
        "name": "text: with a colon",
        "code": "v",
        "flag": True,
        "day": date(2024, 1, 2),
        "local_ts": datetime(2024, 1, 2, 3, 4, 5, 123456),
        "ts": datetime(2024, 1, 2, 1, 4, 5, 123456, tzinfo=UTC),
        "at_time": "10:11:12",
        "doc": '{"a": 1}',
        "docb": '{"b": [1, 2]}',
        "uid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "raw": b"\xde\xad\xbe\xef",
        "ints": "{1,2}",
        "span": "1 day 02:00:00",
        "feeling": "happy",
    }
    assert {key for key, value in second.items() if value is not None} == {"i8"}


@pytest.mark.postgres
def test_postgres_readers_return_the_same_table(tmp_path: Path, pg_types: str) -> None:
    tables = {
        reader: only_table(run(tmp_path, url=pg_types, table="types", reader=reader)[0])
        for reader in PG_READERS
    }
    assert tables["adbc"].equals(tables["connectorx"])
    assert tables["adbc"].equals(tables["sqlalchemy"])


@pytest.mark.postgres
@pytest.mark.parametrize("reader", PG_READERS)
def test_postgres_query_mode(tmp_path: Path, pg_orders: str, reader: str) -> None:
    # A cast (::), a LIKE with %, a colon in a string: all must reach the server unchanged.
    query = """
        select id, status || ':' || id::text as tagged, amount
        from shop.orders where status like 'n%' and id <= 2  -- a comment at the end
    """
    batches, state = run(tmp_path, url=pg_orders, query=query, reader=reader)
    table = only_table(batches)
    assert table.schema == pa.schema(
        [("id", pa.int64()), ("tagged", pa.string()), ("amount", pa.decimal128(12, 2))]
    )
    assert table.column("tagged").to_pylist() == ["new:1", "new:2"]
    assert state == {}


@pytest.mark.postgres
def test_postgres_columns_option(tmp_path: Path, pg_orders: str) -> None:
    table = only_table(
        run(tmp_path, url=pg_orders, table="shop.orders", columns=["amount", "id"])[0]
    )
    assert table.column_names == ["amount", "id"]
    assert table.schema.field("amount").type == pa.decimal128(12, 2)


@pytest.mark.postgres
@pytest.mark.parametrize("reader", PG_CURSOR_READERS)
def test_postgres_incremental_by_timestamp(tmp_path: Path, pg_orders: str, reader: str) -> None:
    options = {
        "url": pg_orders,
        "table": "shop.orders",
        "reader": reader,
        "incremental": {"cursor_column": "updated_at"},
    }
    batches, state = run(tmp_path, **options)
    assert only_table(batches).column("id").to_pylist() == [1, 2, 3, 4, 5]
    latest = T0 + timedelta(minutes=4)
    assert state["cursor"] == latest.isoformat()
    assert datetime.fromisoformat(state["cursor"]).tzinfo is not None
    assert len(state["boundary"]) == 2, "ids 4 and 5 are at the max"
    json.dumps(state)  # the state is committed as JSON
    origins = batches[0].origins
    assert isinstance(origins, RowOrigins)
    assert not isinstance(origins.location, str)
    assert origins.location[0].as_py() == "shop.orders:2024-03-01 12:01:00.000000Z"

    assert run(tmp_path, state, **options)[0] == [], "rerun with the folded state: nothing"

    # Committed after the first run, with exactly the previous max value, and one later.
    pg_execute(
        pg_orders,
        "insert into shop.orders values (6, 1, 1, 'late', %s), (7, 1, 1, 'late', %s),"
        " (8, 1, 1, 'newer', %s)",
        (latest, latest, latest + timedelta(seconds=1)),
    )
    batches, state = run(tmp_path, state, **options)
    assert only_table(batches).column("id").to_pylist() == [6, 7, 8]
    assert state["cursor"] == (latest + timedelta(seconds=1)).isoformat()
    assert len(state["boundary"]) == 1
    assert run(tmp_path, state, **options)[0] == []


@pytest.mark.postgres
@pytest.mark.parametrize("reader", PG_CURSOR_READERS)
def test_postgres_incremental_by_id_in_query_mode(
    tmp_path: Path, pg_orders: str, reader: str
) -> None:
    options = {
        "url": pg_orders,
        "query": "select id, status from shop.orders where status <> 'void'",
        "reader": reader,
        "incremental": {"cursor_column": "id", "initial": 2},
    }
    batches, state = run(tmp_path, **options)
    assert only_table(batches).column("id").to_pylist() == [2, 3, 4, 5]
    assert state["cursor"] == 5
    assert run(tmp_path, state, **options)[0] == []

    pg_execute(pg_orders, "insert into shop.orders (id, status) values (6, 'x'), (7, 'void')")
    batches, state = run(tmp_path, state, **options)
    assert only_table(batches).column("id").to_pylist() == [6]
    assert state["cursor"] == 6


@pytest.mark.postgres
def test_postgres_incremental_initial_timestamp(tmp_path: Path, pg_orders: str) -> None:
    options = {
        "url": pg_orders,
        "table": "shop.orders",
        "incremental": {"cursor_column": "updated_at", "initial": "2024-03-01T12:03:00Z"},
    }
    table = only_table(run(tmp_path, **options)[0])
    assert table.column("id").to_pylist() == [3, 4, 5]


@pytest.mark.postgres
@pytest.mark.parametrize("reader", PG_READERS)
def test_postgres_missing_table_is_named(tmp_path: Path, pg_orders: str, reader: str) -> None:
    with pytest.raises(IngestError, match=r"table shop\.ordres does not exist") as caught:
        run(tmp_path, url=pg_orders, table="shop.ordres", reader=reader)
    assert not isinstance(caught.value, SourceUnavailableError)
    assert "shop.orders" in str(caught.value.hint)
    with pytest.raises(IngestError, match="column colour not found"):
        run(tmp_path, url=pg_orders, table="shop.orders", columns=["colour"], reader=reader)


@pytest.mark.postgres
def test_postgres_bad_query_names_the_problem(tmp_path: Path, pg_orders: str) -> None:
    with pytest.raises(IngestError, match='column "nope" does not exist'):
        run(tmp_path, url=pg_orders, query="select nope from shop.orders")


@pytest.fixture(scope="session")
def password_role(postgres_server: PostgresServer) -> tuple[str, str]:
    """A role that must log in with a password (the harness trusts every other login)."""
    role, password = "lakebed_pw_role", "Right-Pw-4711"
    hba = postgres_server.data_dir / "pg_hba.conf"
    line = f"host all {role} 127.0.0.1/32 scram-sha-256\n"
    hba.write_text(line + hba.read_text())
    postgres_server.execute(f"create role {role} login password '{password}'")
    postgres_server.execute("select pg_reload_conf()")
    deadline = time.monotonic() + 10
    while True:  # the reload is asynchronous
        try:
            psycopg2.connect(f"{postgres_server.dsn()} user={role}").close()
        except psycopg2.OperationalError:
            return role, password
        if time.monotonic() > deadline:
            raise RuntimeError("pg_hba.conf reload did not take effect")
        time.sleep(0.05)


@pytest.mark.postgres
@pytest.mark.parametrize("reader", PG_READERS)
def test_postgres_wrong_password_fails_at_once_without_showing_it(
    tmp_path: Path,
    postgres_server: PostgresServer,
    pg_orders: str,
    password_role: tuple[str, str],
    reader: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    role, password = password_role
    database = pg_orders.rsplit("/", 1)[1]
    pg_execute(
        pg_orders, f"grant usage on schema shop to {role}; grant select on shop.orders to {role}"
    )
    right = f"postgresql://{role}:{password}@127.0.0.1:{postgres_server.port}/{database}"
    assert only_table(run(tmp_path, url=right, table="shop.orders", reader=reader)[0]).num_rows == 5

    sleeps: list[float] = []
    monkeypatch.setattr(sql_module.time, "sleep", sleeps.append)
    wrong_password = "Wrong-Pw-0815"
    wrong = right.replace(password, wrong_password)
    with pytest.raises(SourceAuthError, match="password authentication failed") as caught:
        run(tmp_path, url=wrong, table="shop.orders", reader=reader)
    assert sleeps == [], "a refused login is not retried"
    shown = [str(caught.value), repr(caught.value)]
    cause = caught.value.__cause__
    while cause is not None:
        shown.append(str(cause))
        cause = cause.__cause__
    assert not any(wrong_password in text for text in shown)
    assert f"{role}:***@127.0.0.1" in str(caught.value)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_server_is_retried_with_backoff_then_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps: list[float] = []
    real_sleep = time.sleep
    monkeypatch.setattr(
        sql_module.time, "sleep", lambda seconds: (sleeps.append(seconds), real_sleep(seconds))
    )
    url = f"postgresql://someone:Secret-Pw-123@127.0.0.1:{_closed_port()}/shop"
    with pytest.raises(SourceUnavailableError, match="after 3 attempts") as caught:
        run(tmp_path, url=url, table="orders", retries=2, retry_backoff=0.01)
    assert sleeps == [0.01, 0.02]
    message = str(caught.value)
    assert "Secret-Pw-123" not in message
    assert "someone:***@127.0.0.1" in message
    assert "source shop:" in message
    assert caught.value.hint is not None


def _driver_failure(reader: str, uri: str) -> Exception:
    """The exception a fast-path driver raises when it cannot connect or log in."""
    try:
        if reader == "adbc":
            import adbc_driver_postgresql.dbapi as adbc

            adbc.connect(uri).close()
        else:
            import connectorx

            connectorx.read_sql(uri, "select 1", return_type="arrow")
    except Exception as exc:
        return exc
    raise AssertionError(f"{reader} connected to {uri}")


@pytest.mark.postgres
@pytest.mark.parametrize(
    "reader",
    # ConnectorX's connection pool keeps trying for 30 s before it gives up.
    ["adbc", pytest.param("connectorx", marks=pytest.mark.slow)],
)
def test_fast_reader_failures_are_classified(
    postgres_server: PostgresServer, password_role: tuple[str, str], reader: str
) -> None:
    """ADBC and ConnectorX connect on their own after the SQLAlchemy probe: their words for
    "refused" and "wrong password" must be recognised too."""
    role, _ = password_role
    refused = _driver_failure(reader, f"postgresql://u:p@127.0.0.1:{_closed_port()}/db")
    message = sql_module._driver_message(refused).lower()
    assert sql_module._TRANSIENT.search(message), message
    port = postgres_server.port
    denied = _driver_failure(reader, f"postgresql://{role}:nope@127.0.0.1:{port}/postgres")
    message = sql_module._driver_message(denied).lower()
    assert sql_module._AUTH_FAILURE.search(message), message
    assert isinstance(refused, sql_module._driver_errors())
    assert isinstance(denied, sql_module._driver_errors())
