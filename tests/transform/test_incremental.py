"""Increments of merged models end as a full rebuild would, for inputs that filter the
model's rows or give its key through an expression."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

import lakebed
from helpers import write_model
from lakebed import Lakehouse

MERGED = "materialized: incremental\nunique_key: [{key}]\n"


@pytest.fixture
def lh(tmp_path: Path) -> Lakehouse:
    lake = lakebed.open(lakebed.init_project(tmp_path / "p"))
    lake.write("silver.customers", {"customer_id": [1, 2, 3], "name": ["a", "b", "c"]})
    lake.write(
        "silver.orders",
        {
            "order_id": [10, 11, 12],
            "customer_id": [1, 1, 2],
            "amount": [5.0, 7.0, 1.0],
            "ordered_at": [datetime(2026, 1, 1, 9), datetime(2026, 1, 1, 17), datetime(2026, 1, 2)],
        },
    )
    return lake


def _equals_full_rebuild(lh: Lakehouse, model: str, sql: str) -> None:
    built = lh.sql(f"select * from {model} order by all").rows()
    assert built == lh.sql(f"select * from ({sql}) order by all").rows()


@pytest.mark.parametrize(
    "sql",
    [
        "select c.customer_id, c.name from silver.customers c "
        "semi join silver.orders o on o.customer_id = c.customer_id",
        "select c.customer_id, c.name from silver.customers c "
        "where c.customer_id in (select customer_id from silver.orders)",
        "select c.customer_id, c.name from silver.customers c where exists "
        "(select 1 from silver.orders o where o.customer_id = c.customer_id and o.amount > 2)",
    ],
    ids=["semi join", "in", "exists"],
)
def test_a_removed_row_of_a_filtering_input_keeps_rows_other_rows_pass(
    lh: Lakehouse, sql: str
) -> None:
    """Customer 1 has two orders: one deleted leaves them a buyer. (The filter's input
    holds the key column too, but the key comes from the customers.)"""
    write_model(lh.root, "gold.buyers", sql, MERGED.format(key="customer_id"))
    lh.run()
    orders = lh.table("silver.orders")
    orders.delete("order_id = 10")
    orders.delete("order_id = 12")  # customer 2's only order: no longer a buyer
    orders.append(
        {
            "order_id": [13],
            "customer_id": [3],
            "amount": [9.0],
            "ordered_at": [datetime(2026, 2, 1)],
        }
    )
    assert lh.run().nodes[0].mode == "incremental"
    _equals_full_rebuild(lh, "gold.buyers", sql)
    assert [r[0] for r in lh.sql("select customer_id from gold.buyers order by 1").rows()] == [1, 3]


def test_an_anti_join_on_a_changed_input_rebuilds_in_full(lh: Lakehouse) -> None:
    """A new order takes its customer out of "customers without orders": no row of the
    changed input gives that output row, so only a full rebuild is exact."""
    sql = (
        "select c.customer_id, c.name from silver.customers c "
        "anti join silver.orders o on o.customer_id = c.customer_id"
    )
    write_model(lh.root, "gold.idle", sql, MERGED.format(key="customer_id"))
    lh.run()
    lh.table("silver.orders").append(
        {
            "order_id": [13],
            "customer_id": [3],
            "amount": [9.0],
            "ordered_at": [datetime(2026, 2, 1)],
        }
    )
    node = lh.run().nodes[0]
    assert node.mode == "full"
    assert (
        node.reason == "its SQL reads silver.orders neither row by row nor by key: rebuilt in full"
    )
    _equals_full_rebuild(lh, "gold.idle", sql)


def test_a_key_computed_from_the_input_recomputes_only_the_keys_changes_touch(
    lh: Lakehouse,
) -> None:
    sql = (
        "select date_trunc('day', ordered_at) as day, count(*) as orders, sum(amount) as total "
        "from silver.orders group by 1"
    )
    write_model(lh.root, "gold.daily", sql, MERGED.format(key="day"))
    assert lh.run().nodes[0].mode == "full"
    orders = lh.table("silver.orders")
    orders.update({"ordered_at": "TIMESTAMP '2026-01-03 08:00:00'"}, predicate="order_id = 12")
    orders.append(
        {
            "order_id": [13],
            "customer_id": [3],
            "amount": [9.0],
            "ordered_at": [datetime(2026, 2, 1)],
        }
    )
    node = lh.run().nodes[0]
    # Jan 2 lost its only order (deleted), Jan 3 and Feb 1 are new: Jan 1 is not touched.
    assert (node.mode, node.rows) == ("incremental", 2)
    _equals_full_rebuild(lh, "gold.daily", sql)


def test_a_null_key_is_one_key_across_increments(lh: Lakehouse) -> None:
    """Orders without a customer make one row of a per-customer total, as GROUP BY makes
    it; an increment that touches it replaces that row rather than adding another."""
    lh.table("silver.orders").append(
        {
            "order_id": [13],
            "customer_id": [None],
            "amount": [2.0],
            "ordered_at": [datetime(2026, 2, 1)],
        }
    )
    sql = "select customer_id, sum(amount) as total from silver.orders group by customer_id"
    write_model(lh.root, "gold.totals", sql, MERGED.format(key="customer_id"))
    lh.run()
    lh.table("silver.orders").append(
        {
            "order_id": [14],
            "customer_id": [None],
            "amount": [5.0],
            "ordered_at": [datetime(2026, 2, 2)],
        }
    )
    assert lh.run().nodes[0].mode == "incremental"
    _equals_full_rebuild(lh, "gold.totals", sql)
    assert lh.sql("select total from gold.totals where customer_id is null").rows() == [(7.0,)]


def test_a_python_model_rebuilds_when_an_input_without_its_key_changes(lh: Lakehouse) -> None:
    """The function may combine a dimension's rows in any way (here: how many customers
    there are), so only a full rebuild is exact when the dimension changes."""
    folder = lh.root / "models" / "gold"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "shares.py").write_text(
        "import pyarrow as pa\n"
        "from lakebed.transform import model\n\n"
        "@model(inputs=['silver.orders', 'silver.customers'], materialized='incremental',\n"
        "       unique_key='order_id')\n"
        "def shares(orders, customers):\n"
        "    n = customers.num_rows\n"
        "    amounts = orders.column('amount').to_pylist()\n"
        "    return pa.table({'order_id': orders.column('order_id'),\n"
        "                     'per_customer': [a / n for a in amounts]})\n"
    )
    assert lh.run().nodes[0].mode == "full"
    lh.table("silver.customers").append({"customer_id": [4], "name": ["d"]})
    node = lh.run().nodes[0]
    assert node.mode == "full"
    assert node.reason == (
        "its function reads silver.customers, which does not hold its key: rebuilt in full"
    )
    assert lh.sql("select * from gold.shares order by 1").rows() == [
        (10, 1.25),
        (11, 1.75),
        (12, 0.25),
    ]
    lh.table("silver.orders").append(
        {
            "order_id": [13],
            "customer_id": [3],
            "amount": [8.0],
            "ordered_at": [datetime(2026, 2, 1)],
        }
    )
    assert lh.run().nodes[0].mode == "incremental"  # the input holding the key: by key
    assert lh.sql("select * from gold.shares where order_id = 13").rows() == [(13, 2.0)]


def test_a_key_computed_by_a_condition_moves_rows_between_keys(lh: Lakehouse) -> None:
    sql = "select amount > 4 as big, count(*) as orders from silver.orders group by 1"
    write_model(lh.root, "gold.sizes", sql, MERGED.format(key="big"))
    lh.run()
    lh.table("silver.orders").update({"amount": "1.0"}, predicate="order_id = 10")
    assert lh.run().nodes[0].mode == "incremental"
    _equals_full_rebuild(lh, "gold.sizes", sql)
    assert lh.sql("select * from gold.sizes order by 1").rows() == [(False, 2), (True, 1)]
