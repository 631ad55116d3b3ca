"""Snapshot SQL (`lh.sql`): what DuckDB sees is exactly one committed version of each table."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import lakebed
from helpers import live_and_folder_files, sorted_rows
from lakebed import Lakehouse, QueryResult, Table
from lakebed.errors import QueryError, SqlSyntaxError, TableNotFoundError
from lakebed.storage import AsOf, Snapshot, TableName

SCHEMA = pa.schema([("id", pa.int64()), ("p", pa.string()), ("v", pa.float64())])


def batch(ids: list[int], p: str | None = "a", v: float = 1.0) -> pa.Table:
    return pa.table({"id": ids, "p": [p] * len(ids), "v": [v] * len(ids)}, schema=SCHEMA)


@pytest.fixture
def t(lh: Lakehouse) -> Table:
    """silver.t partitioned by p with two appends (ids 0..5 in a, 6..9 in b)."""
    table = lh.create_table("silver.t", SCHEMA, partition_by=["p"])
    table.append(batch(list(range(6)), "a"))
    table.append(batch(list(range(6, 10)), "b", 2.0))
    return table


def assert_same_as_delta_reader(lh: Lakehouse, table: Table) -> None:
    via_sql = lh.sql(f"select * from {table.name}").arrow()
    via_delta = table.read()
    assert via_sql.column_names == via_delta.column_names == table.schema().names
    assert [f.type for f in via_sql.schema] == [f.type for f in table.schema()]
    assert sorted_rows(via_sql) == sorted_rows(via_delta)


# -- equal to delta-rs's own reader ----------------------------------------------------------


def _overwrite(t: Table) -> None:
    t.overwrite(batch([100, 101], "c"))


def _overwrite_predicate(t: Table) -> None:
    t.overwrite(batch([100], "a", 9.0), predicate="p = 'a'")


def _delete(t: Table) -> None:
    t.delete("id % 2 = 0")


def _merge(t: Table) -> None:
    t.merge(batch([1, 2, 50], "a", 7.0), keys=["id"])


def _merge_full_sync(t: Table) -> None:
    t.merge(batch([1, 7, 50], "a", 7.0), keys=["id"], delete_unmatched_target=True)


def _update(t: Table) -> None:
    t.update({"v": "v + 100"}, "id > 3")


def _evolve(t: Table) -> None:
    t.append(pa.table({"id": [20], "p": ["c"], "v": [0.5], "coupon": ["X"]}))


def _evolve_then_delete_the_only_rows_with_the_column(t: Table) -> None:
    t.append(pa.table({"id": [20], "p": ["c"], "v": [0.5], "coupon": ["X"]}))
    t.delete("p = 'c'")


def _retype(t: Table) -> None:
    t.overwrite(pa.table({"id": ["x", "y"], "p": ["a", "b"], "v": [1, 2]}), schema_mode="overwrite")


def _restore(t: Table) -> None:
    t.delete()
    t.append(batch([99]))
    t.restore(1)


def _optimize(t: Table) -> None:
    for i in range(4):
        t.append(batch([200 + i], "b"))
    t.delete("id = 201")
    t.optimize()


def _zorder(t: Table) -> None:
    t.append(batch([300, 301], "a"))
    t.optimize(zorder_by=["v", "id"])


SCENARIOS: list[Callable[[Table], None]] = [
    _overwrite,
    _overwrite_predicate,
    _delete,
    _merge,
    _merge_full_sync,
    _update,
    _evolve,
    _evolve_then_delete_the_only_rows_with_the_column,
    _retype,
    _restore,
    _optimize,
    _zorder,
]


@pytest.mark.parametrize("change", SCENARIOS, ids=[s.__name__.strip("_") for s in SCENARIOS])
def test_sql_equals_the_delta_reader_after(
    lh: Lakehouse, t: Table, change: Callable[[Table], None]
) -> None:
    change(t)
    assert_same_as_delta_reader(lh, t)


def test_evolved_column_that_no_live_file_holds_reads_as_null(lh: Lakehouse, t: Table) -> None:
    _evolve_then_delete_the_only_rows_with_the_column(t)
    result = lh.sql("select count(*) as n, count(coupon) as c from silver.t")
    assert result.dicts() == [{"n": 10, "c": 0}]
    by_partition = lh.sql("select p, count(*) from silver.t group by p order by p").rows()
    assert by_partition == [("a", 6), ("b", 4)]
    assert lh.sql("select coupon from silver.t limit 1").arrow().column(0).type == pa.string()


@pytest.mark.parametrize("change", [_overwrite, _delete, _merge, _update])
def test_removed_files_stay_in_the_folder_but_sql_does_not_see_them(
    lh: Lakehouse, t: Table, change: Callable[[Table], None]
) -> None:
    change(t)
    live, folder = live_and_folder_files(t.path, t.snapshot().paths)
    assert live < folder  # the folder still holds files that later commits removed
    glob = f"{t.path}/*/*.parquet"
    (folder_rows,) = duckdb.sql(f"select count(*) from read_parquet('{glob}')").fetchall()
    sql_rows = lh.sql("select count(*) from silver.t").scalar()
    assert folder_rows[0] > sql_rows
    assert sql_rows == t.read().num_rows


# -- partitions ------------------------------------------------------------------------------

AWKWARD = [None, "a b", "x/y", "k=v", "50%", "%2F", "ünï €", "it's", "__dunder__", "plain"]


def test_partition_values_needing_encoding_and_nulls_round_trip(lh: Lakehouse) -> None:
    data = pa.table({"id": list(range(len(AWKWARD))), "p": AWKWARD})
    table = lh.create_table("bronze.awkward", data.schema, partition_by=["p"])
    table.append(data)
    assert lh.sql("select * from bronze.awkward order by id").arrow().to_pylist() == (
        data.to_pylist()
    )
    assert_same_as_delta_reader(lh, table)
    for i, value in enumerate(AWKWARD):
        if value is None:
            result = lh.sql("select id from bronze.awkward where p is null")
        else:
            result = lh.sql("select id from bronze.awkward where p = ?", params=[value])
        assert result.rows() == [(i,)], value
    pruned = lh.sql("select id from bronze.awkward where p = 'x/y'")
    assert pruned.files_scanned == {"bronze.awkward": 1}


@pytest.mark.parametrize(
    ("dtype", "values"),
    [
        (pa.int64(), [1, 2, None]),
        (pa.int32(), [-5, 7, None]),
        (pa.bool_(), [True, False, None]),
        (pa.date32(), [dt.date(2024, 1, 1), dt.date(2024, 12, 31), None]),
        (pa.float64(), [1.5, -0.25, None]),
        # Positive only: delta-rs 1.6 writes -3.25 as the partition value '-3.-25'.
        (pa.decimal128(10, 2), [Decimal("1.50"), Decimal("3.25"), None]),
        (pa.timestamp("us"), [dt.datetime(2024, 1, 1, 12, 30), dt.datetime(2024, 2, 1), None]),
        (
            pa.timestamp("us", tz="UTC"),
            [
                dt.datetime(2024, 1, 1, 12, 30, tzinfo=dt.UTC),
                dt.datetime(2024, 2, 1, tzinfo=dt.UTC),
                None,
            ],
        ),
    ],
    ids=["int64", "int32", "bool", "date", "double", "decimal", "timestamp", "timestamptz"],
)
def test_non_string_partition_columns_read_back(
    lh: Lakehouse, dtype: pa.DataType, values: list[Any]
) -> None:
    data = pa.table({"id": [0, 1, 2], "k": pa.array(values, dtype)})
    table = lh.create_table("bronze.typed", data.schema, partition_by=["k"])
    table.append(data)
    result = lh.sql("select * from bronze.typed order by id").arrow()
    assert result.column("k").to_pylist() == values
    assert result.column("k").type == dtype
    assert_same_as_delta_reader(lh, table)


# -- empty tables, joins ---------------------------------------------------------------------


def test_empty_table_returns_no_rows_with_the_columns_and_types(lh: Lakehouse) -> None:
    lh.create_table("gold.empty", SCHEMA, partition_by=["p"])
    result = lh.sql("select * from gold.empty")
    assert len(result) == 0
    assert result.arrow().schema.names == ["id", "p", "v"]
    assert [f.type for f in result.arrow().schema] == [pa.int64(), pa.string(), pa.float64()]
    assert result.files_total == {"gold.empty": 0}
    assert lh.sql("select count(*), sum(v) from gold.empty where id > 3").rows() == [(0, None)]


def test_table_emptied_by_delete_returns_no_rows(lh: Lakehouse, t: Table) -> None:
    t.delete()
    assert t.snapshot().num_files == 0
    result = lh.sql("select * from silver.t")
    assert (len(result), result.columns) == (0, ["id", "p", "v"])


def test_join_of_two_tables(lh: Lakehouse, t: Table) -> None:
    lh.write("silver.labels", [{"p": "a", "label": "first"}, {"p": "b", "label": "second"}])
    result = lh.sql(
        "select l.label, count(*) as n, sum(t.v) as total from silver.t t "
        "join silver.labels l on t.p = l.p group by l.label order by l.label"
    )
    assert result.rows() == [("first", 6, 6.0), ("second", 4, 8.0)]
    assert set(result.versions) == {"silver.t", "silver.labels"}


def test_join_with_an_empty_table(lh: Lakehouse, t: Table) -> None:
    lh.create_table("silver.nothing", pa.schema([("p", pa.string())]))
    left = lh.sql("select count(*) from silver.t left join silver.nothing using (p)").scalar()
    inner = lh.sql("select count(*) from silver.t join silver.nothing using (p)").scalar()
    assert (left, inner) == (10, 0)


# -- snapshot isolation ----------------------------------------------------------------------


def test_a_query_ignores_commits_made_after_it_pinned_its_snapshots(
    lh: Lakehouse, t: Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    lh.write("silver.u", batch([1, 2, 3]))
    resolve = lh.engine._resolve
    other = lakebed.open(lh.root)
    commits: list[int] = []

    def resolve_then_another_writer_commits(name: TableName, as_of: AsOf | None) -> Snapshot:
        snapshot = resolve(name, as_of)
        if name == TableName("silver", "t") and not commits:
            commits.append(other.table("silver.t").append(batch([500, 501], "b")).version)
        return snapshot

    monkeypatch.setattr(lh.engine, "_resolve", resolve_then_another_writer_commits)
    try:
        result = lh.sql(
            "select (select count(*) from silver.t) as direct, "
            "(select count(*) from silver.t x join silver.t y using (id)) as self_join, "
            "(select count(*) from silver.u) as other_table"
        )
    finally:
        other.close()
    assert commits == [3]
    assert result.versions == {"silver.t": 2, "silver.u": 1}
    assert result.dicts() == [{"direct": 10, "self_join": 10, "other_table": 3}]
    monkeypatch.undo()
    assert lh.sql("select count(*) from silver.t").scalar() == 12


@pytest.mark.slow
def test_queries_during_concurrent_writes_match_the_version_they_report(
    lh: Lakehouse, t: Table
) -> None:
    stop, writing = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def keep_writing() -> None:
        try:
            with lakebed.open(lh.root) as writer:
                table, i = writer.table("silver.t"), 1000
                while not stop.is_set():
                    table.append(batch([i, i + 1], "b"))
                    table.delete(f"id = {i}")
                    writing.set()
                    i += 2
        except BaseException as exc:
            errors.append(exc)
            writing.set()

    thread = threading.Thread(target=keep_writing)
    thread.start()
    assert writing.wait(timeout=30)
    seen: set[int] = set()
    try:
        for _ in range(40):
            result = lh.sql(
                "select (select count(*) from silver.t) as n, "
                "(select count(*) from silver.t a join silver.t b using (id)) as m"
            )
            version = result.versions["silver.t"]
            seen.add(version)
            n, m = result.rows()[0]
            assert n == m == t.read(as_of=version).num_rows
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert len(seen) > 1  # the writer did commit while we were reading


@pytest.mark.slow
def test_queries_from_several_threads_each_see_their_own_snapshot(lh: Lakehouse, t: Table) -> None:
    """Queries run at the same time on workspaces of their own: one thread's views (of a
    newer version) never change what another thread's query reads."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def query(rounds: int) -> None:
        try:
            barrier.wait(timeout=30)
            for _ in range(rounds):
                result = lh.sql(
                    "select (select count(*) from silver.t) as n, "
                    "(select count(*) from silver.t a join silver.t b using (id)) as m"
                )
                n, m = result.rows()[0]
                assert n == m == t.read(as_of=result.versions["silver.t"]).num_rows
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=query, args=(30,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    barrier.wait(timeout=30)
    for i in range(10):
        t.append(batch([1000 + i], "c"))
    for thread in threads:
        thread.join()
    assert errors == []
    assert lh.sql("select count(*) from silver.t").scalar() == 20
    lh.drop_table("silver.t")
    with pytest.raises(TableNotFoundError):
        lh.sql("select count(*) from silver.t")


# -- results ---------------------------------------------------------------------------------


@pytest.fixture
def result(lh: Lakehouse) -> QueryResult:
    lh.write(
        "bronze.r", [{"id": 1, "name": "ann", "score": 1.5}, {"id": 2, "name": None, "score": 2.25}]
    )
    return lh.sql("select * from bronze.r order by id")


def test_result_conversions(result: QueryResult) -> None:
    expected = [{"id": 1, "name": "ann", "score": 1.5}, {"id": 2, "name": None, "score": 2.25}]
    assert isinstance(result.arrow(), pa.Table)
    assert result.arrow().to_pylist() == expected
    assert isinstance(result.pl(), pl.DataFrame)
    assert result.pl().to_dicts() == expected
    frame = result.df()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["id", "name", "score"]
    assert frame["id"].tolist() == [1, 2]
    assert result.rows() == [(1, "ann", 1.5), (2, None, 2.25)]
    assert result.dicts() == expected
    assert result.columns == ["id", "name", "score"]
    assert len(result) == 2
    assert repr(result) == "QueryResult(2 rows × 3 columns)"
    assert result.versions == {"bronze.r": 1}
    assert result.query == "select * from bronze.r order by id"


def test_scalar_needs_exactly_one_value(lh: Lakehouse, result: QueryResult) -> None:
    assert lh.sql("select max(score) from bronze.r").scalar() == 2.25
    with pytest.raises(ValueError, match="expected one value, got 2 rows × 3 columns"):
        result.scalar()


def test_rows_of_an_empty_result(lh: Lakehouse, result: QueryResult) -> None:
    assert lh.sql("select * from bronze.r where id > 10").rows() == []


def test_show_prints_a_table(
    lh: Lakehouse, result: QueryResult, capsys: pytest.CaptureFixture[str]
) -> None:
    result.show()
    out = capsys.readouterr().out
    for text in ("id", "name", "score", "ann", "NULL", "1.5", "2.25", "2 rows"):
        assert text in out
    lh.sql("select * from bronze.r order by id").show(max_rows=1)
    out = capsys.readouterr().out
    assert "ann" in out
    assert "NULL" not in out
    assert "1 of 2 rows" in out


def test_params_are_bound(lh: Lakehouse, t: Table) -> None:
    result = lh.sql("select id from silver.t where id > ? and p = ? order by id", params=[7, "b"])
    assert result.rows() == [(8,), (9,)]
    assert lh.sql("select count(*) from silver.t where id < $1", params=[3]).scalar() == 3


def test_sql_without_tables(lh: Lakehouse) -> None:
    result = lh.sql("select 1 + 1 as two")
    assert result.scalar() == 2
    assert result.versions == {}


@pytest.mark.parametrize(
    "query",
    ["describe silver.t", "explain select * from silver.t", "from silver.t select count(*)"],
)
def test_read_only_statements_beyond_select_are_allowed(
    lh: Lakehouse, t: Table, query: str
) -> None:
    assert len(lh.sql(query)) > 0


def test_summarize_is_allowed(lh: Lakehouse, t: Table) -> None:
    summary = lh.sql("summarize silver.t")
    assert [row["column_name"] for row in summary.dicts()] == ["id", "p", "v"]


# -- errors ----------------------------------------------------------------------------------


def test_unknown_qualified_table_names_close_matches(lh: Lakehouse, t: Table) -> None:
    lh.write("silver.orders", [{"id": 1}])
    with pytest.raises(TableNotFoundError) as info:
        lh.sql("select * from silver.order")
    assert info.value.table == "silver.order"
    assert "silver.orders" in info.value.matches
    assert "did you mean silver.orders" in str(info.value)


def test_unknown_table_in_a_known_layer_without_matches(lh: Lakehouse, t: Table) -> None:
    with pytest.raises(TableNotFoundError) as info:
        lh.sql("select * from gold.zzzzzz")
    assert info.value.hint == "run `lakebed tables` to list the tables"


def test_unqualified_table_name_suggests_the_layer(lh: Lakehouse) -> None:
    lh.write("silver.orders", [{"id": 1}])
    with pytest.raises(TableNotFoundError) as info:
        lh.sql("select * from orders")
    message = str(info.value)
    assert "table orders does not exist" in message
    assert "did you mean silver.orders?" in message
    assert "layer.name" in message


def test_syntax_error_carries_duckdbs_position(lh: Lakehouse, t: Table) -> None:
    with pytest.raises(SqlSyntaxError) as info:
        lh.sql("select * form silver.t")
    message = str(info.value)
    assert "syntax error at or near" in message
    assert "LINE 1:" in message
    assert info.value.query == "select * form silver.t"
    assert isinstance(info.value, QueryError)


def test_unknown_column_is_a_query_error(lh: Lakehouse, t: Table) -> None:
    with pytest.raises(QueryError, match='"nope" not found'):
        lh.sql("select nope from silver.t")


@pytest.mark.parametrize(
    "query",
    [
        "delete from silver.t",
        "insert into silver.t values (1, 'a', 1.0)",
        "update silver.t set v = 0",
        "create table silver.x as select 1",
        "drop table silver.t",
        "copy silver.t to 'out.csv'",
        "attach 'other.db'",
        "set threads = 1",
    ],
)
def test_write_and_setting_statements_are_refused(lh: Lakehouse, t: Table, query: str) -> None:
    with pytest.raises(QueryError) as info:
        lh.sql(query)
    assert "read-only" in info.value.message
    assert t.version() == 2
    assert lh.sql("select count(*) from silver.t").scalar() == 10


def test_two_statements_are_refused(lh: Lakehouse, t: Table) -> None:
    with pytest.raises(QueryError, match="expected one SQL statement, got 2"):
        lh.sql("select 1; select * from silver.t")


def test_engine_survives_errors(lh: Lakehouse, t: Table) -> None:
    failures: list[tuple[str, type[Exception]]] = [
        ("select * from silver.nope", TableNotFoundError),
        ("select * form silver.t", SqlSyntaxError),
        ("delete from silver.t", QueryError),
        ("select 1 / 'x'", QueryError),
    ]
    for query, error in failures:
        with pytest.raises(error):
            lh.sql(query)
        assert lh.sql("select count(*) from silver.t").scalar() == 10


def test_dropped_table_is_not_found_by_sql(lh: Lakehouse, t: Table) -> None:
    assert lh.sql("select count(*) from silver.t").scalar() == 10
    lh.drop_table("silver.t")
    with pytest.raises(TableNotFoundError):
        lh.sql("select count(*) from silver.t")


def test_recreated_empty_table_shows_its_new_columns(lh: Lakehouse) -> None:
    lh.create_table("silver.r", pa.schema([("id", pa.int64())]))
    assert lh.sql("select * from silver.r").columns == ["id"]
    lh.drop_table("silver.r")
    lh.create_table("silver.r", pa.schema([("name", pa.string())]))
    assert lh.sql("select * from silver.r").columns == ["name"]


def test_recreated_table_reads_with_its_new_partition_types(lh: Lakehouse) -> None:
    lh.write("silver.r", pa.table({"id": [1], "k": [5]}), partition_by=["k"])
    assert lh.sql("select * from silver.r").rows() == [(1, 5)]
    lh.drop_table("silver.r")
    lh.write("silver.r", pa.table({"id": [1], "k": ["x"]}), partition_by=["k"])
    assert lh.sql("select * from silver.r").rows() == [(1, "x")]


def test_tables_of_two_projects_stay_apart(tmp_path: Path, lh: Lakehouse, t: Table) -> None:
    from helpers import new_lakehouse

    with new_lakehouse(tmp_path / "second") as second:
        second.write("silver.t", batch([1]))
        assert second.sql("select count(*) from silver.t").scalar() == 1
    assert lh.sql("select count(*) from silver.t").scalar() == 10
