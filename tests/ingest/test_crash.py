"""Crash test: `kill -9` a real `lakebed ingest` process at random moments, again and again,
while the sources grow; after a final clean run every source record is in bronze exactly
once (files, an HTTP API and a SQL database)."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
import yaml

import lakebed
from services.http_api import FakeApi

pytestmark = pytest.mark.slow

KILLS = 30
INITIAL_FILES = 60  # one commit each: a run takes seconds, so kills land mid-run
ROWS_PER_FILE = 200
LAKEBED = [sys.executable, "-m", "lakebed.cli"]


def _write_file(folder: Path, number: int) -> None:
    start = number * ROWS_PER_FILE
    ids = list(range(start, start + ROWS_PER_FILE))
    table = pa.table({"id": ids, "amount": [i * 0.5 for i in ids], "note": [f"n{i}" for i in ids]})
    target = folder / f"part-{number:04d}.csv"
    pa_csv.write_csv(table, target.with_suffix(".tmp"))
    target.with_suffix(".tmp").rename(target)  # a file appears whole, as a real drop would


def _add_db_rows(db: Path, start: int, count: int) -> None:
    with sqlite3.connect(db) as con:
        con.execute("create table if not exists orders (id integer primary key, total real)")
        con.executemany(
            "insert into orders values (?, ?)", [(i, i * 1.5) for i in range(start, start + count)]
        )


def _project(tmp_path: Path, api: FakeApi, files: Path, db: Path) -> Path:
    root = lakebed.init_project(tmp_path / "project")
    config = yaml.safe_load((root / "lakebed.yml").read_text())
    config["sources"] = {
        "drops": {"kind": "files", "path": f"{files}/*.csv"},
        "shop": {
            "kind": "sql",
            "url": f"sqlite:///{db}",
            "table": "orders",
            "incremental": {"cursor_column": "id"},
        },
        "tickets": {
            "kind": "http",
            "url": api.url("/page"),
            "records_path": "data",
            "paginate": {"type": "page_number", "page_size_param": "per_page", "page_size": 25},
            "incremental": {"cursor_field": "updated_at", "param": "updated_since"},
        },
    }
    (root / "lakebed.yml").write_text(yaml.safe_dump(config))
    return root


def _ingest(root: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*LAKEBED, "--project", str(root), "ingest"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "120"},
    )


def _commits(root: Path, table: str) -> int:
    log = root / "lakehouse" / table.replace(".", "/") / "_delta_log"
    return len(list(log.glob("*.json"))) if log.exists() else 0


def _kill_when(process: subprocess.Popen[bytes], ready: Callable[[], bool], extra: float) -> bool:
    """SIGKILL the process once `ready()` holds (plus `extra` seconds); False if it ended."""
    deadline = time.monotonic() + 60
    while process.poll() is None and not ready() and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(extra)
    if process.poll() is not None:
        return False
    process.send_signal(signal.SIGKILL)
    return True


def test_kill_9_at_random_points_then_rerun_loads_every_record_exactly_once(
    tmp_path: Path,
) -> None:
    rng = random.Random(20261126)
    files, db = tmp_path / "drops", tmp_path / "shop.db"
    files.mkdir()
    next_file, next_row = 0, 0
    for _ in range(INITIAL_FILES):
        _write_file(files, next_file)
        next_file += 1
    _add_db_rows(db, 0, 2000)
    next_row = 2000
    with FakeApi(count=100) as api:
        root = _project(tmp_path, api, files, db)
        killed = 0
        for round_ in range(KILLS):
            process = _ingest(root)
            if round_ % 3 == 2:
                # Anywhere, by the clock: start-up, the database or the API source.
                killed += _kill_when(process, lambda: True, rng.uniform(0.6, 1.6))
            else:
                # Between or inside the commits of the file source, at a random one.
                start, target = _commits(root, "bronze.drops"), rng.randint(1, 12)
                killed += _kill_when(
                    process,
                    lambda start=start, target=target: (
                        _commits(root, "bronze.drops") >= start + target
                    ),
                    rng.uniform(0, 0.02),
                )
            process.wait()
            # The sources keep growing between crashes.
            for _ in range(rng.randint(10, 20)):
                _write_file(files, next_file)
                next_file += 1
            if round_ % 2 == 0:
                _add_db_rows(db, next_row, 500)
                next_row += 500
            if round_ % 4 == 0:
                api.add()
        # The issue asks for at least 20 kill points across the sources.
        assert killed >= 20, f"only {killed} runs were still running when killed"
        final = subprocess.run(
            [*LAKEBED, "--project", str(root), "ingest"], capture_output=True, text=True
        )
        assert final.returncode == 0, final.stderr
        expected_api = {record["id"] for record in api.records}

    with lakebed.open(root) as lh:
        drops = lh.sql("select id, count(*) as n from bronze.drops group by id").rows()
        assert len(drops) == next_file * ROWS_PER_FILE
        assert {n for _, n in drops} == {1}
        assert {i for i, _ in drops} == set(range(next_file * ROWS_PER_FILE))

        shop = lh.sql("select id, count(*) from bronze.shop group by id").rows()
        assert sorted(i for i, _ in shop) == list(range(next_row))
        assert {n for _, n in shop} == {1}

        tickets = lh.sql("select id, count(*) from bronze.tickets group by id").rows()
        assert {i for i, _ in tickets} == expected_api
        assert {n for _, n in tickets} == {1}


BIG_ROWS = 280_000  # about 18 MB of CSV: over the size from which files are streamed


def _write_big_file(folder: Path, number: int) -> None:
    start = number * BIG_ROWS
    ids = pa.array(range(start, start + BIG_ROWS), pa.int64())
    table = pa.table(
        {
            "id": ids,
            "amount": pa.compute.multiply(ids.cast(pa.float64()), 0.25),
            "note": pa.compute.binary_join_element_wise(
                "order ", ids.cast(pa.string()), " shipped to a customer far away", ""
            ),
        }
    )
    target = folder / f"big-{number:03d}.csv"
    pa_csv.write_csv(table, target.with_suffix(".tmp"))
    target.with_suffix(".tmp").rename(target)


def test_kill_9_while_large_files_stream_then_rerun_loads_every_row_once(tmp_path: Path) -> None:
    """Files over `STREAM_MIN_BYTES` are parsed and written piece by piece in one commit:
    a kill at any moment of that (parsing, delta-rs writing pieces, the commit) leaves
    either nothing or the whole file, and the rerun loads the rest exactly once."""
    from lakebed.ingest.connectors import csv_pieces

    rng = random.Random(11262026)
    files = tmp_path / "big"
    files.mkdir()
    next_file = 0
    for _ in range(6):
        _write_big_file(files, next_file)
        next_file += 1
    assert min(p.stat().st_size for p in files.iterdir()) > csv_pieces.STREAM_MIN_BYTES
    root = lakebed.init_project(tmp_path / "project")
    config = yaml.safe_load((root / "lakebed.yml").read_text())
    config["sources"] = {"big": {"kind": "files", "path": f"{files}/*.csv"}}
    (root / "lakebed.yml").write_text(yaml.safe_dump(config))
    killed = 0
    for round_ in range(10):
        process = _ingest(root)
        if round_ % 2:
            killed += _kill_when(process, lambda: True, rng.uniform(0.6, 1.5))
        else:
            # Once some files are in (one commit each), inside the stream of a later one.
            start, target = _commits(root, "bronze.big"), 1
            killed += _kill_when(
                process,
                lambda start=start, target=target: _commits(root, "bronze.big") >= start + target,
                rng.uniform(0, 0.3),
            )
        process.wait()
        for _ in range(2):
            _write_big_file(files, next_file)
            next_file += 1
    assert killed >= 5, f"only {killed} runs were still running when killed"
    final = subprocess.run(
        [*LAKEBED, "--project", str(root), "ingest"], capture_output=True, text=True
    )
    assert final.returncode == 0, final.stderr
    with lakebed.open(root) as lh:
        found = lh.sql(
            "select count(*), count(distinct id), min(id), max(id) from bronze.big"
        ).rows()[0]
        assert found == (next_file * BIG_ROWS, next_file * BIG_ROWS, 0, next_file * BIG_ROWS - 1)
        assert "quarantine.big" not in [t.name for t in lh.tables()]
