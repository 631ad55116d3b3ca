"""Plans of real projects: statuses, breaking changes, notes, selection and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import lakebed
from helpers import write_model
from lakebed import Lakehouse, cli_plan
from lakebed.cli import app
from lakebed.errors import ModelError, TransformError
from lakebed.transform.impact import Affected, Classification
from lakebed.transform.plan import plan

# -- plans of real projects --------------------------------------------------------------------


@pytest.fixture
def lh(tmp_path: Path) -> Lakehouse:
    root = lakebed.init_project(tmp_path / "p")
    lake = lakebed.open(root)
    lake.write(
        "bronze.orders",
        {
            "id": [1, 2, 3],
            "customer": [10, 10, 20],
            "amount": [5.0, 7.5, 1.0],
            "status": ["paid", "paid", "refunded"],
        },
    )
    write_model(root, "silver.orders", "select id, customer, amount, status from bronze.orders")
    write_model(
        root,
        "gold.revenue",
        "select customer, sum(amount) as revenue from silver.orders group by customer",
    )
    write_model(root, "gold.report", "select customer, revenue * 2 as doubled from gold.revenue")
    return lake


def test_a_project_never_built_is_all_new(lh: Lakehouse) -> None:
    result = plan(lh)
    assert [(m.model, m.status) for m in result.models] == [
        ("silver.orders", "new"),
        ("gold.revenue", "new"),
        ("gold.report", "new"),
    ]
    # New models downstream of new models get their columns too (read as empty relations).
    assert result["gold.report"].columns == {"customer": "int64", "doubled": "double"}
    assert result.summary() == "3 new"


def test_after_a_run_nothing_changed_and_layout_does_not_count(lh: Lakehouse) -> None:
    assert lh.run().ok
    result = plan(lh)
    assert {m.status for m in result.models} == {"unchanged"}
    assert result.summary() == "no changes: 3 models up to date"
    write_model(
        lh.root,
        "gold.revenue",
        "SELECT customer,\n  SUM(amount) AS revenue\nFROM silver.orders GROUP BY customer\n",
    )
    assert {m.status for m in plan(lh).models} == {"unchanged"}


def test_state_modified_runs_what_changed_since_its_last_build(lh: Lakehouse) -> None:
    """`lakebed run --select state:modified+` (dbt's slim CI): the models new or changed
    since their last build, and what they feed."""
    assert [str(n) for n in lh.graph().select("state:new")] == [
        "silver.orders",
        "gold.revenue",
        "gold.report",
    ]
    assert lh.run().ok
    assert lh.graph().select("state:modified") == []
    write_model(
        lh.root,
        "gold.revenue",
        "select customer, sum(amount) as revenue from silver.orders where amount > 1 "
        "group by customer",
    )
    write_model(lh.root, "gold.share", "select count(*) as n from gold.revenue")
    write_model(lh.root, "gold.report", "select customer from gold.revenue", "tags: [x]\n")
    assert [str(n) for n in lh.graph().select("state:new")] == ["gold.share"]
    summary = lh.run("state:modified+")
    assert [n.model for n in summary.nodes] == ["gold.revenue", "gold.report", "gold.share"]
    assert lh.graph().select("state:modified") == []
    view = "materialized: view\n"
    write_model(lh.root, "gold.share", "select count(*) as n from gold.revenue", view)
    assert [str(n) for n in lh.graph().select("state:modified")] == ["gold.share"]
    assert lh.run("state:modified").ok
    assert lh.graph().select("state:modified") == []


def test_a_table_turned_view_says_what_becomes_of_its_table(lh: Lakehouse) -> None:
    write_model(
        lh.root,
        "silver.orders",
        "select id, customer, amount, status from bronze.orders",
        "materialized: incremental\nunique_key: id\n",
    )
    assert lh.run().ok
    sql = "select customer, sum(amount) as revenue from silver.orders group by customer"
    write_model(lh.root, "gold.revenue", sql, "materialized: view\n")
    assert "a view now: the run drops its table" in plan(lh)["gold.revenue"].notes
    orders = "select id, customer, amount, status from bronze.orders"
    write_model(lh.root, "silver.orders", orders, "materialized: view\n")
    notes = plan(lh)["silver.orders"].notes
    assert any("keeps its table and fails; `lakebed drop silver.orders`" in n for n in notes)


def test_a_view_is_compared_with_the_sql_the_catalog_holds(lh: Lakehouse) -> None:
    view = "materialized: view\n"
    sql = "select customer, sum(amount) as revenue from silver.orders group by customer"
    write_model(lh.root, "gold.revenue", sql, view)
    assert plan(lh)["gold.revenue"].status == "new"
    assert lh.run().ok
    assert {m.status for m in plan(lh).models} == {"unchanged"}  # it was "new" at every plan
    write_model(lh.root, "gold.revenue", sql.replace("sum(amount)", "count(*)"), view)
    changed = plan(lh)["gold.revenue"]
    assert (changed.status, changed.change) == ("changed", "breaking")  # gold.report reads it
    assert changed.classification is not None
    assert changed.classification.retyped == (("revenue", "double", "int64"),)


def test_a_breaking_change_names_the_downstream_model_and_column(lh: Lakehouse) -> None:
    assert lh.run().ok
    write_model(
        lh.root, "silver.orders", "select id, amount::varchar as amount, status from bronze.orders"
    )
    result = plan(lh)
    orders = result["silver.orders"]
    assert (orders.status, orders.change) == ("changed", "breaking")
    assert orders.classification is not None
    assert orders.classification.removed == ("customer",)
    assert orders.classification.retyped == (("amount", "double", "string"),)
    assert orders.classification.affected == (
        Affected("gold.revenue", "amount", "retyped", ("revenue",)),
        Affected("gold.revenue", "customer", "removed", ("customer",)),
    )
    revenue = result["gold.revenue"]
    assert (revenue.status, revenue.upstream) == ("downstream", ("silver.orders",))
    # Its query no longer works against the new columns: said, not raised.
    assert revenue.change is None
    assert any("fails" in n for n in revenue.notes)
    report = result["gold.report"]
    assert (report.status, report.upstream) == ("downstream", ("silver.orders",))
    assert result.summary() == "1 changed (1 breaking), 2 to rebuild downstream"
    # Nothing was written.
    assert lh.table("silver.orders").schema().field("amount").type == "double"


def test_a_non_breaking_change_and_columns_passed_downstream(lh: Lakehouse) -> None:
    write_model(lh.root, "gold.everything", "select * from silver.orders")
    assert lh.run().ok
    write_model(
        lh.root,
        "silver.orders",
        "select id, customer, amount, status, amount > 5 as big from bronze.orders "
        "where status = 'paid'",
    )
    result = plan(lh)
    orders = result["silver.orders"]
    assert orders.change == "non-breaking"
    assert orders.classification is not None
    assert orders.classification.added == ("big",)
    # The star passes the new column on: gold.everything's own columns change.
    everything = result["gold.everything"]
    assert everything.status == "downstream"
    assert everything.change == "non-breaking"
    assert everything.classification is not None
    assert everything.classification.added == ("big",)
    # gold.revenue's columns stay as they are: nothing to classify.
    assert result["gold.revenue"].change is None
    assert result["gold.revenue"].status == "downstream"


def test_logic_only_change_of_many_types_is_not_a_retype(lh: Lakehouse) -> None:
    sql = (
        "select id, amount, status, now() as loaded_at, current_date as day, "
        "[id, customer] as ids, {{'s': status}} as detail, map([status], [amount]) as m, "
        "amount::decimal(10, 2) as price, status::blob as raw from bronze.orders{}"
    )
    write_model(lh.root, "silver.typed", sql.format(""))
    assert lh.run().ok
    write_model(lh.root, "silver.typed", sql.format(" where id > 1"))
    typed = plan(lh)["silver.typed"]
    assert typed.status == "changed"
    assert typed.classification == Classification("non-breaking"), typed.classification


def test_a_change_of_settings_alone_is_told_from_a_change_of_logic(lh: Lakehouse) -> None:
    assert lh.run().ok
    settings = lh.root / "models" / "gold" / "revenue.yml"
    settings.write_text("properties:\n  delta.logRetentionDuration: interval 9 days\n")
    revenue = plan(lh)["gold.revenue"]
    assert (revenue.status, revenue.settings_only) == ("changed", True)
    assert revenue.details() == ["same columns (settings only)"]
    write_model(
        lh.root,
        "gold.revenue",
        "select customer, sum(amount) as revenue from silver.orders where id > 0 group by 1",
    )
    revenue = plan(lh)["gold.revenue"]
    assert (revenue.status, revenue.settings_only) == ("changed", False)
    assert revenue.details() == ["same columns (logic only)"]


def test_a_changed_incremental_model_says_what_becomes_of_its_rows(lh: Lakehouse) -> None:
    merge = "materialized: incremental\nunique_key: customer\n"
    sql = "select customer, sum(amount) as revenue from silver.orders group by customer"
    write_model(lh.root, "gold.revenue", sql, merge)
    assert lh.run().ok
    write_model(lh.root, "gold.revenue", sql.replace("sum(amount)", "max(amount)"), merge)
    notes = plan(lh)["gold.revenue"].details()
    assert "incremental: rebuilt in full at the next run" in notes
    write_model(lh.root, "gold.revenue", sql, merge + "schedule: '0 * * * *'\n")
    notes = plan(lh)["gold.revenue"].details()
    assert "incremental: its rows stay; the new settings apply from the next increment" in notes
    kept = merge + "full_refresh: false\n"
    write_model(lh.root, "gold.revenue", sql.replace("sum(amount)", "max(amount)"), kept)
    notes = plan(lh)["gold.revenue"].details()
    assert "incremental, full_refresh: false: its rows stay; new rows get the new SQL" in notes


def test_an_incremental_model_that_cannot_be_exact_by_keys_says_so(lh: Lakehouse) -> None:
    assert lh.run().ok
    merge = "materialized: incremental\nunique_key: customer\n"
    running = "select customer, sum(amount) over (order by id) as running from silver.orders"
    write_model(lh.root, "gold.running", running, merge)
    notes = plan(lh)["gold.running"].details()
    assert any(
        note.startswith(
            "incremental, but its SQL reads silver.orders neither row by row nor by key"
        )
        for note in notes
    ), notes
    per_key = "select customer, sum(amount) as total from silver.orders group by customer"
    write_model(lh.root, "gold.running", per_key, merge)
    assert not any("nor by key" in note for note in plan(lh)["gold.running"].details())


def test_a_python_model_reading_an_input_without_its_key_says_it_rebuilds(lh: Lakehouse) -> None:
    assert lh.run().ok
    folder = lh.root / "models" / "gold"
    (folder / "scaled.py").write_text(
        "from lakebed.transform import model\n\n"
        "@model(inputs=['silver.orders', 'gold.revenue'], materialized='incremental',\n"
        "       unique_key='id')\n"
        "def scaled(orders, revenue):\n"
        "    return orders\n"
    )
    notes = plan(lh)["gold.scaled"].details()
    assert (
        "incremental, but its function reads gold.revenue without its key: a change there "
        "rebuilds it in full"
    ) in notes, notes


def test_a_python_model_changes_with_its_helpers_not_its_comments(lh: Lakehouse) -> None:
    source = (
        "import pyarrow as pa\n"
        "from lakebed.transform import model\n\n"
        "FACTOR = 2\n\n"
        "def scaled(n):\n"
        "    return n * FACTOR\n\n"
        "@model(inputs=['silver.orders'])\n"
        "def order_count(orders):\n"
        "    return pa.table({'orders': [scaled(orders.num_rows)]})\n"
    )
    path = lh.root / "models" / "gold" / "order_count.py"
    path.write_text(source)
    assert lh.run().ok
    path.write_text("# counts orders\n" + source.replace("FACTOR = 2", "FACTOR  =  2  # x2"))
    assert plan(lh)["gold.order_count"].status == "unchanged"
    path.write_text(source.replace("FACTOR = 2", "FACTOR = 3"))
    assert plan(lh)["gold.order_count"].status == "changed"


def test_select_limits_the_models_shown(lh: Lakehouse) -> None:
    assert lh.run().ok
    write_model(
        lh.root,
        "gold.revenue",
        "select customer, sum(amount) as revenue, count(*) as n "
        "from silver.orders group by customer",
    )
    result = plan(lh, "gold.revenue+")
    assert [(m.model, m.status) for m in result.models] == [
        ("gold.revenue", "changed"),
        ("gold.report", "downstream"),
    ]
    assert result["gold.revenue"].change == "non-breaking"
    with pytest.raises(TransformError):
        plan(lh, "gold.nope")


def test_exclude_leaves_models_out_of_the_plan(lh: Lakehouse) -> None:
    shown = plan(lh, exclude="gold.report")
    assert [m.model for m in shown.models] == ["silver.orders", "gold.revenue"]
    shown = plan(lh, "silver.orders+", exclude="layer:gold")
    assert [m.model for m in shown.models] == ["silver.orders"]


def test_an_invalid_project_is_an_error(lh: Lakehouse) -> None:
    write_model(lh.root, "gold.bad", "select * from silver.missing")
    with pytest.raises(ModelError, match=r"silver\.missing"):
        plan(lh)


def test_cli_plan_fails_on_a_check_that_would_fail_the_run(lh: Lakehouse) -> None:
    if not any(c.name == "plan" for c in app.registered_commands):
        cli_plan.register(app)
    bad = "checks:\n  - range: {column: amount, min: 10, max: 1}\n"
    write_model(lh.root, "silver.orders", "select id, amount from bronze.orders", bad)
    shown = CliRunner().invoke(app, ["-p", str(lh.root), "plan"], env={"COLUMNS": "200"})
    assert shown.exit_code == 1
    assert "check range(amount) on silver.orders: `min` 10 is greater than `max` 1" in (
        shown.output
    )


def test_cli_plan_table_and_json(lh: Lakehouse) -> None:
    if not any(c.name == "plan" for c in app.registered_commands):
        cli_plan.register(app)  # until lakebed.cli registers it itself
    assert lh.run().ok
    write_model(lh.root, "silver.orders", "select id, amount, status from bronze.orders")
    runner = CliRunner()
    shown = runner.invoke(app, ["-p", str(lh.root), "plan"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "breaking" in shown.output
    assert "gold.revenue" in shown.output
    assert "1 changed (1 breaking), 2 to rebuild downstream" in shown.output
    as_json = runner.invoke(app, ["-p", str(lh.root), "plan", "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    document = json.loads(as_json.stdout)
    orders = document["models"][0]
    assert (orders["model"], orders["status"], orders["change"]) == (
        "silver.orders",
        "changed",
        "breaking",
    )
    assert orders["classification"]["affected"] == [
        {
            "model": "gold.revenue",
            "column": "customer",
            "change": "removed",
            "outputs": ["customer"],
            "traced": True,
        }
    ]
    assert document["summary"]["breaking"] == 1
    write_model(lh.root, "gold.bad", "select * from silver.missing")
    failed = runner.invoke(app, ["-p", str(lh.root), "plan"])
    assert failed.exit_code == 1


def test_python_models_are_unknown_changes_and_assumed_to_read_everything(
    lh: Lakehouse,
) -> None:
    folder = lh.root / "models" / "gold"
    source = (
        "import pyarrow as pa\n"
        "from lakebed.transform import model\n\n"
        "@model(inputs=['silver.orders'])\n"
        "def order_count(orders: pa.Table) -> pa.Table:\n"
        "    return pa.table({'orders': [orders.num_rows{}]})\n"
    )
    (folder / "order_count.py").write_text(source.replace("{}", ""))
    assert lh.run().ok
    write_model(lh.root, "silver.orders", "select id, customer, amount from bronze.orders")
    (folder / "order_count.py").write_text(source.replace("{}", " * 2"))
    result = plan(lh)
    orders = result["silver.orders"]
    assert orders.change == "breaking"
    assert orders.classification is not None
    assert [(a.model, a.column) for a in orders.classification.affected] == [
        ("gold.order_count", "status")
    ]
    assert any("Python model" in note for note in orders.notes)
    # Its use of the column is assumed, not traced: the plan says so.
    assert "breaks gold.order_count may use status (removed; its uses are not traced)" in (
        orders.details()
    )
    count = result["gold.order_count"]
    assert (count.status, count.change) == ("changed", "unknown")
    assert result.summary() == "2 changed (1 breaking, 1 unknown), 2 to rebuild downstream"


def test_a_table_reading_the_clock_says_it_is_rebuilt_at_every_run(lh: Lakehouse) -> None:
    write_model(
        lh.root, "gold.today", "select * from silver.orders where current_date > date '2000-01-01'"
    )
    assert lh.run().ok
    result = plan(lh)
    assert result["gold.today"].status == "unchanged"
    assert "rebuilt at every run: its SQL reads CURRENT_DATE" in result["gold.today"].details()
    assert not any("every run" in note for note in result["gold.revenue"].details())
