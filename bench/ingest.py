"""Batch ingestion figures: a 1M-row CSV file and a 1M-row PostgreSQL table into bronze.

CSV: the limit is pyarrow's `read_csv` plus `write_deltalake` of the same file; the peer is
dlt's filesystem source into a Delta table. PostgreSQL: the limit is ADBC's Arrow fetch plus
`write_deltalake`; the peer is dlt's `sql_table` with its pyarrow backend. dlt runs in its
own environment (.venv-peers, made by `make bench`) and times only its pipeline run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import yaml
from deltalake import DeltaTable, write_deltalake

import lakebed
from common import (
    DATA_DIR,
    Contender,
    Contest,
    SelfTimed,
    Settings,
    log,
    open_project,
    scratch_dir,
)

ROOT = Path(__file__).resolve().parent.parent
PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
DLT_SCRIPT = Path(__file__).resolve().parent / "peers" / "dlt_load.py"


def orders(rows: int, seed: int = 11) -> pa.Table:
    rng = np.random.default_rng(seed)
    start = np.datetime64("2025-01-01T00:00:00", "us")
    return pa.table(
        {
            "id": np.arange(rows, dtype=np.int64),
            "customer_id": rng.integers(1, 50_000, rows),
            "amount": np.round(rng.random(rows) * 500, 2),
            "status": rng.choice(["new", "paid", "shipped", "cancelled"], rows),
            "country": rng.choice(["DE", "FR", "US", "GB", "ES", "IT"], rows),
            "created_at": pa.array(
                start + rng.integers(0, 365 * 86_400, rows) * np.timedelta64(1, "s"),
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )


def _csv_file(rows: int) -> Path:
    path = DATA_DIR / f"ingest-csv-{rows}" / "orders.csv"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        log(f"  generating {path} ({rows:,} rows)")
        pa_csv.write_csv(orders(rows), path.with_suffix(".tmp"))
        path.with_suffix(".tmp").rename(path)
    return path


def _project(folder: Path, sources: dict[str, Any]) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    root = lakebed.init_project(folder)
    config = yaml.safe_load((root / "lakebed.yml").read_text())
    config["sources"] = sources
    (root / "lakebed.yml").write_text(yaml.safe_dump(config))
    return root


def _lakebed(folder: Path, sources: dict[str, Any], name: str) -> Contender:
    state: dict[str, lakebed.Lakehouse] = {}

    def prepare() -> None:
        if "lh" in state:
            state.pop("lh").close()
        state["lh"] = open_project(_project(folder, sources))

    def run() -> Any:
        return state["lh"].ingest(name)

    return Contender("lakebed", run, prepare)


def _dlt(mode: str, source: str, folder: Path) -> Contender:
    def prepare() -> None:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)

    def run() -> SelfTimed:
        if not PEERS_PYTHON.exists():
            raise RuntimeError("dlt's environment is missing: run `make bench` (it builds it)")
        done = subprocess.run(
            [str(PEERS_PYTHON), str(DLT_SCRIPT), mode, source, str(folder)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"dlt failed: {done.stderr[-2000:]}")
        seconds = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
        table = DeltaTable(str(folder / "lake" / "bronze" / "orders"))
        return SelfTimed(seconds, table.count())

    return Contender("dlt 1.31 (delta)", run, prepare)


def _write_limit(folder: Path, read: Any) -> Contender:
    def prepare() -> None:
        shutil.rmtree(folder, ignore_errors=True)

    def run() -> Any:
        table = read()
        write_deltalake(str(folder), table)
        return table.num_rows

    return Contender("read into Arrow + write_deltalake", run, prepare)


def _rows_check(rows: int) -> Any:
    def check(outputs: dict[str, Any]) -> str | None:
        loaded = outputs["lakebed"].rows
        peer = outputs.get("peer")
        if loaded != rows or outputs["limit"] != rows or (peer is not None and peer != rows):
            raise AssertionError(f"row counts differ: lakebed {loaded}, outputs {outputs}")
        return f"every contender loaded {rows:,} rows"

    return check


def ingest_csv_1m(settings: Settings) -> Contest:
    rows = settings.rows // 10
    path = _csv_file(rows)
    sources = {"orders": {"kind": "files", "path": str(path), "format": "csv"}}
    return Contest(
        lakebed=_lakebed(scratch_dir("ingest-csv-lakebed"), sources, "orders"),
        limit=_write_limit(scratch_dir("ingest-csv-limit"), lambda: pa_csv.read_csv(path)),
        peer=_dlt("csv", str(path), scratch_dir("ingest-csv-dlt")),
        check=_rows_check(rows),
        repeat=3,
        cleanup=lambda: _cleanup("ingest-csv"),
    )


def _postgres(rows: int) -> tuple[Any, str]:
    sys.path.insert(0, str(ROOT / "tests"))
    from services.postgres import start_postgres

    server = start_postgres()
    url = server.create_database("bench")
    import psycopg2

    csv_path = _csv_file(rows)
    with psycopg2.connect(url) as con, con.cursor() as cur:
        cur.execute(
            "create table orders (id bigint primary key, customer_id bigint, "
            "amount numeric(12, 2), status text, country text, created_at timestamptz)"
        )
        with csv_path.open() as source:
            cur.copy_expert("copy orders from stdin with (format csv, header true)", source)
    return server, url


def ingest_postgres_1m(settings: Settings) -> Contest:
    rows = settings.rows // 10
    log(f"  starting PostgreSQL and loading {rows:,} rows")
    server, url = _postgres(rows)
    sources = {"orders": {"kind": "sql", "url": url, "table": "public.orders"}}

    def read_adbc() -> pa.Table:
        import adbc_driver_postgresql.dbapi as adbc

        with adbc.connect(url) as con, con.cursor() as cur:
            cur.execute("select * from public.orders")
            return cur.fetch_arrow_table()

    def cleanup() -> None:
        server.remove()
        _cleanup("ingest-pg")

    return Contest(
        lakebed=_lakebed(scratch_dir("ingest-pg-lakebed"), sources, "orders"),
        limit=_write_limit(scratch_dir("ingest-pg-limit"), read_adbc),
        # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; dlt's env has psycopg2.
        peer=_dlt(
            "sql",
            url.replace("postgresql://", "postgresql+psycopg2://"),
            scratch_dir("ingest-pg-dlt"),
        ),
        check=_rows_check(rows),
        repeat=3,
        cleanup=cleanup,
    )


def _cleanup(prefix: str) -> None:
    for folder in (DATA_DIR / "scratch").glob(f"{prefix}-*"):
        shutil.rmtree(folder, ignore_errors=True)


FIGURES = {"ingest_csv_1m": ingest_csv_1m, "ingest_postgres_1m": ingest_postgres_1m}
