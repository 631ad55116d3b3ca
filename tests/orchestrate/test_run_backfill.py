"""`lakebed run --backfill` and the runs after it: a backfill recomputes its window, and the
table's other partitions still get what their inputs changed (nothing is lost, nothing is
counted twice)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

import lakebed
from helpers import write_model
from lakebed import Lakehouse

DAILY = "select day, sum(amount) as total, count(*) as n from bronze.sales group by day"


@pytest.fixture
def lh(tmp_path: Path) -> Lakehouse:
    lake = lakebed.open(lakebed.init_project(tmp_path / "p"))
    days = [date(2025, 1, d) for d in (1, 2, 3, 4)]
    lake.write("bronze.sales", {"id": [1, 2, 3, 4], "day": days, "amount": [1.0, 2.0, 3.0, 4.0]})
    return lake


def _change_two_days(lh: Lakehouse) -> None:
    sales = lh.table("bronze.sales")
    sales.update({"amount": "amount * 10"}, predicate="day in ('2025-01-02', '2025-01-04')")


def _daily(lh: Lakehouse) -> list[tuple[object, ...]]:
    return lh.sql("select day, total, n from silver.daily order by day").rows()


def _rebuilt(lh: Lakehouse) -> list[tuple[object, ...]]:
    return lh.sql(f"{DAILY} order by day").rows()


@pytest.mark.parametrize(
    "settings",
    [
        "partition_by: day\n",
        "partition_by: day\nmaterialized: incremental\nunique_key: day\n",
    ],
    ids=["table", "merged"],
)
def test_changes_outside_the_window_reach_the_next_run(lh: Lakehouse, settings: str) -> None:
    write_model(lh.root, "silver.daily", DAILY, settings)
    assert lh.run().ok
    _change_two_days(lh)
    assert lh.run(backfill="2025-01-02").ok
    # The window only: 4 January still holds its old total...
    assert [row[1] for row in _daily(lh)] == [1.0, 20.0, 3.0, 4.0]
    # ...until the next run, which knows the table did not take that change yet.
    node = lh.run().nodes[0]
    assert node.status == "success"
    assert _daily(lh) == _rebuilt(lh)
    assert lh.run().nodes[0].status == "up_to_date"


def test_an_appending_model_is_caught_up_before_its_backfill(lh: Lakehouse) -> None:
    appending = "partition_by: day\nmaterialized: incremental\nincremental_strategy: append\n"
    write_model(lh.root, "silver.daily", "select id, day, amount from bronze.sales", appending)
    assert lh.run().ok
    lh.table("bronze.sales").append({"id": [5], "day": [date(2025, 1, 4)], "amount": [5.0]})
    assert lh.run(backfill="2025-01-02").ok
    rows = lh.sql("select id, amount from silver.daily order by id").rows()
    assert rows == lh.sql("select id, amount from bronze.sales order by id").rows()
    assert lh.run().nodes[0].status == "up_to_date"  # nothing appended twice
    assert lh.sql("select count(*) from silver.daily").scalar() == 5


def test_an_scd2_model_is_not_backfilled(lh: Lakehouse) -> None:
    write_model(
        lh.root,
        "silver.history",
        "select id, day, amount from bronze.sales",
        "materialized: scd2\nunique_key: id\npartition_by: day\n",
    )
    assert lh.run().ok
    node = lh.run(backfill="2025-01-02").nodes[0]
    assert node.status == "failed"
    assert "scd2 model: its partitions hold history" in (node.error or "")
    assert lh.sql("select count(*) from silver.history").scalar() == 4  # kept as it was
