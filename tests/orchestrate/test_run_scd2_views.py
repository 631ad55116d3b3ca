"""scd2 history models and view models in runs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

import lakebed
from helpers import column_edges, orders_and_customers, write_model
from lakebed import Lakehouse


@pytest.fixture
def lh(tmp_path: Path) -> Lakehouse:
    return orders_and_customers(tmp_path / "p")


def test_scd2_keeps_every_version_with_validity_and_current_flag(lh: Lakehouse) -> None:
    write_model(
        lh.root,
        "gold.customer_history",
        "select customer, country from silver.customers",
        "materialized: scd2\nunique_key: [customer]\n",
    )
    assert lh.run().ok
    customers = lh.table("silver.customers")
    customers.update({"country": "'AT'"}, predicate="customer = 10")
    customers.delete("customer = 20")
    customers.append({"customer": [30], "country": ["IT"]})
    assert lh.run().ok
    rows = lh.sql(
        "select customer, country, is_current, valid_to is not null as closed"
        " from gold.customer_history order by customer, valid_from"
    ).rows()
    assert rows == [
        (10, "DE", False, True),
        (10, "AT", True, False),
        (20, "FR", False, True),
        (30, "IT", True, False),
    ]
    assert lh.run().nodes[0].status == "up_to_date"


def _accounts(lh: Lakehouse, settings: str) -> None:
    day = [datetime(2026, 1, d, tzinfo=UTC) for d in (1, 2)]
    lh.write(
        "silver.accounts",
        {"id": [1, 2], "plan": ["free", "pro"], "seats": [1, 5], "changed_at": day},
    )
    write_model(
        lh.root,
        "gold.account_history",
        "select id, plan, seats, changed_at from silver.accounts",
        "materialized: scd2\nunique_key: id\n" + settings,
    )
    assert lh.run().ok


def _history(lh: Lakehouse) -> list[tuple]:
    return lh.sql(
        "select id, plan, seats, valid_from, valid_to, is_current"
        " from gold.account_history order by id, valid_from"
    ).rows()


def test_scd2_with_updated_at_dates_versions_by_the_source(lh: Lakehouse) -> None:
    _accounts(lh, "updated_at: changed_at\n")
    first, second, third = (datetime(2026, 1, d, tzinfo=UTC) for d in (1, 2, 3))
    assert _history(lh) == [(1, "free", 1, first, None, True), (2, "pro", 5, second, None, True)]
    accounts = lh.table("silver.accounts")
    accounts.update({"plan": "'pro'", "changed_at": "TIMESTAMPTZ '2026-01-03'"}, "id = 1")
    accounts.update({"seats": "6"}, "id = 2")  # changed_at stays: not a new version
    assert lh.run().ok
    assert _history(lh) == [
        (1, "free", 1, first, third, False),
        (1, "pro", 1, third, None, True),
        (2, "pro", 5, second, None, True),
    ]
    accounts.delete("id = 2")
    before = datetime.now(UTC)
    assert lh.run().ok
    closed = _history(lh)[-1]
    assert closed[:4] == (2, "pro", 5, second)
    assert closed[5] is False
    assert closed[4] >= before  # a key gone from the source closes when the run saw it go


def test_scd2_validity_is_traced_to_its_updated_at_column(lh: Lakehouse) -> None:
    _accounts(lh, "updated_at: changed_at\n")
    edges = lh.metastore.lineage_edges(downstream="gold.account_history")
    found = {(e.downstream_column, e.upstream_column, e.transform) for e in edges}
    assert ("valid_from", "changed_at", "expression") in found
    assert ("valid_to", "changed_at", "expression") in found


def test_scd2_with_check_cols_versions_only_their_changes(lh: Lakehouse) -> None:
    _accounts(lh, "check_cols: plan\n")
    accounts = lh.table("silver.accounts")
    accounts.update({"seats": "9"}, "id = 1")
    assert lh.run().nodes[0].status == "up_to_date"
    accounts.update({"plan": "'team'"}, "id = 1")
    assert lh.run().ok
    assert [(r[0], r[1], r[2], r[5]) for r in _history(lh)] == [
        (1, "free", 1, False),
        (1, "team", 9, True),
        (2, "pro", 5, True),
    ]


def test_scd2_refuses_several_rows_for_one_key(lh: Lakehouse) -> None:
    lh.write("silver.accounts", {"id": [1, 1, 2], "plan": ["free", "pro", "team"]})
    write_model(
        lh.root,
        "gold.account_history",
        "select id, plan from silver.accounts",
        "materialized: scd2\nunique_key: id\n",
    )
    node = lh.run().nodes[0]
    assert node.status == "failed"
    assert node.error is not None
    assert node.error.startswith(
        "scd2 model gold.account_history returns several rows for one id: id=1 (2 rows)"
    )
    assert "hint: return one row per key, e.g. QUALIFY row_number()" in node.error
    assert "gold.account_history" not in [t.name for t in lh.tables()]


def test_scd2_updated_at_must_be_a_timestamp(lh: Lakehouse) -> None:
    lh.write("silver.accounts", {"id": [1], "changed_at": ["2026-01-01"]})
    write_model(
        lh.root,
        "gold.account_history",
        "select id, changed_at from silver.accounts",
        "materialized: scd2\nunique_key: id\nupdated_at: changed_at\n",
    )
    node = lh.run().nodes[0]
    assert node.status == "failed"
    assert node.error is not None
    assert "is string, not a timestamp or date" in node.error


def test_a_views_checks_judge_its_rows_before_it_is_defined(lh: Lakehouse) -> None:
    view = "materialized: view\nchecks:\n  - not_null: {column: customer, severity: %s}\n"
    write_model(lh.root, "gold.v", "select id, customer from silver.orders", view % "fail")
    write_model(lh.root, "gold.w", "select count(*) as n from gold.v")
    nodes = {n.model: n for n in lh.run().nodes}
    assert nodes["gold.v"].status == "failed"
    assert nodes["gold.v"].error is not None
    assert "not_null(customer): 1 of 4 rows fail: customer is null" in nodes["gold.v"].error
    assert nodes["gold.w"].status == "skipped"
    assert "gold.v" not in {str(n) for n in lh.views()}  # nothing was defined
    write_model(lh.root, "gold.v", "select id, customer from silver.orders", view % "warn")
    nodes = {n.model: n for n in lh.run().nodes}
    assert [(c.check, c.status, c.failing_rows) for c in nodes["gold.v"].checks] == [
        ("not_null(customer)", "warn", 1)
    ]
    assert nodes["gold.w"].status == "success"
    assert "gold.v" in {str(n) for n in lh.views()}
    write_model(lh.root, "gold.v", "select id, customer from silver.orders", view % "drop")
    error = lh.run().nodes[0].error
    assert error is not None
    assert "a view has no rows of its own to drop to quarantine" in error


def test_view_models_are_queryable_and_always_current(lh: Lakehouse) -> None:
    write_model(
        lh.root,
        "gold.big_orders",
        "select id, amount from silver.orders where amount > 2",
        "materialized: view\n",
    )
    write_model(lh.root, "gold.big_total", "select sum(amount) as total from gold.big_orders")
    assert lh.run().ok
    assert lh.sql("select count(*) from gold.big_orders").scalar() == 3
    lh.table("silver.orders").append({"id": [9], "customer": [10], "amount": [100.0]})
    assert lh.sql("select count(*) from gold.big_orders").scalar() == 4  # computed per query
    assert lh.sql("select total from gold.big_total").scalar() == 15.5  # a table: as built
    assert "gold.big_orders" in [t.name for t in lh.tables()]


def test_a_view_records_its_lineage_and_describes_itself(lh: Lakehouse) -> None:
    sql = "select customer, sum(amount) as total from silver.orders group by 1"
    write_model(lh.root, "gold.totals", sql, "materialized: view\n")
    assert lh.run().ok
    assert column_edges(lh, "gold.totals") == {
        ("customer", "silver.orders", "customer", "copy"),
        ("total", "silver.orders", "amount", "aggregate"),
        ("*", "silver.orders", "*", "table"),
    }
    assert lh.describe("gold.totals").properties["lakebed.view"] == sql
    assert lh.schema("gold.totals").names == ["customer", "total"]
    assert lh.schema_history("gold.totals") == []
    with pytest.raises(lakebed.errors.StorageError, match=r"gold\.totals is a view, not a table"):
        lh.table("gold.totals")
