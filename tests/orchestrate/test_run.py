"""Model runs end to end: tables, incremental models, Python models, checks, failures."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import lakebed
from helpers import write_model
from lakebed import Lakehouse
from lakebed.errors import ModelError, TransformError


@pytest.fixture
def lh(tmp_path: Path) -> Lakehouse:
    root = lakebed.init_project(tmp_path / "p")
    lake = lakebed.open(root)
    lake.write(
        "silver.orders",
        {"id": [1, 2, 3, 4], "customer": [10, 10, 20, None], "amount": [5.0, 7.5, 1.0, 3.0]},
    )
    lake.write("silver.customers", {"customer": [10, 20], "country": ["DE", "FR"]})
    return lake


def _rows(lh: Lakehouse, table: str) -> list[tuple]:
    return lh.sql(f"select * from {table} order by all").rows()


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
    assert _rows(lh, "gold.by_country") == [("DE", 12.5), ("FR", 1.0)]
    assert lh.run().ok  # a second full build replaces the tables
    assert _rows(lh, "gold.by_country") == [("DE", 12.5), ("FR", 1.0)]


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
    assert [r[0] for r in _rows(lh, "silver.enriched")] == [1, 2, 3]
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


def test_incremental_merge_equals_a_full_rebuild_after_inserts_updates_deletes(
    lh: Lakehouse,
) -> None:
    write_model(
        lh.root,
        "gold.big_orders",
        "select id, customer, amount * 2 as doubled from silver.orders where amount > 2",
        "materialized: incremental\nincremental_strategy: merge\nunique_key: [id]\n",
    )
    assert lh.run().nodes[0].mode == "full"
    orders = lh.table("silver.orders")
    orders.append({"id": [5, 6], "customer": [20, 20], "amount": [9.0, 0.5]})
    orders.update({"amount": "1.0"}, predicate="id = 2")  # drops out of the model's WHERE
    orders.delete("id = 1")
    node = lh.run().nodes[0]
    assert node.mode == "incremental"
    incremental = _rows(lh, "gold.big_orders")
    expected = lh.sql(
        "select id, customer, amount * 2 as doubled from silver.orders where amount > 2"
        " order by all"
    ).rows()
    assert incremental == expected
    assert lh.run().nodes[0].status == "up_to_date"


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


def test_an_increment_marks_the_rows_it_replaces_instead_of_rewriting_the_table(
    lh: Lakehouse,
) -> None:
    """A merged model's table records deletion vectors: a few updated keys leave its files
    in place, and the model downstream reads the change (pre- and post-images) right."""
    lh.write("silver.events", {"id": list(range(1000)), "v": [float(i) for i in range(1000)]})
    merge = "materialized: incremental\nincremental_strategy: merge\nunique_key: [id]\n"
    write_model(lh.root, "gold.scaled", "select id, v * 10 as v10 from silver.events", merge)
    write_model(lh.root, "gold.flagged", "select id, v10 > 5000 as big from gold.scaled", merge)
    assert [n.mode for n in lh.run().nodes] == ["full", "full"]
    files = set(lh.table("gold.scaled").snapshot().paths)
    events = lh.table("silver.events")
    events.update({"v": "v + 1000"}, predicate="id in (7, 400)")
    events.append({"id": [1000], "v": [1.0]})
    assert [n.mode for n in lh.run().nodes] == ["incremental", "incremental"]
    scaled = lh.table("gold.scaled").snapshot()
    assert files < set(scaled.paths)  # the first build's file is still there
    assert sorted(n for rows in scaled.deleted.values() for n in rows.to_pylist()) == [7, 400]
    assert (
        _rows(lh, "gold.flagged")
        == lh.sql("select id, v * 10 > 5000 as big from silver.events order by all").rows()
    )


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


def test_an_input_without_a_change_feed_still_gives_a_correct_increment(lh: Lakehouse) -> None:
    """A model table can turn its change data feed off; a merged model reading it then
    rebuilds in full when rows were updated (only appends can be read without the feed)."""
    write_model(
        lh.root,
        "silver.scaled",
        "select id, amount * 10 as a10 from silver.orders",
        "properties:\n  delta.enableChangeDataFeed: false\n",
    )
    write_model(
        lh.root,
        "gold.big",
        "select id, a10 from silver.scaled where a10 > 20",
        "materialized: incremental\nunique_key: id\n",
    )
    assert lh.run().ok
    assert lh.table("silver.scaled").properties()["delta.enableChangeDataFeed"] == "false"
    lh.table("silver.orders").update({"amount": "0.5"}, predicate="id = 2")
    modes = {n.model: n.mode for n in lh.run().nodes}
    assert modes == {"silver.scaled": "full", "gold.big": "full"}
    expected = lh.sql("select id, amount * 10 from silver.orders where amount * 10 > 20").rows()
    assert _rows(lh, "gold.big") == sorted(expected)


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
    assert _rows(lh, "gold.total") == [(15.5,)]


def _chain(lh: Lakehouse) -> None:
    """silver.big merges silver.orders' rows; gold.big_customers merges silver.big's."""
    merged = "materialized: incremental\nincremental_strategy: merge\nunique_key: [id]\n"
    write_model(lh.root, "silver.big", "select id, customer, amount from silver.orders", merged)
    write_model(
        lh.root,
        "gold.big_customers",
        "select b.id, c.country, b.amount * 2 as doubled\n"
        "from silver.big b join silver.customers c using (customer)",
        merged,
    )
    assert lh.run().ok


def _big_customers_rebuilt(lh: Lakehouse) -> list[tuple]:
    """gold.big_customers as a full build would make it."""
    return lh.sql(
        "select o.id, c.country, o.amount * 2 from silver.orders o "
        "join silver.customers c using (customer) order by all"
    ).rows()


def test_a_merged_models_reader_computes_while_its_commit_lands(
    lh: Lakehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a merge's change rows are planned, an incremental model reading them computes
    its increment from them while the merge writes its files and commits (made slow here),
    and publishes once it has landed: the same rows as a full rebuild."""
    import time as clock

    from lakebed.storage import merge_on_read

    _chain(lh)
    lh.table("silver.orders").append({"id": [5, 6], "customer": [20, 10], "amount": [9.0, 4.0]})
    lh.table("silver.orders").update({"amount": "8.0"}, predicate="id = 1")
    real_commit = merge_on_read._commit

    def slow_commit(table: Any, *args: Any, **kwargs: Any) -> Any:
        if str(table.name) == "silver.big":
            clock.sleep(0.5)
        return real_commit(table, *args, **kwargs)

    monkeypatch.setattr(merge_on_read, "_commit", slow_commit)
    build_module = importlib.import_module("lakebed.orchestrate.build")
    real_ahead = build_module.compute_ahead
    before = lh.table("silver.big").version()
    ahead: list[tuple[int, bool]] = []  # silver.big's version then, and whether it computed

    def spy(ctx: Any, model: Any, planned: Any) -> Any:
        version = lh.table("silver.big").version()
        computed = real_ahead(ctx, model, planned)
        ahead.append((version, computed is not None))
        return computed

    monkeypatch.setattr(build_module, "compute_ahead", spy)
    events: list[tuple[str, str]] = []
    summary = lh.run(report=lambda event, node: events.append((event, node.model if node else "")))
    assert summary.ok
    assert ahead == [(before, True)]  # computed before silver.big's commit landed
    modes = {n.model: n.mode for n in summary.nodes}
    assert modes["gold.big_customers"] == modes["silver.big"] == "incremental"
    assert events.index(("started", "gold.big_customers")) < events.index(
        ("finished", "silver.big")
    )
    assert _rows(lh, "gold.big_customers") == _big_customers_rebuilt(lh)
    assert {n.status for n in lh.run().nodes} == {"up_to_date"}


def test_a_reader_of_a_merge_that_does_not_land_is_skipped(
    lh: Lakehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A merge planned and not committed: the model computing from its rows is skipped, as
    when its input fails; the next run builds both from what is committed."""
    import time as clock

    from lakebed.errors import StorageError
    from lakebed.storage import merge_on_read

    _chain(lh)
    lh.table("silver.orders").append({"id": [5], "customer": [20], "amount": [9.0]})
    real_commit = merge_on_read._commit

    def failing_commit(table: Any, *args: Any, **kwargs: Any) -> Any:
        if str(table.name) == "silver.big":
            clock.sleep(0.3)  # the reader has started from the plan by then
            raise StorageError("the disk is full")
        return real_commit(table, *args, **kwargs)

    monkeypatch.setattr(merge_on_read, "_commit", failing_commit)
    nodes = {n.model: n for n in lh.run().nodes}
    assert nodes["silver.big"].status == "failed"
    assert (nodes["gold.big_customers"].status, nodes["gold.big_customers"].error) == (
        "skipped",
        "an upstream model failed (silver.big did not commit its rows)",
    )
    monkeypatch.setattr(merge_on_read, "_commit", real_commit)
    assert lh.run().ok
    expected = lh.sql(
        "select o.id, c.country, o.amount * 2 from silver.orders o "
        "join silver.customers c using (customer) where o.amount > 0 order by all"
    ).rows()
    assert _rows(lh, "gold.big_customers") == expected


def test_a_reader_computing_ahead_of_a_merge_tried_again_does_not_use_its_first_plan(
    lh: Lakehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A merge whose planned commit fails with a retryable error is built again: what
    computed from the first plan's change rows computes again from what has landed (it
    may miss the second commit until the next run, never take rows that did not land)."""
    import time as clock

    from lakebed.errors import ConcurrentWriteError
    from lakebed.storage import merge_on_read

    _chain(lh)
    lh.table("silver.orders").append({"id": [5], "customer": [20], "amount": [9.0]})
    real_commit = merge_on_read._commit
    failures = [1]

    def flaky_commit(table: Any, *args: Any, **kwargs: Any) -> Any:
        if str(table.name) == "silver.big" and failures:
            failures.pop()
            clock.sleep(0.3)  # the reader has started from the plan by then
            raise ConcurrentWriteError("lost a race", table="silver.big")
        return real_commit(table, *args, **kwargs)

    monkeypatch.setattr(merge_on_read, "_commit", flaky_commit)
    build_module = importlib.import_module("lakebed.orchestrate.build")
    real_ahead = build_module._computed_ahead
    outcomes: list[bool] = []

    def spy(ctx: Any, model: Any, ahead: Any) -> Any:
        computed = real_ahead(ctx, model, ahead)
        outcomes.append(computed is not None)
        return computed

    monkeypatch.setattr(build_module, "_computed_ahead", spy)
    summary = lh.run()
    assert summary.ok
    assert outcomes == [False]  # the first plan did not land: not used
    big = lh.sql("select id, customer, amount from silver.big order by all").rows()
    assert big == lh.sql("select id, customer, amount from silver.orders order by all").rows()
    lh.run()
    assert _rows(lh, "gold.big_customers") == _big_customers_rebuilt(lh)


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


def test_a_changed_incremental_model_is_rebuilt_in_full(lh: Lakehouse) -> None:
    merge = "materialized: incremental\nunique_key: id\n"
    write_model(lh.root, "gold.scaled", "select id, amount * 2 as scaled from silver.orders", merge)
    assert lh.run().nodes[0].mode == "full"
    write_model(
        lh.root, "gold.scaled", "select id, amount * 3 as scaled, 1 as v from silver.orders"
    )
    node = lh.run().nodes[0]
    assert (node.status, node.mode, node.reason) == ("success", "full", "model changed")
    assert _rows(lh, "gold.scaled") == [(1, 15.0, 1), (2, 22.5, 1), (3, 3.0, 1), (4, 9.0, 1)]
    # Rebuilt, it is the model as defined: nothing left to do, and increments go on.
    assert lh.run().nodes[0].status == "up_to_date"
    lh.table("silver.orders").append({"id": [5], "customer": [20], "amount": [2.0]})
    node = lh.run().nodes[0]
    assert (node.mode, node.rows, node.reason) == ("incremental", 1, None)


def test_new_checks_of_an_incremental_model_leave_its_rows(lh: Lakehouse) -> None:
    merge = "materialized: incremental\nunique_key: id\n"
    write_model(lh.root, "gold.scaled", "select id, amount from silver.orders", merge)
    assert lh.run().ok
    version = lh.table("gold.scaled").version()
    (lh.root / "models" / "gold" / "scaled.yml").write_text(
        merge + "checks:\n  - not_null: amount\n    severity: drop\n"
    )
    assert lh.run().nodes[0].status == "up_to_date"
    assert lh.table("gold.scaled").version() == version
    lh.table("silver.orders").append({"id": [5], "customer": [20], "amount": [None]})
    node = lh.run().nodes[0]
    assert (node.mode, node.quarantined) == ("incremental", 1)


def test_full_refresh_false_keeps_an_incremental_models_rows(lh: Lakehouse) -> None:
    kept = "materialized: incremental\nunique_key: id\nfull_refresh: false\n"
    write_model(lh.root, "gold.scaled", "select id, amount * 2 as scaled from silver.orders", kept)
    assert lh.run().ok
    before = _rows(lh, "gold.scaled")
    write_model(lh.root, "gold.scaled", "select id, amount * 3 as scaled from silver.orders")
    assert lh.run().nodes[0].status == "up_to_date"
    node = lh.run(full_refresh=True).nodes[0]
    assert (node.status, node.reason) == ("up_to_date", "kept its rows (full_refresh: false)")
    assert _rows(lh, "gold.scaled") == before
    lh.table("silver.orders").append({"id": [5], "customer": [20], "amount": [2.0]})
    node = lh.run().nodes[0]
    assert node.mode == "incremental"
    assert node.reason == "model changed: new rows only (full_refresh: false)"
    assert _rows(lh, "gold.scaled") == [*before, (5, 6.0)]


def test_an_aggregate_per_key_is_recomputed_from_all_rows_of_the_keys_touched(
    lh: Lakehouse,
) -> None:
    sql = "select customer, sum(amount) as total, count(*) as n from silver.orders group by 1"
    write_model(lh.root, "gold.totals", sql, "materialized: incremental\nunique_key: customer\n")
    assert lh.run().ok
    orders = lh.table("silver.orders")
    orders.append({"id": [5], "customer": [10], "amount": [100.0]})
    node = lh.run().nodes[0]
    assert (node.mode, node.rows) == ("incremental", 1)  # customer 10 alone, from all its rows
    assert _rows(lh, "gold.totals") == [(10, 112.5, 3), (20, 1.0, 1), (None, 3.0, 1)]
    orders.delete("customer = 20")
    assert lh.run().nodes[0].mode == "incremental"
    assert _rows(lh, "gold.totals") == [(10, 112.5, 3), (None, 3.0, 1)]  # 20 has no rows left


def test_an_aggregate_across_keys_is_rebuilt_in_full(lh: Lakehouse) -> None:
    sql = "select id, sum(amount) over (order by id) as running from silver.orders"
    write_model(lh.root, "gold.running", sql, "materialized: incremental\nunique_key: id\n")
    assert lh.run().ok
    lh.table("silver.orders").append({"id": [0], "customer": [20], "amount": [1.0]})
    node = lh.run().nodes[0]
    assert (node.mode, node.reason) == (
        "full",
        "its SQL reads silver.orders neither row by row nor by key: rebuilt in full",
    )
    assert _rows(lh, "gold.running") == lh.sql(f"select * from ({sql}) order by all").rows()


def test_rows_a_recomputed_key_drops_again_are_quarantined_once(lh: Lakehouse) -> None:
    sql = (
        "select id, customer, amount, count(*) over (partition by customer) as orders "
        "from silver.orders"
    )
    write_model(
        lh.root,
        "gold.per_customer",
        sql,
        "materialized: incremental\nunique_key: [customer, id]\n"
        "checks:\n  - range: {column: amount, min: 2, severity: drop}\n",
    )
    assert lh.run().nodes[0].quarantined == 1  # order 3 of customer 20, amount 1.0
    lh.table("silver.orders").append({"id": [6], "customer": [20], "amount": [50.0]})
    node = lh.run().nodes[0]
    assert (node.mode, node.quarantined) == ("incremental", 1)  # customer 20 checked again
    assert lh.sql("select id, orders from quarantine.gold_per_customer").rows() == [(3, 2)]
    assert (
        _rows(lh, "gold.per_customer")
        == lh.sql(f"select * from ({sql}) where amount >= 2 order by all").rows()
    )


def test_incremental_append_reads_only_new_rows_of_an_append_only_input(lh: Lakehouse) -> None:
    lh.write("bronze.events", {"id": [1, 2], "kind": ["a", "b"]})
    write_model(
        lh.root,
        "silver.events",
        "select id, upper(kind) as kind from bronze.events",
        "materialized: incremental\n",
    )
    lh.run()
    lh.table("bronze.events").append({"id": [3], "kind": ["c"]})
    node = lh.run().nodes[0]
    assert (node.mode, node.rows) == ("incremental", 1)
    assert _rows(lh, "silver.events") == [(1, "A"), (2, "B"), (3, "C")]


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
    assert _rows(lh, "gold.order_count") == [(4,)]


def _edges(lh: Lakehouse, table: str) -> set[tuple[str, str, str, str]]:
    edges = lh.metastore.lineage_edges(downstream=table)
    return {(e.downstream_column, e.upstream_table, e.upstream_column, e.transform) for e in edges}


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
    assert _edges(lh, "gold.order_count") == {  # a Python model: tables, no columns
        ("*", "silver.orders", "*", "table"),
        ("*", "silver.customers", "*", "table"),
    }
    assert _edges(lh, "gold.known") == {
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
    assert _rows(lh, "gold.totals") == [(10.0, 112.5), (20.0, 1.0)]


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
    assert _rows(lh, "gold.by_customer") == [(10.0, 12.5), (20.0, 1.0)]


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


def test_scd2_keeps_every_version_with_validity_and_current_flag(lh: Lakehouse) -> None:
    write_model(
        lh.root,
        "gold.customer_history",
        "select customer, country from silver.customers",
        "materialized: scd2\nunique_key: [customer]\n",
    )
    assert lh.run().ok
    customers = lh.table("silver.customers")
    customers.update({"country": "'AT'"}, predicate="customer = 10")
    customers.delete("customer = 20")
    customers.append({"customer": [30], "country": ["IT"]})
    assert lh.run().ok
    rows = lh.sql(
        "select customer, country, is_current, valid_to is not null as closed"
        " from gold.customer_history order by customer, valid_from"
    ).rows()
    assert rows == [
        (10, "DE", False, True),
        (10, "AT", True, False),
        (20, "FR", False, True),
        (30, "IT", True, False),
    ]
    assert lh.run().nodes[0].status == "up_to_date"


def _accounts(lh: Lakehouse, settings: str) -> None:
    day = [datetime(2026, 1, d, tzinfo=UTC) for d in (1, 2)]
    lh.write(
        "silver.accounts",
        {"id": [1, 2], "plan": ["free", "pro"], "seats": [1, 5], "changed_at": day},
    )
    write_model(
        lh.root,
        "gold.account_history",
        "select id, plan, seats, changed_at from silver.accounts",
        "materialized: scd2\nunique_key: id\n" + settings,
    )
    assert lh.run().ok


def _history(lh: Lakehouse) -> list[tuple]:
    return lh.sql(
        "select id, plan, seats, valid_from, valid_to, is_current"
        " from gold.account_history order by id, valid_from"
    ).rows()


def test_scd2_with_updated_at_dates_versions_by_the_source(lh: Lakehouse) -> None:
    _accounts(lh, "updated_at: changed_at\n")
    first, second, third = (datetime(2026, 1, d, tzinfo=UTC) for d in (1, 2, 3))
    assert _history(lh) == [(1, "free", 1, first, None, True), (2, "pro", 5, second, None, True)]
    accounts = lh.table("silver.accounts")
    accounts.update({"plan": "'pro'", "changed_at": "TIMESTAMPTZ '2026-01-03'"}, "id = 1")
    accounts.update({"seats": "6"}, "id = 2")  # changed_at stays: not a new version
    assert lh.run().ok
    assert _history(lh) == [
        (1, "free", 1, first, third, False),
        (1, "pro", 1, third, None, True),
        (2, "pro", 5, second, None, True),
    ]
    accounts.delete("id = 2")
    before = datetime.now(UTC)
    assert lh.run().ok
    closed = _history(lh)[-1]
    assert closed[:4] == (2, "pro", 5, second)
    assert closed[5] is False
    assert closed[4] >= before  # a key gone from the source closes when the run saw it go


def test_scd2_validity_is_traced_to_its_updated_at_column(lh: Lakehouse) -> None:
    _accounts(lh, "updated_at: changed_at\n")
    edges = lh.metastore.lineage_edges(downstream="gold.account_history")
    found = {(e.downstream_column, e.upstream_column, e.transform) for e in edges}
    assert ("valid_from", "changed_at", "expression") in found
    assert ("valid_to", "changed_at", "expression") in found


def test_scd2_with_check_cols_versions_only_their_changes(lh: Lakehouse) -> None:
    _accounts(lh, "check_cols: plan\n")
    accounts = lh.table("silver.accounts")
    accounts.update({"seats": "9"}, "id = 1")
    assert lh.run().nodes[0].status == "up_to_date"
    accounts.update({"plan": "'team'"}, "id = 1")
    assert lh.run().ok
    assert [(r[0], r[1], r[2], r[5]) for r in _history(lh)] == [
        (1, "free", 1, False),
        (1, "team", 9, True),
        (2, "pro", 5, True),
    ]


def test_scd2_refuses_several_rows_for_one_key(lh: Lakehouse) -> None:
    lh.write("silver.accounts", {"id": [1, 1, 2], "plan": ["free", "pro", "team"]})
    write_model(
        lh.root,
        "gold.account_history",
        "select id, plan from silver.accounts",
        "materialized: scd2\nunique_key: id\n",
    )
    node = lh.run().nodes[0]
    assert node.status == "failed"
    assert node.error is not None
    assert node.error.startswith(
        "scd2 model gold.account_history returns several rows for one id: id=1 (2 rows)"
    )
    assert "hint: return one row per key, e.g. QUALIFY row_number()" in node.error
    assert "gold.account_history" not in [t.name for t in lh.tables()]


def test_scd2_updated_at_must_be_a_timestamp(lh: Lakehouse) -> None:
    lh.write("silver.accounts", {"id": [1], "changed_at": ["2026-01-01"]})
    write_model(
        lh.root,
        "gold.account_history",
        "select id, changed_at from silver.accounts",
        "materialized: scd2\nunique_key: id\nupdated_at: changed_at\n",
    )
    node = lh.run().nodes[0]
    assert node.status == "failed"
    assert node.error is not None
    assert "is string, not a timestamp or date" in node.error


def test_a_views_checks_judge_its_rows_before_it_is_defined(lh: Lakehouse) -> None:
    view = "materialized: view\nchecks:\n  - not_null: {column: customer, severity: %s}\n"
    write_model(lh.root, "gold.v", "select id, customer from silver.orders", view % "fail")
    write_model(lh.root, "gold.w", "select count(*) as n from gold.v")
    nodes = {n.model: n for n in lh.run().nodes}
    assert nodes["gold.v"].status == "failed"
    assert nodes["gold.v"].error is not None
    assert "not_null(customer): 1 of 4 rows fail: customer is null" in nodes["gold.v"].error
    assert nodes["gold.w"].status == "skipped"
    assert "gold.v" not in {str(n) for n in lh.views()}  # nothing was defined
    write_model(lh.root, "gold.v", "select id, customer from silver.orders", view % "warn")
    nodes = {n.model: n for n in lh.run().nodes}
    assert [(c.check, c.status, c.failing_rows) for c in nodes["gold.v"].checks] == [
        ("not_null(customer)", "warn", 1)
    ]
    assert nodes["gold.w"].status == "success"
    assert "gold.v" in {str(n) for n in lh.views()}
    write_model(lh.root, "gold.v", "select id, customer from silver.orders", view % "drop")
    error = lh.run().nodes[0].error
    assert error is not None
    assert "a view has no rows of its own to drop to quarantine" in error


def test_view_models_are_queryable_and_always_current(lh: Lakehouse) -> None:
    write_model(
        lh.root,
        "gold.big_orders",
        "select id, amount from silver.orders where amount > 2",
        "materialized: view\n",
    )
    write_model(lh.root, "gold.big_total", "select sum(amount) as total from gold.big_orders")
    assert lh.run().ok
    assert lh.sql("select count(*) from gold.big_orders").scalar() == 3
    lh.table("silver.orders").append({"id": [9], "customer": [10], "amount": [100.0]})
    assert lh.sql("select count(*) from gold.big_orders").scalar() == 4  # computed per query
    assert lh.sql("select total from gold.big_total").scalar() == 15.5  # a table: as built
    assert "gold.big_orders" in [t.name for t in lh.tables()]


def test_a_view_records_its_lineage_and_describes_itself(lh: Lakehouse) -> None:
    sql = "select customer, sum(amount) as total from silver.orders group by 1"
    write_model(lh.root, "gold.totals", sql, "materialized: view\n")
    assert lh.run().ok
    assert _edges(lh, "gold.totals") == {
        ("customer", "silver.orders", "customer", "copy"),
        ("total", "silver.orders", "amount", "aggregate"),
        ("*", "silver.orders", "*", "table"),
    }
    assert lh.describe("gold.totals").properties["lakebed.view"] == sql
    assert lh.schema("gold.totals").names == ["customer", "total"]
    assert lh.schema_history("gold.totals") == []
    with pytest.raises(lakebed.errors.StorageError, match=r"gold\.totals is a view, not a table"):
        lh.table("gold.totals")


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
    assert _rows(lh, "gold.daily") == [
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
    assert [r[1] for r in _rows(lh, "gold.daily")] == [1.0, 20.0, 30.0, 4.0]
    assert lh.run(backfill="2025-03-01").ok  # one partition
    assert [r[1] for r in _rows(lh, "gold.daily")] == [1.0, 20.0, 30.0, 40.0]
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
