"""The shop demo: sources written into the project and loaded through the connectors,
models built by `lh.run()` with their checks, deterministic data, malformed records and
bad rows in quarantine, gold that adds up, incremental runs that equal the full build."""

from __future__ import annotations

import hashlib
import shutil
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
    STREAM_EVENTS,
    DemoSummary,
    build_shop,
    examples_dir,
    orders_file,
    write_shop,
)
from lakebed.errors import ConfigError
from lakebed.govern import parse_checks
from lakebed.ingest import load_sources
from lakebed.storage import TableName
from lakebed.transform import ModelGraph, load_models

ORDERS = 20_000
# The drop checks of silver.orders (examples/shop/models/silver/orders.yml): the name each
# quarantined row carries in `_check`, and its `_reason`.
DROP_CHECKS = {
    "duplicate_order_id": "delivery is above 1",
    "missing_customer_id": "customer_id is null",
    "non_positive_quantity": "quantity is below 1",
    "unknown_product_id": "product_id has no match in bronze.products.product_id",
}
MODELS = [
    "gold.customer_lifetime_value",
    "gold.daily_revenue",
    "gold.product_sales",
    "silver.customers",
    "silver.orders",
    "silver.products",
]
EXPECTED_TABLES = [
    "bronze.customers",
    "bronze.order_events",
    "bronze.orders",
    "bronze.products",
    "silver.customers",
    "silver.orders",
    "silver.products",
    "gold.customer_lifetime_value",
    "gold.daily_revenue",
    "gold.product_sales",
    "gold.revenue_per_minute",
    "quarantine.order_events",
    "quarantine.revenue_per_minute",
    "quarantine.shop_customers",
    "quarantine.shop_orders",
    "quarantine.silver_orders",
]
# When and in which run a record was loaded differ from build to build; the rest does not.
RUN_COLUMNS = "exclude (_ingested_at, _load_id)"
# Every table's full content, in a fixed order, to compare two builds.
SNAPSHOT_QUERIES = {
    "bronze.orders": f"select * {RUN_COLUMNS} from bronze.orders order by all",
    "bronze.customers": f"select * {RUN_COLUMNS} from bronze.customers order by all",
    "bronze.products": f"select * {RUN_COLUMNS} from bronze.products order by all",
    "silver.orders": "select * exclude (_ingested_at) from silver.orders order by order_id",
    "silver.customers": "select * from silver.customers order by customer_id",
    "silver.products": "select * from silver.products order by product_id",
    "quarantine.silver_orders": (
        "select * exclude (_ingested_at) from quarantine.silver_orders order by all"
    ),
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


def rows(root: Path, sql: str) -> list[dict[str, object]]:
    with lakebed.open(root) as lh:
        return lh.sql(sql).dicts()


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


def test_rerunning_ingestion_and_models_changes_nothing(tmp_path: Path) -> None:
    built = build_shop(tmp_path / "shop", orders=2_000)
    tables = [
        "bronze.customers",
        "bronze.products",
        "bronze.orders",
        "quarantine.shop_customers",
        "quarantine.shop_orders",
    ]
    # Incremental models and the quarantine their checks fill.
    incremental = ["silver.customers", "silver.orders", "quarantine.silver_orders"]
    with lakebed.open(built.root) as lh:
        before = {name: lh.table(name).version() for name in tables + incremental}
        contents = {name: lh.sql(SNAPSHOT_QUERIES[name]).arrow() for name in MODELS}
        again = [lh.ingest(source) for source in SOURCES]
        after_ingest = {name: lh.table(name).version() for name in tables}
        rerun = lh.run()
        after_run = {name: lh.table(name).version() for name in tables + incremental}
        assert rerun.ok
        modes = {node.model: node.status for node in rerun.nodes}
        # Nothing changed upstream: every model is up to date and writes nothing.
        assert modes == dict.fromkeys(MODELS, "up_to_date")
        for name in MODELS:
            assert lh.sql(SNAPSHOT_QUERIES[name]).arrow().equals(contents[name]), name
    assert [(s.source, s.rows, s.quarantined, s.batches) for s in again] == [
        (source, 0, 0, 0) for source in SOURCES
    ]
    assert after_ingest == {name: before[name] for name in tables}
    assert after_run == before


def test_an_incremental_run_over_a_new_export_equals_the_full_build(
    shop: DemoSummary, tmp_path: Path
) -> None:
    """Q3 and Q4 arrive after a first build: the next run appends only their orders to
    silver.orders and quarantines only their bad rows; every table ends as in `shop`."""
    root = write_shop(tmp_path / "shop", orders=ORDERS, seed=7)
    later = tmp_path / "later"
    later.mkdir()
    for quarter in (3, 4):
        shutil.move(root / orders_file(quarter), later / orders_file(quarter).name)
    with lakebed.open(root) as lh:
        for source in SOURCES:
            lh.ingest(source)
        first = lh.run()
        assert first.ok
        early = lh.sql("select count(*) from silver.orders").scalar()
        assert lh.sql("select max(order_month) from silver.orders").scalar() == "2025-06"
        for quarter in (3, 4):
            shutil.move(later / orders_file(quarter).name, root / orders_file(quarter))
        assert lh.ingest("shop_orders").rows > 0
        second = lh.run()
        assert second.ok
        nodes = {node.model: node for node in second.nodes}
        assert (nodes["silver.orders"].status, nodes["silver.orders"].mode) == (
            "success",
            "incremental",
        )
        total = lh.sql("select count(*) from silver.orders").scalar()
        assert nodes["silver.orders"].rows == total - early
        assert nodes["silver.orders"].quarantined > 0
        assert nodes["silver.customers"].status == "up_to_date"
    for name, sql in SNAPSHOT_QUERIES.items():
        assert query(root, sql).equals(query(shop.root, sql)), name


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


def test_drop_checks_quarantine_every_bad_row_with_the_check_and_reason(
    shop: DemoSummary,
) -> None:
    rows = query(
        shop.root,
        "select order_id, delivery, customer_id, quantity, product_id, _check, _reason "
        "from quarantine.silver_orders",
    ).to_pylist()
    caught: dict[str, int] = {}
    for row in rows:
        # A row that breaks several rules names each check, and each reason, once.
        names, reasons = row["_check"].split(", "), row["_reason"].split("; ")
        assert reasons == [DROP_CHECKS[name] for name in names]
        for name in names:
            caught[name] = caught.get(name, 0) + 1
    assert set(caught) == set(DROP_CHECKS)  # each rule catches some of the bad rows
    assert caught["duplicate_order_id"] == ORDERS // 500
    # Each check is true of the rows it caught.
    wrong = query(
        shop.root,
        """select _check, count(*) as n from quarantine.silver_orders
           where (_check like '%missing_customer_id%' and customer_id is not null)
              or (_check like '%non_positive_quantity%' and quantity > 0)
              or (_check like '%unknown_product_id%'
                  and product_id in (select product_id from bronze.products))
              or (_check like '%duplicate_order_id%'
                  and (delivery = 1 or order_id not in (
                      select order_id from silver.orders
                      union all
                      select order_id from quarantine.silver_orders where delivery = 1)))
           group by all""",
    )
    assert wrong.num_rows == 0


def test_every_bronze_order_is_in_silver_or_quarantine_exactly_once(shop: DemoSummary) -> None:
    def lines(table: str) -> list[tuple[str, int]]:
        found = query(shop.root, f"select _origin, _origin_row from {table}").to_pylist()
        return [(row["_origin"], row["_origin_row"]) for row in found]

    bronze, silver, quarantined = (
        lines(t) for t in ("bronze.orders", "silver.orders", "quarantine.silver_orders")
    )
    assert len(set(silver)) == len(silver)
    assert len(set(quarantined)) == len(quarantined)
    assert not set(silver) & set(quarantined)
    assert set(silver) | set(quarantined) == set(bronze)
    assert len(silver) + len(quarantined) == len(bronze)
    # Nothing that got through carries a mark of a bad row.
    assert scalar(shop.root, "select count(*) from silver.orders where delivery <> 1") == 0


def test_check_results_are_recorded_with_counts(shop: DemoSummary) -> None:
    with lakebed.open(shop.root) as lh:
        orders = {r.check: r for r in lh.metastore.latest_check_results("silver.orders")}
        everything = lh.metastore.latest_check_results()
        bronze = lh.sql("select count(*) from bronze.orders").scalar()
        quarantined = lh.sql("select count(*) from quarantine.silver_orders").scalar()
    for name, reason in DROP_CHECKS.items():
        result = orders[name]
        # A drop check that caught rows is a warning: they are quarantined, the rest publish.
        assert (result.severity, result.status) == ("drop", "warn")
        assert 0 < result.failing_rows < result.total_rows == bronze
        assert result.message.endswith(f"rows fail: {reason} (dropped to quarantine)")
    caught = sum(orders[name].failing_rows for name in DROP_CHECKS)
    assert caught >= quarantined > 0  # a row may break two rules
    others = [r for r in everything if r.check not in DROP_CHECKS or r.table != "silver.orders"]
    assert {r.severity for r in others} == {"drop", "fail", "warn"}
    assert all((r.status, r.failing_rows) == ("pass", 0) for r in others), [
        r for r in others if r.status != "pass"
    ]
    # Every model has checks, and two bronze tables have their own (lakebed.yml).
    assert {r.table for r in everything} == set(MODELS) | {"bronze.customers", "bronze.orders"}
    assert {r.kind for r in everything} >= {
        "not_null",
        "unique",
        "accepted_values",
        "range",
        "regex",
        "relationships",
        "row_count",
        "freshness",
        "expression",
    }
    # The summary has each model's build with the same results.
    nodes = {node.model: node for node in shop.models}
    assert sorted(nodes) == MODELS
    assert all((node.status, node.mode) == ("success", "full") for node in nodes.values())
    assert nodes["silver.orders"].quarantined == quarantined
    assert {r.check: r.failing_rows for r in nodes["silver.orders"].checks} == {
        name: r.failing_rows for name, r in orders.items()
    }


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
    assert any(step[0] == "building silver.orders" for step in seen)
    assert any(step[0].startswith("silver.orders: ") and "quarantined" in step[0] for step in seen)
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
    models = load_models(folder)
    assert sorted(str(name) for name in models) == MODELS
    graph = ModelGraph(models, source_targets={n: s.target for n, s in sources.items()})
    assert [str(name) for name in graph.order()][:1] == ["silver.customers"]
    for name, model in models.items():
        settings = model.config
        assert settings.description, name
        assert settings.owner, name
        assert settings.domain in config.domains, name
        assert settings.columns, name
        assert settings.checks, name
        parse_checks(settings.checks, table=str(name))  # every check is valid
    orders = models[TableName("silver", "orders")].config
    assert orders.materialized == "incremental"
    assert orders.partition_by == ["order_month"]
    customers = models[TableName("silver", "customers")].config
    assert (customers.materialized, customers.incremental_strategy) == ("incremental", "merge")
    assert customers.unique_key == ["customer_id"]


def test_model_settings_describe_every_column_and_set_the_catalog(shop: DemoSummary) -> None:
    models = load_models(shop.root)
    with lakebed.open(shop.root) as lh:
        for name, model in models.items():
            assert list(model.config.columns) == lh.table(name).schema().names, name
            record = lh.describe(str(name))
            assert record.description == model.config.description
            assert (record.owner, record.domain) == (model.config.owner, model.config.domain)
            assert set(model.config.tags) <= set(record.tags), name


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
        quarantined = lh.sql("select count(*) from quarantine.silver_orders").scalar()
        bronze = lh.sql("select count(*) from bronze.orders").scalar()
        rejected = lh.sql("select count(*) from quarantine.shop_orders").scalar()
    assert orders > 990_000
    assert bronze == orders + quarantined
    assert rejected == 4
    assert bronze + rejected == len(order_lines(target))


def test_every_live_order_event_is_in_bronze_or_quarantine_exactly_once(shop: DemoSummary) -> None:
    counts = rows(
        shop.root,
        """
        SELECT (SELECT count(*) FROM bronze.order_events) AS loaded,
               (SELECT count(DISTINCT event_id) FROM bronze.order_events) AS distinct_events,
               (SELECT count(*) FROM quarantine.order_events) AS garbled
        """,
    )[0]
    assert counts["loaded"] == counts["distinct_events"]
    assert counts["loaded"] + counts["garbled"] == STREAM_EVENTS
    assert 0 < counts["garbled"] < STREAM_EVENTS // 100


def test_revenue_per_minute_equals_a_batch_computation_without_late_events(
    shop: DemoSummary,
) -> None:
    late = rows(
        shop.root, "SELECT count(*) AS n FROM quarantine.revenue_per_minute WHERE reason = 'late'"
    )[0]["n"]
    assert late > 0  # the generator sends a few events minutes late
    mismatches = rows(
        shop.root,
        """
        WITH on_time AS (
            SELECT e.* FROM bronze.order_events AS e
            ANTI JOIN quarantine.revenue_per_minute AS q
              ON q._partition = e._partition AND q._offset = e._offset
        ), batch AS (
            SELECT time_bucket(INTERVAL '1 minute', _event_time) AS window_start, country,
                   count(*) AS orders, round(sum(amount), 2) AS revenue
            FROM on_time GROUP BY ALL
        )
        SELECT * FROM gold.revenue_per_minute AS g
        LEFT JOIN batch AS b USING (window_start, country)
        WHERE b.orders IS DISTINCT FROM g.orders OR abs(b.revenue - g.revenue) > 0.005
        """,
    )
    assert mismatches == []
    assert rows(shop.root, "SELECT count(*) AS n FROM gold.revenue_per_minute")[0]["n"] >= 100
