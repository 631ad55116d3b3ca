"""Shared benchmark machinery: contests, interleaved timing, JSON lines, cached data.

A figure is a function `(Settings) -> Contest`. A contest names what lakebed runs, the limit
(the same work done directly, the floor lakebed can approach) and optionally a peer (what a
user would do without lakebed). `measure` warms every contender up once, then runs them
interleaved in a rotating order and reports the median of each.
"""

from __future__ import annotations

import gc
import json
import math
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

import lakebed

BENCH_DIR = Path(__file__).resolve().parent
DATA_DIR = BENCH_DIR / ".data"
DEFAULT_ROWS = 10_000_000
# Bump when the generated data changes shape, so cached folders are not reused.
DATA_VERSION = 1
_COMPLETE = ".complete"


@dataclass(frozen=True)
class Settings:
    """What the command line chose: the scale of the data and the timed repetitions."""

    rows: int = DEFAULT_ROWS
    repeat: int | None = None  # None: each contest's own default


@dataclass
class Contender:
    """One way of doing the work: `run` is timed; `prepare` runs untimed before each run."""

    label: str
    run: Callable[[], Any]
    prepare: Callable[[], None] | None = None


@dataclass
class Contest:
    """The contenders of one figure, and a check that they computed the same answer."""

    lakebed: Contender
    limit: Contender
    peer: Contender | None = None
    # Receives the warm-up outputs by role; raises on a mismatch, may return a note to print.
    check: Callable[[dict[str, Any]], str | None] | None = None
    repeat: int = 5
    cleanup: Callable[[], None] | None = None

    @property
    def contenders(self) -> dict[str, Contender]:
        roles = {"lakebed": self.lakebed, "limit": self.limit}
        if self.peer is not None:
            roles["peer"] = self.peer
        return roles


Figure = Callable[[Settings], Contest]


def log(message: str) -> None:
    """Progress for humans: stderr, so stdout holds only the JSON lines."""
    print(message, file=sys.stderr, flush=True)


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


@dataclass(frozen=True)
class SelfTimed:
    """Returned by a contender that times itself (a peer run in its own interpreter, whose
    start-up and imports are not the work being compared)."""

    seconds: float
    output: Any = None


def _timed(contender: Contender) -> tuple[float, Any]:
    if contender.prepare is not None:
        contender.prepare()
    gc.collect()
    gc.disable()  # a collection inside the timed region is noise, not the code under test
    try:
        start = time.perf_counter()
        output = contender.run()
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    if isinstance(output, SelfTimed):
        return output.seconds, output.output
    return elapsed, output


def measure(name: str, contest: Contest, repeat: int) -> dict[str, Any]:
    """Warm up each contender once, then time `repeat` interleaved rounds; medians win."""
    roles = contest.contenders
    outputs: dict[str, Any] = {}
    for role, contender in roles.items():
        elapsed, outputs[role] = _timed(contender)
        log(f"  warm-up {role:<7} {elapsed:8.3f}s")
    if contest.check is not None:
        note = contest.check(outputs)
        if note:
            log(f"  {note}")
    del outputs
    times: dict[str, list[float]] = {role: [] for role in roles}
    order = list(roles)
    for round_ in range(repeat):
        # Rotate who goes first so a slow moment on a shared machine hits everyone alike.
        shift = round_ % len(order)
        for role in order[shift:] + order[:shift]:
            elapsed, _ = _timed(roles[role])
            times[role].append(elapsed)
        log(
            f"  round {round_ + 1}/{repeat}: "
            + "  ".join(f"{role} {times[role][-1]:.3f}s" for role in order)
        )
    medians = {role: statistics.median(values) for role, values in times.items()}
    log(
        "  medians: "
        + "  ".join(f"{role} {medians[role]:.4f}s" for role in order)
        + f"  (lakebed - limit = {1000 * (medians['lakebed'] - medians['limit']):+.1f} ms)"
    )
    record: dict[str, Any] = {
        "name": name,
        "lakebed_s": _round(medians["lakebed"]),
        "limit_s": _round(medians["limit"]),
        "ratio_to_limit": _round(medians["lakebed"] / medians["limit"], 3),
    }
    if contest.peer is not None:
        record["peer"] = contest.peer.label
        record["peer_s"] = _round(medians["peer"])
        record["ratio_to_peer"] = _round(medians["lakebed"] / medians["peer"], 3)
    return record


def _round(value: float, digits: int = 4) -> float:
    if value == 0 or not math.isfinite(value):
        return value
    # Keep four significant digits for fast figures, four decimals for slow ones.
    scale = max(digits, digits - 1 - math.floor(math.log10(abs(value))))
    return round(value, scale)


# -- engines -------------------------------------------------------------------------------


def duckdb_connection(threads: int) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB with the same thread count lakebed's engine uses."""
    con = duckdb.connect(":memory:")
    con.execute(f"SET threads = {int(threads)}")
    return con


def lakebed_threads(lh: lakebed.Lakehouse) -> int:
    return int(lh.sql("SELECT current_setting('threads') AS threads").scalar())


def sql_list(paths: list[str]) -> str:
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


# -- cached data -----------------------------------------------------------------------------


def open_project(path: Path) -> lakebed.Lakehouse:
    """Open a lakebed project, retrying while another process holds the metastore busy."""
    for attempt in range(5):
        try:
            return lakebed.open(path)
        except lakebed.LakebedError as exc:
            if attempt == 4 or "metastore" not in str(exc).lower():
                raise
            log(f"  lakebed.open failed ({exc}); retrying in 5s")
            time.sleep(5)
    raise AssertionError("unreachable")


def cached_project(key: str, build: Callable[[lakebed.Lakehouse], None]) -> Path:
    """A lakebed project folder under bench/.data named by `key`, built once by `build`.

    A folder without its completion marker is a build that died midway: it is rebuilt.
    """
    root = DATA_DIR / f"{key}-v{DATA_VERSION}"
    if not (root / _COMPLETE).exists():
        if root.exists():
            shutil.rmtree(root)
        log(f"  generating {root.name} (cached for the next run)")
        start = time.perf_counter()
        lakebed.init_project(root, name=key)
        lh = open_project(root)
        try:
            build(lh)
        finally:
            lh.close()
        (root / _COMPLETE).write_text(f"built in {time.perf_counter() - start:.1f}s\n")
        log(f"  generated {root.name} in {time.perf_counter() - start:.1f}s")
    return root


def fresh_copy(source: Path, target: Path) -> None:
    """Replace `target` with a copy of `source` (untimed set-up for writes)."""
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, target)


def scratch_dir(name: str) -> Path:
    path = DATA_DIR / "scratch" / f"{name}-{os.getpid()}"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
