"""Scan figures: `lh.sql` over a partitioned Delta table against DuckDB reading its files.

The table `bronze.bench_events` has `rows` events in 10 `region` partitions, written in
`APPENDS` appends of increasing `id` (and `ts`), so each partition holds one file per append
and a narrow `id` range lives in few files: the shape a bronze table gets from batch loads.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

import lakebed
from common import (
    Contender,
    Contest,
    Figure,
    Settings,
    cached_project,
    duckdb_connection,
    lakebed_threads,
    log,
    open_project,
    sql_list,
)

EVENTS = "bronze.bench_events"
APPENDS = 10
REGIONS = [f"r{i}" for i in range(10)]
CATEGORIES = [f"category_{i:02d}" for i in range(50)]
CUSTOMERS = 1_000_000
TS_START_US = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * 1_000_000)

EVENTS_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("customer_id", pa.int64()),
        ("amount", pa.float64()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("category", pa.string()),
        ("region", pa.string()),
    ]
)


def event_batch(start: int, stop: int, seed: int) -> pa.Table:
    """Events `start..stop-1`: one per second, Zipf-skewed categories, uniform regions."""
    rng = np.random.default_rng(seed)
    count = stop - start
    ids = np.arange(start, stop, dtype=np.int64)
    weights = 1.0 / np.arange(1, len(CATEGORIES) + 1)
    weights /= weights.sum()
    categories = rng.choice(len(CATEGORIES), size=count, p=weights).astype(np.int32)
    regions = rng.integers(0, len(REGIONS), size=count, dtype=np.int32)
    return pa.table(
        {
            "id": ids,
            "customer_id": rng.integers(1, CUSTOMERS, size=count, dtype=np.int64),
            "amount": np.round(rng.gamma(2.0, 25.0, size=count), 2),
            "ts": pa.array(TS_START_US + ids * 1_000_000, pa.timestamp("us", tz="UTC")),
            "category": pc.take(pa.array(CATEGORIES), pa.array(categories)),
            "region": pc.take(pa.array(REGIONS), pa.array(regions)),
        },
        schema=EVENTS_SCHEMA,
    )


def _write_events(lh: lakebed.Lakehouse, *, rows: int) -> None:
    table = lh.create_table(
        EVENTS,
        EVENTS_SCHEMA,
        partition_by=["region"],
        description="benchmark events: increasing id and ts, 10 regions, 50 categories",
    )
    bounds = np.linspace(0, rows, APPENDS + 1, dtype=np.int64)
    for index in range(APPENDS):
        table.append(event_batch(int(bounds[index]), int(bounds[index + 1]), seed=index))
        log(f"    append {index + 1}/{APPENDS}: ids < {int(bounds[index + 1]):,}")


@dataclass(frozen=True)
class Events:
    """The open benchmark project and what the limit and peer need to read the table."""

    lh: lakebed.Lakehouse
    path: str  # the Delta table folder
    files: list[str]  # the live data files of the latest version (from the Delta log)
    threads: int


@functools.cache
def events(rows: int) -> Events:
    project = cached_project(
        f"events-n{rows}-a{APPENDS}", functools.partial(_write_events, rows=rows)
    )
    lh = open_project(project)
    table = lh.table(EVENTS)
    files = [uri.removeprefix("file://") for uri in DeltaTable(table.path).file_uris()]
    threads = lakebed_threads(lh)
    log(f"  {EVENTS}: {rows:,} rows in {len(files)} files; DuckDB threads = {threads}")
    return Events(lh, table.path, files, threads)


# -- contenders ----------------------------------------------------------------------------


def _lakebed(data: Events, query: str) -> Contender:
    return Contender("lakebed", lambda: data.lh.sql(query))


class _FreshDuckDB:
    """A new DuckDB connection per run, made (and the last one closed) outside the timing."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.con: duckdb.DuckDBPyConnection | None = None

    def prepare(self) -> None:
        if self.con is not None:
            self.con.close()
        self.con = duckdb_connection(self.threads)

    def query(self, sql: str) -> pa.Table:
        assert self.con is not None
        return self.con.sql(sql).to_arrow_table()


def _limit(data: Events, query: str) -> Contender:
    """DuckDB over exactly the live files, listed once from the Delta log (untimed), on one
    long-lived connection with the Parquet metadata cache on: the best DuckDB itself does,
    and the same cache lakebed's engine keeps."""
    con = duckdb_connection(data.threads)
    con.execute("SET parquet_metadata_cache = true")
    source = f"read_parquet({sql_list(data.files)}, hive_partitioning=true)"
    sql = query.replace(EVENTS, source)
    return Contender("duckdb read_parquet(live files)", lambda: con.sql(sql).to_arrow_table())


def _peer(data: Events, query: str) -> Contender:
    """What a user does without lakebed: delta-rs's Arrow dataset handed to DuckDB."""
    fresh = _FreshDuckDB(data.threads)
    sql = query.replace(EVENTS, "bench_events")

    def run() -> pa.Table:
        assert fresh.con is not None
        fresh.con.register("bench_events", DeltaTable(data.path).to_pyarrow_dataset())
        return fresh.query(sql)

    return Contender("duckdb+deltalake.to_pyarrow_dataset", run, fresh.prepare)


def _contest(data: Events, query: str, *, note_files: bool = False) -> Contest:
    def check(outputs: dict[str, Any]) -> str | None:
        result = outputs["lakebed"]
        expected = _rows(result.arrow())
        for role in ("limit", "peer"):
            got = _rows(outputs[role])
            if not _same(expected, got):
                raise AssertionError(f"{role} disagrees with lakebed: {got[:3]} vs {expected[:3]}")
        if not note_files:
            return None
        scanned = result.files_scanned.get(EVENTS)
        total = result.files_total.get(EVENTS)
        return f"lakebed scanned {scanned} of {total} files"

    return Contest(
        lakebed=_lakebed(data, query),
        limit=_limit(data, query),
        peer=_peer(data, query),
        check=check,
        repeat=15,
    )


def _rows(table: pa.Table) -> list[tuple[Any, ...]]:
    columns = [column.to_pylist() for column in table.columns]
    return sorted(zip(*columns, strict=True), key=repr)


def _same(left: list[tuple[Any, ...]], right: list[tuple[Any, ...]]) -> bool:
    if len(left) != len(right):
        return False
    for a_row, b_row in zip(left, right, strict=True):
        for a, b in zip(a_row, b_row, strict=True):
            if isinstance(a, float) and isinstance(b, float):
                if not math.isclose(a, b, rel_tol=1e-6):
                    return False
            elif a != b:
                return False
    return True


# -- figures -------------------------------------------------------------------------------


def scan_groupby(settings: Settings) -> Contest:
    data = events(settings.rows)
    query = (
        "SELECT category, count(*) AS n, sum(amount) AS total, avg(amount) AS mean "
        f"FROM {EVENTS} GROUP BY category"
    )
    return _contest(data, query)


def scan_selective_filter(settings: Settings) -> Contest:
    data = events(settings.rows)
    # A range of 0.5% of the ids in the middle of one append: Delta statistics skip the rest.
    width = max(settings.rows // 200, 10)
    low = settings.rows // 2 + settings.rows // (4 * APPENDS)
    query = (
        "SELECT count(*) AS n, sum(amount) AS total "
        f"FROM {EVENTS} WHERE id BETWEEN {low} AND {low + width}"
    )
    return _contest(data, query, note_files=True)


def scan_partition_filter(settings: Settings) -> Contest:
    data = events(settings.rows)
    query = (
        "SELECT category, count(*) AS n, sum(amount) AS total, avg(amount) AS mean "
        f"FROM {EVENTS} WHERE region = 'r3' GROUP BY category"
    )
    return _contest(data, query, note_files=True)


FIGURES: dict[str, Figure] = {
    "scan_groupby_10m": scan_groupby,
    "scan_selective_filter": scan_selective_filter,
    "scan_partition_filter": scan_partition_filter,
}
