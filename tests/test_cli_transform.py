"""`lakebed run`, `runs`, `models` and `checks` from the terminal: JSON output and
--fail-fast."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

import lakebed
from helpers import write_model
from lakebed.cli import app

ENV = {"COLUMNS": "250", "NO_COLOR": "1", "LAKEBED_PROJECT": None}


def cli(root: Path, *args: str) -> Result:
    return CliRunner().invoke(app, ["-p", str(root), *args], env=ENV)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    project = lakebed.init_project(tmp_path / "p")
    with lakebed.open(project) as lh:
        lh.write("silver.orders", {"id": [1, 2, 3], "amount": [5.0, -1.0, 2.0]})
    write_model(
        project,
        "gold.positive",
        "select id, amount from silver.orders",
        "checks:\n  - expression: {sql: amount > 0, name: positive, severity: drop}\n",
    )
    return project


def test_run_json_is_the_summary_on_stdout(root: Path) -> None:
    done = cli(root, "run", "--format", "json")
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    assert summary["ok"] is True
    [node] = summary["nodes"]
    assert (node["model"], node["status"], node["mode"]) == ("gold.positive", "success", "full")
    assert (node["rows"], node["quarantined"]) == (2, 1)
    assert node["checks"][0]["check"] == "positive"
    assert node["checks"][0]["failing_rows"] == 1


def test_run_table_says_how_many_rows_a_drop_check_took_out(root: Path) -> None:
    done = cli(root, "run")
    assert done.exit_code == 0, done.output
    assert "positive: 1 dropped" in done.stdout


def test_run_json_of_a_failed_run_exits_1(root: Path) -> None:
    write_model(root, "gold.broken", "select cast('x' || id as integer) as n from silver.orders")
    done = cli(root, "run", "-f", "json")
    assert done.exit_code == 1
    nodes = {n["model"]: n for n in json.loads(done.stdout)["nodes"]}
    assert nodes["gold.broken"]["status"] == "failed"
    assert "Could not convert string" in nodes["gold.broken"]["error"]


def test_fail_fast_starts_nothing_after_a_failure(root: Path) -> None:
    # One worker builds in name order: gold.a_broken fails before gold.positive starts.
    write_model(root, "gold.a_broken", "select cast('x' || id as integer) as n from silver.orders")
    done = cli(root, "run", "--workers", "1", "--fail-fast", "-f", "json")
    assert done.exit_code == 1
    nodes = {n["model"]: n for n in json.loads(done.stdout)["nodes"]}
    assert nodes["gold.a_broken"]["status"] == "failed"
    assert nodes["gold.positive"]["status"] == "skipped"
    assert nodes["gold.positive"]["error"] == "not started: gold.a_broken failed (fail fast)"
    # Without it, an independent model still builds.
    done = cli(root, "run", "--workers", "1", "-f", "json")
    nodes = {n["model"]: n for n in json.loads(done.stdout)["nodes"]}
    assert nodes["gold.positive"]["status"] == "success"


def test_runs_and_checks_json(root: Path) -> None:
    assert cli(root, "run").exit_code == 0
    runs = json.loads(cli(root, "runs", "-f", "json").stdout)
    assert {r["kind"] for r in runs} == {"run", "model"}
    assert all(r["started_at"].endswith("+00:00") for r in runs)
    checks = json.loads(cli(root, "checks", "-f", "json").stdout)
    assert [(c["table"], c["check"], c["failing_rows"]) for c in checks] == [
        ("gold.positive", "positive", 1)
    ]


def test_runs_of_one_model_and_status(root: Path) -> None:
    write_model(root, "gold.broken", "select cast('x' || id as integer) as n from silver.orders")
    assert cli(root, "run").exit_code == 1
    assert cli(root, "run").exit_code == 1
    failed = json.loads(cli(root, "runs", "--status", "failed", "-f", "json").stdout)
    assert [(r["kind"], r["target"]) for r in failed] == [
        ("model", "gold.broken"),
        ("run", None),
    ] * 2
    positive = json.loads(cli(root, "runs", "gold.positive", "-f", "json").stdout)
    assert {(r["target"], r["status"]) for r in positive} == {("gold.positive", "success")}
    # The table names the run each build belongs to, as `lakebed run` printed it.
    assert positive[0]["params"]["run"][:12] in cli(root, "runs", "gold.positive").stdout


def test_models_lists_each_model_with_its_latest_build(root: Path) -> None:
    write_model(root, "gold.broken", "select cast('x' || id as integer) as n from silver.orders")
    before = cli(root, "models")
    assert before.exit_code == 0, before.output
    assert "never" in before.stdout
    assert cli(root, "run").exit_code == 1
    listed = cli(root, "models")
    lines = {line.split()[1]: line for line in listed.stdout.splitlines() if "gold." in line}
    assert "success" in lines["gold.positive"]
    assert "failed" in lines["gold.broken"]
    assert "silver.orders" in lines["gold.positive"]  # its input
    chosen = json.loads(
        cli(root, "models", "-s", "gold.*", "-x", "gold.broken", "-f", "json").stdout
    )
    assert [(m["model"], m["last"]["rows"]) for m in chosen] == [("gold.positive", 2)]
    assert cli(root, "models", "-s", "gold.nothing").exit_code == 1  # an unknown model


def test_a_view_has_lineage_and_a_description(root: Path) -> None:
    write_model(
        root, "gold.v", "select id, amount * 2 as twice from gold.positive", "materialized: view\n"
    )
    assert cli(root, "run").exit_code == 0
    done = cli(root, "lineage", "gold.v", "-c", "twice")
    assert done.exit_code == 0, done.output
    assert "gold.positive.amount (expression)" in done.stdout
    done = cli(root, "describe", "gold.v")
    assert done.exit_code == 0, done.output
    assert "twice" in done.stdout
    assert "amount * 2" in done.stdout  # its SQL
    listed = [line for line in cli(root, "tables").stdout.splitlines() if "gold.v " in line]
    assert len(listed) == 1
    assert "view" in listed[0]  # where a table has its version


def test_lineage_json_lists_the_edges(root: Path) -> None:
    write_model(root, "gold.doubled", "select id, amount * 2 as twice from gold.positive")
    assert cli(root, "run").exit_code == 0
    done = cli(root, "lineage", "gold.doubled", "-c", "twice", "-f", "json")
    assert done.exit_code == 0, done.output
    edges = [
        (e["downstream_table"], e["downstream_column"], e["upstream_table"], e["transform"])
        for e in json.loads(done.stdout)
    ]
    assert edges == [
        ("gold.doubled", "twice", "gold.positive", "expression"),
        ("gold.positive", "amount", "silver.orders", "copy"),
    ]


def test_lineage_of_a_column_the_table_lacks_is_an_error(root: Path) -> None:
    assert cli(root, "run").exit_code == 0
    missing = cli(root, "lineage", "gold.positive", "-c", "amont")
    assert missing.exit_code == 1
    assert "gold.positive has no column 'amont'" in missing.output
    assert "did you mean amount?" in missing.output
    spelled = cli(root, "lineage", "gold.positive", "-c", "AMOUNT")  # as DuckDB matches names
    assert spelled.exit_code == 0, spelled.output
    assert "silver.orders.amount" in spelled.stdout
    both = cli(root, "lineage", "gold.positive", "--upstream", "--downstream")
    assert both.exit_code == 2
    assert "not both" in both.output


def test_run_says_when_it_has_nothing_to_build(tmp_path: Path, root: Path) -> None:
    empty = lakebed.init_project(tmp_path / "empty")
    assert "no models yet: write models/<layer>/<name>.sql" in cli(empty, "run").stdout
    done = cli(root, "run", "-s", "gold.positive", "-x", "gold.positive")
    assert done.exit_code == 0, done.output
    assert "no model selected by --select 'gold.positive' --exclude 'gold.positive'" in (
        done.stdout
    )
