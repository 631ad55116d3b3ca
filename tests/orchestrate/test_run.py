"""Model runs end to end: tables, selection, checks, failures, leases, run history, backfills."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import lakebed
from helpers import all_rows, orders_and_customers, write_model
from lakebed import Lakehouse
from lakebed.errors import ModelError, TransformError


@pytest.fixture
def lh(tmp_path: Path) -> Lakehouse:
    return orders_and_customers(tmp_path / "p")


def test_table_models_build_in_dependency_order(lh: Lakehouse) -> None:
    write_model(
        lh.root,
        "gold.by_country",
        "select c.country, sum(o.amount) as revenue\n"
        "from silver.enriched o join silver.customers c using (customer) group by all",
    )
    write_model(
        lh.root, "silver.enriched", "select * from silver.orders where customer is not null"
    )
    summary = lh.run()
    assert summary.ok
    assert [n.model for n in summary.nodes] == ["silver.enriched", "gold.by_country"]
    assert all_rows(lh, "gold.by_country") == [("DE", 12.5), ("FR", 1.0)]
    assert lh.run().ok  # a second full build replaces the tables
    assert all_rows(lh, "gold.by_country") == [("DE", 12.5), ("FR", 1.0)]


def test_exclude_leaves_models_out_of_the_selection(lh: Lakehouse) -> None:
    write_model(
        lh.root, "silver.enriched", "select * from silver.orders where customer is not null"
    )
    write_model(
        lh.root,
        "gold.by_customer",
        "select customer, count(*) as n from silver.enriched group by 1",
    )
    write_model(lh.root, "gold.total", "select sum(amount) as total from silver.enriched")
    summary = lh.run("silver.enriched+", exclude="gold.by_customer")
    assert [n.model for n in summary.nodes] == ["silver.enriched", "gold.total"]
    assert [n.model for n in lh.run(exclude="layer:gold").nodes] == ["silver.enriched"]


def test_a_disabled_model_is_left_out_and_what_reads_it_is_an_error(lh: Lakehouse) -> None:
    write_model(
        lh.root, "silver.enriched", "select * from silver.orders where customer is not null"
    )
    write_model(lh.root, "gold.total", "select sum(amount) as total from silver.orders")
    assert lh.run().ok
    version = lh.table("gold.total").version()
    write_model(lh.root, "gold.total", "select 1 as total", "enabled: false\n")
    summary = lh.run()
    assert [n.model for n in summary.nodes] == ["silver.enriched"]
    assert lh.table("gold.total").version() == version  # its table stays as it was
    with pytest.raises(TransformError, match="disabled"):
        lh.run("gold.total")
    with pytest.raises(TransformError, match="disabled"):
        lh.run("total")
    write_model(lh.root, "gold.reader", "select total from gold.total")
    with pytest.raises(ModelError, match=r"reads gold\.total, a disabled model") as caught:
        lh.run()
    assert caught.value.file == str(lh.root / "models" / "gold" / "reader.sql")
    assert caught.value.line == 1


def test_enabled_true_does_not_change_a_models_fingerprint(lh: Lakehouse) -> None:
    write_model(lh.root, "silver.enriched", "select * from silver.orders")
    assert lh.run().ok
    write_model(lh.root, "silver.enriched", "select * from silver.orders", "enabled: true\n")
    assert lh.run().nodes[0].status == "up_to_date"


def test_a_failing_check_publishes_nothing_and_skips_downstream(lh: Lakehouse) -> None:
    write_model(
        lh.root,
        "silver.enriched",
        "select * from silver.orders",
        "checks:\n  - not_null: customer\n",
    )
    write_model(lh.root, "gold.total", "select sum(amount) as total from silver.enriched")
    summary = lh.run()
    assert not summary.ok
    status = {n.model: n.status for n in summary.nodes}
    assert status == {"silver.enriched": "failed", "gold.total": "skipped"}
    assert summary.nodes[0].seconds > 0  # the failed build's time, as its run record has
    assert not lh.storage.exists(lakebed.lakehouse.TableName.parse("silver.enriched"))
    (result,) = lh.metastore.latest_check_results("silver.enriched")
    assert result.failing_rows == 1


def test_drop_checks_quarantine_failing_rows_and_publish_the_rest(lh: Lakehouse) -> None:
    write_model(
        lh.root,
        "silver.enriched",
        "select * from silver.orders",
        "checks:\n  - not_null: {column: customer, severity: drop}\n",
    )
    summary = lh.run()
    assert summary.ok
    assert summary.nodes[0].quarantined == 1
    assert [r[0] for r in all_rows(lh, "silver.enriched")] == [1, 2, 3]
    assert lh.sql("select id from quarantine.silver_enriched").rows() == [(4,)]


def test_a_drop_check_beyond_its_max_failing_publishes_nothing(lh: Lakehouse) -> None:
    settings = "checks:\n  - not_null: {column: customer, severity: drop, max_failing: %s}\n"
    write_model(lh.root, "silver.enriched", "select * from silver.orders", settings % "10%")
    node = lh.run().nodes[0]  # 1 of 4 orders has no customer: 25%
    assert node.status == "failed"
    assert node.error is not None
    assert "more than max_failing 10%" in node.error
    assert not lh.storage.exists(lakebed.lakehouse.TableName.parse("silver.enriched"))
    assert not lh.storage.exists(lakebed.lakehouse.TableName.parse("quarantine.silver_enriched"))
    write_model(lh.root, "silver.enriched", "select * from silver.orders", settings % "25%")
    node = lh.run().nodes[0]
    assert (node.status, node.quarantined) == ("success", 1)
    assert lh.sql("select id from quarantine.silver_enriched").rows() == [(4,)]


def test_models_of_one_name_in_two_layers_keep_their_dropped_rows_apart(lh: Lakehouse) -> None:
    write_model(
        lh.root,
        "silver.enriched",
        "select * from silver.orders",
        "checks:\n  - not_null: {column: customer, severity: drop}\n",
    )
    write_model(
        lh.root,
        "gold.enriched",
        "select * from silver.enriched",
        "checks:\n  - range: {column: amount, min: 2, severity: drop}\n",
    )
    assert [n.quarantined for n in lh.run().nodes] == [1, 1]
    assert lh.run().ok  # a second full build replaces each quarantine with its own rows
    assert lh.sql("select id from quarantine.silver_enriched").rows() == [(4,)]
    assert lh.sql("select id from quarantine.gold_enriched").rows() == [(3,)]


def test_a_source_named_like_a_models_quarantine_is_an_error(lh: Lakehouse) -> None:
    (lh.root / "lakebed.yml").write_text(
        "sources:\n  silver_enriched: {kind: files, path: x.csv, target: bronze.x}\n"
    )
    lh = lakebed.open(lh.root)
    write_model(
        lh.root,
        "silver.enriched",
        "select * from silver.orders",
        "checks:\n  - not_null: {column: customer, severity: drop}\n",
    )
    with pytest.raises(lakebed.errors.ConfigError, match=r"quarantine\.silver_enriched") as info:
        lh.run()
    assert "rename the source" in (info.value.hint or "")


def test_the_catalog_records_every_commit_of_a_run_when_it_ends(lh: Lakehouse) -> None:
    """A run records its models' commits in the catalog together at its end (not one
    transaction per commit in each model's build): afterwards the catalog holds every
    table's latest version, rows and columns."""
    write_model(
        lh.root,
        "gold.big_orders",
        "select id, customer, amount from silver.orders where amount > 2",
        "materialized: incremental\nincremental_strategy: merge\nunique_key: [id]\n",
    )
    write_model(
        lh.root, "gold.totals", "select count(*) as n, sum(amount) as s from gold.big_orders"
    )
    seen: list[bool] = []

    def report(event: str, node: object) -> None:
        if event == "started" and getattr(node, "model", None) == "gold.totals":
            seen.append(lh.metastore.get_table("gold.big_orders") is not None)

    assert lh.run(report=report).ok
    lh.table("silver.orders").append({"id": [9], "customer": [20], "amount": [8.0]})
    assert lh.run().ok
    for name in ("gold.big_orders", "gold.totals"):
        record = lh.describe(name)
        table = lh.table(name)
        assert record.version == table.version()
        assert record.row_count == table.read().num_rows
        assert [c["name"] for c in lh.metastore.schema_history(name)[-1].columns] == (
            table.schema().names
        )
    assert lh.describe("gold.big_orders").row_count == 4
    assert seen == [True]  # the table was catalogued at its commit, its figures at the end


def test_a_models_table_properties_are_set_and_kept_in_step(lh: Lakehouse) -> None:
    merge = "materialized: incremental\nunique_key: id\n"
    props = "properties:\n  delta.logRetentionDuration: interval 7 days\n"
    sql = "select id, amount * 10 as a10 from silver.orders"
    write_model(lh.root, "gold.scaled", sql, merge + props)
    assert lh.run().ok
    table = lh.table("gold.scaled")
    assert table.properties()["delta.logRetentionDuration"] == "interval 7 days"
    assert table.properties()["delta.enableDeletionVectors"] == "true"  # a merged model's own
    # Changed with no new input rows: the model is up to date, its table follows anyway.
    (lh.root / "models" / "gold" / "scaled.yml").write_text(
        merge + "properties:\n  delta.logRetentionDuration: interval 30 days\n"
    )
    assert lh.run().nodes[0].status == "up_to_date"
    assert table.properties()["delta.logRetentionDuration"] == "interval 30 days"


def test_a_query_error_names_the_model_file_and_line(lh: Lakehouse) -> None:
    write_model(lh.root, "gold.scaled", "select id,\n  amout * 2 as scaled\nfrom silver.orders\n")
    node = lh.run().nodes[0]
    path = lh.root / "models" / "gold" / "scaled.sql"
    assert node.status == "failed"
    assert node.error is not None
    assert node.error.startswith(f"{path}:2: Binder Error: Referenced column")
    assert 'Candidate bindings: "amount"' in node.error


def test_settings_naming_columns_the_model_lacks_are_errors(lh: Lakehouse) -> None:
    sql = "select id, amount from silver.orders"
    write_model(lh.root, "gold.keyed", sql, "materialized: incremental\nunique_key: idx\n")
    write_model(lh.root, "gold.split", sql, "partition_by: [day]\n")
    nodes = {n.model: n for n in lh.run().nodes}
    folder = lh.root / "models" / "gold"
    assert nodes["gold.keyed"].error == (
        f"{folder / 'keyed.yml'}: `unique_key`: idx is not among the columns of its SELECT "
        "(id, amount)\n  hint: name columns the model returns, or add them to keyed.sql"
    )
    assert nodes["gold.split"].error is not None
    assert "`partition_by`: day is not among the columns" in nodes["gold.split"].error
    assert not {"gold.keyed", "gold.split"} & {t.name for t in lh.tables()}


def test_a_column_delta_cannot_store_fails_its_model_saying_why(lh: Lakehouse) -> None:
    write_model(lh.root, "gold.timed", "select id, time '12:30' as at from silver.orders")
    node = lh.run().nodes[0]
    assert node.status == "failed"
    assert node.error is not None
    assert node.error.startswith(
        "data written to gold.timed cannot be stored in Delta: column at is time64[us]: "
        "Delta has no time-of-day type"
    )


def test_a_model_starts_once_its_input_is_committed(
    lh: Lakehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table model reading another starts as soon as that one's rows are committed,
    while it still records its description and run (made slow here)."""
    import time as clock

    write_model(lh.root, "silver.enriched", "select * from silver.orders where amount > 2")
    write_model(lh.root, "gold.total", "select sum(amount) as s from silver.enriched")
    build_module = importlib.import_module("lakebed.orchestrate.build")
    real_describe = build_module.describe

    def slow_describe(ctx: Any, model: Any) -> None:
        if str(model.name) == "silver.enriched":
            clock.sleep(0.5)
        real_describe(ctx, model)

    monkeypatch.setattr(build_module, "describe", slow_describe)
    events: list[tuple[str, str]] = []
    summary = lh.run(report=lambda event, node: events.append((event, node.model if node else "")))
    assert summary.ok
    started = events.index(("started", "gold.total"))
    assert started < events.index(("finished", "silver.enriched"))
    assert all_rows(lh, "gold.total") == [(15.5,)]


def test_an_unforeseen_error_fails_its_model_and_the_run_goes_on(
    lh: Lakehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_model(lh.root, "gold.a", "select id from silver.orders")
    write_model(lh.root, "gold.b", "select amount from silver.orders")
    build_module = importlib.import_module("lakebed.orchestrate.build")
    real_publish = build_module.publish

    def publish(ctx: object, computed: Any, data: pa.Table, *args: Any) -> Any:
        if str(computed.model.name) == "gold.a":
            raise RuntimeError("boom")
        return real_publish(ctx, computed, data, *args)

    monkeypatch.setattr(build_module, "publish", publish)
    summary = lh.run()
    nodes = {n.model: n for n in summary.nodes}
    assert (nodes["gold.a"].status, nodes["gold.a"].error) == (
        "failed",
        "unexpected RuntimeError: boom",
    )
    assert nodes["gold.b"].status == "success"
    assert not summary.ok
    assert [r.status for r in lh.runs(kind="model") if r.target == "gold.a"] == ["failed"]


def test_run_history_records_the_run_and_each_model(lh: Lakehouse) -> None:
    write_model(lh.root, "silver.enriched", "select * from silver.orders")
    lh.run()
    kinds = [r.kind for r in lh.runs()]
    assert "run" in kinds
    assert "model" in kinds
    model_run = next(r for r in lh.runs(kind="model"))
    assert (model_run.target, model_run.status, model_run.rows) == ("silver.enriched", "success", 4)
    # The bytes of the files the build added: the table's only files.
    assert model_run.bytes == lh.table("silver.enriched").snapshot().size_bytes > 0
    assert lh.runs(kind="run")[0].bytes == model_run.bytes
    assert pa.types.is_integer(lh.table("silver.enriched").schema().field("id").type)


def test_a_run_records_column_lineage_down_to_the_inputs(lh: Lakehouse) -> None:
    write_model(lh.root, "silver.enriched", "select id, amount * 2 as doubled from silver.orders")
    lh.run()
    edges = lh.metastore.lineage_edges(downstream="silver.enriched")
    found = {(e.downstream_column, e.upstream_table, e.upstream_column) for e in edges}
    assert ("doubled", "silver.orders", "amount") in found
    assert ("id", "silver.orders", "id") in found


def test_a_model_leased_by_another_run_is_not_built_twice(lh: Lakehouse) -> None:
    write_model(lh.root, "silver.enriched", "select * from silver.orders")
    assert lh.metastore.acquire_lease("model:silver.enriched", "other-run", seconds=60) is None
    summary = lh.run()
    assert summary.nodes[0].status == "failed"
    assert "other-run" in (summary.nodes[0].error or "")
    lh.metastore.release_lease("model:silver.enriched", "other-run")
    assert lh.run().ok


def test_an_up_to_date_model_is_reported_without_taking_its_lease(lh: Lakehouse) -> None:
    write_model(lh.root, "silver.enriched", "select * from silver.orders")
    write_model(
        lh.root,
        "gold.big",
        "select * from silver.enriched where amount > 2",
        "materialized: view\n",
    )
    assert lh.run().ok
    before = len(lh.runs(kind="model", limit=100))
    # Another run holds the lease, but nothing needs building: reading shows it.
    assert lh.metastore.acquire_lease("model:silver.enriched", "other-run", seconds=60) is None
    summary = lh.run()
    assert [(n.model, n.status, n.mode) for n in summary.nodes] == [
        ("silver.enriched", "up_to_date", "up_to_date"),
        ("gold.big", "up_to_date", "view"),
    ]
    # Each model still has its line in the run history, recorded as part of the run.
    records = lh.runs(kind="model", limit=100)
    assert len(records) == before + 2
    newest = {r.target: r for r in records[:2]}
    assert set(newest) == {"silver.enriched", "gold.big"}
    assert all(r.status == "success" for r in newest.values())
    assert newest["gold.big"].params == {"run": summary.run_id, "up_to_date": True}
    # Once the input changes, the model needs a build, and the lease holds it back.
    lh.table("silver.orders").append({"id": [9], "customer": [10], "amount": [100.0]})
    assert lh.run().nodes[0].status == "failed"


def test_an_expired_lease_does_not_block(lh: Lakehouse) -> None:
    write_model(lh.root, "silver.enriched", "select * from silver.orders")
    assert lh.metastore.acquire_lease("model:silver.enriched", "crashed", seconds=-1) is None
    assert lh.run().ok


def test_backfill_recomputes_exactly_the_given_partitions(lh: Lakehouse) -> None:
    lh.write(
        "silver.sales",
        {"day": ["2025-01-01", "2025-01-02", "2025-01-03"], "amount": [1.0, 2.0, 3.0]},
    )
    write_model(
        lh.root,
        "gold.daily",
        "select day, sum(amount) as total from silver.sales group by day",
        "partition_by: [day]\n",
    )
    assert lh.run().ok
    sales = lh.table("silver.sales")
    sales.update({"amount": "amount * 10"})  # every day changes upstream...
    summary = lh.run(backfill="2025-01-02..2025-01-03")
    assert summary.ok
    node = summary.nodes[-1]
    assert (node.mode, node.reason) == ("full", "backfill of day 2025-01-02..2025-01-03")
    # ...but only the backfilled days are recomputed.
    assert all_rows(lh, "gold.daily") == [
        ("2025-01-01", 1.0),
        ("2025-01-02", 20.0),
        ("2025-01-03", 30.0),
    ]


def test_a_backfill_needs_a_partitioned_model(lh: Lakehouse) -> None:
    write_model(lh.root, "gold.total", "select sum(amount) as total from silver.orders")
    with pytest.raises(TransformError, match="no selected model is partitioned"):
        lh.run(backfill="2025-01-01..2025-01-31")
    assert "gold.total" not in [t.name for t in lh.tables()]


def test_a_backfill_of_months_takes_every_day_of_a_date_column(lh: Lakehouse) -> None:
    """`--backfill 2025-01..2025-02` (as the README writes it) over daily partitions of a
    date column: January and February whole, nothing of the days around them."""
    from datetime import date

    days = [date(2024, 12, 31), date(2025, 1, 1), date(2025, 2, 28), date(2025, 3, 1)]
    lh.write("silver.sales", {"day": days, "amount": [1.0, 2.0, 3.0, 4.0]})
    write_model(
        lh.root,
        "gold.daily",
        "select day, sum(amount) as total from silver.sales group by day",
        "partition_by: day\n",
    )
    assert lh.run().ok
    lh.table("silver.sales").update({"amount": "amount * 10"})
    assert lh.run(backfill="2025-01..2025-02").ok
    assert [r[1] for r in all_rows(lh, "gold.daily")] == [1.0, 20.0, 30.0, 4.0]
    assert lh.run(backfill="2025-03-01").ok  # one partition
    assert [r[1] for r in all_rows(lh, "gold.daily")] == [1.0, 20.0, 30.0, 40.0]
    with pytest.raises(lakebed.LakebedError, match="2025-02-30 is not a date"):
        lh.run(backfill="2025-02-01..2025-02-30")


def test_a_backfill_window_must_be_start_dot_dot_end(lh: Lakehouse) -> None:
    with pytest.raises(lakebed.LakebedError, match=r"START\.\.END"):
        lh.run(backfill="2025-01-02..")
    with pytest.raises(lakebed.LakebedError, match="ends before it starts") as info:
        lh.run(backfill="2025-01-03..2025-01-02")  # else it would recompute nothing
    assert "2025-01-02..2025-01-03" in (info.value.hint or "")
    with pytest.raises(lakebed.LakebedError, match="ends before it starts"):
        lh.run(backfill="10..9")


def test_a_lease_held_by_a_killed_process_is_taken_over(lh: Lakehouse) -> None:
    import socket
    import subprocess
    import sys

    write_model(lh.root, "silver.enriched", "select * from silver.orders")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process id that no longer runs
    holder = f"crashed-run@{socket.gethostname()}:{gone.pid}"
    assert lh.metastore.acquire_lease("model:silver.enriched", holder, seconds=600) is None
    assert lh.run().ok


def test_column_descriptions_of_a_model_reach_the_catalog(lh: Lakehouse) -> None:
    write_model(
        lh.root,
        "silver.enriched",
        "select id, amount from silver.orders",
        "columns:\n  id: The order number.\n  amount: Gross amount in EUR.\n",
    )
    assert lh.run().ok
    properties = lh.describe("silver.enriched").properties
    assert properties["lakebed.column.id"] == "The order number."
    assert properties["lakebed.column.amount"] == "Gross amount in EUR."


def test_a_relationships_target_is_built_before_the_model_it_judges(lh: Lakehouse) -> None:
    check = "relationships: {column: customer, to: silver.buyers, field: customer, severity: drop}"
    write_model(lh.root, "silver.buyers", "select customer from silver.customers")
    write_model(
        lh.root,
        "silver.placed",
        "select id, customer from silver.orders where customer is not null",
        f"checks:\n  - {check}\n",
    )
    assert lh.run().ok
    # A new customer and their order arrive together: the check reads the buyers built
    # in this same run, not the ones before it.
    lh.table("silver.customers").append({"customer": [30], "country": ["IT"]})
    lh.table("silver.orders").append({"id": [9], "customer": [30], "amount": [1.0]})
    summary = lh.run(workers=2)
    assert summary.ok
    assert 9 in [row[0] for row in lh.sql("select id from silver.placed").rows()]
    assert "quarantine.silver_placed" not in [t.name for t in lh.tables()]
