"""The embedded log on its own: crashes (kill -9 of real producer processes, torn batches),
several producer and consumer processes at once, consumer groups across processes,
retention, and indexes rebuilt from the log."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from lakebed.bus import BEGINNING, END, Record, TopicPartition
from lakebed.bus.base import empty_records, partition_for
from lakebed.bus.local import LocalBus
from lakebed.bus.local_log import SegmentState, list_segments, segment_path, segment_state
from lakebed.bus.local_producer import partitions_for_keys
from lakebed.errors import BusError, RecordError

CHILD_PRELUDE = """
import json, sys, time
from pathlib import Path
from lakebed.bus.base import BEGINNING, Record, TopicPartition
from lakebed.bus.local import LocalBus
"""


class Child:
    """A Python subprocess running `code` with `args`; a thread collects its stdout lines."""

    def __init__(self, code: str, *args: object) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD_PRELUDE + code, *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, predicate: Callable[[list[str]], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(list(self.lines)):
            if self.proc.poll() is not None and not self._reader.is_alive():
                raise AssertionError(f"child exited early: {self.stderr()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"child did not get there in {timeout} s: {self.lines[-5:]}")
            time.sleep(0.01)

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._reader.join(5)

    def finish(self, timeout: float = 20.0) -> None:
        self.proc.wait(timeout)
        self._reader.join(5)
        assert self.proc.returncode == 0, self.stderr()

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read() if self.proc.poll() is not None else ""

    def tagged(self, tag: str) -> list[str]:
        """The payloads of the lines `tag payload`."""
        return [line.split(" ", 1)[1] for line in list(self.lines) if line.startswith(tag + " ")]


def read_all(bus: LocalBus, topic: str, timeout: float = 20.0) -> pa.Table:
    """Every record of the topic now, from the first kept offset of each partition."""
    partitions = bus.topics()[topic].partitions
    ends = bus.end_offsets(topic)
    consumer = bus.consumer()
    consumer.assign({TopicPartition(topic, p): BEGINNING for p in range(partitions)})
    tables = [empty_records()]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(consumer.position()[TopicPartition(topic, p)] >= ends[p] for p in ends):
            break
        tables.append(consumer.poll(timeout=0.5))
    consumer.close()
    return pa.concat_tables(tables)


def active_segment(bus: LocalBus, topic: str, partition: int) -> SegmentState:
    """The valid batches of the partition's newest segment and where they end."""
    folder = bus.partition_dir(topic, partition)
    base = list_segments(folder)[-1]
    fd = os.open(segment_path(folder, base), os.O_RDONLY)
    try:
        return segment_state(folder, base, fd)
    finally:
        os.close(fd)


def assert_gapless(table: pa.Table, bus: LocalBus, topic: str) -> None:
    starts, ends = bus.start_offsets(topic), bus.end_offsets(topic)
    partitions = table.column("partition").to_numpy()
    offsets = table.column("offset").to_numpy()
    for p, end in ends.items():
        assert offsets[partitions == p].tolist() == list(range(starts[p], end))


PRODUCER_UNTIL_KILLED = """
root, topic, run = sys.argv[1], sys.argv[2], int(sys.argv[3])
producer = LocalBus(Path(root), segment_bytes=8_000_000).producer()
seq = 0
while True:  # big flushes: most of the time goes to write(), where kills tear batches
    producer.produce(topic, [
        Record(f"{run}:{seq + i}:".encode().ljust(4000, b"."), key=f"k{(seq + i) % 7}".encode())
        for i in range(1000)
    ])
    producer.flush()
    seq += 1000
    print(seq, flush=True)  # acknowledged
"""


@pytest.mark.slow
def test_kill_9_of_producers_loses_no_acknowledged_record_and_returns_no_torn_batch(
    tmp_path: Path,
) -> None:
    bus = LocalBus(tmp_path)
    bus.create_topic("events", 2)
    acked: dict[int, int] = {}
    torn = 0
    rng = random.Random(7)
    for run in range(8):
        child = Child(PRODUCER_UNTIL_KILLED, tmp_path, "events", run)
        child.wait_for(lambda lines: len(lines) >= 1)
        time.sleep(rng.uniform(0.0, 0.25))
        child.kill()
        acked[run] = max((int(line) for line in child.lines), default=0)
        for p in range(2):
            state = active_segment(bus, "events", p)
            torn += state.end_position < state.size
    print(f"{torn} kills left a torn batch behind")

    table = read_all(bus, "events")
    assert_gapless(table, bus, "events")
    values = [v.split(b":")[:2] for v in table.column("value").to_pylist()]
    assert len(values) == len({tuple(v) for v in values}), "a record was written twice"
    seen: dict[int, set[int]] = {run: set() for run in acked}
    for run, seq in values:
        seen[int(run)].add(int(seq))
    for run, count in acked.items():
        assert set(range(count)) <= seen[run], f"run {run} lost acknowledged records"

    # The next producer repairs any torn tail and continues right after the last good batch.
    before = bus.end_offsets("events")
    producer = bus.producer()
    producer.produce("events", [Record(b"after", partition=p) for p in range(2)])
    producer.close()
    assert bus.end_offsets("events") == {p: before[p] + 1 for p in range(2)}
    for p in range(2):
        state = active_segment(bus, "events", p)
        assert state.end_position == state.size


CONCURRENT_PRODUCER = """
root, topic, name, go = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
producer = LocalBus(Path(root)).producer()
while not go.exists():
    time.sleep(0.001)
for flush in range(40):
    producer.produce(topic, [
        Record(f"{name}:{flush * 250 + i}".encode(), key=f"k{i % 5}".encode()) for i in range(250)
    ])
    producer.flush()
producer.close()
"""


def test_two_producer_processes_append_without_gaps_or_duplicates(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path)
    bus.create_topic("shared", 2)
    go = tmp_path / "go"
    children = [Child(CONCURRENT_PRODUCER, tmp_path, "shared", name, go) for name in "ab"]
    time.sleep(0.3)
    go.touch()
    for child in children:
        child.finish()

    table = read_all(bus, "shared")
    assert table.num_rows == 20_000
    assert_gapless(table, bus, "shared")
    values = table.column("value").to_pylist()
    partitions = table.column("partition").to_pylist()
    rows = [(v.decode().split(":"), p) for v, p in zip(values, partitions, strict=True)]
    for name in "ab":
        mine = [(int(seq), p) for (writer, seq), p in rows if writer == name]
        assert sorted(seq for seq, _ in mine) == list(range(10_000))
        for p in range(2):  # each writer's records keep their order within a partition
            in_partition = [seq for seq, q in mine if q == p]
            assert in_partition == sorted(in_partition)


CONSUMER_ELSEWHERE = """
root, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
consumer = LocalBus(Path(root)).consumer()
consumer.assign({TopicPartition(topic, 0): BEGINNING})
print("ready", flush=True)
values = []
while len(values) < count:
    table = consumer.poll(timeout=10)
    if not table.num_rows:
        break
    values += [v.decode() for v in table.column("value").to_pylist()]
    print("got", len(values), flush=True)
print("values", json.dumps(values), flush=True)
"""


def test_a_consumer_in_another_process_sees_records_as_they_are_produced(
    tmp_path: Path,
) -> None:
    bus = LocalBus(tmp_path)
    bus.create_topic("live", 1)
    child = Child(CONSUMER_ELSEWHERE, tmp_path, "live", 1000)
    child.wait_for(lambda lines: "ready" in lines)
    producer = bus.producer()
    for flush in range(10):
        producer.produce("live", [Record(f"{flush * 100 + i}".encode()) for i in range(100)])
        producer.flush()
        produced = (flush + 1) * 100
        # Seen before the next flush is even produced.
        child.wait_for(lambda lines, n=produced: f"got {n}" in lines, timeout=5)
    producer.close()
    child.finish()
    assert json.loads(child.tagged("values")[0]) == [str(i) for i in range(1000)]


MEMBER = """
root, topic, group, stop = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
consumer = LocalBus(Path(root)).consumer(group)
consumer.subscribe([topic])
last = None
while not stop.exists():
    table = consumer.poll(timeout=0.05)
    partitions = sorted(tp.partition for tp in consumer.assignment())
    if partitions != last:
        print("assigned", json.dumps(partitions), flush=True)
        last = partitions
    if table.num_rows:
        consumer.commit()
        print("values", json.dumps([v.decode() for v in table.column("value").to_pylist()]),
              flush=True)
consumer.close()
"""


def _assigned(child: Child) -> list[int]:
    found = child.tagged("assigned")
    return json.loads(found[-1]) if found else []


def _consumed(child: Child) -> list[str]:
    return [v for line in child.tagged("values") for v in json.loads(line)]


@pytest.mark.slow
def test_group_members_in_two_processes_split_partitions_and_read_everything_once(
    tmp_path: Path,
) -> None:
    bus = LocalBus(tmp_path)
    bus.create_topic("orders", 4)
    stop = tmp_path / "stop"
    first = Child(MEMBER, tmp_path, "orders", "loaders", stop)
    first.wait_for(lambda _: _assigned(first) == [0, 1, 2, 3])
    second = Child(MEMBER, tmp_path, "orders", "loaders", stop)

    def split() -> bool:
        a, b = _assigned(first), _assigned(second)
        return len(a) == 2 and len(b) == 2 and not set(a) & set(b)

    first.wait_for(lambda _: split())
    producer = bus.producer()
    producer.produce("orders", [Record(f"{i}".encode(), key=f"c{i}".encode()) for i in range(2000)])
    producer.flush()
    first.wait_for(lambda _: len(_consumed(first)) + len(_consumed(second)) == 2000)
    assert _consumed(first)
    assert _consumed(second)

    # A member killed: the OS drops its locks, the survivor takes its partitions over and
    # resumes them from the offsets the dead one committed.
    second.kill()
    first.wait_for(lambda _: _assigned(first) == [0, 1, 2, 3])
    before = len(_consumed(first))
    producer.produce(
        "orders", [Record(f"{i}".encode(), key=f"c{i}".encode()) for i in range(2000, 2400)]
    )
    producer.close()
    first.wait_for(lambda _: len(_consumed(first)) >= before + 400)
    stop.touch()
    first.finish()

    counts = Counter(_consumed(first) + _consumed(second))
    assert set(counts) == {str(i) for i in range(2400)}
    assert max(counts.values()) == 1


def _produce(
    bus: LocalBus, topic: str, flushes: int, per_flush: int, timestamp_ms: int | None = None
) -> None:
    producer = bus.producer()
    start = sum(bus.end_offsets(topic).values()) if topic in bus.topics() else 0
    for flush in range(flushes):
        first = start + flush * per_flush
        producer.produce(
            topic,
            [
                Record(f"{first + i}".encode().ljust(200, b"."), timestamp_ms=timestamp_ms)
                for i in range(per_flush)
            ],
        )
        producer.flush()
    producer.close()


def _log_bytes(bus: LocalBus, topic: str) -> int:
    return sum(path.stat().st_size for path in bus.partition_dir(topic, 0).glob("*.log"))


def test_retention_by_bytes_drops_the_oldest_segments(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path, segment_bytes=20_000)
    bus.create_topic("metrics", 1, retention_bytes=50_000)
    tp = TopicPartition("metrics", 0)
    behind = bus.consumer()
    behind.assign({tp: 0})
    reading = bus.consumer()
    reading.assign({tp: 0})
    _produce(bus, "metrics", 2, 50)
    assert reading.poll(max_records=10).column("offset").to_pylist() == list(range(10))

    _produce(bus, "metrics", 18, 50)  # each flush is one ~11 kB batch: one segment each
    start = bus.start_offsets("metrics")[0]
    assert start > 0
    assert start % 50 == 0
    assert bus.end_offsets("metrics") == {0: 1000}
    assert 50_000 <= _log_bytes(bus, "metrics") <= 50_000 + 2 * 20_000
    assert len(list_segments(bus.partition_dir("metrics", 0))) < 10

    # Consumers below the first kept offset continue from it (auto.offset.reset=earliest),
    # whether they had not started or were reading a segment that went away.
    for consumer in (behind, reading):
        table = consumer.poll(max_records=5)
        assert table.column("offset").to_pylist() == list(range(start, start + 5))
        assert table.column("value")[0].as_py().startswith(f"{start}.".encode())
    assert bus.apply_retention() == 0  # rolling already applied it


def test_retention_by_time_drops_expired_segments(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path, segment_bytes=20_000)
    bus.create_topic("clicks", 1, retention_ms=60_000)
    old = int(time.time() * 1000) - 600_000
    _produce(bus, "clicks", 5, 50, timestamp_ms=old)
    _produce(bus, "clicks", 3, 50)
    bus.apply_retention()
    assert bus.start_offsets("clicks") == {0: 250}
    table = read_all(bus, "clicks")
    assert table.column("offset").to_pylist() == list(range(250, 400))

    # Everything expired, the active segment too: nothing is left, offsets carry on.
    bus.create_topic("stale", 1, retention_ms=60_000)
    _produce(bus, "stale", 2, 50, timestamp_ms=old)
    bus.apply_retention()  # (the roll of the second flush may already have applied it)
    assert bus.start_offsets("stale") == bus.end_offsets("stale") == {0: 100}
    assert read_all(bus, "stale").num_rows == 0
    _produce(bus, "stale", 1, 1)
    assert read_all(bus, "stale").column("offset").to_pylist() == [100]


def test_a_torn_or_garbage_tail_is_ignored_by_readers_and_repaired_by_the_next_producer(
    tmp_path: Path,
) -> None:
    bus = LocalBus(tmp_path)
    _produce(bus, "tail", 1, 100)
    segment = segment_path(bus.partition_dir("tail", 0), 0)
    good = segment.stat().st_size
    _produce(bus, "tail", 1, 10)
    batch = segment.read_bytes()[good:]
    # What a crash in the middle of write() leaves: the first part of a batch.
    os.truncate(segment, good)
    with open(segment, "ab") as handle:
        handle.write(batch[: len(batch) // 2])
    consumer = bus.consumer()
    consumer.assign({TopicPartition("tail", 0): BEGINNING})
    for tail in (b"", b"\x00garbage" * 13):  # then junk after the torn batch
        with open(segment, "ab") as handle:
            handle.write(tail)
        assert bus.end_offsets("tail") == {0: 100}
        assert read_all(bus, "tail").num_rows == 100
    assert consumer.poll(max_records=1000, timeout=0.2).num_rows == 100
    assert consumer.poll(timeout=0.2).num_rows == 0

    producer = bus.producer()
    producer.produce("tail", [Record(f"new-{i}".encode()) for i in range(5)])
    producer.close()
    assert bus.end_offsets("tail") == {0: 105}
    table = consumer.poll(timeout=2)
    assert table.column("offset").to_pylist() == [100, 101, 102, 103, 104]
    assert table.column("value").to_pylist() == [f"new-{i}".encode() for i in range(5)]
    state = active_segment(bus, "tail", 0)
    assert state.end_position == state.size == segment.stat().st_size


def test_deleted_indexes_are_rebuilt_from_the_log(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path, segment_bytes=30_000)
    base = int(time.time() * 1000) - 100_000
    producer = bus.producer()
    for flush in range(20):
        producer.produce(
            "indexed",
            [
                Record(f"{n}".encode().ljust(200, b"."), timestamp_ms=base + n)
                for n in range(flush * 50, flush * 50 + 50)
            ],
        )
        producer.flush()
    producer.close()
    folder = bus.partition_dir("indexed", 0)
    indexes = {path.name: path.read_bytes() for path in folder.glob("*.index")}
    assert len(indexes) > 3
    for name in indexes:
        (folder / name).unlink()

    tp = TopicPartition("indexed", 0)
    consumer = bus.consumer()
    consumer.assign({tp: 537})
    assert consumer.poll(max_records=1).column("value")[0].as_py().startswith(b"537.")
    assert bus.offsets_for_time("indexed", base + 700) == {0: 700}
    assert bus.offsets_for_time("indexed", base + 10**9) == {0: 1000}
    assert bus.end_offsets("indexed") == {0: 1000}
    producer = bus.producer()
    producer.produce("indexed", [Record(b"one more")])
    producer.close()

    rebuilt = {path.name: path.read_bytes() for path in folder.glob("*.index")}
    assert set(rebuilt) == set(indexes)
    active = max(indexes)
    for name, data in indexes.items():
        if name != active:
            assert rebuilt[name] == data
    assert rebuilt[active].startswith(indexes[active])
    assert len(rebuilt[active]) == len(indexes[active]) + 32


def test_poll_waits_for_data_without_spinning(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path)
    bus.create_topic("quiet", 3)
    consumer = bus.consumer()
    consumer.assign({TopicPartition("quiet", p): END for p in range(3)})
    wall, cpu = time.monotonic(), time.process_time()
    assert consumer.poll(timeout=1.0).num_rows == 0
    assert time.monotonic() - wall >= 0.95
    assert time.process_time() - cpu < 0.3

    def later() -> None:
        time.sleep(0.3)
        producer = bus.producer()
        producer.produce("quiet", [Record(b"hello", partition=2)])
        producer.close()

    thread = threading.Thread(target=later)
    thread.start()
    table = consumer.poll(timeout=10)
    thread.join()
    assert table.column("value").to_pylist() == [b"hello"]


def test_vectorised_partitioner_matches_kafkas() -> None:
    rng = random.Random(3)
    keys = [rng.randbytes(rng.randrange(0, 40)) for _ in range(5000)]
    keys += [f"user-{i}".encode() for i in range(5000)] + [b"x" * 1000] * 20
    for partitions in (1, 3, 12):
        expected = np.array([partition_for(k, partitions) for k in keys])
        assert (partitions_for_keys(keys, partitions) == expected).all()


def test_bad_records_and_names_are_refused_with_the_reason(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path)
    bus.create_topic("two", 2)
    producer = bus.producer()
    producer.produce("two", [Record("text")])  # type: ignore[arg-type]
    with pytest.raises(RecordError, match="not bytes"):
        producer.flush()
    producer.produce("two", [Record(b"x", partition=5)])
    with pytest.raises(RecordError, match=r"partitions 0\.\.1"):
        producer.flush()
    with pytest.raises(RecordError, match="bad/name"):
        producer.produce("bad/name", [Record(b"x")])
    producer.produce("two", [b"raw"])  # type: ignore[list-item]
    with pytest.raises(RecordError, match="Record"):
        producer.flush()
    producer.produce("other", [Record(b"fine")])
    producer.produce("two", [Record(b"fine"), Record(None, key=3)])  # type: ignore[arg-type]
    with pytest.raises(RecordError, match="key is int"):
        producer.flush()
    assert bus.end_offsets("other") == {0: 1}  # other topics are still written
    assert bus.end_offsets("two") == {0: 0, 1: 0}  # and nothing of the failed one
    with pytest.raises(BusError, match="consumer group"):
        bus.consumer().subscribe(["two"])
    consumer = bus.consumer()
    with pytest.raises(BusError, match="not assigned"):
        consumer.seek(TopicPartition("two", 0), 3)
    with pytest.raises(BusError, match=r"partitions 0\.\.1"):
        consumer.assign({TopicPartition("two", 9): 0})


def test_fsync_is_off_by_default_and_on_by_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert LocalBus(tmp_path).fsync is False
    monkeypatch.setenv("LAKEBED_BUS_FSYNC", "1")
    bus = LocalBus(tmp_path)
    assert bus.fsync is True
    producer = bus.producer()
    producer.produce("synced", [Record(b"durable")])
    producer.close()
    consumer = bus.consumer("g")
    consumer.assign({TopicPartition("synced", 0): BEGINNING})
    assert consumer.poll().column("value").to_pylist() == [b"durable"]
    consumer.commit()
    assert consumer.committed([TopicPartition("synced", 0)]) == {TopicPartition("synced", 0): 1}
