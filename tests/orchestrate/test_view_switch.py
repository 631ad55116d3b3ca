"""A model that becomes a view replaces its table when its rows can be computed again
(as dbt replaces a relation of another type), and says what to do when they may not."""

from __future__ import annotations

from pathlib import Path

import pytest

import lakebed
from helpers import write_model
from lakebed import Lakehouse
from lakebed.storage import TableName

SQL = "select customer, sum(amount) as total from bronze.orders group by customer"
VIEW = "materialized: view\n"


@pytest.fixture
def lh(tmp_path: Path) -> Lakehouse:
    lake = lakebed.open(lakebed.init_project(tmp_path / "p"))
    lake.write("bronze.orders", {"id": [1, 2, 3], "customer": [1, 1, 2], "amount": [5.0, 2.0, 1.0]})
    return lake


def _totals(lh: Lakehouse) -> list[tuple]:
    return lh.sql("select * from gold.totals order by customer").rows()


def test_a_table_model_that_becomes_a_view_replaces_its_table(lh: Lakehouse) -> None:
    write_model(lh.root, "gold.totals", SQL)
    assert lh.run().ok
    write_model(lh.root, "gold.totals", SQL, VIEW)
    node = lh.run().nodes[0]
    assert (node.status, node.mode) == ("success", "view")
    assert not lh.storage.exists(TableName.parse("gold.totals"))
    lh.write("bronze.orders", {"id": [4], "customer": [2], "amount": [4.0]}, mode="append")
    assert _totals(lh) == [(1, 7.0), (2, 5.0)]  # computed when read
    (lh.root / "models" / "gold" / "totals.yml").unlink()  # and back to a table
    assert lh.run().nodes[0].mode == "full"
    assert lh.storage.exists(TableName.parse("gold.totals"))
    assert lh.view_sql(TableName.parse("gold.totals")) is None
    assert _totals(lh) == [(1, 7.0), (2, 5.0)]


def test_an_incremental_table_is_not_dropped_for_a_view(lh: Lakehouse) -> None:
    """Its rows may be all that is left of inputs that have moved on."""
    write_model(lh.root, "gold.totals", SQL, "materialized: incremental\nunique_key: customer\n")
    assert lh.run().ok
    version = lh.table("gold.totals").version()
    write_model(lh.root, "gold.totals", SQL, VIEW)
    node = lh.run().nodes[0]
    assert node.status == "failed"
    assert "holds the rows of its incremental builds" in (node.error or "")
    assert "lakebed drop gold.totals" in (node.error or "")
    assert lh.table("gold.totals").version() == version  # untouched
    lh.drop_table("gold.totals")  # what the hint says
    assert lh.run().nodes[0].mode == "view"
    assert _totals(lh) == [(1, 7.0), (2, 1.0)]


def test_a_table_the_model_did_not_build_is_not_its_to_drop(lh: Lakehouse) -> None:
    lh.write("gold.totals", {"customer": [9], "total": [0.0]})
    write_model(lh.root, "gold.totals", SQL, VIEW)
    node = lh.run().nodes[0]
    assert node.status == "failed"
    assert "was not built by the model" in (node.error or "")
    assert lh.table("gold.totals").read().num_rows == 1
