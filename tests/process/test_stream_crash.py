"""Crash test per bus backend: `kill -9` a real `lakebed stream` process at random moments,
at least 10 times, restarting it each time; then bronze holds every event exactly once and
the window aggregates equal one batch computation over the same events."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import lakebed
from process.streams import T0, event, stream_project

pytestmark = pytest.mark.slow

KILLS = 12
EVENTS = 40_000
LAKEBED = [sys.executable, "-m", "lakebed.cli"]


@pytest.fixture(params=["local", "kafka"])
def bus_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "local":
        yield "local"
    else:
        broker = request.getfixturevalue("kafka_broker")
        yield f"kafka://{broker.bootstrap}"


def _count(root: Path, table: str) -> int:
    with lakebed.open(root) as lh:
        if table not in [t.name for t in lh.tables()]:
            return 0
        return int(lh.sql(f"SELECT count(*) FROM {table}").scalar())


def _wait_for_progress(root: Path, before: int, process: subprocess.Popen[bytes]) -> None:
    """Until the stream process has loaded events beyond `before` (or had nothing left)."""
    deadline = time.monotonic() + 120
    while before < EVENTS and _count(root, "bronze.orders") <= before:
        if process.poll() is not None:
            error = process.stderr.read().decode() if process.stderr else ""
            raise AssertionError(f"lakebed stream exited: {error}")
        assert time.monotonic() < deadline, "lakebed stream loaded nothing in 2 minutes"
        time.sleep(0.05)


def test_kill_9_at_random_points_loses_and_repeats_nothing(tmp_path: Path, bus_url: str) -> None:
    topic = f"orders_{uuid.uuid4().hex[:8]}"
    window_sql = (
        "SELECT window_start, count(*) AS n, sum(amount) AS total "
        f"FROM TUMBLE(topic.{topic}, ts, INTERVAL '20 seconds') GROUP BY ALL"
    )
    pipelines: dict[str, Any] = {
        "raw": {
            "topic": topic,
            "target": "bronze.orders",
            "event_time": "ts",
            "max_batch_records": 200,
        },
        "windows": {
            "sql": window_sql,
            "target": "gold.windows",
            "allowed_lateness": "30 seconds",
            "max_batch_records": 400,
            "commit_interval": 0,
        },
    }
    root = tmp_path / "project"
    rng = random.Random(5)
    events = [event(i, i * 0.03 + rng.uniform(-5, 5)) for i in range(EVENTS)]
    with stream_project(root, pipelines, bus_url) as lh:
        lh.bus.create_topic(topic, 3)
        lh.produce(topic, events, key="customer")

    env = {**os.environ, "LAKEBED_PROJECT": str(root)}
    partial = 0
    for _ in range(KILLS):
        before = _count(root, "bronze.orders")
        process = subprocess.Popen(
            [*LAKEBED, "stream"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        # Kill at a random moment once it is at work (a loaded machine may take seconds to
        # start the process): mid-batch, mid-commit, between commits.
        _wait_for_progress(root, before, process)
        time.sleep(rng.uniform(0.0, 1.2))
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        loaded = _count(root, "bronze.orders")
        partial += 0 < loaded < EVENTS
    assert partial >= 3, "the kills should land while the pipelines were working"

    finish = subprocess.run(
        [*LAKEBED, "stream", "--until-caught-up"], env=env, capture_output=True, timeout=300
    )
    assert finish.returncode == 0, finish.stderr.decode()

    with lakebed.open(root) as lh:
        bronze = lh.sql(
            "SELECT count(*) AS n, count(DISTINCT id) AS ids, "
            "count(DISTINCT (_partition, _offset)) AS places FROM bronze.orders"
        ).dicts()[0]
        assert bronze == {"n": EVENTS, "ids": EVENTS, "places": EVENTS}
        watermark = max(e["ts"] for e in events)
        reference = lh.sql(
            f"""
            SELECT time_bucket(INTERVAL '20 seconds', CAST(ts AS TIMESTAMPTZ),
                               TIMESTAMPTZ '{T0.isoformat()}') AS window_start,
                   count(*) AS n, sum(amount) AS total
            FROM ev GROUP BY 1
            HAVING window_start + INTERVAL '20 seconds'
                   <= CAST('{watermark}' AS TIMESTAMPTZ) - INTERVAL '30 seconds'
            ORDER BY 1
            """,
            relations={"ev": pa.Table.from_pylist(events)},
        ).rows()
        streamed = lh.sql("SELECT window_start, n, total FROM gold.windows ORDER BY 1").rows()
        assert len(reference) > 50
        assert [(s, n, round(t, 6)) for s, n, t in streamed] == [
            (s, n, round(t, 6)) for s, n, t in reference
        ]
        assert "quarantine.windows" not in [t.name for t in lh.tables()]
