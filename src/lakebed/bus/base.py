"""The event bus protocol: topics of partitioned, keyed records, produced in batches and read
back in order by consumers that remember their positions.

Two backends implement it with the same semantics (Kafka's): the embedded `local` log in the
project folder and Apache Kafka. Consumers hand out Arrow tables in `RECORD_SCHEMA`, never one
Python object per record: the stream processor parses and writes whole batches.

Offsets follow Kafka: a partition's records are numbered from 0 without gaps (retention only
raises the first offset still kept); a committed or sought position is the offset of the *next*
record to read; `end_offsets` is one past the last record acknowledged.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

import pyarrow as pa

from lakebed.errors import ConfigError

# Positions a consumer can be assigned besides a real offset (Kafka's logical offsets).
BEGINNING = -2
END = -1

RECORD_SCHEMA = pa.schema(
    [
        pa.field("topic", pa.string(), nullable=False),
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("timestamp", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("key", pa.binary()),
        pa.field("value", pa.binary()),
    ]
)


class TopicPartition(NamedTuple):
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class Record:
    """One record to produce. `timestamp_ms` defaults to the time of producing."""

    value: bytes | None
    key: bytes | None = None
    timestamp_ms: int | None = None
    partition: int | None = None  # None: by key hash, or round-robin without a key


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    partitions: int
    retention_ms: int | None = None  # None: keep forever
    retention_bytes: int | None = None  # per partition; None: no size limit


def empty_records() -> pa.Table:
    return RECORD_SCHEMA.empty_table()


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2 of the key), so both backends place keys alike."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def murmur2(data: bytes) -> int:
    """The 32-bit murmur2 hash exactly as Kafka's Java client computes it."""
    length = len(data)
    seed = 0x9747B28C
    m = 0x5BD1E995
    h = (seed ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = data[i] | data[i + 1] << 8 | data[i + 2] << 16 | data[i + 3] << 24
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    rest = length % 4
    tail = length - rest
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


class Producer(Protocol):
    def produce(self, topic: str, records: Iterable[Record]) -> None:
        """Queue records for `topic` (created with one partition if missing). Raises
        `TopicNotFoundError` only when the backend cannot create topics on demand."""

    def flush(self, timeout: float | None = None) -> None:
        """Block until every queued record is acknowledged (durable: survives kill -9 of any
        process); raises `BusUnavailableError` if that does not happen within `timeout`."""

    def close(self) -> None: ...


class Consumer(Protocol):
    def subscribe(self, topics: Sequence[str]) -> None:
        """Join the consumer group for `topics`; partitions are shared among live members and
        each starts at the group's committed offset (or the beginning)."""

    def assign(self, positions: Mapping[TopicPartition, int]) -> None:
        """Read exactly these partitions from these offsets (or BEGINNING / END), no group."""

    def seek(self, partition: TopicPartition, offset: int) -> None: ...

    def poll(self, max_records: int = 10_000, timeout: float = 1.0) -> pa.Table:
        """Up to `max_records` records in `RECORD_SCHEMA`, in offset order per partition;
        waits up to `timeout` seconds for the first one, returns an empty table if none."""

    def position(self) -> dict[TopicPartition, int]:
        """The next offset to read per assigned partition."""

    def assignment(self) -> list[TopicPartition]: ...

    def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        """Store the group's committed offsets (default: the current positions)."""

    def committed(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        """The group's committed offsets; None where nothing was committed."""

    def close(self) -> None: ...


class Bus(Protocol):
    url: str

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        *,
        retention_ms: int | None = None,
        retention_bytes: int | None = None,
    ) -> TopicInfo:
        """Create a topic; creating one that exists with the same partition count is a no-op."""

    def delete_topic(self, name: str) -> None: ...

    def topics(self) -> dict[str, TopicInfo]: ...

    def producer(self) -> Producer: ...

    def consumer(self, group: str | None = None) -> Consumer:
        """A consumer; `group` is needed for `subscribe` and `commit`."""

    def start_offsets(self, topic: str) -> dict[int, int]:
        """Per partition, the first offset still kept (raised by retention)."""

    def end_offsets(self, topic: str) -> dict[int, int]:
        """Per partition, one past the last acknowledged record."""

    def offsets_for_time(self, topic: str, timestamp_ms: int) -> dict[int, int]:
        """Per partition, the first offset whose timestamp is >= `timestamp_ms` (the end
        offset when there is none)."""

    def apply_retention(self) -> int:
        """Drop what retention allows now; returns the number of records removed. Kafka does
        this on its own schedule; the local log does it here and when producing."""

    def close(self) -> None: ...


BusFactory = Callable[[str, Path], Bus]
_BACKENDS: dict[str, BusFactory] = {}


def register_backend(scheme: str) -> Callable[[BusFactory], BusFactory]:
    def decorate(factory: BusFactory) -> BusFactory:
        _BACKENDS[scheme] = factory
        return factory

    return decorate


def open_bus(url: str, project_root: Path) -> Bus:
    """The bus named by `bus:` in lakebed.yml: `local` (default) or `kafka://host:port[,...]`."""
    # Importing the backends registers them; they import this module, not the reverse.
    from lakebed.bus import kafka, local  # noqa: F401

    scheme = url.split("://", 1)[0] if "://" in url else url
    factory = _BACKENDS.get(scheme)
    if factory is None:
        raise ConfigError(
            f"`bus`: unknown bus {url!r}",
            hint="use `local` (the embedded log) or `kafka://host:port`",
        )
    return factory(url, project_root)
