"""Incremental models in runs: merges equal full rebuilds, aggregates recompute the keys
a change touches, appends read new rows only, and readers compute ahead of a merge."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest

from helpers import all_rows, orders_and_customers, write_model
from lakebed import Lakehouse


@pytest.fixture
def lh(tmp_path: Path) -> Lakehouse:
    return orders_and_customers(tmp_path / "p")


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
    incremental = all_rows(lh, "gold.big_orders")
    expected = lh.sql(
        "select id, customer, amount * 2 as doubled from silver.orders where amount > 2"
        " order by all"
    ).rows()
    assert incremental == expected
    assert lh.run().nodes[0].status == "up_to_date"


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
        all_rows(lh, "gold.flagged")
        == lh.sql("select id, v * 10 > 5000 as big from silver.events order by all").rows()
    )


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
    assert all_rows(lh, "gold.big") == sorted(expected)


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
    assert all_rows(lh, "gold.big_customers") == _big_customers_rebuilt(lh)
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
    assert all_rows(lh, "gold.big_customers") == expected


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
    assert all_rows(lh, "gold.big_customers") == _big_customers_rebuilt(lh)


def test_a_changed_incremental_model_is_rebuilt_in_full(lh: Lakehouse) -> None:
    merge = "materialized: incremental\nunique_key: id\n"
    write_model(lh.root, "gold.scaled", "select id, amount * 2 as scaled from silver.orders", merge)
    assert lh.run().nodes[0].mode == "full"
    write_model(
        lh.root, "gold.scaled", "select id, amount * 3 as scaled, 1 as v from silver.orders"
    )
    node = lh.run().nodes[0]
    assert (node.status, node.mode, node.reason) == ("success", "full", "model changed")
    assert all_rows(lh, "gold.scaled") == [(1, 15.0, 1), (2, 22.5, 1), (3, 3.0, 1), (4, 9.0, 1)]
    # Rebuilt, it is the model as defined: nothing left to do, and increments go on.
    assert lh.run().nodes[0].status == "up_to_date"
    lh.table("silver.orders").append({"id": [5], "customer": [20], "amount": [2.0]})
    node = lh.run().nodes[0]
    assert (node.mode, node.rows, node.reason) == ("incremental", 1, None)


def test_new_checks_of_an_incremental_model_leave_itsall_rows(lh: Lakehouse) -> None:
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


def test_full_refresh_false_keeps_an_incremental_modelsall_rows(lh: Lakehouse) -> None:
    kept = "materialized: incremental\nunique_key: id\nfull_refresh: false\n"
    write_model(lh.root, "gold.scaled", "select id, amount * 2 as scaled from silver.orders", kept)
    assert lh.run().ok
    before = all_rows(lh, "gold.scaled")
    write_model(lh.root, "gold.scaled", "select id, amount * 3 as scaled from silver.orders")
    assert lh.run().nodes[0].status == "up_to_date"
    node = lh.run(full_refresh=True).nodes[0]
    assert (node.status, node.reason) == ("up_to_date", "kept its rows (full_refresh: false)")
    assert all_rows(lh, "gold.scaled") == before
    lh.table("silver.orders").append({"id": [5], "customer": [20], "amount": [2.0]})
    node = lh.run().nodes[0]
    assert node.mode == "incremental"
    assert node.reason == "model changed: new rows only (full_refresh: false)"
    assert all_rows(lh, "gold.scaled") == [*before, (5, 6.0)]


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
    assert all_rows(lh, "gold.totals") == [(10, 112.5, 3), (20, 1.0, 1), (None, 3.0, 1)]
    orders.delete("customer = 20")
    assert lh.run().nodes[0].mode == "incremental"
    assert all_rows(lh, "gold.totals") == [(10, 112.5, 3), (None, 3.0, 1)]  # 20 has no rows left


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
    assert all_rows(lh, "gold.running") == lh.sql(f"select * from ({sql}) order by all").rows()


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
        all_rows(lh, "gold.per_customer")
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
    assert all_rows(lh, "silver.events") == [(1, "A"), (2, "B"), (3, "C")]
