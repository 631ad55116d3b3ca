"""A model's table records a change data feed when an incremental model reads it (and when
the model asks for one), and gets one as soon as such a reader appears."""

from __future__ import annotations

from pathlib import Path

import pytest

import lakebed
from helpers import write_model
from lakebed import Lakehouse

FEED = "delta.enableChangeDataFeed"
MERGED = "materialized: incremental\nunique_key: id\n"
APPENDED = "materialized: incremental\nincremental_strategy: append\n"
# The latest row of each order: appended rows reach it as a merge of their keys.
LATEST = (
    "select id, amount from bronze.orders "
    "qualify row_number() over (partition by id order by seq desc) = 1"
)


@pytest.fixture
def lh(tmp_path: Path) -> Lakehouse:
    lake = lakebed.open(lakebed.init_project(tmp_path / "p"))
    lake.write("bronze.orders", {"id": [1, 2, 3], "amount": [5.0, 7.5, 1.0], "seq": [1, 1, 1]})
    return lake


def _feed(lh: Lakehouse, table: str) -> str | None:
    return lh.table(table).properties().get(FEED)


def test_only_tables_an_incremental_model_reads_record_a_feed(lh: Lakehouse) -> None:
    write_model(lh.root, "silver.orders", LATEST, MERGED)
    write_model(lh.root, "gold.doubled", "select id, amount * 2 as a2 from silver.orders", MERGED)
    write_model(lh.root, "gold.total", "select sum(amount) as total from silver.orders")
    write_model(lh.root, "gold.ids", "select id from gold.doubled", "materialized: view\n")
    assert lh.run().ok
    assert _feed(lh, "silver.orders") == "true"  # gold.doubled reads it incrementally
    assert _feed(lh, "gold.doubled") == "false"  # only a view reads it
    assert _feed(lh, "gold.total") == "false"
    # A merge into a table without a feed finds the rows it replaces by key alone.
    lh.write("bronze.orders", {"id": [2, 4], "amount": [8.0, 2.0], "seq": [2, 2]}, mode="append")
    modes = {n.model: n.mode for n in lh.run().nodes}
    assert modes["silver.orders"] == modes["gold.doubled"] == "incremental"
    assert lh.sql("select * from gold.doubled order by id").rows() == [
        (1, 10.0),
        (2, 16.0),
        (3, 2.0),
        (4, 4.0),
    ]


def test_a_declared_feed_is_kept_either_way(lh: Lakehouse) -> None:
    write_model(
        lh.root, "silver.orders", "select * from bronze.orders", f"properties:\n  {FEED}: true\n"
    )
    write_model(
        lh.root,
        "silver.kept",
        "select * from bronze.orders",
        f"{MERGED}properties:\n  {FEED}: false\n",
    )
    write_model(lh.root, "gold.merged", "select * from silver.kept", MERGED)
    assert lh.run().ok
    assert _feed(lh, "silver.orders") == "true"  # asked for, though nothing reads it
    assert _feed(lh, "silver.kept") == "false"  # turned off, though an increment reads it
    lh.write("bronze.orders", {"id": [4], "amount": [2.0], "seq": [1]}, mode="append")
    modes = {n.model: n.mode for n in lh.run().nodes}
    # Without a feed, the input's merge cannot be read as changes: the reader is rebuilt.
    assert modes == {"silver.orders": "full", "silver.kept": "incremental", "gold.merged": "full"}
    assert _feed(lh, "silver.kept") == "false"
    # Without the setting, the reader's next full build turns the feed on, and the input's
    # changes after it reach the reader as changes.
    write_model(lh.root, "silver.kept", "select * from bronze.orders", MERGED)
    lh.write("bronze.orders", {"id": [5], "amount": [3.0], "seq": [1]}, mode="append")
    assert {n.model: n.mode for n in lh.run().nodes}["gold.merged"] == "full"
    assert _feed(lh, "silver.kept") == "true"
    lh.write("bronze.orders", {"id": [6], "amount": [4.0], "seq": [1]}, mode="append")
    assert {n.model: n.mode for n in lh.run().nodes}["gold.merged"] == "incremental"
    assert lh.sql("select id from gold.merged order by id").rows() == [(i,) for i in range(1, 7)]


def test_a_new_incremental_reader_turns_the_feed_on_even_when_run_alone(lh: Lakehouse) -> None:
    write_model(lh.root, "silver.orders", LATEST, MERGED)
    assert lh.run().ok
    assert _feed(lh, "silver.orders") == "false"
    write_model(lh.root, "gold.doubled", "select id, amount * 2 as a2 from silver.orders", MERGED)
    # Only the new model runs: its input's table gets the feed before the model reads it.
    summary = lh.run("gold.doubled")
    assert [(n.model, n.mode) for n in summary.nodes] == [("gold.doubled", "full")]
    assert _feed(lh, "silver.orders") == "true"
    # The input's next merge is read as changes, not by rebuilding the reader.
    since = lh.table("silver.orders").version()
    lh.write("bronze.orders", {"id": [1, 4], "amount": [6.0, 2.0], "seq": [2, 2]}, mode="append")
    modes = {n.model: n.mode for n in lh.run().nodes}
    assert modes == {"silver.orders": "incremental", "gold.doubled": "incremental"}
    changes = lh.table("silver.orders").changes(since + 1, lh.table("silver.orders").version())
    assert changes is not None
    assert sorted(changes.column("_change_type").to_pylist()) == [
        "insert",
        "update_postimage",
        "update_preimage",
    ]
    assert lh.sql("select * from gold.doubled order by id").rows() == [
        (1, 12.0),
        (2, 15.0),
        (3, 2.0),
        (4, 4.0),
    ]


def test_a_table_no_model_builds_gets_a_feed_when_an_incremental_model_reads_it(
    lh: Lakehouse,
) -> None:
    # bronze.orders is written by hand here (as ingestion would with `merge` or `reload`):
    # without a feed its updates and deletes could only be read by rebuilding the reader.
    assert _feed(lh, "bronze.orders") is None
    write_model(lh.root, "silver.orders", "select id, amount * 2 as a2 from bronze.orders", MERGED)
    assert lh.run().ok
    assert _feed(lh, "bronze.orders") == "true"
    lh.table("bronze.orders").merge([{"id": 2, "amount": 1.5, "seq": 2}], keys=["id"])
    lh.table("bronze.orders").delete("id = 3")
    node = lh.run().nodes[0]
    assert (node.mode, node.rows) == ("incremental", 1)
    assert lh.sql("select * from silver.orders order by id").rows() == [(1, 10.0), (2, 3.0)]


def test_a_rebuild_says_why(lh: Lakehouse) -> None:
    write_model(lh.root, "silver.appended", "select id, amount from bronze.orders", APPENDED)
    write_model(
        lh.root, "silver.kept", "select * from bronze.orders", f"properties:\n  {FEED}: false\n"
    )
    write_model(lh.root, "gold.merged", "select * from silver.kept", MERGED)
    assert lh.run().ok
    lh.table("bronze.orders").delete("id = 3")
    reasons = {n.model: (n.mode, n.reason) for n in lh.run().nodes}
    assert reasons["silver.appended"] == (
        "full",
        "bronze.orders updated or deleted rows, which appending cannot take back",
    )
    mode, reason = reasons["gold.merged"]
    assert mode == "full"
    assert reason is not None
    assert reason.startswith("silver.kept's changes since version 0 cannot be read"), reason
