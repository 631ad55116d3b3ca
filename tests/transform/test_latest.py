"""Full builds of latest-per-key models with the window over the keys that repeat: the
plans (golden file), their rows against the SELECT as written for random inputs, and a
model built that way in a lakehouse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lakebed
from helpers import golden_cases, write_model
from lakebed.transform.latest import MIN_ROWS, REPEATED, ROWS_COLUMN, LatestPlan, latest_plan

FIXTURES = Path(__file__).parent.parent / "fixtures" / "latest"


GOLDEN = [
    pytest.param(query, expected, id=title)
    for title, query, expected in golden_cases(FIXTURES / "plans.sql")
]


def format_plan(plan: LatestPlan | None) -> list[str]:
    if plan is None:
        return ["none"]
    return [
        f"repeated: {plan.repeated_sql}",
        f"split: {plan.split_sql}",
        f"unqualified: {plan.unqualified_sql}",
    ]


def test_golden_file_holds_planned_and_declined_cases() -> None:
    declined = [expected == ["none"] for _, expected in (p.values for p in GOLDEN)]
    assert declined.count(True) >= 8
    assert declined.count(False) >= 5


@pytest.mark.parametrize(("query", "expected"), GOLDEN)
def test_plan_of_a_model(query: str, expected: list[str]) -> None:
    assert format_plan(latest_plan(query)) == expected


# -- the rows of each query against the SELECT as written ---------------------------------

MODELS = [
    "select id, lower(status) as status, seq from bronze.orders where amount > 0 "
    "qualify row_number() over (partition by id order by seq desc) = 1",
    "select * from bronze.orders as o "
    "qualify row_number() over (partition by o.region, o.id order by o.seq) <= 1",
    "select id, amount, row_number() over (partition by id order by seq desc) as rn "
    "from bronze.orders qualify rn = 1",
]

_rows = st.lists(
    st.tuples(
        st.one_of(st.none(), st.integers(0, 6)),  # id: few values, so keys repeat; NULL too
        st.sampled_from(["eu", "us", None]),
        st.integers(-2, 5),
        st.sampled_from(["New", "SHIPPED", None]),
    ),
    max_size=40,
)


def _rows_of(con: duckdb.DuckDBPyConnection, query: str, **relations: pa.Table) -> list[tuple]:
    for name, table in relations.items():
        con.register(name, table)
    return sorted(con.sql(query).fetchall(), key=repr)


@settings(max_examples=60, deadline=None)
@given(rows=_rows, model=st.sampled_from(MODELS))
def test_every_query_of_a_plan_returns_the_rows_of_the_select(
    rows: list[tuple[int | None, str | None, int, str | None]], model: str
) -> None:
    # A distinct order value per row (`seq`): which row of a tie wins is not defined.
    orders = pa.table(
        {
            "id": pa.array([r[0] for r in rows], pa.int64()),
            "region": pa.array([r[1] for r in rows], pa.string()),
            "amount": pa.array([r[2] for r in rows], pa.int64()),
            "status": pa.array([r[3] for r in rows], pa.string()),
            "seq": pa.array(range(len(rows)), pa.int64()),
        }
    )
    plan = latest_plan(model)
    assert plan is not None
    con = duckdb.connect()
    con.execute("create schema bronze")
    con.register("__orders", orders)
    con.execute("create view bronze.orders as select * from __orders")
    expected = _rows_of(con, model)
    repeated = con.sql(plan.repeated_sql).to_arrow_table()
    keys = repeated.select(list(plan.key_columns))
    assert _rows_of(con, plan.split_sql, **{REPEATED: keys}) == expected
    if repeated.num_rows == 0:
        assert _rows_of(con, plan.unqualified_sql) == expected
    # The query chosen for the input, whichever it is, returns the same rows.
    query, relations = plan.query(repeated, orders.num_rows)
    assert _rows_of(con, query, **relations) == expected


def test_the_query_chosen_follows_how_many_rows_repeat_a_key() -> None:
    plan = latest_plan(MODELS[0])
    assert plan is not None
    empty = pa.array([], pa.int64())
    none = pa.table({"__lakebed_key_0": empty, ROWS_COLUMN: empty})
    assert plan.query(none, 1000) == (plan.unqualified_sql, {})
    few = pa.table({"__lakebed_key_0": [7, 9], ROWS_COLUMN: [2, 3]})
    query, relations = plan.query(few, 1000)
    assert query == plan.split_sql
    assert relations[REPEATED].to_pydict() == {"__lakebed_key_0": [7, 9]}
    most = pa.table({"__lakebed_key_0": [7], ROWS_COLUMN: [501]})
    assert plan.query(most, 1000) == (plan.sql, {})


# -- a model built that way ----------------------------------------------------------------


def _bronze(keys: int, repeats: int) -> pa.Table:
    """`keys` orders once each, then every one of the first `repeats` again, later (its
    latest row), and with any repeats, an order id NULL twice."""
    ids = [*range(keys), *range(repeats), *([None, None] if repeats else [])]
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "amount": pa.array([i % 7 for i in range(len(ids))], pa.int64()),
            "updated_at": pa.array(range(len(ids)), pa.int64()),
        }
    )


@pytest.mark.parametrize(
    ("repeats", "chosen"),
    [(0, "unqualified_sql"), (2_000, "split_sql"), (100_000, "sql")],
    ids=["none", "few", "most"],
)
def test_a_latest_per_key_model_built_in_full_keeps_each_keys_latest_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repeats: int, chosen: str
) -> None:
    queried: list[tuple[LatestPlan, str]] = []
    choose = LatestPlan.query

    def recorded(plan: LatestPlan, repeated: pa.Table, total: int) -> Any:
        query, relations = choose(plan, repeated, total)
        queried.append((plan, query))
        return query, relations

    monkeypatch.setattr(LatestPlan, "query", recorded)
    lh = lakebed.open(lakebed.init_project(tmp_path / "p"))
    keys = MIN_ROWS + 10
    lh.write("bronze.orders", _bronze(keys, repeats))
    sql = (
        "select id, amount * 10 as amount, updated_at from bronze.orders where amount <> 3 "
        "qualify row_number() over (partition by id order by updated_at desc) = 1"
    )
    write_model(lh.root, "silver.orders", sql)
    assert lh.run().ok
    built = lh.sql("select * from silver.orders order by id nulls last").arrow()
    con = duckdb.connect()
    con.register("bronze_orders", _bronze(keys, repeats))
    as_written = sql.replace("bronze.orders", "bronze_orders")
    expected = con.sql(f"select * from ({as_written}) order by id nulls last").to_arrow_table()
    assert built.to_pylist() == expected.to_pylist()
    # Each key once, its latest row (the NULL key counts as one).
    assert built.num_rows == len(set(built.column("id").to_pylist()))
    assert [query == getattr(plan, chosen) for plan, query in queried] == [True]
