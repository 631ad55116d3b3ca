"""Stream figures: a topic of 1M keyed JSON events loaded into bronze, and windowed per key,
on both bus backends (the embedded `local` log and a real Apache Kafka broker).

The events (`--rows / 10`, 1M) are about 120 bytes of JSON each (`id`, `customer` among 1000
keys, which is also the record key, `amount`, `status`, `country`, and `ts` as ISO text),
spread evenly over 1000 seconds of event time whatever their number (16 closed 1-minute
windows per key), in 4 partitions; every record's timestamp is its `ts`.

- `stream_bronze_1m_*`: a `topic:` pipeline into a new bronze table, run until caught up;
  the limit is a raw read of the same topic (Kafka: a confluent-kafka Consumer loop over
  every message, touching each value; local: the bus's own consumer polling everything).
- `stream_window_1m_*`: a 1-minute TUMBLE count/sum per customer into a silver table; same
  limit; on Kafka the peer is Quix Streams (peers/quix_window.py in .venv-peers).

The local topic is generated once into a cached project folder (bench/.data) and copied to a
scratch folder per figure; the Kafka broker is started by the first Kafka figure of a run,
given the topic once, and removed when the run ends.
"""

from __future__ import annotations

import atexit
import json
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

import lakebed
from common import (
    DATA_DIR,
    Contender,
    Contest,
    SelfTimed,
    Settings,
    cached_project,
    fresh_copy,
    log,
    open_project,
    scratch_dir,
)
from lakebed.bus import BEGINNING, Bus, Record, TopicPartition, open_bus
from lakebed.bus.kafka_clients import FETCH_SETTINGS

ROOT = Path(__file__).resolve().parent.parent
PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
QUIX_SCRIPT = Path(__file__).resolve().parent / "peers" / "quix_window.py"
QUIX_LABEL = "quixstreams 3.28 (tumbling_window.agg(Count, Sum).final)"

TOPIC = "events"
PARTITIONS = 4
CUSTOMERS = 1000
T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SPAN_MS = 1_000_000  # event time covered by the events, whatever their number
WINDOW_MS = 60_000
POLL_RECORDS = 200_000  # lakebed's default max_batch_records: the limit polls as much
STATUSES = np.array(["new", "paid", "shipped", "cancelled"])
COUNTRIES = np.array(["DE", "FR", "US", "GB", "ES", "IT"])
# The fetch settings of lakebed's Kafka consumer, so the limit differs only in the per-record
# work: a generous fetch size and a deep prefetch queue.
RAW_CONSUMER_SETTINGS = {
    "enable.auto.commit": False,
    "enable.partition.eof": False,
    **FETCH_SETTINGS,
}
WINDOW_SQL = (
    "SELECT window_start, customer, count(*) AS n, sum(amount) AS total "
    f"FROM TUMBLE(topic.{TOPIC}, ts, INTERVAL '1 minute') GROUP BY ALL"
)


def event_count(settings: Settings) -> int:
    return max(1000, settings.rows // 10)


# -- the events ------------------------------------------------------------------------------


def event_columns(n: int, seed: int = 5) -> dict[str, np.ndarray]:
    """The events' fields as arrays (the same for every caller: the seed is fixed)."""
    rng = np.random.default_rng(seed)
    ids = np.arange(n, dtype=np.int64)
    return {
        "id": ids,
        "customer": rng.integers(0, CUSTOMERS, n),
        "amount": np.round(rng.random(n) * 500, 2),
        "status": rng.choice(STATUSES, n),
        "country": rng.choice(COUNTRIES, n),
        "ts_ms": T0_MS + ids * SPAN_MS // n,
    }


def event_records(n: int, chunk: int = 100_000) -> Iterator[list[Record]]:
    """The events as bus records, `chunk` at a time: JSON value, customer key, ts timestamp."""
    columns = event_columns(n)
    iso = np.char.add(
        np.datetime_as_string(columns["ts_ms"].astype("datetime64[ms]"), unit="ms"), "Z"
    )
    for start in range(0, n, chunk):
        part = slice(start, start + chunk)
        yield [
            Record(
                (
                    f'{{"id": {i}, "customer": "c{c:04d}", "amount": {a:.2f}, '
                    f'"status": "{s}", "country": "{k}", "ts": "{t}"}}'
                ).encode(),
                key=f"c{c:04d}".encode(),
                timestamp_ms=int(ms),
            )
            for i, c, a, s, k, t, ms in zip(
                columns["id"][part].tolist(),
                columns["customer"][part].tolist(),
                columns["amount"][part].tolist(),
                columns["status"][part].tolist(),
                columns["country"][part].tolist(),
                iso[part].tolist(),
                columns["ts_ms"][part].tolist(),
                strict=True,
            )
        ]


def produce_events(bus: Bus, n: int) -> None:
    bus.create_topic(TOPIC, PARTITIONS)
    producer = bus.producer()
    size = 0
    try:
        for records in event_records(n):
            size += sum(len(r.value or b"") for r in records)
            producer.produce(TOPIC, records)
        producer.flush(300.0)
    finally:
        producer.close()
    log(f"  produced {n:,} events to {bus.url} topic {TOPIC} ({size / n:.0f} bytes each)")


def expected_windows(n: int) -> dict[tuple[int, str], tuple[int, float]]:
    """(window start ms, customer) -> (count, sum) of the closed 1-minute windows, in batch:
    those ending by the last event time (the watermark once everything is read)."""
    columns = event_columns(n)
    starts = columns["ts_ms"] // WINDOW_MS * WINDOW_MS
    table = pa.table(
        {"start": starts, "customer": columns["customer"], "amount": columns["amount"]}
    )
    grouped = table.group_by(["start", "customer"]).aggregate(
        [("amount", "count"), ("amount", "sum")]
    )
    last = int(columns["ts_ms"].max())
    return {
        (int(s), f"c{c:04d}"): (int(k), float(t))
        for s, c, k, t in zip(
            grouped.column("start").to_pylist(),
            grouped.column("customer").to_pylist(),
            grouped.column("amount_count").to_pylist(),
            grouped.column("amount_sum").to_pylist(),
            strict=True,
        )
        if s + WINDOW_MS <= last
    }


def compare_windows(
    name: str,
    got: dict[tuple[int, str], tuple[int, float]],
    expected: dict[tuple[int, str], tuple[int, float]],
    *,
    complete: bool,
) -> None:
    """`got` must hold the expected count and sum for each of its windows, and with
    `complete` every expected window."""
    wrong = [
        (key, value, expected.get(key))
        for key, value in got.items()
        if key not in expected
        or value[0] != expected[key][0]
        or abs(value[1] - expected[key][1]) > 1e-6 * max(1.0, abs(expected[key][1]))
    ]
    missing = len(set(expected) - set(got)) if complete else 0
    if wrong or missing:
        raise AssertionError(
            f"{name}: {len(wrong)} windows differ from a batch computation "
            f"(first: {wrong[:3]}), {missing} of {len(expected)} missing"
        )


def _rate(label: str, events: int, seconds: float) -> None:
    log(f"    {label:<7} {events:,} events in {seconds:.3f}s: {events / seconds:,.0f} events/s")


# -- projects --------------------------------------------------------------------------------


def write_pipelines(root: Path, bus_url: str, pipelines: dict[str, Any]) -> None:
    """Point the project's lakebed.yml at `bus_url` with exactly these pipelines."""
    path = root / "lakebed.yml"
    config = yaml.safe_load(path.read_text())
    config["bus"] = bus_url
    config["pipelines"] = pipelines
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def local_project(n: int) -> Path:
    """A cached project whose embedded bus holds the topic of `n` events."""

    def build(lh: lakebed.Lakehouse) -> None:
        produce_events(lh.bus, n)

    return cached_project(f"stream-local-n{n}", build)


_KAFKA: dict[str, Any] = {}


def kafka_broker() -> Any:
    """The run's broker: started on first use, removed when the process exits."""
    broker = _KAFKA.get("broker")
    if broker is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from services.kafka import start_kafka

        log("  starting a Kafka broker for the stream figures")
        broker = start_kafka()
        _KAFKA["broker"] = broker
        atexit.register(broker.remove)
    return broker


def kafka_topic(n: int) -> str:
    """The bootstrap address of the run's broker, its topic holding `n` events."""
    broker = kafka_broker()
    if _KAFKA.get("events") != n:
        bus = open_bus(broker.url, DATA_DIR)
        try:
            if TOPIC in bus.topics():
                bus.delete_topic(TOPIC)
            produce_events(bus, n)
        finally:
            bus.close()
        _KAFKA["events"] = n
    return str(broker.bootstrap)


class Setup:
    """Where a stream figure runs: a scratch project on one backend, the topic filled."""

    def __init__(self, backend: str, figure: str, n: int) -> None:
        self.backend = backend
        self.n = n
        self.root = scratch_dir(f"stream-{figure}-{backend}")
        if backend == "local":
            fresh_copy(local_project(n), self.root)
            self.bus_url = "local"
            self.bootstrap = ""
        else:
            self.bootstrap = kafka_topic(n)
            self.bus_url = f"kafka://{self.bootstrap}"
            if self.root.exists():
                shutil.rmtree(self.root)
            lakebed.init_project(self.root)
        write_pipelines(self.root, self.bus_url, {})

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


# -- contenders ------------------------------------------------------------------------------


class PipelineRounds:
    """lakebed's contender: every round declares a new pipeline (so a new target table and
    no committed progress) in the project and runs it until it has caught up with the
    topic, as `lakebed stream NAME --until-caught-up` does."""

    def __init__(self, setup: Setup, kind: str, config: Callable[[str], dict[str, Any]]) -> None:
        self.setup = setup
        self.kind = kind
        self.config = config
        self.round = 0
        self.lh: lakebed.Lakehouse | None = None
        self.name = ""

    def contender(self) -> Contender:
        return Contender("lakebed", self.run, self.prepare)

    def prepare(self) -> None:
        self._drop_last()
        self.round += 1
        self.name = f"{self.kind}_r{self.round}"
        write_pipelines(self.setup.root, self.setup.bus_url, {self.name: self.config(self.name)})
        self.lh = open_project(self.setup.root)

    def run(self) -> str:
        assert self.lh is not None
        started = time.perf_counter()
        (metrics,) = self.lh.stream([self.name], stop=threading.Event(), until_caught_up=True)
        _rate("lakebed", metrics.events_in, time.perf_counter() - started)
        return str(self.lh.pipelines()[self.name].target)

    def _drop_last(self) -> None:
        if self.lh is None:
            return
        spec = self.lh.pipelines()[self.name]
        for table in (spec.target, spec.quarantine):
            if self.lh.storage.exists(table):
                self.lh.drop_table(table)
        self.lh.close()
        self.lh = None

    def close(self) -> None:
        if self.lh is not None:
            self.lh.close()
            self.lh = None


def local_raw_read(root: Path, n: int) -> Contender:
    """The embedded log's own consumer polling every partition from the beginning."""

    def run() -> tuple[int, int]:
        bus = open_bus("local", root)
        consumer = bus.consumer()
        try:
            consumer.assign({TopicPartition(TOPIC, p): BEGINNING for p in range(PARTITIONS)})
            started = time.perf_counter()
            count = size = 0
            while count < n:
                records = consumer.poll(POLL_RECORDS, timeout=1.0)
                if not records.num_rows:
                    raise AssertionError(f"the topic ended after {count:,} of {n:,} events")
                count += records.num_rows
                size += pc.sum(pc.binary_length(records.column("value"))).as_py()
            _rate("limit", count, time.perf_counter() - started)
            return count, size
        finally:
            consumer.close()
            bus.close()

    return Contender("local bus consumer, poll() until the end", run)


def kafka_raw_read(bootstrap: str, n: int) -> Contender:
    """A plain confluent-kafka Consumer (lakebed's fetch settings) reading every message."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer
    from confluent_kafka import TopicPartition as RawPartition

    def run() -> tuple[int, int]:
        consumer = Consumer(
            {
                **RAW_CONSUMER_SETTINGS,
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-raw-{uuid.uuid4().hex}",
            }
        )
        try:
            consumer.assign([RawPartition(TOPIC, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
            started = time.perf_counter()
            count = size = 0
            while count < n:
                messages = consumer.consume(10_000, 5.0)
                if not messages:
                    raise AssertionError(f"the topic ended after {count:,} of {n:,} events")
                for message in messages:
                    if message.error() is not None:
                        raise AssertionError(f"consume failed: {message.error()}")
                    size += len(message.value() or b"")
                count += len(messages)
            _rate("limit", count, time.perf_counter() - started)
            return count, size
        finally:
            consumer.close()

    return Contender("confluent-kafka Consumer.consume() loop", run)


def quix_window(bootstrap: str, n: int, folder: Path) -> Contender:
    """Quix Streams in .venv-peers: reports its time from its first message to the end of
    its run (group join, topic checks and interpreter start-up not counted)."""
    out = folder / "windows.jsonl"

    def prepare() -> None:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)

    def run() -> SelfTimed:
        if not PEERS_PYTHON.exists():
            raise RuntimeError("the peers' environment is missing: run `make bench`")
        done = subprocess.run(
            [str(PEERS_PYTHON), str(QUIX_SCRIPT), bootstrap, TOPIC, str(n), str(folder)],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        if done.returncode != 0:
            hint = (
                "\n(.venv-peers predates Quix Streams: `rm -rf .venv-peers && make bench`)"
                if "No module named 'quixstreams'" in done.stderr
                else ""
            )
            raise RuntimeError(f"Quix Streams failed: {done.stderr[-3000:]}{hint}")
        report = json.loads(done.stdout.strip().splitlines()[-1])
        _rate("peer", report["messages"], report["seconds"])
        windows = {}
        for line in out.read_text().splitlines():
            key, start, count, total = json.loads(line)
            windows[(int(start), key)] = (int(count), float(total))
        return SelfTimed(report["seconds"], windows)

    return Contender(QUIX_LABEL, run, prepare)


# -- figures ---------------------------------------------------------------------------------


def _lakebed_windows(
    lh: lakebed.Lakehouse, target: str
) -> dict[tuple[int, str], tuple[int, float]]:
    rows = lh.sql(
        f"SELECT epoch_ms(window_start) AS start, customer, n, total FROM {target}"
    ).table.to_pylist()
    windows = {(int(r["start"]), r["customer"]): (int(r["n"]), float(r["total"])) for r in rows}
    if len(windows) != len(rows):
        raise AssertionError(f"{target} holds a window twice")
    return windows


def stream_bronze(backend: str) -> Callable[[Settings], Contest]:
    def figure(settings: Settings) -> Contest:
        n = event_count(settings)
        setup = Setup(backend, "bronze", n)
        rounds = PipelineRounds(
            setup,
            "bronze",
            lambda name: {"topic": TOPIC, "target": f"bronze.{name}", "event_time": "ts"},
        )
        limit = (
            local_raw_read(setup.root, n)
            if backend == "local"
            else kafka_raw_read(setup.bootstrap, n)
        )

        def check(outputs: dict[str, Any]) -> str | None:
            assert rounds.lh is not None
            target = outputs["lakebed"]
            loaded = rounds.lh.sql(
                f"SELECT count(*) AS n, count(DISTINCT id) AS ids, min(_event_time) AS first "
                f"FROM {target}"
            ).dicts()[0]
            read, _ = outputs["limit"]
            if loaded["n"] != n or loaded["ids"] != n or read != n:
                raise AssertionError(f"expected {n:,} events: lakebed {loaded}, limit {read:,}")
            return f"lakebed loaded and the limit read all {n:,} events"

        def cleanup() -> None:
            rounds.close()
            setup.cleanup()

        return Contest(
            lakebed=rounds.contender(), limit=limit, check=check, repeat=3, cleanup=cleanup
        )

    return figure


def stream_window(backend: str) -> Callable[[Settings], Contest]:
    def figure(settings: Settings) -> Contest:
        n = event_count(settings)
        setup = Setup(backend, "window", n)
        rounds = PipelineRounds(
            setup, "window", lambda name: {"sql": WINDOW_SQL, "target": f"silver.{name}"}
        )
        if backend == "local":
            limit = local_raw_read(setup.root, n)
            peer = None
        else:
            limit = kafka_raw_read(setup.bootstrap, n)
            peer = quix_window(setup.bootstrap, n, scratch_dir("stream-window-quix"))

        def check(outputs: dict[str, Any]) -> str | None:
            assert rounds.lh is not None
            expected = expected_windows(n)
            compare_windows(
                "lakebed",
                _lakebed_windows(rounds.lh, outputs["lakebed"]),
                expected,
                complete=True,
            )
            read, _ = outputs["limit"]
            if read != n:
                raise AssertionError(f"the limit read {read:,} of {n:,} events")
            note = f"lakebed's {len(expected):,} closed windows match a batch computation"
            if "peer" in outputs:
                quix = outputs["peer"]
                # Quix closes a window when its partition's event time passes its end; it
                # emits none of the last minute (as lakebed), so its windows must match too.
                compare_windows("Quix Streams", quix, expected, complete=True)
                note += f", and so do Quix Streams' {len(quix):,}"
            return note

        def cleanup() -> None:
            rounds.close()
            setup.cleanup()
            if peer is not None:
                shutil.rmtree(scratch_dir("stream-window-quix"), ignore_errors=True)

        return Contest(
            lakebed=rounds.contender(),
            limit=limit,
            peer=peer,
            check=check,
            repeat=3,
            cleanup=cleanup,
        )

    return figure


FIGURES = {
    "stream_bronze_1m_local": stream_bronze("local"),
    "stream_window_1m_local": stream_window("local"),
    "stream_bronze_1m_kafka": stream_bronze("kafka"),
    "stream_window_1m_kafka": stream_window("kafka"),
}
