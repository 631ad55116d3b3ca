"""Stream pipelines on a real Kafka broker that is stopped and restarted mid-stream: the
pipeline waits the outage out and resumes from its last commit, losing and repeating
nothing."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from lakebed.bus import Record
from process.streams import event, stream_project

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

EVENTS_PER_WAVE = 3_000
WAVES = 4


def test_broker_restart_mid_stream_loses_and_repeats_nothing(
    tmp_path: Path, kafka_broker: Any
) -> None:
    topic = f"restart_{uuid.uuid4().hex[:8]}"
    window_sql = (
        "SELECT window_start, count(*) AS n FROM "
        f"TUMBLE(topic.{topic}, ts, INTERVAL '10 seconds') GROUP BY ALL"
    )
    lh = stream_project(
        tmp_path / "project",
        {
            "raw": {
                "topic": topic,
                "target": "bronze.events",
                "event_time": "ts",
                "max_batch_records": 500,
            },
            # A restart delays the partitions' deliveries unevenly: one partition's share
            # of a wave can reach the broker seconds after its neighbour's, whose events
            # have moved event time on. Lateness allowed keeps this test about what a
            # restart loses or repeats; windows still close while the waves are read
            # (they span two minutes), and the last event closes the rest.
            "counts": {
                "sql": window_sql,
                "target": "gold.counts",
                "max_batch_records": 500,
                "allowed_lateness": "30 seconds",
            },
        },
        kafka_broker.url,
    )
    lh.bus.create_topic(topic, 2)
    stop = threading.Event()
    failures: list[BaseException] = []

    def work() -> None:
        try:
            lh.stream(stop=stop)
        except BaseException as exc:
            failures.append(exc)

    runner = threading.Thread(target=work)
    runner.start()
    try:
        sent = 0
        for wave in range(WAVES):
            batch = [event(sent + i, (sent + i) * 0.01) for i in range(EVENTS_PER_WAVE)]
            lh.produce(topic, batch, key="customer")
            sent += len(batch)
            time.sleep(0.5)
            if wave in (1, 2):  # mid-stream: the pipelines are reading and committing
                kafka_broker.restart() if wave == 1 else _kill_and_start(kafka_broker)
        # One last event far ahead closes every window of the waves.
        lh.produce(topic, [Record(b'{"id": -1, "ts": "2026-11-26T13:00:00+00:00"}')])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if _count(lh, "bronze.events") == sent + 1 and _count(lh, "gold.counts") > 0:
                windows = lh.sql("SELECT sum(n) FROM gold.counts").scalar()
                if windows == sent:
                    break
            time.sleep(0.5)
        # Each pipeline's state while it still runs (retrying with its error, lag and
        # position per partition), for a shortfall to say where it stood.
        waited = lh.stream_status()
    finally:
        stop.set()
        runner.join(120)
    assert not failures, failures
    totals = lh.sql("SELECT count(*) AS n, count(DISTINCT id) AS ids FROM bronze.events").dicts()[0]
    assert totals == {"n": sent + 1, "ids": sent + 1}, waited
    quarantined = (
        lh.sql("SELECT reason, count(*) AS n FROM quarantine.counts GROUP BY 1").dicts()
        if _count(lh, "quarantine.counts")
        else []
    )
    status = lh.stream_status()
    assert _count(lh, "gold.counts") > 0, (waited, status)
    assert lh.sql("SELECT sum(n) FROM gold.counts").scalar() == sent, (quarantined, status)
    assert lh.sql("SELECT count(*) FROM gold.counts").scalar() == sent // 1000
    lh.close()


def _kill_and_start(broker: Any) -> None:
    broker.kill()
    time.sleep(1.0)
    broker.start()


def _count(lh: Any, table: str) -> int:
    if table not in [t.name for t in lh.tables()]:
        return 0
    return int(lh.sql(f"SELECT count(*) FROM {table}").scalar())
