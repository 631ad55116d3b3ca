"""Whether a model must be built again: a table whose SQL reads the clock is never up to
date, since its rows change with no new input rows; an incremental model rebuilt in full
says why."""

from __future__ import annotations

from pathlib import Path

import lakebed
from helpers import write_model
from lakebed import Lakehouse


def test_a_table_reading_the_clock_is_rebuilt_at_every_run(tmp_path: Path) -> None:
    lh = lakebed.open(lakebed.init_project(tmp_path / "p"))
    lh.write("silver.events", {"id": [1, 2], "hours_ago": [1, 30]})
    window = (
        "select id from silver.events where now() - to_hours(hours_ago) > now() - interval 1 day"
    )
    write_model(lh.root, "gold.recent", window)
    write_model(lh.root, "gold.ids", "select id from silver.events")
    lh.run()
    second = {n.model: n.status for n in lh.run().nodes}
    assert second == {"gold.recent": "success", "gold.ids": "up_to_date"}
    assert lh.sql("select id from gold.recent").rows() == [(1,)]


def test_an_incremental_model_rebuilt_in_full_says_why(tmp_path: Path) -> None:
    lh = lakebed.open(lakebed.init_project(tmp_path / "p"))
    lh.write("silver.orders", {"id": [1, 2], "amount": [5.0, 7.5]})
    write_model(lh.root, "silver.big", "select * from silver.orders", "materialized: view\n")
    merged = "materialized: incremental\nunique_key: id\n"
    write_model(lh.root, "gold.from_view", "select id, amount from silver.big", merged)
    write_model(lh.root, "gold.from_table", "select id, amount from silver.orders", merged)
    assert lh.run().ok
    lh.table("silver.orders").append({"id": [3], "amount": [1.0]})
    reasons = {n.model: (n.mode, n.reason) for n in lh.run().nodes}
    assert reasons["gold.from_view"] == (
        "full",
        "it reads silver.big: a view has no changes to read",
    )
    assert reasons["gold.from_table"] == ("incremental", None)


def _orders_built(tmp_path: Path) -> Lakehouse:
    """bronze.orders read by a merged model (silver.orders) and a table (silver.total),
    both built once."""
    lh = lakebed.open(lakebed.init_project(tmp_path / "p"))
    lh.write("bronze.orders", {"id": [1, 2], "amount": [5.0, 7.5]})
    merged = "materialized: incremental\nunique_key: id\n"
    write_model(lh.root, "silver.orders", "select id, amount from bronze.orders", merged)
    write_model(lh.root, "silver.total", "select sum(amount) as total from bronze.orders")
    assert lh.run().ok
    return lh


def test_an_input_dropped_and_written_anew_is_read_in_full(tmp_path: Path) -> None:
    lh = _orders_built(tmp_path)
    before = lh.table("bronze.orders").version()
    # Reloaded from scratch with as many commits or more: the versions say nothing now.
    lh.drop_table("bronze.orders")
    lh.write("bronze.orders", {"id": [7], "amount": [2.0]})
    while lh.table("bronze.orders").version() < before:
        lh.table("bronze.orders").append({"id": [8], "amount": [1.0]})
    assert lh.table("bronze.orders").version() == before
    nodes = {n.model: n for n in lh.run().nodes}
    assert (nodes["silver.orders"].mode, nodes["silver.orders"].reason) == (
        "full",
        "bronze.orders: a new table since its last build",
    )
    assert nodes["silver.total"].status == "success"  # not up to date: another table
    expected = lh.sql("select id, amount from bronze.orders order by id").rows()
    assert lh.sql("select id, amount from silver.orders order by id").rows() == expected
    assert lh.sql("select total from silver.total").scalar() == sum(a for _, a in expected)
    assert {n.status for n in lh.run().nodes} == {"up_to_date"}


def test_a_commit_that_only_sets_an_inputs_properties_leaves_its_readers_current(
    tmp_path: Path,
) -> None:
    """Turning on an input's change data feed (as an incremental reader's first build does,
    maybe while another model reads the input) commits no row: the models that read it
    stay up to date. A commit with rows after it still makes them stale."""
    lh = _orders_built(tmp_path)
    orders = lh.table("bronze.orders")
    orders.set_properties({"delta.logRetentionDuration": "interval 60 days"})
    assert not orders.rows_changed(orders.version(), orders.version())
    assert {n.status for n in lh.run().nodes} == {"up_to_date"}
    orders.append({"id": [3], "amount": [1.0]})
    assert orders.rows_changed(orders.version(), orders.version())
    nodes = {n.model: n for n in lh.run().nodes}
    assert (nodes["silver.total"].status, nodes["silver.orders"].mode) == ("success", "incremental")
    assert lh.sql("select total from silver.total").scalar() == 13.5


def test_a_model_table_restored_to_an_earlier_build_is_brought_up_to_date(
    tmp_path: Path,
) -> None:
    lh = _orders_built(tmp_path)
    lh.table("bronze.orders").append({"id": [3], "amount": [1.0]})
    assert lh.run().ok
    # `lakebed restore` undoes the last builds: the rows are those of the first build again.
    lh.table("silver.orders").restore(0)
    lh.table("silver.total").restore(0)
    modes = {n.model: n.mode for n in lh.run().nodes}
    assert modes == {"silver.orders": "incremental", "silver.total": "full"}
    assert lh.sql("select count(*) from silver.orders").scalar() == 3
    assert lh.sql("select total from silver.total").scalar() == 13.5
    assert {n.status for n in lh.run().nodes} == {"up_to_date"}
