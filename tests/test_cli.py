"""The `lakebed` command line: each command's output, formats, exit codes and error reports."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner, Result

import lakebed
from lakebed import cli
from lakebed.cli import app
from lakebed.storage import TableName

# A wide terminal, so rich tables neither wrap nor truncate the names the tests look for.
ENV = {"COLUMNS": "250", "NO_COLOR": "1", "LAKEBED_PROJECT": None}

CONFIG = """\
name: cli-test
domains:
  sales:
    owner: sales@example.com
    description: Orders.
"""


def run(*args: str, env: dict[str, str | None] | None = None, stdin: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env={**ENV, **(env or {})}, input=stdin)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project with bronze.events (three appends, a column added by the third) and
    silver.items (partitioned, owned through the sales domain, then overwritten)."""
    root = lakebed.init_project(tmp_path / "proj")
    (root / "lakebed.yml").write_text(CONFIG, encoding="utf-8")
    with lakebed.open(root) as lh:
        lh.write("bronze.events", [{"id": 1, "kind": "a"}, {"id": 2, "kind": "b"}])
        lh.write("bronze.events", [{"id": 3, "kind": "a"}])
        lh.write("bronze.events", [{"id": 4, "kind": "c", "source": "app"}])
        lh.write(
            "silver.items",
            [
                {"sku": "x", "day": "2025-01-01", "qty": 1},
                {"sku": "y", "day": "2025-01-02", "qty": 2},
            ],
            partition_by=["day"],
            description="Items sold per day.",
            domain="sales",
        )
        lh.table("silver.items").overwrite([{"sku": "z", "day": "2025-01-01", "qty": 3}])
    return root


def project_args(root: Path) -> list[str]:
    return ["-p", str(root)]


def cells(output: str) -> dict[str, list[str]]:
    """The rows of a rich table in `output`, keyed by their first cell."""
    rows = {}
    for line in output.splitlines():
        parts = [part.strip() for part in line.split("│")[1:-1]]
        if parts and parts[0]:
            rows[parts[0]] = parts
    return rows


# -- basics ------------------------------------------------------------------------------------


def test_version_prints_the_package_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"lakebed {lakebed.__version__}"


@pytest.mark.parametrize(
    "command",
    [
        "init",
        "demo",
        "tables",
        "describe",
        "history",
        "sql",
        "optimize",
        "vacuum",
        "restore",
        "drop",
    ],
)
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = run(command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.stdout
    assert f"lakebed {command}" in result.stdout


def test_init_creates_a_project_and_prints_next_steps(tmp_path: Path) -> None:
    result = run("init", str(tmp_path / "lake"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "lake" / "lakebed.yml").is_file()
    assert (tmp_path / "lake" / "models" / "silver").is_dir()
    assert "lakebed.yml" in result.stdout
    assert f"lakebed -p {tmp_path / 'lake'} tables" in result.stdout


def test_init_refuses_an_existing_project(project: Path) -> None:
    result = run("init", str(project))
    assert result.exit_code == 1
    assert "error: " in result.stderr
    assert "already exists" in result.stderr


# -- catalog -----------------------------------------------------------------------------------


def test_tables_lists_rows_size_version_owner_and_description(project: Path) -> None:
    result = run(*project_args(project), "tables")
    assert result.exit_code == 0, result.output
    rows = cells(result.stdout)
    name, count, size, version, _, last_write, _ = rows["bronze.events"]
    assert (name, count, version) == ("bronze.events", "4", "3")  # create + three appends
    assert size.endswith("KiB") or size.endswith(" B")
    assert last_write.endswith("ago")
    *_, owner, _, description = rows["silver.items"]
    assert owner == "sales@example.com (sales)"
    assert description == "Items sold per day."


def test_tables_filters_by_layer_and_rejects_an_unknown_one(project: Path) -> None:
    result = run(*project_args(project), "tables", "--layer", "silver")
    assert result.exit_code == 0
    assert "silver.items" in result.stdout
    assert "bronze.events" not in result.stdout
    bad = run(*project_args(project), "tables", "--layer", "platinum")
    assert bad.exit_code == 1
    assert "unknown layer 'platinum'" in bad.stderr
    assert "bronze, silver, gold, quarantine" in bad.stderr


def test_tables_iso_shows_timestamps(project: Path) -> None:
    result = run(*project_args(project), "tables", "--iso")
    year = datetime.now(UTC).strftime("%Y")
    assert f"{year}-" in result.stdout
    assert "ago" not in result.stdout


def test_describe_shows_record_columns_partitioning_and_schema_history(project: Path) -> None:
    result = run(*project_args(project), "describe", "silver.items")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "sales@example.com" in out
    assert "Items sold per day." in out
    assert re.search(r"^partitioned by +day *$", out, re.MULTILINE)
    assert "delta.enableChangeDataFeed" in out  # a property
    columns = cells(out)
    assert columns["1"][1:] == ["sku", "string", "yes"]
    assert columns["2"][1:] == ["day (partition)", "string", "yes"]
    assert columns["3"][1:] == ["qty", "int64", "yes"]

    events = run(*project_args(project), "describe", "bronze.events").stdout
    history = events[events.index("schema history") :]
    assert "version 0" in history
    # The third append (version 3) added the `source` column.
    assert "version 3" in history
    assert "+ source string" in history


def test_history_shows_versions_operations_and_metrics(project: Path) -> None:
    result = run(*project_args(project), "history", "bronze.events")
    assert result.exit_code == 0, result.output
    rows = cells(result.stdout)
    assert [v for v in rows if v.isdigit()] == ["3", "2", "1", "0"]
    _, stamp, operation, parameters, added, *_, files_added, files_removed = rows["3"]
    assert datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")  # ISO UTC
    assert (operation, parameters) == ("WRITE", "mode=Append")
    assert (added, files_added, files_removed) == ("1", "1", "0")
    assert rows["0"][2] == "CREATE TABLE"

    limited = cells(run(*project_args(project), "history", "bronze.events", "--limit", "1").stdout)
    assert [v for v in limited if v.isdigit()] == ["3"]


# -- sql ---------------------------------------------------------------------------------------

TYPED = """\
select 1 as i,
       cast('12.50' as decimal(10, 2)) as price,
       date '2025-01-02' as day,
       timestamptz '2025-01-02 03:04:05+00' as at,
       'hi'::blob as raw,
       null as nothing,
       'é "q"' as text"""


def test_sql_table_format_renders_rows_and_notes_versions_read(project: Path) -> None:
    result = run(*project_args(project), "sql", "select id, kind from bronze.events order by id")
    assert result.exit_code == 0, result.output
    assert "4 rows" in result.stdout
    assert "read bronze.events v3" in result.stdout


def test_sql_json_is_exactly_a_json_array_of_row_objects(project: Path) -> None:
    result = run(*project_args(project), "sql", "--format", "json", TYPED)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout, parse_float=Decimal)  # nothing but the array on stdout
    assert rows == [
        {
            "i": 1,
            "price": Decimal("12.50"),
            "day": "2025-01-02",
            "at": "2025-01-02T03:04:05+00:00",
            "raw": base64.b64encode(b"hi").decode(),
            "nothing": None,
            "text": 'é "q"',
        }
    ]


def test_sql_json_of_no_rows_is_an_empty_array(project: Path) -> None:
    result = run(
        *project_args(project), "sql", "-f", "json", "select * from bronze.events where id < 0"
    )
    assert json.loads(result.stdout) == []


def test_sql_ndjson_prints_one_object_per_line(project: Path) -> None:
    result = run(
        *project_args(project), "sql", "-f", "ndjson", "select id from bronze.events order by id"
    )
    assert result.exit_code == 0
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"id": 1},
        {"id": 2},
        {"id": 3},
        {"id": 4},
    ]


def test_sql_csv_has_a_header_and_the_rows(project: Path) -> None:
    result = run(
        *project_args(project), "sql", "-f", "csv", "select id, kind from bronze.events order by id"
    )
    assert result.exit_code == 0
    assert list(csv.reader(io.StringIO(result.stdout))) == [
        ["id", "kind"],
        ["1", "a"],
        ["2", "b"],
        ["3", "a"],
        ["4", "c"],
    ]


def test_sql_csv_writes_binary_as_base64_and_decimals_exactly(project: Path) -> None:
    result = run(*project_args(project), "sql", "-f", "csv", TYPED)
    header, row = list(csv.reader(io.StringIO(result.stdout)))
    values = dict(zip(header, row, strict=True))
    assert values["price"] == "12.50"
    assert values["raw"] == base64.b64encode(b"hi").decode()


def test_sql_parquet_needs_output_and_writes_the_file(project: Path, tmp_path: Path) -> None:
    missing = run(*project_args(project), "sql", "-f", "parquet", "select 1")
    assert missing.exit_code == 2
    assert "--output" in missing.stderr

    target = tmp_path / "events.parquet"
    query = "select id, kind from bronze.events order by id"
    result = run(*project_args(project), "sql", "-f", "parquet", "-o", str(target), query)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "wrote 4 rows" in result.stderr
    assert pq.read_table(target).to_pylist()[0] == {"id": 1, "kind": "a"}


def test_sql_output_takes_the_format_from_the_suffix(project: Path, tmp_path: Path) -> None:
    target = tmp_path / "out.ndjson"
    result = run(*project_args(project), "sql", "-o", str(target), "select 7 as n")
    assert result.exit_code == 0
    assert json.loads(target.read_text()) == {"n": 7}

    unknown = run(*project_args(project), "sql", "-o", str(tmp_path / "out.xyz"), "select 1")
    assert unknown.exit_code == 2


def test_sql_output_to_a_missing_folder_exits_1(project: Path, tmp_path: Path) -> None:
    target = tmp_path / "no-such-folder" / "out.csv"
    result = run(*project_args(project), "sql", "-o", str(target), "select 1 as n")
    assert result.exit_code == 1
    assert f"error: cannot write {target}" in result.stderr


def test_sql_as_of_reads_an_earlier_version_or_time(project: Path) -> None:
    count = "select count(*) as n from bronze.events"
    at_v1 = run(*project_args(project), "sql", "-f", "json", "--as-of", "1", count)
    assert json.loads(at_v1.stdout) == [{"n": 2}]

    # A time between two commits (as `lakebed history` shows them) reads the earlier one.
    with lakebed.open(project) as lh:
        lh.write("bronze.clock", [{"tick": 1}])
        time.sleep(0.4)
        lh.write("bronze.clock", [{"tick": 2}])
    shown = cells(run(*project_args(project), "history", "bronze.clock").stdout)["1"][1]
    between = datetime.strptime(shown, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    moment = (between + timedelta(milliseconds=200)).isoformat()
    ticks = "select count(*) as n from bronze.clock"
    at_time = run(*project_args(project), "sql", "-f", "json", "--as-of", moment, ticks)
    assert at_time.exit_code == 0, at_time.output
    assert json.loads(at_time.stdout) == [{"n": 1}]

    bad = run(*project_args(project), "sql", "--as-of", "last tuesday", count)
    assert bad.exit_code == 1
    assert "as a version or a timestamp" in bad.stderr


def test_sql_reads_the_query_from_stdin(project: Path) -> None:
    result = run(
        *project_args(project),
        "sql",
        "-",
        "-f",
        "json",
        stdin="select count(*) as n from bronze.events",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{"n": 4}]


def test_sql_max_rows_limits_the_output(project: Path) -> None:
    query = "select id from bronze.events order by id"
    result = run(*project_args(project), "sql", "-f", "ndjson", "--max-rows", "2", query)
    assert result.stdout.splitlines() == ['{"id":1}', '{"id":2}']
    assert "2 of 4 rows" in result.stderr
    shown = run(*project_args(project), "sql", "--max-rows", "1", query)
    assert "1 of 4 rows" in " ".join(shown.stdout.split())  # the caption may wrap


def test_sql_syntax_error_exits_1_with_duckdbs_position(project: Path) -> None:
    result = run(*project_args(project), "sql", "selec id from bronze.events")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert "LINE 1: selec id from bronze.events" in result.stderr
    assert "^" in result.stderr
    assert "Traceback" not in result.output


def test_unknown_table_exits_1_naming_close_matches(project: Path) -> None:
    for args in (["describe", "silver.item"], ["sql", "select * from silver.item"]):
        result = run(*project_args(project), *args)
        assert result.exit_code == 1
        assert "error: table silver.item does not exist" in result.stderr
        assert "did you mean silver.items" in result.stderr
        assert "Traceback" not in result.output


def test_invalid_config_exits_1_naming_file_line_and_key(tmp_path: Path) -> None:
    (tmp_path / "lakebed.yml").write_text("name: x\ndomains:\n  sales:\n    ownr: me\n")
    result = run("-p", str(tmp_path), "tables")
    assert result.exit_code == 1
    assert f"{tmp_path / 'lakebed.yml'}:4" in result.stderr
    assert "domains.sales.ownr" in result.stderr
    assert "unknown key" in result.stderr


# -- project selection -------------------------------------------------------------------------


def test_project_option_works_before_and_after_the_command(project: Path) -> None:
    before = run("-p", str(project), "sql", "-f", "json", "select count(*) as n from bronze.events")
    after = run(
        "sql", "-f", "json", "select count(*) as n from bronze.events", "--project", str(project)
    )
    assert json.loads(before.stdout) == json.loads(after.stdout) == [{"n": 4}]


def test_lakebed_project_environment_variable_selects_the_project(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("tables", env={"LAKEBED_PROJECT": str(project)})
    assert result.exit_code == 0
    assert "silver.items" in result.stdout
    # --project wins over the environment.
    other = lakebed.init_project(tmp_path / "other")
    result = run("-p", str(other), "tables", env={"LAKEBED_PROJECT": str(project)})
    assert "silver.items" not in result.stdout
    assert "no tables yet" in result.stdout


def test_a_folder_without_lakebed_yml_is_refused_and_left_untouched(tmp_path: Path) -> None:
    result = run("-p", str(tmp_path), "tables")
    assert result.exit_code == 1
    assert "is not a lakebed project" in result.stderr
    assert f"lakebed init {tmp_path}" in result.stderr
    assert list(tmp_path.iterdir()) == []


# -- maintenance -------------------------------------------------------------------------------


def test_optimize_compacts_files_and_reports_them(project: Path) -> None:
    result = run(*project_args(project), "optimize", "bronze.events")
    assert result.exit_code == 0, result.output
    assert "1 files added, 3 files removed" in result.stdout
    assert "now at version 4" in result.stdout
    count = run(
        *project_args(project), "sql", "-f", "json", "select count(*) as n from bronze.events"
    )
    assert json.loads(count.stdout) == [{"n": 4}]


def test_optimize_zorder_accepts_repeated_and_comma_separated_columns(project: Path) -> None:
    result = run(
        *project_args(project), "optimize", "bronze.events", "-z", "id,kind", "-z", "source"
    )
    assert result.exit_code == 0, result.output
    assert "z-ordered by id, kind, source" in result.stdout
    history = run(*project_args(project), "history", "bronze.events", "-n", "1").stdout
    assert "OPTIMIZE" in history


def test_vacuum_dry_run_lists_files_without_deleting(project: Path) -> None:
    table_dir = project / "lakehouse" / "silver" / "items"
    before = sorted(p.name for p in table_dir.rglob("*.parquet"))
    args = ["vacuum", "silver.items", "--retain-hours", "0", "--force", "--dry-run"]
    result = run(*project_args(project), *args, "--verbose")
    assert result.exit_code == 0, result.output
    # The overwrite left the two files of the first write unreferenced.
    assert "would delete 2 files" in result.stdout
    assert result.stdout.count(".parquet") == 2
    assert sorted(p.name for p in table_dir.rglob("*.parquet")) == before

    done = run(*project_args(project), *args[:-1])
    assert "deleted 2 files" in done.stdout
    assert len(list(table_dir.rglob("*.parquet"))) == len(before) - 2


def test_vacuum_below_retention_without_force_exits_1(project: Path) -> None:
    result = run(*project_args(project), "vacuum", "silver.items", "--retain-hours", "0")
    assert result.exit_code == 1
    assert "retention of 0 hours" in result.stderr
    assert "--force" in result.stderr


def test_restore_makes_an_old_version_current(project: Path) -> None:
    result = run(*project_args(project), "restore", "bronze.events", "1")
    assert result.exit_code == 0, result.output
    assert "now at version 4" in result.stdout
    count = run(
        *project_args(project), "sql", "-f", "json", "select count(*) as n from bronze.events"
    )
    assert json.loads(count.stdout) == [{"n": 2}]

    missing = run(*project_args(project), "restore", "bronze.events", "99")
    assert missing.exit_code == 1
    assert "versions 0..4" in missing.stderr


def test_drop_deletes_a_table_after_asking(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = project_args(project)
    unasked = run(*args, "drop", "bronze.events")  # no terminal to ask at
    assert unasked.exit_code == 1
    assert "pass --yes" in unasked.stderr
    monkeypatch.setattr(cli, "_at_terminal", lambda: True)
    declined = run(*args, "drop", "bronze.events", stdin="n\n")
    assert declined.exit_code == 1
    assert (project / "lakehouse" / "bronze" / "events").exists()
    dropped = run(*args, "drop", "bronze.events", stdin="y\n")
    assert dropped.exit_code == 0, dropped.output
    assert "dropped the table bronze.events" in dropped.stdout
    assert not (project / "lakehouse" / "bronze" / "events").exists()
    assert "bronze.events" not in run(*args, "tables").stdout
    typo = run(*args, "drop", "silver.itemz", "--yes")
    assert typo.exit_code == 1
    assert "did you mean silver.items" in typo.stderr


def test_drop_of_a_view_removes_its_catalog_entry(project: Path) -> None:
    with lakebed.open(project) as lh:
        lh.register_view("gold.kinds", "select distinct kind from bronze.events")
    result = run(*project_args(project), "drop", "gold.kinds", "--yes")
    assert result.exit_code == 0, result.output
    assert "dropped the view gold.kinds" in result.stdout
    with lakebed.open(project) as lh:
        assert lh.view_sql(TableName.parse("gold.kinds")) is None
        assert lh.table("bronze.events").read().num_rows == 4  # what it read stays


# -- demo --------------------------------------------------------------------------------------


def test_demo_builds_prints_tables_sample_and_next_steps(tmp_path: Path) -> None:
    target = tmp_path / "shop"
    result = run("demo", str(target), "--orders", "3000")
    assert result.exit_code == 0, result.output
    for name in (
        "bronze.orders",
        "silver.orders",
        "quarantine.silver_orders",
        "gold.daily_revenue",
    ):
        assert name in result.stdout
    assert "sample gold query" in result.stdout
    assert "revenue_per_order" in result.stdout
    assert f"lakebed -p {target} tables" in result.stdout
    assert (target / "lakebed.yml").read_text().startswith("# lakebed project configuration")


def test_demo_refuses_a_non_empty_folder_unless_forced(tmp_path: Path) -> None:
    target = tmp_path / "busy"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    refused = run("demo", str(target), "--orders", "1000")
    assert refused.exit_code == 1
    assert "is not empty" in refused.stderr
    assert (target / "notes.txt").exists()

    forced = run("demo", str(target), "--orders", "1000", "--force")
    assert forced.exit_code == 0, forced.output
    assert not (target / "notes.txt").exists()
    assert (target / "lakehouse" / "gold" / "product_sales").is_dir()


def test_demo_force_refuses_to_wipe_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    monkeypatch.chdir(tmp_path)
    result = run("demo", ".", "--force", "--orders", "1000")
    assert result.exit_code == 1
    assert "refusing to wipe" in result.stderr
    assert (tmp_path / "notes.txt").exists()


# -- the installed entry point -----------------------------------------------------------------


def test_console_script_exits_1_without_a_traceback(project: Path) -> None:
    command = [sys.executable, "-m", "lakebed.cli", "-p", str(project), "describe", "gold.nope"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("error: table gold.nope does not exist")
    assert "Traceback" not in done.stderr


def test_console_script_json_stdout_is_clean(project: Path) -> None:
    query = "select kind, count(*) as n from bronze.events group by kind order by kind"
    command = [sys.executable, "-m", "lakebed.cli", "-p", str(project), "sql", "-f", "json", query]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == [
        {"kind": "a", "n": 2},
        {"kind": "b", "n": 1},
        {"kind": "c", "n": 1},
    ]


def test_json_writer_handles_nested_values(project: Path) -> None:
    query = "select [1, 2] as xs, {'a': 1.5::decimal(4, 1)} as s, map {'k': 'v'} as m"
    result = run(*project_args(project), "sql", "-f", "json", query)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{"xs": [1, 2], "s": {"a": 1.5}, "m": {"k": "v"}}]
    csv_result = run(*project_args(project), "sql", "-f", "csv", query)
    header, row = list(csv.reader(io.StringIO(csv_result.stdout)))
    assert header == ["xs", "s", "m"]
    assert json.loads(row[0]) == [1, 2]


def test_writing_arrow_keeps_types_through_parquet_output(project: Path, tmp_path: Path) -> None:
    target = tmp_path / "typed.parquet"
    result = run(*project_args(project), "sql", "-o", str(target), TYPED)
    assert result.exit_code == 0
    schema = pq.read_schema(target)
    assert schema.field("price").type == pa.decimal128(10, 2)
    assert pa.types.is_timestamp(schema.field("at").type)
