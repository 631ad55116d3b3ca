"""The shop demo: deterministic data, clean silver, bad rows in quarantine, gold that adds up."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

import lakebed
from lakebed.config import load_config
from lakebed.demo import SAMPLE_QUERY, DemoSummary, build_shop, examples_dir
from lakebed.errors import ConfigError

ORDERS = 20_000
REASONS = {
    "duplicate order_id",
    "missing customer_id",
    "non-positive quantity",
    "unknown product_id",
}
EXPECTED_TABLES = [
    "bronze.customers",
    "bronze.orders",
    "bronze.products",
    "silver.customers",
    "silver.orders",
    "silver.products",
    "gold.customer_lifetime_value",
    "gold.daily_revenue",
    "gold.product_sales",
    "quarantine.orders",
]
# Every table's full content, in a fixed order, to compare two builds.
SNAPSHOT_QUERIES = {
    "bronze.orders": "select * from bronze.orders order by all",
    "silver.orders": "select * from silver.orders order by order_id",
    "quarantine.orders": "select * from quarantine.orders order by all",
    "gold.daily_revenue": "select * from gold.daily_revenue order by all",
    "gold.customer_lifetime_value": "select * from gold.customer_lifetime_value order by all",
    "gold.product_sales": "select * from gold.product_sales order by all",
}


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> DemoSummary:
    return build_shop(tmp_path_factory.mktemp("demo") / "shop", orders=ORDERS, seed=7)


def query(root: Path, sql: str) -> pa.Table:
    with lakebed.open(root) as lh:
        return lh.sql(sql).arrow()


def scalar(root: Path, sql: str) -> object:
    with lakebed.open(root) as lh:
        return lh.sql(sql).scalar()


def test_builds_every_layer_and_reports_rows_and_files(shop: DemoSummary) -> None:
    assert [t.name for t in shop.tables] == EXPECTED_TABLES
    rows = {t.name: t.rows for t in shop.tables}
    assert rows["bronze.customers"] == rows["silver.customers"] == 10_000
    assert rows["silver.products"] == 500
    # The summary's counts are the tables' real counts.
    assert scalar(shop.root, "select count(*) from silver.orders") == rows["silver.orders"]
    assert all(t.files >= 1 and t.size_bytes > 0 for t in shop.tables)
    assert shop.sample_query == SAMPLE_QUERY


def test_same_seed_gives_the_same_tables(shop: DemoSummary, tmp_path: Path) -> None:
    again = build_shop(tmp_path / "again", orders=ORDERS, seed=7)
    for name, sql in SNAPSHOT_QUERIES.items():
        assert query(again.root, sql).equals(query(shop.root, sql)), name
    assert query(again.root, SAMPLE_QUERY).equals(query(shop.root, SAMPLE_QUERY))


def test_another_seed_gives_other_data(shop: DemoSummary, tmp_path: Path) -> None:
    other = build_shop(tmp_path / "other", orders=ORDERS, seed=8)
    sql = SNAPSHOT_QUERIES["silver.orders"]
    assert not query(other.root, sql).equals(query(shop.root, sql))


def test_bronze_orders_hold_duplicates_and_bad_rows(shop: DemoSummary) -> None:
    counts = query(
        shop.root,
        """select count(*) - count(distinct order_id) as duplicates,
                  count(*) filter (where customer_id is null) as no_customer,
                  count(*) filter (where quantity <= 0) as bad_quantity
           from bronze.orders""",
    ).to_pylist()[0]
    assert counts["duplicates"] == ORDERS // 500
    assert counts["no_customer"] > 0
    assert counts["bad_quantity"] > 0
    loads = scalar(shop.root, "select count(distinct _ingested_at) from bronze.orders")
    assert loads == 4  # one append per quarter


def test_silver_orders_have_unique_order_ids_and_no_bad_rows(shop: DemoSummary) -> None:
    row = query(
        shop.root,
        """select count(*) as n,
                  count(distinct order_id) as ids,
                  count(*) filter (where customer_id is null or quantity <= 0) as bad,
                  count(*) filter (
                      where product_id not in (select product_id from silver.products)
                  ) as unknown_product,
                  count(*) filter (where status <> lower(status)) as unnormalised
           from silver.orders""",
    ).to_pylist()[0]
    assert row["n"] == row["ids"]
    assert row["bad"] == row["unknown_product"] == row["unnormalised"] == 0


def test_silver_orders_are_typed_and_partitioned_by_month(shop: DemoSummary) -> None:
    with lakebed.open(shop.root) as lh:
        table = lh.table("silver.orders")
        schema = table.schema()
        assert table.partition_by == ["order_month"]
        assert lh.describe("silver.orders").partition_by == ["order_month"]
    assert schema.field("amount").type == pa.decimal128(12, 2)
    assert schema.field("ordered_at").type == pa.timestamp("us", tz="UTC")
    months = query(shop.root, "select distinct order_month from silver.orders order by 1")
    assert months.column(0).to_pylist() == [f"2025-{m:02d}" for m in range(1, 13)]
    mismatched = scalar(
        shop.root,
        "select count(*) from silver.orders where strftime(ordered_at, '%Y-%m') <> order_month",
    )
    assert mismatched == 0


def test_every_bad_row_is_in_quarantine_with_its_reason(shop: DemoSummary) -> None:
    grouped = query(shop.root, "select reason, count(*) as n from quarantine.orders group by 1")
    reasons = {row["reason"]: row["n"] for row in grouped.to_pylist()}
    assert set(reasons) == REASONS
    assert reasons["duplicate order_id"] == ORDERS // 500
    # Nothing is dropped silently: bronze = silver + quarantine.
    bronze = scalar(shop.root, "select count(*) from bronze.orders")
    silver = scalar(shop.root, "select count(*) from silver.orders")
    assert bronze == silver + sum(reasons.values())
    # Each reason is true of its rows.
    wrong = query(
        shop.root,
        """select reason, count(*) as n from quarantine.orders
           where (reason = 'missing customer_id' and customer_id is not null)
              or (reason = 'non-positive quantity' and quantity > 0)
              or (reason = 'unknown product_id'
                  and product_id in (select product_id from silver.products))
              or (reason = 'duplicate order_id'
                  and order_id not in (select order_id from silver.orders))
           group by reason""",
    )
    assert wrong.num_rows == 0
    assert scalar(shop.root, "select count(distinct source_table) from quarantine.orders") == 1


def test_gold_revenue_equals_the_sum_over_silver(shop: DemoSummary) -> None:
    kept = "status not in ('cancelled', 'returned')"
    silver = query(
        shop.root,
        f"""select count(*) as orders,
                   sum(amount) filter (where {kept}) as revenue,
                   sum(quantity) filter (where {kept}) as units
            from silver.orders""",
    ).to_pylist()[0]
    assert isinstance(silver["revenue"], Decimal)
    daily = query(
        shop.root, "select sum(orders) as orders, sum(revenue) as revenue from gold.daily_revenue"
    ).to_pylist()[0]
    assert daily == {"orders": silver["orders"], "revenue": silver["revenue"]}
    lifetime = query(
        shop.root,
        "select sum(orders) as orders, sum(revenue) as revenue from gold.customer_lifetime_value",
    ).to_pylist()[0]
    assert lifetime == {"orders": silver["orders"], "revenue": silver["revenue"]}
    products = query(
        shop.root,
        "select sum(orders) as orders, sum(units) as units, sum(revenue) as revenue "
        "from gold.product_sales",
    ).to_pylist()[0]
    assert products == silver
    by_day = scalar(
        shop.root,
        f"""select count(*) from gold.daily_revenue g
            join (select cast(ordered_at as date) as d, country,
                         sum(amount) filter (where {kept}) as r
                  from silver.orders group by all) s
              on s.d = g.order_date and s.country = g.country
            where coalesce(s.r, 0) <> g.revenue""",
    )
    assert by_day == 0


def test_catalog_records_domains_owners_and_descriptions(shop: DemoSummary) -> None:
    with lakebed.open(shop.root) as lh:
        records = {record.name: record for record in lh.tables()}
    assert records["silver.orders"].domain == "sales"
    assert records["silver.orders"].owner == "sales-data@shop.example"
    assert records["gold.product_sales"].owner == "catalog-team@shop.example"
    assert "pii" in records["silver.customers"].tags
    assert all(record.description for record in records.values())


def test_progress_reports_each_step_in_order(tmp_path: Path) -> None:
    seen: list[tuple[str, int, int]] = []
    build_shop(tmp_path / "shop", orders=2_000, progress=lambda *step: seen.append(step))
    done = [step[1] for step in seen]
    assert done == sorted(done)
    assert done[0] == 0
    assert seen[-1][1] == seen[-1][2]  # ends with everything done
    assert any("silver.orders" in step[0] for step in seen)


def test_refuses_a_folder_that_holds_a_project(shop: DemoSummary) -> None:
    with pytest.raises(ConfigError, match="already exists"):
        build_shop(shop.root, orders=1_000)


def test_examples_ship_a_valid_shop_config() -> None:
    folder = examples_dir() / "shop"
    config = load_config(folder)
    assert config.name == "shop"
    assert set(config.domains) == {"sales", "catalog"}
    assert config.domains["sales"].owner == "sales-data@shop.example"
    assert (folder / "README.md").is_file()


@pytest.mark.slow
def test_full_demo_through_the_cli(tmp_path: Path) -> None:
    """The million-order build that `make demo` runs, end to end through the console script."""
    target = tmp_path / "demo-shop"
    command = [sys.executable, "-m", "lakebed.cli", "demo", str(target)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "sample gold query" in done.stdout
    with lakebed.open(target) as lh:
        names = [record.name for record in lh.tables()]
        assert sorted(names) == sorted(EXPECTED_TABLES)
        orders = lh.sql("select count(*) from silver.orders").scalar()
        quarantined = lh.sql("select count(*) from quarantine.orders").scalar()
        bronze = lh.sql("select count(*) from bronze.orders").scalar()
    assert orders > 990_000
    assert bronze == orders + quarantined
