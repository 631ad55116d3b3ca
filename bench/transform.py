"""Transformation figures: a 10-model medallion project over 1M orders (`transform_project`),
built in full and incrementally after 1% new orders.

The project reads three bronze tables: `orders` (`--rows / 10`, 1M, with 3% re-emitted
versions of earlier orders), `customers` and `products`. The limit runs the same SQL as
`CREATE OR REPLACE TABLE layer.name AS ...` statements in one DuckDB connection over a
DuckDB file holding the same bronze rows; the peer is dbt-core with dbt-duckdb on the same
SQL (`{{ ref() }}` / `{{ source() }}`) over a copy of that file, run in .venv-peers by
peers/dbt_build.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

import lakebed
from common import (
    DATA_DIR,
    Contender,
    Contest,
    Figure,
    SelfTimed,
    Settings,
    duckdb_connection,
    fresh_copy,
    lakebed_threads,
    log,
    open_project,
    scratch_dir,
)
from transform_project import (
    INCREMENT_UPDATES,
    MODELS,
    Fingerprint,
    ModelSpec,
    Shape,
    bronze_project,
    compare,
    duckdb_fingerprint,
    incremental_models,
    lakebed_fingerprint,
    order_increment,
    write_dbt_project,
    write_models,
)

ROOT = Path(__file__).resolve().parent.parent
PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
DBT_SCRIPT = Path(__file__).resolve().parent / "peers" / "dbt_build.py"
DBT_LABEL = "dbt-core 1.12 + dbt-duckdb 1.11 (dbt run)"

# -- the contenders -------------------------------------------------------------------------


class LakebedProject:
    """A fresh copy of a project folder for each run, opened outside the timing."""

    def __init__(self, source: Path, folder: Path, models: list[ModelSpec] | None) -> None:
        self.source, self.folder, self.models = source, folder, models
        self.lh: lakebed.Lakehouse | None = None

    def prepare(self) -> None:
        self.close()
        fresh_copy(self.source, self.folder)
        if self.models is not None:
            write_models(self.folder, self.models)
        self.lh = open_project(self.folder)

    def run(self, *, full_refresh: bool) -> Any:
        assert self.lh is not None
        summary = self.lh.run(full_refresh=full_refresh)
        if not summary.ok:
            failed = [f"{n.model}: {n.error}" for n in summary.nodes if n.error]
            raise RuntimeError(f"lakebed run failed: {failed}")
        return summary

    def close(self) -> None:
        if self.lh is not None:
            self.lh.close()
            self.lh = None


def _limit(pristine_db: Path, folder: Path, threads: int) -> tuple[Contender, Path]:
    database = folder / "limit.duckdb"
    state: dict[str, duckdb.DuckDBPyConnection] = {}

    def prepare() -> None:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pristine_db, database)
        con = state["con"] = duckdb.connect(str(database))
        con.execute(f"SET threads = {int(threads)}")
        con.execute("SET TimeZone = 'UTC'")

    def run() -> Path:
        con = state.pop("con")
        for spec in MODELS:
            kind = "VIEW" if spec.materialized == "view" else "TABLE"
            con.execute(f"CREATE OR REPLACE {kind} {spec.name} AS {spec.sql}")
        con.close()  # checkpoints: the tables are on disk, as lakebed's and dbt's are
        return database

    return Contender("duckdb CREATE TABLE AS, one connection", run, prepare), database


def _dbt(pristine_db: Path, folder: Path, threads: int) -> tuple[Contender, Path]:
    database = folder / "dbt.duckdb"
    project = folder / "project"
    write_dbt_project(project, database, threads)

    def prepare() -> None:
        shutil.copyfile(pristine_db, database)

    def run() -> SelfTimed:
        if not PEERS_PYTHON.exists():
            raise RuntimeError("the peers' environment is missing: run `make bench` (it builds it)")
        env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
        done = subprocess.run(
            [str(PEERS_PYTHON), str(DBT_SCRIPT), str(project)],
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
        if "No module named 'dbt" in done.stderr:
            raise RuntimeError(
                "dbt is missing from .venv-peers (made before dbt joined the peers): "
                "rm .venv-peers/.installed-2 and run `make bench`"
            )
        if done.returncode != 0:
            raise RuntimeError(f"dbt failed: {(done.stdout + done.stderr)[-3000:]}")
        seconds = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
        return SelfTimed(seconds, database)

    return Contender(DBT_LABEL, run, prepare), database


def _node_times(summary: Any) -> str:
    nodes = sorted(summary.nodes, key=lambda n: -n.seconds)
    return ", ".join(f"{n.model} {n.mode} {n.seconds:.2f}s" for n in nodes)


# -- figures --------------------------------------------------------------------------------


def transform_full_build_1m(settings: Settings) -> Contest:
    shape = Shape(settings.rows // 10)
    project, pristine_db = bronze_project(shape)
    log(f"  {len(MODELS)} models over {shape.orders:,} bronze orders")
    lakebed_side = LakebedProject(project, scratch_dir("transform-lakebed"), MODELS)
    lakebed_side.prepare()
    assert lakebed_side.lh is not None
    threads = lakebed_threads(lakebed_side.lh)
    limit, limit_db = _limit(pristine_db, scratch_dir("transform-limit"), threads)
    peer, peer_db = _dbt(pristine_db, scratch_dir("transform-dbt"), threads)

    def check(outputs: dict[str, Any]) -> str | None:
        assert lakebed_side.lh is not None
        expected = duckdb_fingerprint(limit_db)
        compare(expected, lakebed_fingerprint(lakebed_side.lh), "lakebed")
        compare(expected, duckdb_fingerprint(peer_db), "dbt")
        gold = expected["gold.fct_orders"][0]
        return (
            f"every model agrees (rows and column sums; {gold:,} fact rows); "
            f"lakebed nodes: {_node_times(outputs['lakebed'])}"
        )

    def cleanup() -> None:
        lakebed_side.close()
        cleanup_scratch("transform-")

    return Contest(
        lakebed=Contender(
            "lakebed",
            lambda: lakebed_side.run(full_refresh=True),
            lakebed_side.prepare,
        ),
        limit=limit,
        peer=peer,
        check=check,
        repeat=5,
        cleanup=cleanup,
    )


def _built_and_incremented(
    project: Path, shape: Shape, models: list[ModelSpec], folder: Path, share: float
) -> Path:
    """The project after a full build and 1% new bronze orders (untimed set-up)."""
    side = LakebedProject(project, folder, models)
    side.prepare()
    assert side.lh is not None
    started = time.perf_counter()
    side.run(full_refresh=True)
    log(f"  set-up: full build in {time.perf_counter() - started:.2f}s")
    side.lh.table("bronze.orders").append(order_increment(shape, share))
    side.close()
    return folder


def _expected_after_increment(
    pristine_db: Path, shape: Shape, folder: Path, share: float
) -> Fingerprint:
    """Every model rebuilt in full by DuckDB over the bronze rows plus the increment."""
    database = folder / "expected.duckdb"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pristine_db, database)
    con = duckdb.connect(str(database))
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("__increment", order_increment(shape, share))
        con.execute("INSERT INTO bronze.orders SELECT * FROM __increment")
        for spec in MODELS:
            con.execute(f"CREATE OR REPLACE TABLE {spec.name} AS {spec.sql}")
    finally:
        con.close()
    return duckdb_fingerprint(database)


# A table's files, with each one's lowest and highest order_id (None: no such column).
_Bounds = tuple[list[str], np.ndarray | None, np.ndarray | None]


def _incremental_floor(
    base: Path, shape: Shape, threads: int, share: float, rounds: int = 5
) -> float:
    """Seconds DuckDB alone needs for the work no exact incremental run can skip: the two
    merged models' SQL over the changed rows, and finding in each merged table the rows
    they replace: in silver.orders read in full (gold.fct_orders reads its change data
    feed, whose update pre-images are whole old rows, and updates to old orders spread
    over every file; silver.orders keeps the latest version of each order, and those rows
    are what a new version is compared with), in gold.fct_orders (no feed: nothing reads
    it incrementally) only where they lie. Only the files whose order_id range (from the
    Delta log's statistics) holds a changed key are read: new orders' ids lie beyond
    every file's. No writes, no commits."""
    from deltalake import DeltaTable

    def files(name: str) -> _Bounds:
        """The table's files, with each one's lowest and highest order_id if it has one."""
        layer, table = name.split(".")
        dt = DeltaTable(str(base / "lakehouse" / layer / table))
        stats = pa.table(dt.get_add_actions(flatten=True))
        uris = [f"{dt.table_uri.rstrip('/')}/{p}" for p in stats.column("path").to_pylist()]
        if "min.order_id" not in stats.column_names:
            return uris, None, None
        low, high = stats.column("min.order_id"), stats.column("max.order_id")
        return uris, low.to_numpy(), high.to_numpy()

    def listed(uris: list[str]) -> str:
        return "[" + ", ".join(f"'{u}'" for u in uris) + "]"

    specs = {spec.name: spec for spec in incremental_models()}
    con = duckdb_connection(threads)
    try:
        con.execute("SET TimeZone = 'UTC'")
        for layer in ("bronze", "silver", "gold"):
            con.execute(f"CREATE SCHEMA {layer}")
        for name in ("gold.dim_customers", "gold.dim_products"):
            uris, _, _ = files(name)
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet({listed(uris)})")
        con.register("__increment", order_increment(shape, share))
        con.execute("CREATE VIEW bronze.orders AS SELECT * FROM __increment")
        silver_files, fact_files = files("silver.orders"), files("gold.fct_orders")

        def replaced(targets: _Bounds, changed: pa.Table, *, whole: bool) -> None:
            uris, low, high = targets
            keys = np.sort(changed.column("order_id").to_numpy())
            if low is not None and high is not None:
                starts = np.searchsorted(keys, low, side="left")
                ends = np.searchsorted(keys, high, side="right")
                uris = [u for u, a, b in zip(uris, starts, ends, strict=True) if b > a]
            if not uris:
                return  # no file can hold a changed key
            con.register("__changed", changed.select(["order_id"]))
            query = (
                f"SELECT * FROM (SELECT file_index, file_row_number, "
                f"{'*' if whole else 'order_id'} FROM read_parquet({listed(uris)})) AS t "
                f"SEMI JOIN __changed AS c USING (order_id)"
            )
            con.sql(query).to_arrow_table()

        def once() -> float:
            started = time.perf_counter()
            silver = con.sql(specs["silver.orders"].sql).to_arrow_table()
            replaced(silver_files, silver, whole=True)
            con.register("__silver", silver)
            con.execute("CREATE OR REPLACE VIEW silver.orders AS SELECT * FROM __silver")
            fact = con.sql(specs["gold.fct_orders"].sql).to_arrow_table()
            replaced(fact_files, fact, whole=False)
            con.execute("DROP VIEW silver.orders")
            return time.perf_counter() - started

        once()  # warm-up
        return float(np.median([once() for _ in range(rounds)]))
    finally:
        con.close()


def transform_incremental_1pct(settings: Settings) -> Contest:
    """An incremental run after 1% new bronze order rows, a tenth of them updates to old
    orders picked at random over the whole table (so every file of silver.orders holds a
    row they replace)."""
    return _incremental(settings, INCREMENT_UPDATES)


def transform_incremental_1pct_appends(settings: Settings) -> Contest:
    """An incremental run after 1% new bronze order rows, all of them new orders (the
    issue's "1% new rows"): no row of the models' tables is replaced."""
    return _incremental(settings, 0.0)


def _incremental(settings: Settings, share: float) -> Contest:
    shape = Shape(settings.rows // 10)
    project, pristine_db = bronze_project(shape)
    models = incremental_models()
    base_dir = scratch_dir(f"transform-incr-base-{share:g}")
    base = _built_and_incremented(project, shape, models, base_dir, share)
    log(f"  {shape.increment:,} new bronze order rows ({share:.0%} of them update old orders)")
    incremental = LakebedProject(base, scratch_dir("transform-incr"), None)
    full = LakebedProject(project, scratch_dir("transform-full"), models)

    def check(outputs: dict[str, Any]) -> str | None:
        assert incremental.lh is not None
        modes = {n.model: n.mode for n in outputs["lakebed"].nodes}
        expected_modes = {
            "silver.orders": "incremental",
            "gold.fct_orders": "incremental",
            "silver.customers": "up_to_date",
            "gold.dim_products": "up_to_date",
        }
        wrong = {n: m for n, m in expected_modes.items() if modes[n] != m}
        if wrong:
            raise AssertionError(f"models not built as expected ({expected_modes}): {modes}")
        folder = scratch_dir("transform-expect")
        expected = _expected_after_increment(pristine_db, shape, folder, share)
        compare(expected, lakebed_fingerprint(incremental.lh), "lakebed's incremental run")
        floor = _incremental_floor(base, shape, lakebed_threads(incremental.lh), share)
        return (
            "the incremental run equals a full rebuild (rows and column sums); "
            f"incremental nodes: {_node_times(outputs['lakebed'])}; "
            f"floor (DuckDB alone: the two merged models' SQL over the changed rows, "
            f"and the rows they replace found, whole where a change feed needs them; "
            f"no writes): {floor * 1000:.0f} ms"
        )

    def cleanup() -> None:
        incremental.close()
        full.close()
        cleanup_scratch("transform-")

    return Contest(
        lakebed=Contender(
            "lakebed", lambda: incremental.run(full_refresh=False), incremental.prepare
        ),
        limit=Contender("lakebed full build", lambda: full.run(full_refresh=True), full.prepare),
        check=check,
        # An incremental run lasts tens of milliseconds: a few rounds leave its median to
        # whatever else the machine did at that moment.
        repeat=11,
        cleanup=cleanup,
    )


def cleanup_scratch(prefix: str) -> None:
    for folder in (DATA_DIR / "scratch").glob(f"{prefix}*"):
        shutil.rmtree(folder, ignore_errors=True)


FIGURES: dict[str, Figure] = {
    "transform_full_build_1m": transform_full_build_1m,
    "transform_incremental_1pct": transform_incremental_1pct,
    "transform_incremental_1pct_appends": transform_incremental_1pct_appends,
}
