"""One suite, two backends: the embedded `local` log and a real Kafka broker must behave alike
(Kafka's semantics), so every test here runs against both with the same assertions."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from lakebed.bus import BEGINNING, END, Bus, Consumer, Record, TopicPartition, open_bus
from lakebed.bus.base import empty_records, partition_for
from lakebed.errors import BusError, TopicNotFoundError


@pytest.fixture(params=["local", "kafka"])
def bus(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Bus]:
    if request.param == "local":
        opened = open_bus("local", tmp_path)
    else:
        broker = request.getfixturevalue("kafka_broker")
        opened = open_bus(f"kafka://{broker.bootstrap}", tmp_path)
    try:
        yield opened
    finally:
        opened.close()


def new_topic() -> str:
    """A topic name no other test uses (tests share one broker)."""
    return f"contract-{uuid.uuid4().hex[:12]}"


def consume(consumer: Consumer, count: int, timeout: float = 30.0) -> pa.Table:
    """Poll until `count` records arrived (or `timeout`); the records, in arrival order."""
    tables = [empty_records()]
    got = 0
    deadline = time.monotonic() + timeout
    while got < count and time.monotonic() < deadline:
        table = consumer.poll(max_records=count - got, timeout=1.0)
        tables.append(table)
        got += table.num_rows
    return pa.concat_tables(tables)


def produce(bus: Bus, topic: str, records: list[Record]) -> None:
    producer = bus.producer()
    try:
        producer.produce(topic, records)
        producer.flush(timeout=30)
    finally:
        producer.close()


def assign_all(bus: Bus, topic: str, partitions: int, group: str | None = None) -> Consumer:
    consumer = bus.consumer(group)
    consumer.assign({TopicPartition(topic, p): BEGINNING for p in range(partitions)})
    return consumer


def test_create_list_and_delete_topics(bus: Bus) -> None:
    name = new_topic()
    info = bus.create_topic(name, 3)
    assert (info.name, info.partitions) == (name, 3)
    assert bus.topics()[name].partitions == 3
    assert bus.create_topic(name, 3).partitions == 3  # same count: a no-op
    with pytest.raises(BusError, match=name):
        bus.create_topic(name, 5)
    assert bus.end_offsets(name) == {0: 0, 1: 0, 2: 0}
    assert bus.start_offsets(name) == {0: 0, 1: 0, 2: 0}

    bus.delete_topic(name)
    assert name not in bus.topics()
    with pytest.raises(TopicNotFoundError):
        bus.delete_topic(name)
    with pytest.raises(TopicNotFoundError):
        bus.end_offsets(name)


@pytest.mark.parametrize("name", ["has space", "slash/y", "", "x" * 250, "..", "é"])
def test_invalid_topic_names_are_refused(bus: Bus, name: str) -> None:
    with pytest.raises(BusError) as caught:
        bus.create_topic(name, 1)
    assert name in str(caught.value)


def test_producing_to_a_missing_topic_creates_it_with_one_partition(bus: Bus) -> None:
    name = new_topic()
    produce(bus, name, [Record(b"a"), Record(b"b")])
    assert bus.topics()[name].partitions == 1
    assert bus.end_offsets(name) == {0: 2}
    values = consume(assign_all(bus, name, 1), 2).column("value").to_pylist()
    assert values == [b"a", b"b"]


def test_keyed_records_land_in_their_partition_in_order_without_gaps(bus: Bus) -> None:
    name = new_topic()
    bus.create_topic(name, 4)
    keys = [f"customer-{i % 23}".encode() for i in range(400)]
    produce(bus, name, [Record(f"{i}".encode(), key=k) for i, k in enumerate(keys)])

    table = consume(assign_all(bus, name, 4), 400)
    assert table.num_rows == 400
    assert table.schema == empty_records().schema
    rows = table.to_pylist()
    assert {row["topic"] for row in rows} == {name}
    for row in rows:
        assert row["partition"] == partition_for(row["key"], 4)
    for p in range(4):
        mine = [row for row in rows if row["partition"] == p]
        assert [row["offset"] for row in mine] == list(range(len(mine)))
        sent = [i for i, k in enumerate(keys) if partition_for(k, 4) == p]
        assert [int(row["value"]) for row in mine] == sent
    assert bus.end_offsets(name) == {
        p: sum(1 for k in keys if partition_for(k, 4) == p) for p in range(4)
    }


def test_end_offsets_count_what_flush_acknowledged(bus: Bus) -> None:
    name = new_topic()
    bus.create_topic(name, 2)
    producer = bus.producer()
    producer.produce(name, [Record(b"x", partition=0)] * 5 + [Record(b"y", partition=1)] * 3)
    producer.flush(timeout=30)
    assert bus.end_offsets(name) == {0: 5, 1: 3}
    producer.produce(name, [Record(b"z", partition=1)])
    producer.flush(timeout=30)
    producer.close()
    assert bus.end_offsets(name) == {0: 5, 1: 4}


def test_poll_returns_at_most_max_records(bus: Bus) -> None:
    name = new_topic()
    produce(bus, name, [Record(f"{i}".encode()) for i in range(50)])
    consumer = assign_all(bus, name, 1)
    values: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(values) < 50 and time.monotonic() < deadline:
        table = consumer.poll(max_records=7, timeout=1.0)
        assert table.num_rows <= 7
        values += table.column("value").to_pylist()
    assert values == [f"{i}".encode() for i in range(50)]
    assert consumer.poll(max_records=7, timeout=0.2).num_rows == 0
    consumer.close()


def test_assign_beginning_end_explicit_and_seek(bus: Bus) -> None:
    name = new_topic()
    tp = TopicPartition(name, 0)
    produce(bus, name, [Record(f"{i}".encode()) for i in range(10)])

    at_end = bus.consumer()
    at_end.assign({tp: END})
    assert at_end.position() == {tp: 10}
    assert at_end.assignment() == [tp]
    produce(bus, name, [Record(f"{i}".encode()) for i in range(10, 15)])
    table = consume(at_end, 5)
    assert table.column("offset").to_pylist() == [10, 11, 12, 13, 14]
    assert at_end.poll(timeout=0.2).num_rows == 0
    at_end.close()

    consumer = bus.consumer()
    consumer.assign({tp: 3})
    assert consume(consumer, 2).column("offset").to_pylist() == [3, 4]
    assert consumer.position() == {tp: 5}
    consumer.seek(tp, 12)
    assert consume(consumer, 3).column("value").to_pylist() == [b"12", b"13", b"14"]
    consumer.seek(tp, BEGINNING)
    assert consume(consumer, 1).column("offset").to_pylist() == [0]
    consumer.close()


def test_offsets_for_time_and_timestamps_preserved(bus: Bus) -> None:
    name = new_topic()
    base = (int(time.time()) - 600) * 1000  # recent: Kafka's retention keeps it
    stamps = [base + i * 1000 for i in range(10)]
    produce(bus, name, [Record(f"{i}".encode(), timestamp_ms=t) for i, t in enumerate(stamps)])

    table = consume(assign_all(bus, name, 1), 10)
    got = table.column("timestamp").cast(pa.int64()).to_pylist()
    assert got == stamps
    assert bus.offsets_for_time(name, base) == {0: 0}
    assert bus.offsets_for_time(name, base + 3500) == {0: 4}
    assert bus.offsets_for_time(name, base + 9000) == {0: 9}
    assert bus.offsets_for_time(name, base + 60_000) == {0: 10}  # none that late: the end


def test_commit_and_committed_are_shared_by_a_groups_consumers(bus: Bus) -> None:
    name = new_topic()
    group = f"group-{uuid.uuid4().hex[:8]}"
    bus.create_topic(name, 2)
    produce(bus, name, [Record(f"{i}".encode(), partition=i % 2) for i in range(20)])
    tp0, tp1 = TopicPartition(name, 0), TopicPartition(name, 1)

    first = bus.consumer(group)
    first.assign({tp0: BEGINNING})
    assert consume(first, 4).num_rows == 4
    first.commit()  # the current positions
    second = bus.consumer(group)
    assert second.committed([tp0, tp1]) == {tp0: 4, tp1: None}

    second.commit({tp1: 7})
    assert first.committed([tp0, tp1]) == {tp0: 4, tp1: 7}
    first.close()
    second.close()


def test_subscribe_resumes_from_the_committed_offset(bus: Bus) -> None:
    name = new_topic()
    group = f"group-{uuid.uuid4().hex[:8]}"
    bus.create_topic(name, 2)
    produce(bus, name, [Record(f"{i}".encode(), key=f"k{i}".encode()) for i in range(20)])

    consumer = bus.consumer(group)
    consumer.subscribe([name])
    first = consume(consumer, 20, timeout=60)
    assert sorted(int(v) for v in first.column("value").to_pylist()) == list(range(20))
    assert sorted(consumer.assignment()) == [TopicPartition(name, 0), TopicPartition(name, 1)]
    consumer.commit()
    consumer.close()

    produce(bus, name, [Record(f"{i}".encode(), key=f"k{i}".encode()) for i in range(20, 30)])
    again = bus.consumer(group)
    again.subscribe([name])
    second = consume(again, 10, timeout=60)
    assert sorted(int(v) for v in second.column("value").to_pylist()) == list(range(20, 30))
    assert again.poll(timeout=0.5).num_rows == 0
    again.close()


def test_null_keys_and_values(bus: Bus) -> None:
    name = new_topic()
    records = [
        Record(None, key=b"deleted"),  # a tombstone
        Record(b"no key"),
        Record(None),
        Record(b"", key=b""),
        Record(b"both", key=b"k"),
    ]
    produce(bus, name, records)
    table = consume(assign_all(bus, name, 1), 5)
    assert table.column("key").to_pylist() == [b"deleted", None, None, b"", b"k"]
    assert table.column("value").to_pylist() == [None, b"no key", None, b"", b"both"]


def test_large_values(bus: Bus) -> None:
    name = new_topic()
    # About 1 MB each, under the 1,000,000-byte message limit of Kafka's default settings.
    values = [os.urandom(990_000) for _ in range(3)]
    produce(bus, name, [Record(v, key=f"big-{i}".encode()) for i, v in enumerate(values)])
    table = consume(assign_all(bus, name, 1), 3)
    assert table.column("value").to_pylist() == values
