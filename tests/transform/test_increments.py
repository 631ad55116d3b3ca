"""What an incremental model must read of a changed input: its changed rows, every row of
the keys they touch, or everything."""

from __future__ import annotations

import pytest

from lakebed.storage import TableName
from lakebed.transform import increments
from lakebed.transform.increments import (
    increment_shape,
    key_source,
    without_qualify,
)

ORDERS = TableName.parse("bronze.orders")
SCHEMAS = {
    ORDERS: ["order_id", "customer_id", "amount", "updated_at"],
    TableName.parse("silver.customers"): ["customer_id", "country"],
}


@pytest.mark.parametrize(
    ("sql", "key", "expected"),
    [
        (
            "select order_id, amount * 2 as doubled from bronze.orders where amount > 0",
            "order_id",
            "rows",
        ),
        (
            "select o.order_id, c.country from bronze.orders o "
            "join silver.customers c on c.customer_id = o.customer_id",
            "order_id",
            "rows",
        ),
        (
            "select order_id, amount from bronze.orders "
            "qualify row_number() over (partition by order_id order by updated_at desc) = 1",
            "order_id",
            "keys",
        ),
        (
            "select customer_id, sum(amount) as total, count(distinct order_id) as n "
            "from bronze.orders group by customer_id",
            "customer_id",
            "keys",
        ),
        ("select distinct customer_id from bronze.orders", "customer_id", "keys"),
        ("select customer_id, count(*) as n from bronze.orders group by 1", "customer_id", "keys"),
        (
            "select customer_id, max(amount) as top from bronze.orders group by all",
            "customer_id",
            "keys",
        ),
        (
            "select o.customer_id, sum(amount) over (partition by o.customer_id) as total "
            "from bronze.orders o",
            "customer_id",
            "keys",
        ),
        (
            "select order_id, sum(amount) over (order by updated_at) as running from bronze.orders",
            "order_id",
            "full",
        ),
        ("select 1 as k, count(*) as n from bronze.orders", "k", "full"),
        (
            "select customer_id, count(*) as n from bronze.orders group by customer_id, amount",
            "customer_id",
            "keys",
        ),
        (
            "select c.country, sum(o.amount) as total from bronze.orders o "
            "join silver.customers c using (customer_id) group by c.country",
            "country",
            "full",
        ),
        ("select order_id from bronze.orders order by order_id limit 10", "order_id", "full"),
        (
            "select o.order_id, c.country from bronze.orders o "
            "left join silver.customers c on c.customer_id = o.customer_id",
            "order_id",
            "rows",
        ),
        (
            "select c.customer_id, o.amount from silver.customers c "
            "left join bronze.orders o on c.customer_id = o.customer_id",
            "customer_id",
            "full",
        ),
        (
            "select order_id from bronze.orders union all select order_id from bronze.orders",
            "order_id",
            "full",
        ),
        (
            "select upper(cast(order_id as varchar)) as order_id, count(*) as n "
            "from bronze.orders group by order_id",
            "order_id",
            "full",
        ),
        (
            "select customer_id, count(*) as n from bronze.orders group by customer_id",
            "n",
            "full",
        ),
        (
            "select o.order_id, o.amount from silver.customers c "
            "asof join bronze.orders o on o.customer_id = c.customer_id",
            "order_id",
            "full",
        ),
        (
            "select o.order_id, c.country from bronze.orders o "
            "asof join silver.customers c on o.customer_id = c.customer_id",
            "order_id",
            "rows",
        ),
        (
            "select c.customer_id, c.country from silver.customers c "
            "anti join bronze.orders o using (customer_id)",
            "customer_id",
            "full",
        ),
        (
            "select c.customer_id from silver.customers c "
            "where not exists (select 1 from bronze.orders o where o.customer_id = c.customer_id)",
            "customer_id",
            "full",
        ),
        (
            "select c.customer_id from silver.customers c "
            "where c.customer_id not in (select customer_id from bronze.orders)",
            "customer_id",
            "full",
        ),
        (
            "select c.customer_id, c.country from silver.customers c "
            "semi join bronze.orders o using (customer_id)",
            "customer_id",
            "rows",
        ),
        (
            "select o.order_id from bronze.orders o positional join silver.customers c",
            "order_id",
            "full",
        ),
        (
            "select c.customer_id, exists (select 1 from bronze.orders o "
            "where o.customer_id = c.customer_id) as buyer from silver.customers c",
            "customer_id",
            "full",
        ),
        (
            "select c.customer_id, (select max(amount) from bronze.orders o "
            "where o.customer_id = c.customer_id) as top from silver.customers c",
            "customer_id",
            "full",
        ),
        (
            "select c.customer_id from silver.customers c where c.country = 'DE' and "
            "(c.customer_id in (select customer_id from bronze.orders) or c.country is null)",
            "customer_id",
            "rows",
        ),
        (
            "with o as (select * from bronze.orders where amount > 0) "
            "select o.order_id, c.country from o join silver.customers c using (customer_id)",
            "order_id",
            "rows",
        ),
        (
            "with o as (select * from bronze.orders), p as (select * from o where amount > 0) "
            "select a.order_id, b.amount from p a join o b on a.customer_id = b.order_id",
            "order_id",
            "full",
        ),
        (
            "select distinct on (customer_id) customer_id, amount from bronze.orders "
            "order by customer_id, updated_at desc",
            "customer_id",
            "keys",
        ),
        (
            "select distinct on (customer_id) order_id, customer_id from bronze.orders "
            "order by customer_id, updated_at desc",
            "order_id",
            "full",
        ),
    ],
    ids=[
        "filter and expressions",
        "join a dimension",
        "latest version per key",
        "aggregate per key",
        "distinct keys",
        "group by position",
        "group by all",
        "window per key",
        "running total",
        "global aggregate",
        "group by the key and more",
        "group by another table's column",
        "limit",
        "left join keeps the input",
        "the input on the optional side",
        "union",
        "key computed",
        "key is an aggregate",
        "asof join picks from it",
        "asof join picks for it",
        "anti join",
        "not exists",
        "not in",
        "semi join",
        "positional join",
        "exists as a value",
        "scalar subquery",
        "in, within and/or",
        "a cte",
        "a cte joined to another over the same input",
        "distinct on the key",
        "distinct on another column",
    ],
)
def test_increment_shape(sql: str, key: str, expected: str) -> None:
    output = TableName.parse("silver.out")
    found = increment_shape(sql, output, ORDERS, [key], SCHEMAS)
    assert found.shape == expected
    assert found.by == ((key,) if expected == "keys" else ())


LATEST = "qualify row_number() over (partition by order_id order by updated_at desc) = 1"


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (f"select order_id, amount, updated_at from bronze.orders {LATEST}", "latest"),
        (f"select * from bronze.orders where amount > 0 {LATEST}", "latest"),
        (
            "select o.order_id, o.amount * 2 as doubled, o.updated_at from bronze.orders o "
            "qualify row_number() over (partition by o.order_id order by o.updated_at desc "
            "nulls first) <= 1",
            "latest",
        ),
        (
            "select order_id, updated_at, row_number() over (partition by order_id "
            "order by updated_at desc) as rn from bronze.orders qualify rn = 1",
            "latest",
        ),
        (f"select order_id, amount from bronze.orders {LATEST}", "keys"),  # no order column
        (f"select order_id, updated_at + 1 as updated_at from bronze.orders {LATEST}", "keys"),
        (f"select order_id, updated_at from bronze.orders {LATEST.replace('= 1', '<= 2')}", "keys"),
        (
            "select order_id, updated_at from bronze.orders "
            + LATEST.replace("row_number", "rank"),
            "keys",
        ),
        (
            "select order_id, updated_at, count(*) over (partition by order_id) as n "
            f"from bronze.orders {LATEST}",
            "keys",
        ),
        (
            "select o.order_id, o.updated_at, c.country from bronze.orders o "
            f"join silver.customers c using (customer_id) {LATEST}",
            "keys",
        ),
    ],
    ids=[
        "latest",
        "star and a filter",
        "alias, nulls first, <= 1",
        "named row number",
        "order column not kept",
        "order column computed",
        "two rows per key",
        "rank",
        "another window",
        "a join",
    ],
)
def test_one_row_per_key_by_an_order_it_keeps_compares_new_rows(sql: str, expected: str) -> None:
    found = increment_shape(sql, TableName.parse("silver.out"), ORDERS, ["order_id"], SCHEMAS)
    assert (found.shape, found.by) == (expected, ("order_id",))
    if expected == "latest":
        assert [column for column, _ in found.order] == ["updated_at"]


DAY = "date_trunc('day', updated_at)"


@pytest.mark.parametrize(
    ("sql", "keys", "expected"),
    [
        (f"select {DAY} as day, count(*) as n from bronze.orders group by 1", ["day"], ["day"]),
        (
            f"select {DAY} as day, sum(amount) as s from bronze.orders group by day",
            ["day"],
            ["day"],
        ),
        (f"select {DAY} as day, count(*) as n from bronze.orders group by {DAY}", ["day"], ["day"]),
        (f"select {DAY} as day, count(*) as n from bronze.orders group by all", ["day"], ["day"]),
        (
            f"select customer_id, {DAY} as day, count(*) as n from bronze.orders group by all",
            ["customer_id", "day"],
            ["customer_id", "day"],
        ),
        (
            f"select {DAY} as day, c.country, count(*) as n from bronze.orders o "
            "join silver.customers c using (customer_id) group by all",
            ["day", "country"],
            ["day"],
        ),
        ("select amount > 5 as big, count(*) as n from bronze.orders group by 1", ["big"], ["big"]),
        (f"select {DAY} as day, amount from bronze.orders group by all", ["day"], ["day"]),
        # Not from the input's rows alone, or not what the rows are grouped by:
        (
            "select updated_at > now() - interval 1 day as recent, count(*) as n "
            "from bronze.orders group by 1",
            ["recent"],
            None,
        ),
        ("select amount > random() as r, count(*) as n from bronze.orders group by 1", ["r"], None),
        (
            f"select {DAY} as updated_at, count(*) as n from bronze.orders group by updated_at",
            ["updated_at"],
            None,
        ),
        (
            f"select {DAY} as day, count(*) over (partition by customer_id) as n "
            "from bronze.orders",
            ["day"],
            None,
        ),
    ],
    ids=[
        "group by position",
        "group by the name",
        "group by the expression",
        "group by all",
        "with a copied key",
        "a joined table's key",
        "a condition",
        "grouped by it and more",
        "a clock",
        "random",
        "grouped by the input column of that name",
        "window",
    ],
)
def test_keys_computed_from_the_input_and_grouped_by_recompute_their_rows(
    sql: str, keys: list[str], expected: list[str] | None
) -> None:
    found = increment_shape(sql, TableName.parse("silver.out"), ORDERS, keys, SCHEMAS)
    if expected is None:
        assert found.shape == "full"
        return
    assert (found.shape, list(found.by)) == ("keys", expected)
    assert {k for k, _ in found.computed} == set(expected) - {"customer_id"}


def test_keys_read_by_the_part_of_a_composite_key_the_sql_partitions_by() -> None:
    sql = (
        "select order_id, row_number() over (partition by order_id order by updated_at) "
        "as delivery, amount from bronze.orders"
    )
    found = increment_shape(
        sql, TableName.parse("silver.out"), ORDERS, ["order_id", "delivery"], SCHEMAS
    )
    assert (found.shape, found.by) == ("keys", ("order_id",))


def test_sql_that_cannot_be_analysed_is_rebuilt_in_full(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise RecursionError("too deep")

    monkeypatch.setattr(increments, "_shape", broken)
    sql = "select order_id from bronze.orders"
    found = increment_shape(sql, TableName.parse("silver.out"), ORDERS, ["order_id"], SCHEMAS)
    assert found.shape == "full"


def test_key_source_is_the_input_the_whole_key_is_copied_from() -> None:
    customers = TableName.parse("silver.customers")
    output = TableName.parse("silver.out")
    joined = (
        "select o.order_id, c.country from bronze.orders o "
        "join silver.customers c on c.customer_id = o.customer_id"
    )
    assert key_source(joined, output, ["order_id"], SCHEMAS) == ORDERS
    assert key_source(joined, output, ["country"], SCHEMAS) == customers
    # Aggregates: no input gives the output rows of a key from its own rows alone.
    grouped = "select customer_id, count(*) as n from bronze.orders group by customer_id"
    assert key_source(grouped, output, ["customer_id"], SCHEMAS) is None
    computed = "select order_id + 1 as order_id from bronze.orders"
    assert key_source(computed, output, ["order_id"], SCHEMAS) is None


def test_without_qualify_keeps_the_rest_of_the_select() -> None:
    sql = (
        "select id, lower(s) as s from bronze.t where v > 0 "
        "qualify row_number() over (partition by id order by ts desc) = 1"
    )
    assert without_qualify(sql) == "SELECT id, LOWER(s) AS s FROM bronze.t WHERE v > 0"
