"""The transformation benchmark's project: a 10-model medallion project (staging with
typing, QUALIFY dedup and filters; dimensions; a fact join; window functions; aggregates
into gold; one incremental model merging on its key) over three generated bronze tables
(`orders`, `customers`, `products`), written for lakebed, for dbt and as a DuckDB file; and
the fingerprints (rows and column sums per model) that every contender's tables must match.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

import lakebed
from common import (
    DATA_DIR,
    DATA_VERSION,
    cached_project,
    log,
    open_project,
)

COUNTRIES = ["DE", "fr", "ES", "it", "GB", "NL", "US", "ca", "MX", "BR", "JP", "AU", "IN", "SG"]
CATEGORIES = [f"Category {i:02d}" for i in range(20)]
# Raw statuses as sources send them: mixed case, stray blanks, test orders to filter out.
STATUSES = ["new", " Paid", "paid", "SHIPPED", "shipped ", "cancelled", "test"]
STATUS_WEIGHTS = [0.15, 0.1, 0.25, 0.1, 0.3, 0.07, 0.03]
ORDER_START = np.datetime64("2024-01-01T00:00:00", "s")
ORDER_SPAN_S = 2 * 365 * 86_400
DUPLICATE_SHARE = 0.03  # bronze orders that re-send an earlier order with a later status
INCREMENT_SHARE = 0.01  # new bronze rows for the incremental figure
INCREMENT_UPDATES = 0.1  # of those, the share that updates existing orders

# -- the project: models in dependency order ---------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    name: str  # layer.name
    sql: str
    materialized: str = "table"
    unique_key: str | None = None
    check_column: str = ""  # summed by the check, with count(*)


MODELS: list[ModelSpec] = [
    ModelSpec(
        "silver.orders",
        """select
    order_id,
    customer_id,
    product_id,
    quantity,
    cast(unit_price as double) as unit_price,
    coalesce(try_cast(nullif(discount_pct, '') as double), 0) / 100 as discount,
    lower(trim(status)) as status,
    channel,
    cast(order_ts as timestamp) as ordered_at,
    updated_at
from bronze.orders
where quantity > 0 and lower(trim(status)) <> 'test'
qualify row_number() over (partition by order_id order by updated_at desc) = 1
""",
        materialized="incremental",
        unique_key="order_id",
        check_column="quantity",
    ),
    ModelSpec(
        "silver.customers",
        """select
    customer_id,
    trim(name) as name,
    lower(trim(email)) as email,
    upper(country) as country,
    cast(signup_date as date) as signup_date,
    updated_at
from bronze.customers
where email like '%@%'
qualify row_number() over (partition by customer_id order by updated_at desc) = 1
""",
        check_column="customer_id",
    ),
    ModelSpec(
        "silver.products",
        """select
    product_id,
    trim(name) as product_name,
    lower(category) as category,
    cast(list_price as double) as list_price,
    cost
from bronze.products
where not discontinued
""",
        check_column="list_price",
    ),
    ModelSpec(
        "gold.dim_customers",
        """select
    customer_id,
    name,
    email,
    split_part(email, '@', 2) as email_domain,
    country,
    case
        when country in ('DE', 'FR', 'ES', 'IT', 'GB', 'NL') then 'EMEA'
        when country in ('US', 'CA', 'MX', 'BR') then 'AMER'
        else 'APAC'
    end as region,
    signup_date,
    date_trunc('month', signup_date) as signup_month
from silver.customers
""",
        check_column="customer_id",
    ),
    ModelSpec(
        "gold.dim_products",
        """select
    product_id,
    product_name,
    category,
    list_price,
    cost,
    round((list_price - cost) / list_price, 4) as margin,
    case
        when list_price < 20 then 'budget'
        when list_price < 100 then 'standard'
        else 'premium'
    end as price_band
from silver.products
""",
        check_column="margin",
    ),
    ModelSpec(
        "gold.fct_orders",
        """select
    o.order_id,
    o.customer_id,
    o.product_id,
    o.ordered_at,
    cast(o.ordered_at as date) as order_date,
    o.status,
    o.channel,
    o.quantity,
    o.quantity * o.unit_price * (1 - o.discount) as revenue,
    o.quantity * (o.unit_price * (1 - o.discount) - p.cost) as profit,
    c.country,
    c.region,
    p.category,
    p.price_band
from silver.orders o
join gold.dim_customers c on c.customer_id = o.customer_id
join gold.dim_products p on p.product_id = o.product_id
where o.status <> 'cancelled'
""",
        check_column="revenue",
    ),
    ModelSpec(
        "gold.daily_revenue",
        """select
    order_date,
    region,
    category,
    count(*) as orders,
    sum(quantity) as units,
    sum(revenue) as revenue,
    sum(profit) as profit
from gold.fct_orders
group by order_date, region, category
""",
        check_column="revenue",
    ),
    ModelSpec(
        "gold.customer_lifetime",
        """with history as (
    select
        customer_id,
        ordered_at,
        revenue,
        row_number() over w as order_number,
        ordered_at - lag(ordered_at) over w as gap,
        sum(revenue) over (w rows between unbounded preceding and current row) as running
    from gold.fct_orders
    window w as (partition by customer_id order by ordered_at, order_id)
)
select
    customer_id,
    count(*) as orders,
    sum(revenue) as lifetime_revenue,
    min(ordered_at) as first_order_at,
    max(ordered_at) as last_order_at,
    avg(epoch(gap)) / 86400 as avg_days_between_orders,
    min(case when running >= 1000 then order_number end) as orders_to_1000
from history
group by customer_id
""",
        check_column="lifetime_revenue",
    ),
    ModelSpec(
        "gold.product_rankings",
        """select
    category,
    product_id,
    sum(quantity) as units,
    sum(revenue) as revenue,
    rank() over (partition by category order by sum(revenue) desc) as rank_in_category
from gold.fct_orders
group by category, product_id
qualify rank_in_category <= 20
""",
        check_column="revenue",
    ),
    ModelSpec(
        "gold.monthly_cohorts",
        """select
    c.signup_month,
    date_trunc('month', f.order_date) as order_month,
    c.region,
    count(distinct f.customer_id) as active_customers,
    sum(f.revenue) as revenue
from gold.fct_orders f
join gold.dim_customers c on c.customer_id = f.customer_id
group by c.signup_month, date_trunc('month', f.order_date), c.region
""",
        check_column="active_customers",
    ),
]


# For the incremental figure, the same models set up for cheap incremental runs: the order
# chain merges the changed orders, the customer and product models are incremental too (their
# bronze tables do not change, so they stay up to date instead of being rebuilt and forcing
# the fact into a full rebuild), and the gold aggregates are views, computed when read.
INCREMENTAL_SETUP: dict[str, tuple[str, str | None]] = {
    "silver.customers": ("incremental", "customer_id"),
    "silver.products": ("incremental", "product_id"),
    "gold.dim_customers": ("incremental", "customer_id"),
    "gold.dim_products": ("incremental", "product_id"),
    "gold.fct_orders": ("incremental", "order_id"),
    "gold.daily_revenue": ("view", None),
    "gold.customer_lifetime": ("view", None),
    "gold.product_rankings": ("view", None),
    "gold.monthly_cohorts": ("view", None),
}


def incremental_models() -> list[ModelSpec]:
    models = []
    for spec in MODELS:
        if spec.name in INCREMENTAL_SETUP:
            materialized, key = INCREMENTAL_SETUP[spec.name]
            spec = dataclasses.replace(spec, materialized=materialized, unique_key=key)
        models.append(spec)
    return models


# -- bronze data ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    orders: int

    @property
    def customers(self) -> int:
        return max(1_000, self.orders // 20)

    @property
    def products(self) -> int:
        return max(100, self.orders // 200)

    @property
    def unique_orders(self) -> int:
        return self.orders - int(self.orders * DUPLICATE_SHARE)

    @property
    def increment(self) -> int:
        return max(10, int(self.orders * INCREMENT_SHARE))


def _timestamps(seconds: np.ndarray) -> pa.Array:
    return pa.array(seconds.astype("datetime64[us]"), pa.timestamp("us", tz="UTC"))


def _order_rows(
    rng: np.random.Generator,
    ids: np.ndarray,
    shape: Shape,
    ordered: np.ndarray,
    updated: np.ndarray,
) -> pa.Table:
    count = len(ids)
    prices = np.round(rng.gamma(2.0, 20.0, count) + 1, 2)
    quantity = rng.integers(1, 6, count).astype(np.int32)
    quantity[rng.random(count) < 0.005] = 0
    discounts = np.array(["", "", "", "5", "10", "15", "20"])[rng.integers(0, 7, count)]
    statuses = rng.choice(len(STATUSES), count, p=STATUS_WEIGHTS)
    return pa.table(
        {
            "order_id": pa.array(ids, pa.int64()),
            "customer_id": rng.integers(1, shape.customers + 1, count),
            "product_id": rng.integers(1, shape.products + 1, count),
            "quantity": quantity,
            "unit_price": pc.cast(pa.array(prices), pa.string()),
            "discount_pct": pa.array(discounts, pa.string()),
            "status": pc.take(pa.array(STATUSES), pa.array(statuses)),
            "channel": pc.take(
                pa.array(["web", "app", "store"]), pa.array(rng.integers(0, 3, count))
            ),
            "order_ts": pc.strftime(
                pa.array(ordered.astype("datetime64[s]"), pa.timestamp("s")),
                format="%Y-%m-%d %H:%M:%S",
            ),
            "updated_at": _timestamps(updated),
        }
    )


def bronze_orders(shape: Shape, seed: int = 21) -> pa.Table:
    """The orders as sources sent them: raw strings, and some orders sent twice."""
    rng = np.random.default_rng(seed)
    unique = shape.unique_orders
    ids = np.arange(1, unique + 1, dtype=np.int64)
    ordered = ORDER_START + rng.integers(0, ORDER_SPAN_S, unique)
    first = _order_rows(rng, ids, shape, ordered, ordered + rng.integers(0, 3_600, unique))
    again = np.sort(rng.choice(unique, shape.orders - unique, replace=False))
    later = ordered[again] + rng.integers(86_400, 30 * 86_400, len(again))
    resent = _order_rows(rng, ids[again], shape, ordered[again], later)
    # A re-sent order keeps what it was: only its status and update time move on.
    kept = first.take(pa.array(again))
    resent = kept.set_column(
        kept.schema.get_field_index("status"), "status", resent.column("status")
    ).set_column(kept.schema.get_field_index("updated_at"), "updated_at", resent["updated_at"])
    rows = pa.concat_tables([first, resent])
    return rows.take(pa.array(rng.permutation(rows.num_rows)))


def order_increment(shape: Shape, share: float = INCREMENT_UPDATES, seed: int = 22) -> pa.Table:
    """1% new bronze rows after the first build: new orders, and a `share` of them updates
    to old orders (picked at random among all)."""
    rng = np.random.default_rng(seed)
    total = shape.increment
    updates = int(total * share)
    new_ids = np.arange(shape.unique_orders + 1, shape.unique_orders + 1 + total - updates)
    old_ids = np.sort(rng.choice(np.arange(1, shape.unique_orders + 1), updates, replace=False))
    ids = np.concatenate([new_ids, old_ids]).astype(np.int64)
    after = ORDER_START + ORDER_SPAN_S + 40 * 86_400  # later than every earlier update
    ordered = after + rng.integers(0, 86_400, len(ids))
    return _order_rows(rng, ids, shape, ordered, ordered + rng.integers(0, 3_600, len(ids)))


def bronze_customers(shape: Shape, seed: int = 23) -> pa.Table:
    rng = np.random.default_rng(seed)
    count = shape.customers
    ids = np.arange(1, count + 1, dtype=np.int64)
    again = rng.choice(count, count // 10, replace=False)
    ids = np.concatenate([ids, ids[again]])
    total = len(ids)
    signup = np.datetime64("2020-01-01") + rng.integers(0, 5 * 365, total)
    updated = ORDER_START + rng.integers(0, ORDER_SPAN_S, total)
    updated[count:] += 86_400  # the re-sent rows are the newer ones
    emails = pc.binary_join_element_wise(
        pa.array(["  User"] * total),
        pc.cast(pa.array(ids), pa.string()),
        pa.array(np.where(rng.random(total) < 0.01, "-example.com", "@Example.COM ")),
        "",
    )
    return pa.table(
        {
            "customer_id": ids,
            "name": pc.binary_join_element_wise(
                pa.array([" Customer"] * total), pc.cast(pa.array(ids), pa.string()), " "
            ),
            "email": emails,
            "country": pc.take(
                pa.array(COUNTRIES), pa.array(rng.integers(0, len(COUNTRIES), total))
            ),
            "signup_date": pc.cast(pa.array(signup), pa.string()),
            "updated_at": _timestamps(updated),
        }
    )


def bronze_products(shape: Shape, seed: int = 24) -> pa.Table:
    rng = np.random.default_rng(seed)
    count = shape.products
    ids = np.arange(1, count + 1, dtype=np.int64)
    price = np.round(rng.gamma(2.0, 30.0, count) + 1, 2)
    return pa.table(
        {
            "product_id": ids,
            "name": pc.binary_join_element_wise(
                pa.array(["Product"] * count), pc.cast(pa.array(ids), pa.string()), " "
            ),
            "category": pc.take(pa.array(CATEGORIES), pa.array(rng.integers(0, 20, count))),
            "list_price": pc.cast(pa.array(price), pa.string()),
            "cost": np.round(price * rng.uniform(0.3, 0.8, count), 2),
            "discontinued": rng.random(count) < 0.03,
        }
    )


def _write_bronze(lh: lakebed.Lakehouse, *, shape: Shape) -> None:
    lh.write("bronze.orders", bronze_orders(shape), description="raw orders (benchmark)")
    lh.write("bronze.customers", bronze_customers(shape), description="raw customers")
    lh.write("bronze.products", bronze_products(shape), description="raw products")


BRONZE = ("bronze.orders", "bronze.customers", "bronze.products")


def _bronze_database(project: Path, path: Path) -> Path:
    """A DuckDB file holding the project's bronze rows (read back through lakebed), and
    empty silver and gold schemas: where the limit and dbt start."""
    marker = project / ".complete"
    if path.exists() and path.stat().st_mtime >= marker.stat().st_mtime:
        return path
    log(f"  writing {path.name}")
    partial = path.with_suffix(".tmp")
    partial.unlink(missing_ok=True)
    lh = open_project(project)
    con = duckdb.connect(str(partial))
    try:
        for layer in ("bronze", "silver", "gold"):
            con.execute(f"CREATE SCHEMA {layer}")
        for name in BRONZE:
            rows = lh.sql(f"select * from {name}").arrow()
            con.register("__rows", rows)
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM __rows")
            con.unregister("__rows")
    finally:
        con.close()
        lh.close()
    partial.rename(path)
    return path


# Bumped when lakebed writes the bronze files differently (2: row groups of 2^18 rows,
# columns encoded by type), so the cached project holds files as lakebed writes them now.
BRONZE_LAYOUT = 2


def bronze_project(shape: Shape) -> tuple[Path, Path]:
    key = f"transform-n{shape.orders}-l{BRONZE_LAYOUT}"
    project = cached_project(key, functools.partial(_write_bronze, shape=shape))
    return project, _bronze_database(project, DATA_DIR / f"{key}-v{DATA_VERSION}.duckdb")


def write_models(root: Path, models: list[ModelSpec]) -> None:
    """models/<layer>/<name>.sql, with a .yml beside the models that are not tables."""
    for spec in models:
        layer, name = spec.name.split(".")
        folder = root / "models" / layer
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.sql").write_text(spec.sql)
        if spec.materialized != "table":
            settings: dict[str, Any] = {"materialized": spec.materialized}
            if spec.unique_key:
                settings["incremental_strategy"] = "merge"
                settings["unique_key"] = [spec.unique_key]
            (folder / f"{name}.yml").write_text(yaml.safe_dump(settings))


_REFERENCE = re.compile(r"\b(bronze|silver|gold)\.([a-z_]+)\b")


def dbt_sql(spec: ModelSpec) -> str:
    """The model for dbt: `{{ config() }}`, references as `{{ source() }}` / `{{ ref() }}`,
    and the usual `is_incremental()` filter in the incremental model."""

    def reference(match: re.Match[str]) -> str:
        layer, name = match.groups()
        if layer == "bronze":
            return f"{{{{ source('bronze', '{name}') }}}}"
        return f"{{{{ ref('{name}') }}}}"

    body = _REFERENCE.sub(reference, spec.sql)
    options = [f"materialized='{spec.materialized}'"]
    if spec.materialized == "incremental":
        options += [f"unique_key='{spec.unique_key}'", "incremental_strategy='merge'"]
        body = body.replace(
            "\nqualify",
            "\n{% if is_incremental() %}"
            "\n  and updated_at > (select max(updated_at) from {{ this }})"
            "\n{% endif %}\nqualify",
        )
    return f"{{{{ config({', '.join(options)}) }}}}\n{body}"


def write_dbt_project(folder: Path, database: Path, threads: int) -> None:
    """A dbt project of the same models: silver/ and gold/ land in schemas of those names."""
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "macros").mkdir(parents=True)
    project = {
        "name": "lakebed_bench",
        "version": "1.0",
        "config-version": 2,
        "profile": "lakebed_bench",
        "model-paths": ["models"],
        "macro-paths": ["macros"],
        "models": {"lakebed_bench": {"silver": {"+schema": "silver"}, "gold": {"+schema": "gold"}}},
    }
    (folder / "dbt_project.yml").write_text(yaml.safe_dump(project, sort_keys=False))
    profile = {
        "lakebed_bench": {
            "target": "bench",
            "outputs": {
                "bench": {
                    "type": "duckdb",
                    "path": str(database),
                    "threads": 2,  # lakebed runs two models at a time by default
                    "settings": {"threads": threads, "TimeZone": "UTC"},
                }
            },
        }
    }
    (folder / "profiles.yml").write_text(yaml.safe_dump(profile, sort_keys=False))
    (folder / "macros" / "generate_schema_name.sql").write_text(
        "{% macro generate_schema_name(custom_schema_name, node) -%}\n"
        "{{ (custom_schema_name or target.schema) | trim }}\n"
        "{%- endmacro %}\n"
    )
    sources = {
        "version": 2,
        "sources": [
            {
                "name": "bronze",
                "schema": "bronze",
                "tables": [{"name": name.split(".")[1]} for name in BRONZE],
            }
        ],
    }
    models = folder / "models"
    models.mkdir()
    (models / "sources.yml").write_text(yaml.safe_dump(sources, sort_keys=False))
    for spec in MODELS:
        layer, name = spec.name.split(".")
        (models / layer).mkdir(exist_ok=True)
        (models / layer / f"{name}.sql").write_text(dbt_sql(spec))


# -- checks ---------------------------------------------------------------------------------

Fingerprint = dict[str, tuple[int, float]]


def _fingerprint(query: Callable[[str], tuple[Any, ...]]) -> Fingerprint:
    found: Fingerprint = {}
    for spec in MODELS:
        count, total = query(f"select count(*), sum({spec.check_column}) from {spec.name}")
        found[spec.name] = (int(count), float(total or 0))
    return found


def lakebed_fingerprint(lh: lakebed.Lakehouse) -> Fingerprint:
    return _fingerprint(lambda q: lh.sql(q).rows()[0])


def duckdb_fingerprint(database: Path) -> Fingerprint:
    con = duckdb.connect(str(database), read_only=True)
    try:
        return _fingerprint(lambda q: con.sql(q).fetchall()[0])
    finally:
        con.close()


def compare(expected: Fingerprint, found: Fingerprint, who: str) -> None:
    for name, (count, total) in expected.items():
        other_count, other_total = found[name]
        if count != other_count or not math.isclose(total, other_total, rel_tol=1e-9):
            raise AssertionError(
                f"{who} differs on {name}: {other_count} rows, sum {other_total!r}; "
                f"expected {count} rows, sum {total!r}"
            )
