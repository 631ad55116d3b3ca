"""The shop demo: sources written into the project and loaded through the connectors,
deterministic data, malformed records and bad rows in quarantine, gold that adds up."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from contextlib import closing
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

import lakebed
from lakebed.config import load_config
from lakebed.demo import (
    CUSTOMERS_FILE,
    SAMPLE_QUERY,
    SHOP_DB,
    SOURCES,
    DemoSummary,
    build_shop,
    examples_dir,
    orders_file,
)
from lakebed.errors import ConfigError
from lakebed.ingest import load_sources

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
    "quarantine.shop_customers",
    "quarantine.shop_orders",
]
# When and in which run a record was loaded differ from build to build; the rest does not.
RUN_COLUMNS = "exclude (_ingested_at, _load_id)"
# Every table's full content, in a fixed order, to compare two builds.
SNAPSHOT_QUERIES = {
    "bronze.orders": f"select * {RUN_COLUMNS} from bronze.orders order by all",
    "bronze.customers": f"select * {RUN_COLUMNS} from bronze.customers order by all",
    "bronze.products": f"select * {RUN_COLUMNS} from bronze.products order by all",
    "silver.orders": "select * from silver.orders order by order_id",
    "silver.customers": "select * from silver.customers order by customer_id",
    "silver.products": "select * from silver.products order by product_id",
    "quarantine.orders": f"select * {RUN_COLUMNS} from quarantine.orders order by all",
    "quarantine.shop_orders": f"select * {RUN_COLUMNS} from quarantine.shop_orders order by all",
    "quarantine.shop_customers": (
        f"select * {RUN_COLUMNS} from quarantine.shop_customers order by all"
    ),
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


def order_lines(root: Path) -> dict[tuple[str, int], str]:
    """Every record line of the quarterly orders exports, by (file, line number)."""
    lines = {}
    for quarter in range(1, 5):
        key = orders_file(quarter).as_posix()
        text = (root / key).read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), 1):
            if number > 1:  # the header
                lines[key, number] = line
    return lines


def origin(text: str) -> tuple[str, int]:
    """A quarantined record's origin, `<file>:<line>`, as (file, line)."""
    where, _, line = text.rpartition(":")
    return where, int(line)


def source_digests(root: Path) -> dict[str, str]:
    files = [orders_file(q) for q in range(1, 5)] + [CUSTOMERS_FILE]
    digests = {f.as_posix(): hashlib.sha256((root / f).read_bytes()).hexdigest() for f in files}
    with closing(sqlite3.connect(root / SHOP_DB)) as db:
        rows = db.execute("select * from products order by product_id").fetchall()
    digests[SHOP_DB.as_posix()] = hashlib.sha256(repr(rows).encode()).hexdigest()
    return digests


def test_builds_every_layer_and_reports_rows_and_files(shop: DemoSummary) -> None:
    assert [t.name for t in shop.tables] == EXPECTED_TABLES
    rows = {t.name: t.rows for t in shop.tables}
    assert rows["bronze.customers"] == rows["silver.customers"] == 10_000
    assert rows["silver.products"] == 500
    # The summary's counts are the tables' real counts.
    assert scalar(shop.root, "select count(*) from silver.orders") == rows["silver.orders"]
    assert all(t.files >= 1 and t.size_bytes > 0 for t in shop.tables)
    assert shop.sample_query == SAMPLE_QUERY


def test_writes_the_shops_exports_into_the_project_as_sources(shop: DemoSummary) -> None:
    root = shop.root
    assert sorted(p.name for p in (root / "sources" / "orders").iterdir()) == [
        f"orders-2025-Q{q}.csv" for q in range(1, 5)
    ]
    header = (root / orders_file(1)).read_text(encoding="utf-8").splitlines()[0]
    assert header == "order_id,customer_id,product_id,quantity,unit_price,status,ordered_at,country"
    customers = (root / CUSTOMERS_FILE).read_text(encoding="utf-8").splitlines()
    assert len(customers) == 10_001  # the last one is cut off
    with closing(sqlite3.connect(root / SHOP_DB)) as db:
        assert db.execute("select count(*) from products").fetchone() == (500,)
    with lakebed.open(root) as lh:
        sources = lh.sources()
        assert list(sources) == list(SOURCES)
        assert {name: str(spec.target) for name, spec in sources.items()} == {
            "shop_customers": "bronze.customers",
            "shop_products": "bronze.products",
            "shop_orders": "bronze.orders",
        }
        assert {name: spec.config.kind for name, spec in sources.items()} == {
            "shop_customers": "files",
            "shop_products": "sql",
            "shop_orders": "files",
        }


def test_same_seed_gives_the_same_tables(shop: DemoSummary, tmp_path: Path) -> None:
    again = build_shop(tmp_path / "again", orders=ORDERS, seed=7)
    assert source_digests(again.root) == source_digests(shop.root)
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
    files = query(
        shop.root, "select distinct _origin, _source from bronze.orders order by all"
    ).to_pylist()
    assert files == [
        {"_origin": orders_file(q).as_posix(), "_source": "shop_orders"} for q in range(1, 5)
    ]


def test_malformed_records_are_in_the_ingestion_quarantine_with_error_and_origin(
    shop: DemoSummary,
) -> None:
    lines = order_lines(shop.root)
    rejects = query(
        shop.root, "select _source, _origin, error, raw from quarantine.shop_orders"
    ).to_pylist()
    assert {r["_source"] for r in rejects} == {"shop_orders"}
    expected = {  # what the error says → the export it is in
        "CSV parse error: Expected 8 columns, got 7": 2,
        "CSV parse error: Expected 8 columns, got 9": 2,
        "CSV parse error: the quoted field opened here is not closed properly": 2,
        "column quantity: 'three' is not a int64": 3,
    }
    assert len(rejects) == len(expected)
    for fragment, quarter in expected.items():
        (reject,) = [r for r in rejects if fragment in r["error"]]
        where, number = origin(reject["_origin"])
        assert where == orders_file(quarter).as_posix()
        line = lines[where, number]
        if "three" in fragment:
            # Parsed, then rejected by type: the raw record is the parsed row.
            assert line.split(",")[3] == "three"
            assert '"quantity": "three"' in reject["raw"]
            assert reject["raw"].startswith(f'{{"order_id": {line.split(",")[0]},')
        else:
            assert reject["raw"].rstrip("\n") == line  # the line as it is in the file

    (customer,) = query(
        shop.root, "select _source, _origin, error, raw from quarantine.shop_customers"
    ).to_pylist()
    last = (shop.root / CUSTOMERS_FILE).read_text(encoding="utf-8").splitlines()[-1]
    assert customer["_source"] == "shop_customers"
    assert customer["_origin"] == f"{CUSTOMERS_FILE.as_posix()}:10001"
    assert customer["error"].startswith("invalid JSON")
    assert customer["raw"] == last
    assert {(load.source, load.quarantined) for load in shop.loads} == {
        ("shop_customers", 1),
        ("shop_products", 0),
        ("shop_orders", 4),
    }


def test_bronze_holds_every_other_record_exactly_once(shop: DemoSummary) -> None:
    lines = order_lines(shop.root)
    rejected = {
        origin(text)
        for text in query(shop.root, "select _origin from quarantine.shop_orders")
        .column(0)
        .to_pylist()
    }
    bronze = query(shop.root, "select _origin, _origin_row, order_id from bronze.orders")
    files, rows = bronze.column("_origin").to_pylist(), bronze.column("_origin_row").to_pylist()
    loaded = list(zip(files, rows, strict=True))
    assert len(set(loaded)) == len(loaded)  # no line twice
    assert not rejected & set(loaded)
    assert rejected | set(loaded) == set(lines)  # and none lost
    assert len(loaded) == len(lines) - len(rejected)
    # Each bronze row is the record on its line.
    ids = bronze.column("order_id").to_pylist()
    assert all(lines[at].split(",", 1)[0] == str(i) for at, i in zip(loaded, ids, strict=True))

    customers = query(
        shop.root,
        "select count(*) as n, count(distinct customer_id) as ids, "
        "count(distinct _origin_row) as lines, max(_origin_row) as last from bronze.customers",
    ).to_pylist()[0]
    assert customers == {"n": 10_000, "ids": 10_000, "lines": 10_000, "last": 10_000}
    with closing(sqlite3.connect(shop.root / SHOP_DB)) as db:
        (products,) = db.execute("select count(*) from products").fetchone()
    assert scalar(shop.root, "select count(distinct product_id) from bronze.products") == products
    assert scalar(shop.root, "select count(*) from bronze.products") == products
    assert {load.source: load.rows for load in shop.loads} == {
        "shop_customers": 10_000,
        "shop_products": products,
        "shop_orders": len(loaded),
    }


def test_rerunning_ingestion_loads_nothing_new(tmp_path: Path) -> None:
    built = build_shop(tmp_path / "shop", orders=2_000)
    tables = [
        "bronze.customers",
        "bronze.products",
        "bronze.orders",
        "quarantine.shop_customers",
        "quarantine.shop_orders",
    ]
    with lakebed.open(built.root) as lh:
        before = {name: lh.table(name).version() for name in tables}
        again = [lh.ingest(source) for source in SOURCES]
        after = {name: lh.table(name).version() for name in tables}
    assert [(s.source, s.rows, s.quarantined, s.batches) for s in again] == [
        (source, 0, 0, 0) for source in SOURCES
    ]
    assert after == before


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
    assert records["bronze.orders"].owner == "sales-data@shop.example"
    assert records["bronze.products"].owner == "catalog-team@shop.example"
    assert records["quarantine.shop_orders"].domain == "sales"
    for name in ("bronze.customers", "quarantine.shop_customers", "silver.customers"):
        assert "pii" in records[name].tags
    assert all(record.description for record in records.values())


def test_progress_reports_each_step_in_order(tmp_path: Path) -> None:
    seen: list[tuple[str, int, int]] = []
    build_shop(tmp_path / "shop", orders=2_000, progress=lambda *step: seen.append(step))
    done = [step[1] for step in seen]
    assert done == sorted(done)
    assert done[0] == 0
    assert seen[-1][1] == seen[-1][2]  # ends with everything done
    assert any("silver.orders" in step[0] for step in seen)
    assert any(step[0].startswith("ingesting shop_orders (4/4 files") for step in seen)


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
    sources = load_sources(config.sources, folder)
    assert list(sources) == list(SOURCES)
    assert all(spec.config.description and spec.config.owner for spec in sources.values())


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
        rejected = lh.sql("select count(*) from quarantine.shop_orders").scalar()
    assert orders > 990_000
    assert bronze == orders + quarantined
    assert rejected == 4
    assert bronze + rejected == len(order_lines(target))
