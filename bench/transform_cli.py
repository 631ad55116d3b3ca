"""The full build as a user runs it from the shell: `lakebed run --full-refresh` against
`dbt run`, each a new process timed from start to exit (interpreter start-up, imports and
parsing the project included, as in the dbt figure the transformation issue quotes). Both
start from compiled bytecode, as installed packages do.

The limit is the same: a new Python process that imports DuckDB and runs the models' SQL
as `CREATE OR REPLACE TABLE` statements over the bronze DuckDB file. The project, data and
checks are `transform_project.py`'s.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import transform
import transform_project as project_of
from common import (
    Contender,
    Contest,
    Figure,
    Settings,
    fresh_copy,
    lakebed_threads,
    log,
    open_project,
    scratch_dir,
)

ROOT = Path(__file__).resolve().parent.parent
LAKEBED = ROOT / ".venv" / "bin" / "lakebed"
DBT = ROOT / ".venv-peers" / "bin" / "dbt"

_LIMIT_SCRIPT = """
import sys
import duckdb

con = duckdb.connect(sys.argv[1])
con.execute("SET threads = " + sys.argv[2])
con.execute("SET TimeZone = 'UTC'")
for statement in sys.stdin.read().split(";\\n"):
    if statement.strip():
        con.execute(statement)
con.close()
"""


def _process(command: list[str], *, stdin: str | None = None, cwd: Path | None = None) -> None:
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "NO_COLOR": "1"}
    done = subprocess.run(
        command, input=stdin, capture_output=True, text=True, check=False, env=env, cwd=cwd
    )
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} failed: {(done.stdout + done.stderr)[-3000:]}")


def transform_full_build_1m_cli(settings: Settings) -> Contest:
    shape = project_of.Shape(settings.rows // 10)
    project, pristine_db = project_of.bronze_project(shape)
    log(f"  {len(project_of.MODELS)} models over {shape.orders:,} bronze orders, from the shell")
    folder = scratch_dir("transform-cli-lakebed")
    limit_folder = scratch_dir("transform-cli-limit")
    peer_folder = scratch_dir("transform-cli-dbt")
    # An installed package comes with its bytecode compiled (pip compiles it); an editable
    # install under PYTHONDONTWRITEBYTECODE would compile lakebed's modules in every run.
    _process([sys.executable, "-m", "compileall", "-q", str(ROOT / "src" / "lakebed")])
    lh = open_project(project)
    threads = lakebed_threads(lh)
    lh.close()
    limit_db = limit_folder / "limit.duckdb"
    statements = ";\n".join(
        f"CREATE OR REPLACE TABLE {spec.name} AS {spec.sql}" for spec in project_of.MODELS
    )
    peer_db = peer_folder / "dbt.duckdb"
    project_of.write_dbt_project(peer_folder / "project", peer_db, threads)

    def prepare_lakebed() -> None:
        fresh_copy(project, folder)
        project_of.write_models(folder, project_of.MODELS)

    def run_lakebed() -> Path:
        _process([str(LAKEBED), "run", "--full-refresh", "--project", str(folder)])
        return folder

    def prepare_limit() -> None:
        limit_folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pristine_db, limit_db)

    def run_limit() -> Path:
        _process(
            [sys.executable, "-c", _LIMIT_SCRIPT, str(limit_db), str(threads)], stdin=statements
        )
        return limit_db

    def prepare_peer() -> None:
        if not DBT.exists():
            raise RuntimeError("the peers' environment is missing: run `make bench` (it builds it)")
        shutil.copyfile(pristine_db, peer_db)

    def run_peer() -> Path:
        project_dir = str(peer_folder / "project")
        _process(
            [
                str(DBT),
                "run",
                "--project-dir",
                project_dir,
                "--profiles-dir",
                project_dir,
                "--no-send-anonymous-usage-stats",
                "--no-version-check",
            ]
        )
        return peer_db

    def check(outputs: dict[str, Any]) -> str | None:
        expected = project_of.duckdb_fingerprint(limit_db)
        built = open_project(folder)
        try:
            project_of.compare(expected, project_of.lakebed_fingerprint(built), "lakebed")
        finally:
            built.close()
        project_of.compare(expected, project_of.duckdb_fingerprint(peer_db), "dbt")
        return "every model agrees (rows and column sums)"

    def cleanup() -> None:
        transform.cleanup_scratch("transform-cli-")

    return Contest(
        lakebed=Contender("lakebed run --full-refresh (new process)", run_lakebed, prepare_lakebed),
        limit=Contender("python -c duckdb CREATE TABLE AS (new process)", run_limit, prepare_limit),
        peer=Contender(
            "dbt run (dbt-core 1.12 + dbt-duckdb 1.11, new process)", run_peer, prepare_peer
        ),
        check=check,
        repeat=3,
        cleanup=cleanup,
    )


FIGURES: dict[str, Figure] = {"transform_full_build_1m_cli": transform_full_build_1m_cli}
