"""`lakebed ingest` and `lakebed sources` from the command line."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import yaml
from typer.testing import CliRunner, Result

import lakebed
from lakebed.cli import app

ENV = {"COLUMNS": "200", "LAKEBED_PROJECT": None, "NO_COLOR": "1"}


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=ENV)


def _project(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    pa_csv.write_csv(pa.table({"id": [1, 2, 3], "v": ["a", "b", "c"]}), data / "a.csv")
    (data / "b.csv").write_text('id,v\n4,d\n5,"unclosed\n6,f\n')
    root = lakebed.init_project(tmp_path / "p")
    config = yaml.safe_load((root / "lakebed.yml").read_text())
    config["sources"] = {
        "things": {"kind": "files", "path": f"{data}/*.csv", "description": "test things"},
        "broken": {"kind": "sql", "url": f"sqlite:///{tmp_path}/missing.db", "table": "t"},
    }
    (root / "lakebed.yml").write_text(yaml.safe_dump(config))
    return root


def test_ingest_loads_a_source_and_prints_a_summary(tmp_path: Path) -> None:
    root = _project(tmp_path)
    result = run("--project", str(root), "ingest", "things")
    assert result.exit_code == 0, result.output
    assert "things" in result.stdout
    assert "bronze.things" in result.stdout
    with lakebed.open(root) as lh:
        rows = lh.sql("select count(*) from bronze.things").scalar()
        quarantined = lh.sql("select count(*) from quarantine.things").scalar()
    assert rows + quarantined == 6
    assert quarantined >= 1


def test_a_failing_source_exits_1_but_the_others_still_load(tmp_path: Path) -> None:
    root = _project(tmp_path)
    result = run("--project", str(root), "ingest")
    assert result.exit_code == 1
    assert "broken" in result.output
    assert "failed" in result.stdout
    with lakebed.open(root) as lh:
        assert lh.sql("select count(*) from bronze.things").scalar() >= 5


def test_sources_lists_kind_target_last_run_and_state(tmp_path: Path) -> None:
    root = _project(tmp_path)
    run("--project", str(root), "ingest", "things")
    result = run("--project", str(root), "sources")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines() if "things" in line)
    assert "files" in line
    assert "bronze.things" in line
    assert "success" in line
    assert "2 files" in line
    assert "never" in next(line for line in result.stdout.splitlines() if "broken" in line)
