"""The shop demo: a year of a small online shop's orders through bronze, silver and gold.

`build_shop` writes a project folder (a copy of `examples/shop`: lakebed.yml and the
models) and builds it with the public API only. First it writes the shop's raw data into
the folder's `sources/` as the shop delivers it: the orders as one CSV export per quarter,
the customers as NDJSON and the product catalog in a SQLite database, with the odd
malformed record real exports have. `lh.ingest(...)` loads each source declared in
lakebed.yml into bronze through the `files` and `sql` connectors (records that cannot be
parsed or typed go to `quarantine.<source>`); `lh.run()` then builds the SQL models in
`models/silver` and `models/gold`, each audited by the checks in its `.yml` before it is
published (the orders that break a business rule are dropped by checks to
`quarantine.silver_orders`, with the check and the reason). Last, the checkout's live order
events go to the bus and the pipelines of lakebed.yml stream them into bronze and a
per-minute revenue table in gold (`lh.stream`). The data comes from numpy's
`default_rng(seed)`, so a seed always gives the same sources and the same tables.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

import lakebed
from lakebed import demo_stream
from lakebed.config import CONFIG_FILE, STATE_DIR
from lakebed.errors import ConfigError, TransformError
from lakebed.ingest import IngestSummary
from lakebed.lakehouse import Lakehouse
from lakebed.orchestrate import NodeResult
from lakebed.storage import LAYERS, TableName
from lakebed.transform import load_models
from lakebed.transform.discover import MODELS_DIR

__all__ = [
    "SAMPLE_QUERY",
    "BuiltTable",
    "DemoSummary",
    "Progress",
    "build_shop",
    "examples_dir",
    "write_shop",
]

# Called as each step starts: (what it does, steps done so far, total steps).
Progress = Callable[[str, int, int], None]

SAMPLE_QUERY = """\
select country,
       sum(orders) as orders,
       sum(revenue) as revenue,
       round(sum(revenue) / sum(orders), 2) as revenue_per_order
from gold.daily_revenue
group by country
order by revenue desc
limit 5"""

# The live part: checkout events on the bus, streamed into bronze and a per-minute gold mart.
STREAM_EVENTS = 20_000
STREAM_START = datetime(2025, 12, 31, 18, 0, tzinfo=UTC)

CUSTOMERS = 10_000
PRODUCTS = 500
YEAR_START = datetime(2025, 1, 1, tzinfo=UTC)
QUARTERS = 4


def _words(text: str) -> list[str]:
    return text.split()


COUNTRIES = ["US", "GB", "DE", "FR", "NL", "ES", "IT", "SE", "CA", "AU"]
COUNTRY_WEIGHTS = [0.30, 0.14, 0.13, 0.10, 0.06, 0.06, 0.06, 0.04, 0.06, 0.05]
FIRST_NAMES = _words(
    "Ada Alan Anna Ben Carla Chen David Elena Emma Farah Femi Grace Hana Ivan Jonas Julia "
    "Kofi Lars Lea Liam Lina Marco Maya Mia Nadia Noah Olga Omar Paula Priya Rosa Sam "
    "Sara Sofia Tariq Tom Uma Viktor Yara Zoe"
)
LAST_NAMES = _words(
    "Adams Berg Costa Dubois Eriksen Fischer Garcia Hansen Ito Jansen Kowalski Lopez "
    "Martin Meyer Nakamura Novak Okafor Petrov Quinn Rossi Santos Schmidt Silva Smith "
    "Tanaka Tran Varga Weber Wilson Young"
)
CATEGORIES = {
    "books": ("Novel", "Cookbook", "Atlas", "Notebook", "Comic"),
    "electronics": ("Headphones", "Charger", "Speaker", "Keyboard", "Camera"),
    "home": ("Lamp", "Mug", "Blanket", "Vase", "Clock"),
    "garden": ("Planter", "Hose", "Trowel", "Seed Kit", "Bird Feeder"),
    "toys": ("Puzzle", "Kite", "Robot", "Board Game", "Yo-yo"),
    "sports": ("Yoga Mat", "Water Bottle", "Football", "Racket", "Dumbbell"),
    "beauty": ("Soap", "Lotion", "Shampoo", "Lip Balm", "Perfume"),
    "grocery": ("Coffee", "Tea", "Olive Oil", "Chocolate", "Honey"),
}
ADJECTIVES = _words(
    "Classic Compact Deluxe Eco Essential Handmade Mini Modern Organic Premium Retro "
    "Smart Travel Vintage Wild"
)
STATUSES = ["placed", "paid", "shipped", "delivered", "cancelled", "returned"]
STATUS_WEIGHTS = [0.03, 0.04, 0.08, 0.77, 0.05, 0.03]


@dataclass(frozen=True)
class BuiltTable:
    """One table the demo built, as the catalog records it."""

    name: str
    rows: int
    files: int
    size_bytes: int
    description: str | None


@dataclass(frozen=True)
class DemoSummary:
    """What `build_shop` made: the project folder, its tables, a query to try, what each
    source's ingestion loaded and quarantined and how each model's build went (its rows,
    quarantined rows and check results)."""

    root: Path
    tables: list[BuiltTable]
    sample_query: str
    orders: int
    seed: int
    loads: list[IngestSummary] = field(default_factory=list)
    models: list[NodeResult] = field(default_factory=list)


def examples_dir() -> Path:
    """The `examples/` folder: shipped in the wheel as `lakebed/_examples`, else the repo's."""
    package = Path(lakebed.__file__).resolve().parent
    for candidate in (package / "_examples", package.parents[1] / "examples"):
        if candidate.is_dir():
            return candidate
    raise ConfigError(
        f"the examples folder is missing (looked in {package / '_examples'} and "
        f"{package.parents[1] / 'examples'})",
        hint="reinstall lakebed; the wheel ships the examples as lakebed/_examples",
    )


# -- data ------------------------------------------------------------------------------------


def _pick(values: list[str], index: np.ndarray) -> pa.Array:
    return pa.array(values).take(pa.array(index))


def _weights(rng: np.random.Generator, n: int, skew: float) -> np.ndarray:
    """Popularity weights: a few customers or products account for much of the volume."""
    ranks = rng.permutation(n) + 1
    weights: np.ndarray = 1.0 / ranks.astype(np.float64) ** skew
    return weights / float(weights.sum())


def _money_text(cents: np.ndarray) -> pa.Array:
    """Cents as the text a source system exports ("12.05")."""
    units = pc.cast(pa.array(cents // 100), pa.string())
    hundredths = pc.utf8_lpad(pc.cast(pa.array(cents % 100), pa.string()), width=2, padding="0")
    return pc.binary_join_element_wise(units, hundredths, ".")


def _customers(rng: np.random.Generator) -> pa.Table:
    first = rng.integers(0, len(FIRST_NAMES), CUSTOMERS)
    last = rng.integers(0, len(LAST_NAMES), CUSTOMERS)
    ids = np.arange(1, CUSTOMERS + 1, dtype=np.int64)
    name = pc.binary_join_element_wise(_pick(FIRST_NAMES, first), _pick(LAST_NAMES, last), " ")
    local = pc.utf8_lower(pc.replace_substring(name, " ", "."))
    email = pc.binary_join_element_wise(local, pc.cast(pa.array(ids), pa.string()), "")
    email = pc.binary_join_element_wise(email, "@example.com", "")
    # Some source rows carry the e-mail as typed: upper case and stray spaces.
    sloppy = pa.array(rng.random(CUSTOMERS) < 0.02)
    email = pc.if_else(sloppy, pc.binary_join_element_wise(" ", pc.utf8_upper(email), ""), email)
    country = rng.choice(len(COUNTRIES), CUSTOMERS, p=COUNTRY_WEIGHTS)
    signup_day = rng.integers(0, 3 * 365, CUSTOMERS)
    signup = pa.array(np.datetime64("2022-01-01") + signup_day.astype("timedelta64[D]"))
    return pa.table(
        {
            "customer_id": ids,
            "name": name,
            "email": email,
            "country": _pick(COUNTRIES, country),
            "signup_date": pc.strftime(signup, format="%Y-%m-%d"),
        }
    )


def _products(rng: np.random.Generator) -> tuple[pa.Table, np.ndarray]:
    categories = list(CATEGORIES)
    names: list[str] = []
    cats: list[str] = []
    for index in range(PRODUCTS):
        category = categories[index % len(categories)]
        nouns = CATEGORIES[category]
        adjective = ADJECTIVES[(index // len(categories)) % len(ADJECTIVES)]
        noun = nouns[(index // (len(categories) * len(ADJECTIVES))) % len(nouns)]
        names.append(f"{adjective} {noun} #{index + 1}")
        cats.append(category)
    cents = np.round(rng.lognormal(mean=3.0, sigma=0.8, size=PRODUCTS) * 100).astype(np.int64)
    cents = np.clip(cents, 199, 99_999)
    table = pa.table(
        {
            "product_id": np.arange(1, PRODUCTS + 1, dtype=np.int64),
            "name": pa.array(names),
            "category": pa.array(cats),
            "price": _money_text(cents),
        }
    )
    return table, cents


def _orders(
    rng: np.random.Generator, n: int, customer_country: pa.Array, price_cents: np.ndarray
) -> pa.Table:
    seconds = np.sort(rng.integers(0, 365 * 86_400, n))
    customer = rng.choice(CUSTOMERS, n, p=_weights(rng, CUSTOMERS, 0.6)) + 1
    product = rng.choice(PRODUCTS, n, p=_weights(rng, PRODUCTS, 0.9)) + 1
    quantity = np.minimum(1 + rng.poisson(0.6, n), 10).astype(np.int32)
    discount = rng.choice(np.array([100, 90, 80]), n, p=[0.8, 0.15, 0.05])
    unit_cents = price_cents[product - 1] * discount // 100
    status = _pick(STATUSES, rng.choice(len(STATUSES), n, p=STATUS_WEIGHTS))
    # One source system writes statuses in upper case.
    shouting = pa.array(rng.random(n) < 0.03)
    status = pc.if_else(shouting, pc.utf8_upper(status), status)
    # ISO 8601 text in UTC; casting naive timestamps is far faster than strftime.
    ordered_at = pc.cast(
        pa.array(
            np.datetime64(YEAR_START.replace(tzinfo=None), "s") + seconds.astype("timedelta64[s]")
        ),
        pa.string(),
    )
    ordered_at = pc.binary_join_element_wise(pc.replace_substring(ordered_at, " ", "T"), "Z", "")

    # The bad rows a real source sends now and then.
    customer_id = pa.array(customer, mask=rng.random(n) < 0.0005)
    negative = rng.random(n) < 0.0003
    quantity = np.where(negative, -rng.integers(0, 3, n), quantity).astype(np.int32)
    product = np.where(rng.random(n) < 0.0002, PRODUCTS + rng.integers(1, 50, n), product)

    table = pa.table(
        {
            "order_id": np.arange(100_001, 100_001 + n, dtype=np.int64),
            "customer_id": customer_id,
            "product_id": product.astype(np.int64),
            "quantity": quantity,
            "unit_price": _money_text(unit_cents),
            "status": status,
            "ordered_at": ordered_at,
            "country": customer_country.take(pa.array(customer - 1)),
        }
    )
    # At-least-once delivery: some orders arrive twice, next to the first copy.
    resent = np.sort(rng.choice(n, n // 500, replace=False))
    order = np.concatenate([np.arange(n), resent])
    return table.take(pa.array(order[np.argsort(order, kind="stable")]))


# -- the shop's exports (the raw sources in the project folder) -------------------------------

# Where each export lands, relative to the project folder (lakebed.yml names the same paths).
ORDERS_DIR = Path("sources/orders")
CUSTOMERS_FILE = Path("sources/customers.ndjson")
SHOP_DB = Path("sources/shop.db")
# The sources lakebed.yml declares, in the order the demo loads them.
SOURCES = ("shop_customers", "shop_products", "shop_orders")
ORDER_COLUMNS = (
    "order_id",
    "customer_id",
    "product_id",
    "quantity",
    "unit_price",
    "status",
    "ordered_at",
    "country",
)
_STATUS, _QUANTITY = ORDER_COLUMNS.index("status"), ORDER_COLUMNS.index("quantity")


def orders_file(quarter: int) -> Path:
    """The export of one quarter's orders (1-4), relative to the project folder."""
    return ORDERS_DIR / f"orders-2025-Q{quarter}.csv"


def _deliver(path: Path, data: bytes, delivered: datetime) -> None:
    """Write one export, dated when the shop delivered it (its modification time)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (delivered.timestamp(), delivered.timestamp()))


def _single_rows(lines: list[bytes], rng: np.random.Generator, count: int) -> list[int]:
    """Up to `count` data lines (indexes into `lines`, header at 0) of orders sent once."""
    last = len(lines) - 1
    if last < 1:
        return []
    candidates = rng.permutation(np.arange(1, last + 1))[: 8 * count]
    picked: list[int] = []
    for index in sorted(int(i) for i in candidates):
        key = lines[index].split(b",", 1)[0]
        before = lines[index - 1].split(b",", 1)[0]
        after = lines[index + 1].split(b",", 1)[0] if index < last else b""
        if key not in (before, after) and all(abs(index - p) > 1 for p in picked):
            picked.append(index)
    return sorted(picked[:count])


def _garble(data: bytes, quarter: int, rng: np.random.Generator) -> bytes:
    """One quarter's CSV export with the faults the shop's exporter makes now and then.

    Q2 has a row that lost its last field, a row with an unquoted comma in the status (one
    field too many) and a row whose status opens a quote it never closes: the files
    connector rejects each of them. Q3 has a quantity spelled out ("three"): the file
    parses, but the value does not fit the integer column bronze has from Q1 (the first
    file loaded), so the runner rejects it.
    """
    if quarter not in (2, 3):
        return data
    lines = data.rstrip(b"\n").split(b"\n")
    if quarter == 2:
        rows = _single_rows(lines, rng, 3)
        faults = [_drop_last_field, _unquoted_comma, _unclosed_quote][: len(rows)]
    else:
        rows = _single_rows(lines, rng, 1)
        faults = [_spelled_quantity][: len(rows)]
    for index, fault in zip(rows, faults, strict=True):
        lines[index] = fault(lines[index])
    return b"\n".join(lines) + b"\n"


def _drop_last_field(line: bytes) -> bytes:
    return line.rsplit(b",", 1)[0]


def _unquoted_comma(line: bytes) -> bytes:
    fields = line.split(b",")
    fields[_STATUS] += b", left with neighbour"
    return b",".join(fields)


def _unclosed_quote(line: bytes) -> bytes:
    fields = line.split(b",")
    fields[_STATUS] = b'"' + fields[_STATUS]
    return b",".join(fields)


def _spelled_quantity(line: bytes) -> bytes:
    fields = line.split(b",")
    fields[_QUANTITY] = b"three"
    return b",".join(fields)


def _write_orders(root: Path, orders: pa.Table, rng: np.random.Generator) -> None:
    """The orders as the shop exports them: a CSV file per quarter, the morning after it."""
    months = pc.cast(pc.utf8_slice_codeunits(orders.column("ordered_at"), 5, 7), pa.int32())
    header = ",".join(ORDER_COLUMNS).encode() + b"\n"
    options = pa_csv.WriteOptions(include_header=False, quoting_style="none")
    typed = False  # whether an earlier file has rows, so bronze has typed columns
    for quarter in range(1, QUARTERS + 1):
        in_quarter = pc.and_(
            pc.greater(months, (quarter - 1) * 3), pc.less_equal(months, quarter * 3)
        )
        rows = orders.filter(in_quarter).select(list(ORDER_COLUMNS))
        sink = pa.BufferOutputStream()
        pa_csv.write_csv(rows, sink, options)
        data = header + sink.getvalue().to_pybytes()
        if typed:
            data = _garble(data, quarter, rng)
        typed = typed or rows.num_rows > 0
        if quarter < QUARTERS:
            delivered = datetime(2025, 1 + quarter * 3, 1, 6, tzinfo=UTC)
        else:
            delivered = datetime(2026, 1, 1, 6, tzinfo=UTC)
        _deliver(root / orders_file(quarter), data, delivered)


def _write_customers(root: Path, customers: pa.Table) -> None:
    """The customers as NDJSON, one object per line. The export was cut off while it wrote
    its last record (a customer who signed up as it ran): that line is not valid JSON."""
    lines = [json.dumps(row, ensure_ascii=False) for row in customers.to_pylist()]
    last = {
        "customer_id": customers.num_rows + 1,
        "name": "Zoe Young",
        "email": f"zoe.young{customers.num_rows + 1}@example.com",
        "country": "NL",
        "signup_date": "2025-12-31",
    }
    cut = json.dumps(last)
    lines.append(cut[: len(cut) // 2])
    text = "\n".join(lines)
    _deliver(root / CUSTOMERS_FILE, text.encode(), datetime(2026, 1, 1, 5, tzinfo=UTC))


def _write_products(root: Path, products: pa.Table, rng: np.random.Generator) -> None:
    """The product catalog as the shop's SQLite database holds it."""
    seconds = rng.integers(0, 365 * 86_400, products.num_rows)
    base = np.datetime64("2024-01-01T00:00:00", "s")
    # SQLAlchemy's own text form for SQLite timestamps: the connector's cursor compares
    # stored values with a bound parameter written the same way.
    updated = [
        f"{stamp.replace('T', ' ')}.000000"
        for stamp in np.datetime_as_string(base + seconds.astype("timedelta64[s]"), unit="s")
    ]
    path = root / SHOP_DB
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    rows = zip(
        products.column("product_id").to_pylist(),
        products.column("name").to_pylist(),
        products.column("category").to_pylist(),
        products.column("price").to_pylist(),
        updated,
        strict=True,
    )
    with closing(sqlite3.connect(path)) as db:
        db.execute(
            """create table products (
                   product_id integer primary key,
                   name text not null,
                   category text not null,
                   price text not null,  -- SQLite has no decimal type: prices as text
                   updated_at timestamp not null
               )"""
        )
        db.executemany("insert into products values (?, ?, ?, ?, ?)", rows)
        db.commit()


# -- the project -----------------------------------------------------------------------------


def _prepare(target: Path) -> None:
    """Copy the shop project files (lakebed.yml, README.md, models/) into an empty `target`."""
    if (target / CONFIG_FILE).exists():
        raise ConfigError(
            "a project already exists here",
            file=str(target / CONFIG_FILE),
            hint="build the demo in a new folder",
        )
    target.mkdir(parents=True, exist_ok=True)
    source = examples_dir() / "shop"
    for item in ("lakebed.yml", "README.md"):
        shutil.copy2(source / item, target / item)
    shutil.copytree(source / MODELS_DIR, target / MODELS_DIR, dirs_exist_ok=True)
    # The sources are generated: `lakebed demo` writes them again.
    ignored = f"{STATE_DIR}/\nlakehouse/\nsources/\n"
    (target / ".gitignore").write_text(ignored, encoding="utf-8")


def _write_sources(root: Path, orders: int, seed: int) -> None:
    """Generate the shop's data and write its exports into `root/sources`."""
    rng = np.random.default_rng(seed)
    customers = _customers(rng)
    products, price_cents = _products(rng)
    raw_orders = _orders(rng, orders, customers.column("country").combine_chunks(), price_cents)
    # A stream of its own for how the data is delivered (catalog dates, export faults), so
    # those never shift the business data a seed gives.
    delivery = np.random.default_rng([seed, 1])
    _write_customers(root, customers)
    _write_products(root, products, delivery)
    _write_orders(root, raw_orders, delivery)


def write_shop(target: Path, *, orders: int = 1_000_000, seed: int = 7) -> Path:
    """Write the shop project into `target` (a new folder) without building anything:
    lakebed.yml, the models and the generated sources. Returns the project folder.

    `lakebed ingest` then loads the sources and `lakebed run` builds the models, as
    `build_shop` does.
    """
    root = Path(target).expanduser().resolve()
    _prepare(root)
    _write_sources(root, orders, seed)
    return root


def _model_message(node: NodeResult) -> str:
    """What one finished model did, for the progress line."""
    if node.status == "up_to_date":
        return f"{node.model}: up to date"
    if node.status != "success":
        return f"{node.model}: {node.status}"
    message = f"{node.model}: {node.rows:,} rows"
    if node.quarantined:
        message += f", {node.quarantined:,} quarantined"
    return message


def build_shop(
    target: Path,
    *,
    orders: int = 1_000_000,
    seed: int = 7,
    progress: Progress | None = None,
) -> DemoSummary:
    """Build the shop lakehouse in `target` (a new folder) and return what it holds.

    Writes the project (lakebed.yml, models/) and the sources into `target`, ingests the
    sources into bronze through the connectors lakebed.yml declares, then runs the models
    (`lh.run()`): silver and gold, each audited by its checks before it is published; the
    rows a `drop` check rejects go to `quarantine.<layer>_<name>`. Raises `TransformError` if a
    model fails.
    """
    target = Path(target).expanduser().resolve()
    _prepare(target)
    steps = 2 + len(SOURCES) + len(load_models(target))
    done = 0

    def step(message: str) -> None:
        nonlocal done
        if progress is not None:
            progress(message, done, steps)
        done += 1

    def reporter(source: str) -> Callable[[str, int, int | None], None]:
        """Passes the connector's progress (files, rows) on as the current step's message."""
        current = done - 1
        read: dict[str, str] = {}

        def report(unit: str, count: int, total: int | None) -> None:
            if progress is None or unit not in ("files", "rows"):
                return
            read[unit] = f"{count:,}/{total:,} {unit}" if total is not None else f"{count:,} {unit}"
            progress(f"ingesting {source} ({', '.join(read.values())})", current, steps)

        return report

    def on_model(event: str, node: NodeResult | None) -> None:
        """Passes the run's progress on: a step per model, counted when it finishes."""
        nonlocal done
        if node is None:
            return
        if event == "started":
            message = f"building {node.model}"
        else:  # finished or skipped
            done += 1
            message = _model_message(node)
        if progress is not None:
            progress(message, done, steps)

    step(f"generating {orders:,} orders into sources/")
    _write_sources(target, orders, seed)

    with Lakehouse(target) as lh, lh.track_run("demo", "shop", orders=orders, seed=seed) as run:
        loads: list[IngestSummary] = []
        for source in SOURCES:
            step(f"ingesting {source}")
            loads.append(lh.ingest(source, report=reporter(source)))
        # Sources declare no tags: mark the tables that hold personal data here.
        for name in ("bronze.customers", "quarantine.shop_customers"):
            if lh.storage.exists(TableName.parse(name)):
                table = lh.table(name)
                lh.metastore.upsert_table(
                    name, layer=table.name.layer, path=table.path, tags=["pii"]
                )
        models = lh.run(report=on_model)
        if not models.ok:
            failed = [node for node in models.nodes if node.status == "failed"]
            reasons = "; ".join(f"{node.model}: {node.error}" for node in failed)
            raise TransformError(
                f"the shop's models did not build: {reasons}",
                hint=f"the project is in {target}; the check results and the run are "
                "recorded in its metastore",
            )
        step(f"streaming {STREAM_EVENTS:,} live order events")
        lh.bus.create_topic(demo_stream.TOPIC, 2)
        lh.produce(demo_stream.TOPIC, demo_stream.order_events(STREAM_EVENTS, start=STREAM_START))
        lh.stream(until_caught_up=True)
        if progress is not None:
            progress("done", steps, steps)
        built = [
            BuiltTable(
                name=record.name,
                rows=record.row_count or 0,
                files=lh.table(record.name).snapshot().num_files,
                size_bytes=record.size_bytes or 0,
                description=record.description,
            )
            for record in sorted(lh.tables(), key=lambda r: (LAYERS.index(r.layer), r.name))
        ]
        run.rows = sum(table.rows for table in built)
        run.bytes = sum(table.size_bytes for table in built)
    return DemoSummary(target, built, SAMPLE_QUERY, orders, seed, loads, models.nodes)
