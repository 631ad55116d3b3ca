"""The Kafka backend against a real broker: what the shared contract tests cannot see.

Placement by key as Kafka's Java client does it, idempotent batches on the broker's disk, no
loss or duplicate across a broker crash, consumer group offsets, and a bounded failure when no
broker answers. The same-semantics checks for both backends live in test_contract.py.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from confluent_kafka import KafkaError
from confluent_kafka.admin import ClusterMetadata, TopicMetadata  # type: ignore[attr-defined]

from lakebed.bus import BEGINNING, END, RECORD_SCHEMA, Record, TopicPartition, open_bus
from lakebed.bus.base import partition_for
from lakebed.bus.kafka import KafkaBus, KafkaConsumer
from lakebed.errors import BusError, BusUnavailableError, Retryable, TopicNotFoundError
from services.kafka import KafkaBroker

pytestmark = pytest.mark.kafka


@pytest.fixture
def bus(kafka_broker: KafkaBroker) -> Iterator[KafkaBus]:
    opened = open_bus(kafka_broker.url, Path("."))
    assert isinstance(opened, KafkaBus)
    yield opened
    opened.close()


@pytest.fixture
def topic() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def read_all(consumer: KafkaConsumer, expected: int, timeout: float = 30.0) -> pa.Table:
    """Poll until `expected` records arrived (or fail after `timeout`)."""
    tables, count = [], 0
    deadline = time.monotonic() + timeout
    while count < expected:
        assert time.monotonic() < deadline, f"read {count} of {expected} records"
        table = consumer.poll(10_000, timeout=0.5)
        tables.append(table)
        count += table.num_rows
    return pa.concat_tables(tables) if tables else RECORD_SCHEMA.empty_table()


def read_topic(bus: KafkaBus, topic: str) -> pa.Table:
    ends = bus.end_offsets(topic)
    consumer = bus.consumer()
    try:
        consumer.assign({TopicPartition(topic, p): BEGINNING for p in ends})
        return read_all(consumer, sum(ends.values()) - sum(bus.start_offsets(topic).values()))
    finally:
        consumer.close()


def test_keyed_records_land_where_partition_for_puts_them(bus: KafkaBus, topic: str) -> None:
    bus.create_topic(topic, partitions=4)
    records = [
        Record(value=f"v{i}".encode(), key=f"customer-{i % 97}".encode(), timestamp_ms=1_000 + i)
        for i in range(2_000)
    ]
    producer = bus.producer()
    producer.produce(topic, records)
    producer.flush(30)
    producer.close()

    table = read_topic(bus, topic)
    assert table.schema == RECORD_SCHEMA
    rows = table.to_pylist()
    assert sorted(row["value"] for row in rows) == sorted(r.value for r in records)
    millis = table.column("timestamp").cast(pa.int64()).to_pylist()
    for row, ms in zip(rows, millis, strict=True):
        assert row["topic"] == topic
        assert row["partition"] == partition_for(row["key"], 4), row
        assert ms == 1_000 + int(row["value"][1:])
    # Per partition: offsets 0..n-1 in order, records in the order they were produced.
    ends = bus.end_offsets(topic)
    for partition, end in ends.items():
        mine = [row for row in rows if row["partition"] == partition]
        assert [row["offset"] for row in mine] == list(range(end))
        produced = [r.value for r in records if partition_for(r.key or b"", 4) == partition]
        assert [row["value"] for row in mine] == produced
    assert sum(ends.values()) == len(records)


def test_explicit_partition_and_position_tracking(bus: KafkaBus, topic: str) -> None:
    bus.create_topic(topic, partitions=3)
    producer = bus.producer()
    producer.produce(topic, [Record(value=b"x", partition=2) for _ in range(10)])
    producer.flush(30)
    producer.close()
    assert bus.end_offsets(topic) == {0: 0, 1: 0, 2: 10}

    consumer = bus.consumer()
    try:
        consumer.assign({TopicPartition(topic, 2): BEGINNING, TopicPartition(topic, 0): END})
        # BEGINNING / END resolve to real offsets right away, before any record is read.
        assert consumer.position() == {TopicPartition(topic, 2): 0, TopicPartition(topic, 0): 0}
        first = consumer.poll(max_records=4, timeout=10)
        assert first.column("offset").to_pylist() == [0, 1, 2, 3]
        assert consumer.position()[TopicPartition(topic, 2)] == 4
        consumer.seek(TopicPartition(topic, 2), 8)
        rest = read_all(consumer, 2)
        assert rest.column("offset").to_pylist() == [8, 9]
        assert consumer.position()[TopicPartition(topic, 2)] == 10
        assert sorted(consumer.assignment()) == [TopicPartition(topic, 0), TopicPartition(topic, 2)]
    finally:
        consumer.close()


def test_batches_on_the_broker_come_from_an_idempotent_producer(
    bus: KafkaBus, topic: str, kafka_broker: KafkaBroker
) -> None:
    bus.create_topic(topic, partitions=1)
    producer = bus.producer()
    producer.produce(topic, [Record(value=b"%d" % i) for i in range(500)])
    producer.flush(30)
    producer.close()

    segment = kafka_broker.data_dir / f"{topic}-0" / "00000000000000000000.log"
    batches = list(_record_batches(segment.read_bytes()))
    assert sum(batch["records"] for batch in batches) == 500
    producer_ids = {batch["producer_id"] for batch in batches}
    assert len(producer_ids) == 1
    assert min(producer_ids) >= 0  # -1 without idempotence
    # Sequence numbers continue from batch to batch: the broker can drop retried duplicates.
    expected_sequence = 0
    for batch in batches:
        assert batch["base_sequence"] == expected_sequence
        expected_sequence += batch["records"]


def _record_batches(data: bytes) -> Iterator[dict[str, int]]:
    """The headers of Kafka record batches (magic v2) in a log segment file."""
    position = 0
    while position + 61 <= len(data):
        base_offset, length = struct.unpack_from(">qi", data, position)
        if length == 0:
            break  # preallocated tail
        magic = data[position + 16]
        assert magic == 2, f"record batch at {position} has magic {magic}"
        producer_id, _epoch, base_sequence, records = struct.unpack_from(
            ">qhii", data, position + 43
        )
        yield {
            "base_offset": base_offset,
            "producer_id": producer_id,
            "base_sequence": base_sequence,
            "records": records,
        }
        position += 12 + length


def test_broker_crash_mid_produce_loses_and_duplicates_nothing(
    bus: KafkaBus, topic: str, kafka_broker: KafkaBroker
) -> None:
    bus.create_topic(topic, partitions=2)
    producer = bus.producer()
    acknowledged = [Record(value=b"a%d" % i, key=b"k%d" % (i % 10)) for i in range(5_000)]
    producer.produce(topic, acknowledged)
    producer.flush(30)

    in_flight = [Record(value=b"b%d" % i, key=b"k%d" % (i % 10)) for i in range(50_000)]
    killer = threading.Timer(0.05, kafka_broker.kill)
    try:
        killer.start()
        # Produce in slices so the kill lands while batches are on the wire.
        for start in range(0, len(in_flight), 1_000):
            producer.produce(topic, in_flight[start : start + 1_000])
            time.sleep(0.002)
        killer.join()
        assert not kafka_broker.is_running()
    finally:
        killer.join()
        kafka_broker.start()

    producer.flush(60)  # librdkafka resends what the dead broker never acknowledged
    producer.close()

    values = read_topic(bus, topic).column("value").to_pylist()
    assert len(values) == len(set(values)), "the idempotent producer wrote duplicates"
    assert sorted(values) == sorted(r.value for r in acknowledged + in_flight)


def test_unreachable_broker_fails_fast_naming_the_address() -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    bus = KafkaBus(f"kafka://127.0.0.1:{port}", timeout=2.0)

    started = time.monotonic()
    with pytest.raises(BusUnavailableError, match=f"127.0.0.1:{port}") as raised:
        bus.topics()
    assert time.monotonic() - started < 10
    assert isinstance(raised.value, Retryable)
    assert "running" in (raised.value.hint or "")

    producer = bus.producer()
    producer.produce("orders", [Record(value=b"x")])
    with pytest.raises(BusUnavailableError, match=f"1 records .* 127.0.0.1:{port}"):
        producer.flush(1.0)


def test_bad_url_is_a_config_error() -> None:
    from lakebed.errors import ConfigError

    with pytest.raises(ConfigError, match="kafka://host:port"):
        open_bus("kafka://nohost", Path("."))


def test_offsets_for_time(bus: KafkaBus, topic: str) -> None:
    bus.create_topic(topic, partitions=2)
    producer = bus.producer()
    producer.produce(
        topic,
        [
            Record(value=b"%d" % i, partition=i % 2, timestamp_ms=10_000 * (i + 1))
            for i in range(10)
        ],
    )
    producer.flush(30)
    producer.close()
    # Partition 0 holds timestamps 10k, 30k, ..., 90k; partition 1 holds 20k, 40k, ..., 100k.
    assert bus.offsets_for_time(topic, 0) == {0: 0, 1: 0}
    assert bus.offsets_for_time(topic, 30_000) == {0: 1, 1: 1}
    assert bus.offsets_for_time(topic, 35_000) == {0: 2, 1: 1}
    assert bus.offsets_for_time(topic, 95_000) == {0: 5, 1: 4}
    assert bus.offsets_for_time(topic, 10**13) == bus.end_offsets(topic) == {0: 5, 1: 5}


def test_group_offsets_carry_over_to_the_next_consumer(bus: KafkaBus, topic: str) -> None:
    bus.create_topic(topic, partitions=3)
    producer = bus.producer()
    producer.produce(topic, [Record(value=b"%d" % i, key=b"%d" % i) for i in range(3_000)])
    producer.flush(30)
    producer.close()
    group = f"group-{topic}"
    partitions = [TopicPartition(topic, p) for p in range(3)]

    first = bus.consumer(group)
    first.subscribe([topic])
    seen = first.poll(max_records=500, timeout=0.5)
    deadline = time.monotonic() + 30
    while seen.num_rows == 0:  # the first polls join the group
        assert time.monotonic() < deadline, "the group never handed out a partition"
        seen = first.poll(max_records=500, timeout=0.5)
    first.commit()
    committed = first.position()
    first.close()
    assert sorted(committed) == partitions
    assert sum(committed.values()) == seen.num_rows < 3_000

    second = bus.consumer(group)
    try:
        assert second.committed(partitions) == committed
        second.subscribe([topic])
        rest = read_all(second, 3_000 - seen.num_rows)
        both = seen.column("value").to_pylist() + rest.column("value").to_pylist()
        assert sorted(both) == sorted(b"%d" % i for i in range(3_000))
        assert second.committed([TopicPartition("never-committed", 0)]) == {
            TopicPartition("never-committed", 0): None
        }
    finally:
        second.close()


def test_topic_admin(bus: KafkaBus, topic: str) -> None:
    created = bus.create_topic(topic, partitions=2, retention_ms=3_600_000)
    assert bus.create_topic(topic, partitions=2) == created  # same count: a no-op
    with pytest.raises(BusError, match="already exists with 2 partitions, not 3"):
        bus.create_topic(topic, partitions=3)
    info = bus.topics()[topic]
    assert (info.partitions, info.retention_ms, info.retention_bytes) == (2, 3_600_000, None)
    assert not any(name.startswith("__") for name in bus.topics())

    bus.delete_topic(topic)
    assert topic not in bus.topics()
    with pytest.raises(TopicNotFoundError):
        bus.end_offsets(topic)
    with pytest.raises(TopicNotFoundError):
        bus.delete_topic(topic)
    assert bus.apply_retention() == 0


def test_consumer_without_group_cannot_commit(bus: KafkaBus) -> None:
    consumer = bus.consumer()
    try:
        with pytest.raises(BusError, match="without a group"):
            consumer.commit({TopicPartition("t", 0): 1})
    finally:
        consumer.close()


def test_a_subscription_waits_for_a_topic_that_does_not_exist_yet(
    bus: KafkaBus, topic: str
) -> None:
    consumer = bus.consumer(f"group-{topic}")
    try:
        consumer.subscribe([topic])
        assert consumer.poll(timeout=1.0).num_rows == 0  # no TopicNotFoundError: it waits
        producer = bus.producer()
        producer.produce(topic, [Record(value=b"late")])
        producer.flush(30)
        producer.close()
        assert read_all(consumer, 1).column("value").to_pylist() == [b"late"]
    finally:
        consumer.close()


def test_graceful_restart_keeps_records_and_address(
    bus: KafkaBus, topic: str, kafka_broker: KafkaBroker
) -> None:
    producer = bus.producer()
    producer.produce(topic, [Record(value=b"%d" % i) for i in range(100)])
    producer.flush(30)
    bootstrap = kafka_broker.bootstrap

    kafka_broker.restart()

    assert kafka_broker.bootstrap == bootstrap
    producer.produce(topic, [Record(value=b"after")])
    producer.flush(30)  # the same producer carries on once the broker is back
    producer.close()
    values = read_topic(bus, topic).column("value").to_pylist()
    assert values == [b"%d" % i for i in range(100)] + [b"after"]


@pytest.mark.parametrize(
    ("code", "raised"),
    [
        (KafkaError.LEADER_NOT_AVAILABLE, BusUnavailableError),
        (KafkaError.UNKNOWN_TOPIC_OR_PART, TopicNotFoundError),
    ],
)
def test_a_topic_electing_its_leaders_is_retried_not_missing(
    monkeypatch: pytest.MonkeyPatch, code: int, raised: type[BusError]
) -> None:
    # The metadata a broker returns for a few seconds after a restart: the topic with an
    # error. Only the broker produces it, and only in that window; it is built here.
    meta = TopicMetadata()
    meta.topic, meta.partitions, meta.error = "orders", {}, KafkaError(code)
    cluster = ClusterMetadata()
    cluster.topics = {"orders": meta}
    bus = KafkaBus("kafka://127.0.0.1:9", timeout=1.0)
    monkeypatch.setattr(bus, "_metadata", lambda *_: cluster)
    monkeypatch.setattr(bus, "_topic_names", lambda: ["orders"])
    with pytest.raises(raised) as caught:
        bus._partitions("orders")
    assert isinstance(caught.value, Retryable) == (raised is BusUnavailableError)
