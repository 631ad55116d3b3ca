"""Merge figure: `Table.merge` (upsert by key) against the raw delta-rs merge it wraps.

Both sides start every run from a fresh copy of the same project folder (Delta table and
catalog), copied outside the timing, so each merge sees the identical target.
"""

from __future__ import annotations

import functools
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from deltalake import DeltaTable

import lakebed
from common import (
    Contender,
    Contest,
    Figure,
    Settings,
    cached_project,
    duckdb_connection,
    fresh_copy,
    log,
    open_project,
    scratch_dir,
    sql_list,
)
from lakebed.config import DEFAULT_STORAGE
from lakebed.storage import TableName
from scan import EVENTS_SCHEMA, TS_START_US, event_batch

TARGET = "bronze.bench_merge"
TARGET_APPENDS = 5
# The target has no region column: an unpartitioned table, so updates touch every file.
TARGET_SCHEMA = pa.schema([f for f in EVENTS_SCHEMA if f.name != "region"])


def _write_target(lh: lakebed.Lakehouse, *, rows: int) -> None:
    table = lh.create_table(TARGET, TARGET_SCHEMA, description="benchmark merge target")
    bounds = np.linspace(0, rows, TARGET_APPENDS + 1, dtype=np.int64)
    for index in range(TARGET_APPENDS):
        batch = event_batch(int(bounds[index]), int(bounds[index + 1]), seed=100 + index)
        table.append(batch.drop_columns(["region"]))


def merge_source(target_rows: int, source_rows: int) -> pa.Table:
    """Half updates of existing keys (spread over the whole table), half new keys."""
    updates = source_rows // 2
    rng = np.random.default_rng(7)
    updated_ids = np.sort(rng.choice(target_rows, size=updates, replace=False))
    changed = event_batch(0, updates, seed=8).drop_columns(["region", "id", "ts"])
    inserted = event_batch(target_rows, target_rows + source_rows - updates, seed=9)
    changed = changed.append_column("id", pa.array(updated_ids, pa.int64()))
    changed = changed.append_column(
        "ts", pa.array(TS_START_US + updated_ids * 1_000_000, pa.timestamp("us", tz="UTC"))
    )
    changed = changed.select(TARGET_SCHEMA.names).cast(TARGET_SCHEMA)
    inserted = inserted.drop_columns(["region"]).cast(TARGET_SCHEMA)
    return pa.concat_tables([changed, inserted]).combine_chunks()


def merge_1m_into_5m(settings: Settings) -> Contest:
    target_rows, source_rows = settings.rows // 2, settings.rows // 10
    pristine = cached_project(
        f"merge-n{target_rows}-a{TARGET_APPENDS}",
        functools.partial(_write_target, rows=target_rows),
    )
    source = merge_source(target_rows, source_rows)
    log(f"  merging {source.num_rows:,} rows into {target_rows:,}")
    relative = Path(DEFAULT_STORAGE) / TableName.parse(TARGET).relative_path
    lakebed_copy, limit_copy = scratch_dir("merge-lakebed"), scratch_dir("merge-limit")
    state: dict[str, lakebed.Lakehouse] = {}

    def prepare_lakebed() -> None:
        if "lh" in state:
            state.pop("lh").close()
        fresh_copy(pristine, lakebed_copy)
        state["lh"] = open_project(lakebed_copy)

    def run_lakebed() -> Any:
        return state["lh"].table(TARGET).merge(source, keys=["id"])

    def prepare_limit() -> None:
        fresh_copy(pristine, limit_copy)

    def run_limit() -> Any:
        return (
            DeltaTable(str(limit_copy / relative))
            .merge(source, predicate="t.id = s.id", source_alias="s", target_alias="t")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute()
        )

    def check(outputs: dict[str, Any]) -> str | None:
        expected = target_rows + source_rows - source_rows // 2
        results = {
            role: _summary(folder / relative)
            for role, folder in (("lakebed", lakebed_copy), ("limit", limit_copy))
        }
        (rows, total), (limit_rows, limit_total) = results["lakebed"], results["limit"]
        if rows != expected or limit_rows != expected or not math.isclose(total, limit_total):
            raise AssertionError(f"merge results differ: {results}, expected {expected} rows")
        return f"both merged tables hold {expected:,} rows, same sum(amount)"

    def cleanup() -> None:
        if "lh" in state:
            state.pop("lh").close()
        for folder in (lakebed_copy, limit_copy):
            shutil.rmtree(folder, ignore_errors=True)

    return Contest(
        lakebed=Contender("lakebed", run_lakebed, prepare_lakebed),
        limit=Contender("deltalake merge", run_limit, prepare_limit),
        check=check,
        repeat=5,
        cleanup=cleanup,
    )


def _summary(path: Path) -> tuple[int, float]:
    files = [uri.removeprefix("file://") for uri in DeltaTable(str(path)).file_uris()]
    con = duckdb_connection(1)
    try:
        [row] = con.sql(
            f"SELECT count(*), sum(amount) FROM read_parquet({sql_list(files)})"
        ).fetchall()
    finally:
        con.close()
    return int(row[0]), float(row[1])


FIGURES: dict[str, Figure] = {"merge_1m_into_5m": merge_1m_into_5m}
