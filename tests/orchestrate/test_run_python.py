"""Python models in runs: their inputs, merges by key, errors naming the line, lineage."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import all_rows, column_edges, orders_and_customers, write_model
from lakebed import Lakehouse


@pytest.fixture
def lh(tmp_path: Path) -> Lakehouse:
    return orders_and_customers(tmp_path / "p")


def _python_model(root: Path, name: str, source: str) -> None:
    layer, table = name.split(".")
    folder = root / "models" / layer
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{table}.py").write_text(source)


def test_python_models_receive_their_inputs(lh: Lakehouse) -> None:
    _python_model(
        lh.root,
        "gold.order_count",
        "import pyarrow as pa\n"
        "from lakebed.transform import model\n\n"
        "@model(inputs=['silver.orders'])\n"
        "def order_count(orders: pa.Table) -> pa.Table:\n"
        "    return pa.table({'orders': [orders.num_rows]})\n",
    )
    assert lh.run().ok
    assert all_rows(lh, "gold.order_count") == [(4,)]


def test_every_model_records_the_tables_it_reads(lh: Lakehouse) -> None:
    _python_model(
        lh.root,
        "gold.order_count",
        "import pyarrow as pa\nfrom lakebed import model\n\n"
        "@model(inputs=['silver.orders', 'silver.customers'])\n"
        "def order_count(orders, customers):\n"
        "    return pa.table({'orders': [orders.num_rows]})\n",
    )
    write_model(
        lh.root,
        "gold.known",  # silver.customers only filters: no column comes from it
        "select id from silver.orders where customer in (select customer from silver.customers)",
    )
    assert lh.run().ok
    assert column_edges(lh, "gold.order_count") == {  # a Python model: tables, no columns
        ("*", "silver.orders", "*", "table"),
        ("*", "silver.customers", "*", "table"),
    }
    assert column_edges(lh, "gold.known") == {
        ("id", "silver.orders", "id", "copy"),
        ("*", "silver.orders", "*", "table"),
        ("*", "silver.customers", "*", "table"),
    }


def test_a_python_model_merged_by_key_gets_every_row_of_the_keys_a_change_touches(
    lh: Lakehouse,
) -> None:
    _python_model(
        lh.root,
        "gold.totals",
        "from lakebed.transform import model\n\n"
        "@model(inputs=['silver.orders'], frame='pandas', materialized='incremental',\n"
        "       unique_key='customer')\n"
        "def totals(orders):\n"
        "    return orders.groupby('customer').amount.sum().to_frame()\n",
    )
    assert lh.run().ok
    lh.table("silver.orders").append({"id": [5], "customer": [10], "amount": [100.0]})
    node = lh.run().nodes[0]
    assert (node.mode, node.rows) == ("incremental", 1)
    assert all_rows(lh, "gold.totals") == [(10.0, 112.5), (20.0, 1.0)]


def test_a_python_model_that_raises_fails_naming_its_line(lh: Lakehouse) -> None:
    _python_model(
        lh.root,
        "gold.broken",
        "from lakebed.transform import model\n\n"
        "@model(inputs=['silver.orders'])\n"
        "def broken(orders):\n"
        "    return orders.column('nope')\n",
    )
    node = lh.run().nodes[0]
    path = lh.root / "models" / "gold" / "broken.py"
    assert node.error is not None
    assert node.error.startswith(f"model gold.broken ({path}:5) raised KeyError(")


def test_a_pandas_model_keeps_its_group_keys(lh: Lakehouse) -> None:
    _python_model(
        lh.root,
        "gold.by_customer",
        "from lakebed.transform import model\n\n"
        "@model(inputs=['silver.orders'], frame='pandas')\n"
        "def by_customer(orders):\n"
        "    return orders.groupby('customer').amount.sum().to_frame()\n",
    )
    assert lh.run().ok
    assert all_rows(lh, "gold.by_customer") == [(10.0, 12.5), (20.0, 1.0)]


def test_a_python_model_returning_no_table_fails_naming_model_and_function(
    lh: Lakehouse,
) -> None:
    _python_model(
        lh.root,
        "gold.order_count",
        "from lakebed.transform import model\n\n"
        "@model(inputs=['silver.orders'])\n"
        "def order_count(orders):\n"
        "    return orders.num_rows\n",
    )
    summary = lh.run()
    node = summary.nodes[0]
    assert node.status == "failed"
    assert node.error is not None
    assert "gold.order_count" in node.error
    assert "order_count() returned int, not a table" in node.error
    assert "gold.order_count" not in [t.name for t in lh.tables()]
