"""End-to-end latency: events produced at 10,000 a second until visible in a gold table.

Three processes, as in production: a producer (this file, `produce` mode) sends keyed JSON
events carrying their send time at a steady 10k events/s for 20 s (`--rows` scales the
duration, 5 s at least) to a 4-partition topic; `lakebed stream latency` (the CLI, its own
process) runs a projection/filter SQL pipeline into `gold.latency_events` with
`max_batch_wait: 50 ms`; and the bench polls that table with `lh.sql` every 50 ms, a fresh
snapshot each time, noting when each event id is first returned. An event's latency is the
time that poll returned minus its send time (the same machine's clock).

These figures time no contenders: `measure_latency` returns the JSON record itself
(`lakebed_s` is the p99 latency in seconds; see bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

import lakebed
from common import DEFAULT_ROWS, Settings, log, open_project, scratch_dir
from lakebed.bus import Record
from lakebed.errors import LakebedError
from stream import PARTITIONS, kafka_broker, write_pipelines

RATE = 10_000  # events per second
SECONDS = 20.0
POLL_SECONDS = 0.05
TICK_SECONDS = 0.01  # the producer sends what is due every 10 ms
GOAL_SECONDS = 2.0
PIPELINE = "latency"
TARGET = "gold.latency_events"
WARM_UP_EVENTS = 100


def _pipeline(topic: str) -> dict[str, Any]:
    return {
        "sql": f"SELECT id, customer, amount, sent FROM topic.{topic} WHERE amount >= 0",
        "target": TARGET,
        "max_batch_wait": "50 ms",
    }


def _event(i: int, sent: float) -> Record:
    customer = f"c{i % 1000:04d}"
    value = f'{{"id": {i}, "customer": "{customer}", "amount": {i % 50_000 / 100}, "sent": {sent}}}'
    return Record(value.encode(), key=customer.encode())


# -- the producer process ------------------------------------------------------------------


def produce(root: Path, topic: str, rate: int, seconds: float) -> None:
    """Send `rate` events a second for `seconds`, each flushed within its 10 ms tick;
    prints {"events", "seconds"} (the rate achieved)."""
    lh = lakebed.open(root)
    producer = lh.bus.producer()
    total = int(rate * seconds)
    sent = 0
    started = time.time()
    try:
        while sent < total:
            now = time.time()
            due = min(total, int((now - started) * rate) + 1)
            if due > sent:
                producer.produce(topic, [_event(i, now) for i in range(sent, due)])
                producer.flush(30.0)
                sent = due
            next_tick = started + (sent / rate) + TICK_SECONDS
            time.sleep(max(0.0, min(TICK_SECONDS, next_tick - time.time())))
    finally:
        producer.close()
        lh.close()
    print(json.dumps({"events": sent, "seconds": time.time() - started}))


# -- the figure ----------------------------------------------------------------------------


class _Visibility:
    """When each event id first appeared in the gold table, polled with fresh snapshots."""

    def __init__(self, lh: lakebed.Lakehouse, total: int) -> None:
        self.lh = lh
        self.total = total
        self.visible = np.full(total, np.nan)
        self.sent = np.full(total, np.nan)
        self.low = 0  # every id below is seen
        self.polls = 0

    def poll(self) -> None:
        try:
            table = self.lh.sql(f"SELECT id, sent FROM {TARGET} WHERE id >= {self.low}").table
        except LakebedError:
            return  # not created yet
        now = time.time()
        self.polls += 1
        ids = table.column("id").to_numpy()
        new = np.isnan(self.visible[ids])
        self.visible[ids[new]] = now
        self.sent[ids[new]] = table.column("sent").to_numpy()[new]
        unseen = np.flatnonzero(np.isnan(self.visible[self.low :]))
        self.low = self.total if not len(unseen) else self.low + int(unseen[0])

    @property
    def done(self) -> bool:
        return self.low >= self.total


def _check_running(pipeline: subprocess.Popen[bytes], root: Path) -> None:
    if pipeline.poll() is not None:
        log_file = root / "stream.log"
        raise RuntimeError(
            f"`lakebed stream` exited with {pipeline.returncode}: "
            f"{log_file.read_text(errors='replace')[-2000:]}"
        )


def _wait_warm(
    lh: lakebed.Lakehouse, pipeline: subprocess.Popen[bytes], root: Path, timeout: float
) -> None:
    """Until the warm-up events (negative ids) are in the gold table."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _check_running(pipeline, root)
        try:
            seen = lh.sql(f"SELECT count(*) FROM {TARGET} WHERE id < 0").scalar()
        except LakebedError:
            seen = 0
        if seen >= WARM_UP_EVENTS:
            return
        time.sleep(POLL_SECONDS)
    raise RuntimeError(f"the warm-up events did not reach {TARGET} within {timeout:.0f} s")


def measure_latency(backend: str, settings: Settings) -> dict[str, Any]:
    seconds = max(5.0, SECONDS * settings.rows / DEFAULT_ROWS)
    total = int(RATE * seconds)
    root = scratch_dir(f"stream-latency-{backend}")
    if root.exists():
        shutil.rmtree(root)
    lakebed.init_project(root)
    bus_url = "local" if backend == "local" else kafka_broker().url
    topic = f"latency_{uuid.uuid4().hex[:8]}"
    write_pipelines(root, bus_url, {PIPELINE: _pipeline(topic)})
    lh = open_project(root)
    lh.bus.create_topic(topic, PARTITIONS)
    here = Path(__file__).resolve().parent
    lakebed_cli = Path(sys.executable).parent / "lakebed"
    pipeline_log = (root / "stream.log").open("wb")
    pipeline = subprocess.Popen(
        [str(lakebed_cli), "stream", PIPELINE, "--project", str(root)],
        stdout=pipeline_log,
        stderr=subprocess.STDOUT,
    )
    producer = None
    try:
        lh.produce(topic, [_event(-1 - i, time.time()) for i in range(WARM_UP_EVENTS)])
        _wait_warm(lh, pipeline, root, 120.0)
        log(f"  pipeline warm; producing {RATE:,} events/s for {seconds:.0f} s")
        producer = subprocess.Popen(
            [
                sys.executable,
                str(here / "stream_latency.py"),
                "produce",
                str(root),
                topic,
                str(RATE),
                str(seconds),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        seen = _Visibility(lh, total)
        deadline = time.monotonic() + seconds + 60.0
        while not seen.done and time.monotonic() < deadline:
            _check_running(pipeline, root)
            started = time.monotonic()
            seen.poll()
            time.sleep(max(0.0, POLL_SECONDS - (time.monotonic() - started)))
        out, err = producer.communicate(timeout=60)
        if producer.returncode != 0:
            raise RuntimeError(f"the producer failed: {err.decode()[-2000:]}")
        produced = json.loads(out.decode().strip().splitlines()[-1])
        if not seen.done:
            missing = int(np.isnan(seen.visible).sum())
            raise AssertionError(f"{missing:,} of {total:,} events never reached {TARGET}")
    finally:
        if producer is not None and producer.poll() is None:
            producer.kill()
        pipeline.send_signal(signal.SIGTERM)
        try:
            pipeline.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pipeline.kill()
        pipeline_log.close()
        lh.close()
        shutil.rmtree(root, ignore_errors=True)
    latency = seen.visible - seen.sent
    p50, p90, p99 = (float(np.percentile(latency, q)) for q in (50, 90, 99))
    rate = produced["events"] / produced["seconds"]
    log(
        f"  {total:,} events at {rate:,.0f}/s; {seen.polls} polls of {TARGET}; latency "
        f"p50 {p50:.3f}s  p90 {p90:.3f}s  p99 {p99:.3f}s  max {latency.max():.3f}s"
    )
    return {
        "name": f"stream_latency_p99_{backend}",
        "lakebed_s": round(p99, 3),
        "p50_s": round(p50, 3),
        "p90_s": round(p90, 3),
        "max_s": round(float(latency.max()), 3),
        "events": total,
        "events_per_s": round(rate),
        "goal_s": GOAL_SECONDS,
    }


FIGURES = {
    "stream_latency_p99_local": lambda settings: measure_latency("local", settings),
    "stream_latency_p99_kafka": lambda settings: measure_latency("kafka", settings),
}


def _main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="the latency figure's producer process")
    parser.add_argument("mode", choices=["produce"])
    parser.add_argument("root", type=Path)
    parser.add_argument("topic")
    parser.add_argument("rate", type=int)
    parser.add_argument("seconds", type=float)
    args = parser.parse_args(argv)
    produce(args.root, args.topic, args.rate, args.seconds)


if __name__ == "__main__":
    _main(sys.argv[1:])
