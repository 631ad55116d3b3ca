"""A model's settings around its build (orchestrate/settings.py): the catalog follows them,
column descriptions and checks must fit its columns, freshness is judged while it stays up
to date, and an input never written (a model never built, a source never loaded) is named."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

import lakebed
from helpers import write_model
from lakebed import Lakehouse


@pytest.fixture
def lh(tmp_path: Path) -> Lakehouse:
    lake = lakebed.open(lakebed.init_project(tmp_path / "p"))
    lake.write("silver.orders", {"id": [1, 2, 3, 4], "amount": [5.0, 7.5, 1.0, 3.0]})
    return lake


def test_the_catalog_follows_a_models_settings_when_they_change(lh: Lakehouse) -> None:
    sql = "select id, amount from silver.orders"
    write_model(lh.root, "silver.enriched", sql)
    assert lh.run().ok
    settings = (
        "description: Orders with amounts.\nowner: ana@example.com\ntags: [finance]\n"
        "columns:\n  amount: Gross amount in EUR.\n"
    )
    write_model(lh.root, "silver.enriched", sql, settings)
    assert lh.run().nodes[0].status == "up_to_date"  # settings alone: nothing to build
    record = lh.describe("silver.enriched")
    assert (record.description, record.owner, record.tags) == (
        "Orders with amounts.",
        "ana@example.com",
        ["finance"],
    )
    assert record.properties["lakebed.column.amount"] == "Gross amount in EUR."


def test_a_description_of_a_column_the_model_lacks_fails_it(lh: Lakehouse) -> None:
    sql = "select id, amount from silver.orders"
    write_model(lh.root, "silver.enriched", sql, "columns:\n  amont: Gross amount.\n")
    node = lh.run().nodes[0]
    assert node.status == "failed"
    assert "`columns` describes amont, which silver.enriched does not return" in (node.error or "")
    assert "did you mean amount?" in (node.error or "")
    assert "silver.enriched" not in [t.name for t in lh.tables()]  # nothing published
    write_model(lh.root, "silver.enriched", sql, "columns:\n  amount: Gross amount.\n")
    assert lh.run().ok
    write_model(lh.root, "silver.enriched", sql, "columns:\n  amont: Gross amount.\n")
    assert lh.run().nodes[0].status == "failed"  # found so though up to date


def test_a_model_that_stops_changing_is_judged_stale(lh: Lakehouse) -> None:
    lh.write("silver.events", {"id": [1], "seen_at": [datetime.now(UTC)]})
    fresh = "checks:\n  - freshness: {column: seen_at, max_age: 2 seconds}\n"
    write_model(lh.root, "gold.events", "select id, seen_at from silver.events", fresh)
    first = lh.run().nodes[0]
    assert (first.status, first.checks[0].status) == ("success", "pass")
    assert lh.run().nodes[0].status == "up_to_date"
    time.sleep(2.5)  # no new rows: only the time moves on
    node = lh.run().nodes[0]
    assert node.status == "failed"
    assert "freshness(seen_at)" in (node.error or "")
    latest = {r.check: r.status for r in lh.check_results("gold.events")}
    assert latest == {"freshness(seen_at)": "fail"}


def test_a_model_whose_input_model_was_never_built_says_how_to_build_both(
    lh: Lakehouse,
) -> None:
    write_model(lh.root, "silver.enriched", "select id, amount from silver.orders")
    write_model(lh.root, "gold.total", "select sum(amount) as total from silver.enriched")
    node = lh.run("gold.total").nodes[0]
    assert node.status == "failed"
    assert node.error == (
        "gold.total reads silver.enriched: a model not built yet\n"
        "  hint: build them with it: lakebed run --select +gold.total"
    )
    assert lh.run("+gold.total").ok


def test_a_model_reading_a_source_that_loaded_nothing_says_how_to_load_it(
    tmp_path: Path,
) -> None:
    root = lakebed.init_project(tmp_path / "q")
    config = "sources:\n  orders: {kind: files, path: drops/*.csv}\n"
    (root / "lakebed.yml").write_text(config)
    write_model(root, "silver.orders", "select * from bronze.orders")
    node = lakebed.open(root).run().nodes[0]
    assert node.status == "failed"
    assert node.error == (
        "silver.orders reads bronze.orders, which nothing has loaded yet\n"
        "  hint: load it first: lakebed ingest orders"
    )


def test_a_views_freshness_is_judged_at_every_run(lh: Lakehouse) -> None:
    lh.write("silver.events", {"id": [1], "seen_at": [datetime.now(UTC)]})
    view = "materialized: view\nchecks:\n  - freshness: {column: seen_at, max_age: 2 seconds}\n"
    write_model(lh.root, "gold.events", "select id, seen_at from silver.events", view)
    assert lh.run().ok
    time.sleep(2.5)
    node = lh.run().nodes[0]
    assert node.status == "failed"
    assert "freshness(seen_at)" in (node.error or "")
