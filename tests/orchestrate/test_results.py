"""`result:` selectors: how each model ended in the last run, to build again what failed."""

from __future__ import annotations

from pathlib import Path

import pytest

import lakebed
from helpers import write_model
from lakebed import Lakehouse
from lakebed.orchestrate.results import last_results


@pytest.fixture
def lh(tmp_path: Path) -> Lakehouse:
    lake = lakebed.open(lakebed.init_project(tmp_path / "p"))
    lake.write("bronze.orders", {"id": [1, 2], "amount": [5.0, 7.5]})
    write_model(lake.root, "silver.orders", "select id, amount from bronze.orders")
    write_model(lake.root, "silver.broken", "select id, amont from bronze.orders")
    write_model(lake.root, "gold.total", "select sum(amount) as total from silver.broken")
    write_model(lake.root, "gold.count", "select count(*) as n from silver.orders")
    return lake


def _names(lh: Lakehouse, selector: str) -> list[str]:
    return [str(n) for n in lh.graph().select(selector)]


def test_the_last_run_says_what_failed_and_what_it_skipped(lh: Lakehouse) -> None:
    assert last_results(lh.metastore) == {}
    assert lh.graph().select("result:failed") == []  # no run yet
    assert not lh.run().ok
    assert last_results(lh.metastore) == {
        "silver.broken": "failed",
        "silver.orders": "success",
        "gold.count": "success",
        "gold.total": "skipped",
    }
    assert _names(lh, "result:failed") == ["silver.broken"]
    assert _names(lh, "result:skipped") == ["gold.total"]
    # Fixed, the failed model and what it feeds are built again, and nothing else.
    write_model(lh.root, "silver.broken", "select id, amount from bronze.orders")
    summary = lh.run("result:failed+")
    assert [(n.model, n.status) for n in summary.nodes] == [
        ("silver.broken", "success"),
        ("gold.total", "success"),
    ]
    # The last run is now that one: nothing in it failed.
    assert lh.graph().select("result:failed") == []
    assert _names(lh, "result:success") == ["silver.broken", "gold.total"]


def test_an_unknown_result_names_the_known_ones(lh: Lakehouse) -> None:
    with pytest.raises(lakebed.LakebedError, match="unknown result 'error'") as raised:
        lh.graph().select("result:error")
    assert "result:failed" in (raised.value.hint or "")


def test_models_are_listed_with_their_settings_and_latest_build(lh: Lakehouse) -> None:
    write_model(
        lh.root,
        "silver.orders",
        "select id, amount from bronze.orders",
        "materialized: incremental\nunique_key: id\ntags: [daily]\nschedule: '0 * * * *'\n",
    )
    before = {m.model: m for m in lh.model_statuses()}
    order = list(before)  # build order: a model after what it reads
    assert set(order) == {"silver.broken", "silver.orders", "gold.count", "gold.total"}
    assert order.index("silver.orders") < order.index("gold.count")
    assert order.index("silver.broken") < order.index("gold.total")
    assert before["silver.orders"].last is None  # never ran
    assert not lh.run().ok
    listed = {m.model: m for m in lh.model_statuses()}
    orders = listed["silver.orders"]
    assert (orders.materialized, orders.unique_key, orders.tags, orders.schedule) == (
        "incremental",
        ("id",),
        ("daily",),
        "0 * * * *",
    )
    assert orders.inputs == ("bronze.orders",)
    assert orders.last is not None
    assert (orders.last.status, orders.last.rows) == ("success", 2)
    broken = listed["silver.broken"].last
    assert broken is not None
    assert broken.status == "failed"
    assert "amont" in (broken.error or "")
    assert listed["gold.total"].last is None  # skipped: never built
    assert listed["silver.orders"].last_status == "success"
    lh.run()
    again = {m.model: m for m in lh.model_statuses()}
    assert again["silver.orders"].last_status == "up_to_date"  # found so, nothing built
    assert again["silver.broken"].last_status == "failed"
    chosen = lh.model_statuses("tag:daily+", exclude="gold.count")
    assert [m.model for m in chosen] == ["silver.orders"]
    assert chosen[0].to_dict()["last"]["status"] == "up_to_date"
