"""scd2 models: a NULL key is a key, whose versions close like any other's; columns
added to or taken out of the SQL evolve the history table as dbt's snapshots do."""

from __future__ import annotations

from pathlib import Path

import lakebed
from helpers import write_model
from lakebed.transform.plan import plan


def _history_project(tmp_path: Path, ids: list[int | None] | None = None) -> lakebed.Lakehouse:
    lh = lakebed.open(lakebed.init_project(tmp_path / "p"))
    lh.write("silver.plans", {"id": ids or [1, 2], "seats": [1, 2]})
    write_model(
        lh.root,
        "gold.plan_history",
        "select id, seats from silver.plans",
        "materialized: scd2\nunique_key: [id]\n",
    )
    lh.run()
    return lh


def test_a_null_keys_version_closes_when_it_changes(tmp_path: Path) -> None:
    lh = _history_project(tmp_path, [1, None])
    lh.table("silver.plans").update({"seats": "5"}, predicate="id is null")
    assert lh.run().nodes[0].mode == "incremental"
    versions = lh.sql(
        "select seats, is_current, valid_to is not null as closed from gold.plan_history "
        "where id is null order by seats"
    ).rows()
    assert versions == [(2, False, True), (5, True, False)]


def test_a_column_added_to_the_sql_is_added_to_the_table_without_new_versions(
    tmp_path: Path,
) -> None:
    lh = _history_project(tmp_path)
    write_model(
        lh.root,
        "gold.plan_history",
        "select id, seats, seats * 10 as price from silver.plans",
        "materialized: scd2\nunique_key: [id]\ncheck_cols: [seats]\n",
    )
    node = lh.run().nodes[0]
    assert (node.status, node.rows) == ("success", 0)
    assert "price" in lh.table("gold.plan_history").schema().names
    # The next version of a key holds it; versions recorded before read null (as dbt's).
    lh.table("silver.plans").update({"seats": "3"}, predicate="id = 1")
    lh.run()
    rows = lh.sql(
        "select seats, price, is_current from gold.plan_history where id = 1 order by seats"
    ).rows()
    assert rows == [(1, None, False), (3, 30, True)]
    assert lh.run().nodes[0].status == "up_to_date"


def test_a_column_taken_out_of_the_sql_reads_null_in_new_versions(tmp_path: Path) -> None:
    lh = _history_project(tmp_path)
    write_model(
        lh.root,
        "gold.plan_history",
        "select id from silver.plans union all select 3",
        "materialized: scd2\nunique_key: [id]\n",
    )
    lh.run()
    rows = lh.sql("select id, seats, is_current from gold.plan_history order by id").rows()
    assert rows == [(1, 1, True), (2, 2, True), (3, None, True)]


def test_plan_counts_the_history_columns_as_the_models_own(tmp_path: Path) -> None:
    lh = _history_project(tmp_path)
    write_model(
        lh.root,
        "gold.plan_history",
        "select id, seats, 'x' as tier from silver.plans",
        "materialized: scd2\nunique_key: [id]\n",
    )
    changed = plan(lh)["gold.plan_history"]
    assert changed.change == "non-breaking", changed.details()
    assert not any("valid_from" in d for d in changed.details()), changed.details()


def test_a_redefinition_that_changes_no_version_is_recorded_once(tmp_path: Path) -> None:
    lh = _history_project(tmp_path)
    sql = "select id, seats from silver.plans where id is not null"
    write_model(lh.root, "gold.plan_history", sql, "materialized: scd2\nunique_key: [id]\n")
    before = lh.table("gold.plan_history").version()
    node = lh.run().nodes[0]
    assert (node.status, node.rows) == ("success", 0)
    assert lh.table("gold.plan_history").version() == before + 1  # the build is recorded
    assert plan(lh)["gold.plan_history"].status == "unchanged"
    assert lh.run().nodes[0].status == "up_to_date"
    assert lh.sql("select count(*) from gold.plan_history").scalar() == 2
