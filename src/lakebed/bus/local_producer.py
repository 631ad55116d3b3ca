"""Producing to the embedded bus: records are buffered, placed in partitions (explicit, by
Kafka's murmur2 of the key, vectorised, or round-robin), encoded as columnar batches and
appended under each partition's lock."""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from itertools import chain
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import numpy as np

from lakebed.bus.base import Record, TopicInfo, partition_for
from lakebed.bus.local_append import PartitionGoneError, PartitionWriter
from lakebed.bus.local_batch import encode_batches
from lakebed.bus.local_log import validate_topic
from lakebed.errors import BusError, RecordError

if TYPE_CHECKING:
    from lakebed.bus.local import LocalBus

LINGER_RECORDS = 100_000
LINGER_BYTES = 32 * 1024 * 1024
_value, _key = attrgetter("value"), attrgetter("key")
_timestamp, _partition = attrgetter("timestamp_ms"), attrgetter("partition")


class LocalProducer:
    """Buffers records and appends them per partition in columnar batches (see the module
    docstring for when a record is acknowledged)."""

    def __init__(self, bus: LocalBus) -> None:
        self._bus = bus
        self._pending: dict[str, list[tuple[list[Any], int]]] = {}
        self._pending_records = 0
        self._pending_bytes = 0
        self._topics: dict[str, TopicInfo] = {}
        self._writers: dict[tuple[str, int], PartitionWriter] = {}
        self._round_robin: dict[str, int] = {}
        self._closed = False

    def produce(self, topic: str, records: Iterable[Record]) -> None:
        if self._closed:
            raise BusError("produce() on a closed producer", hint="open a new bus.producer()")
        validate_topic(topic, RecordError)
        batch = records if isinstance(records, list) else list(records)
        if not batch:
            return
        self._pending.setdefault(topic, []).append((batch, time.time_ns() // 1_000_000))
        self._pending_records += len(batch)
        self._pending_bytes += _estimate_bytes(batch)
        if self._pending_records >= LINGER_RECORDS or self._pending_bytes >= LINGER_BYTES:
            self._write_pending(None)

    def flush(self, timeout: float | None = None) -> None:
        self._write_pending(timeout)

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            for writer in self._writers.values():
                writer.close()
            self._writers.clear()

    def _write_pending(self, timeout: float | None) -> None:
        pending, self._pending = self._pending, {}
        self._pending_records = self._pending_bytes = 0
        failure: BaseException | None = None
        for topic, chunks in pending.items():
            try:
                self._write_topic(topic, chunks, timeout)
            except RecordError as exc:
                failure = failure or exc  # the other topics' records are still written
        if failure is not None:
            raise failure

    def _write_topic(
        self, topic: str, chunks: list[tuple[list[Any], int]], timeout: float | None
    ) -> None:
        records = (
            chunks[0][0] if len(chunks) == 1 else list(chain.from_iterable(c for c, _ in chunks))
        )
        try:
            values = list(map(_value, records))
            keys = list(map(_key, records))
            stamps = list(map(_timestamp, records))
            partitions = list(map(_partition, records))
        except AttributeError as exc:
            bad = next(r for r in records if not isinstance(r, Record))
            raise RecordError(
                f"produce({topic!r}) takes lakebed.bus.Record objects, got {type(bad).__name__}",
                hint="wrap each payload: Record(value=b'...', key=b'...')",
            ) from exc
        timestamps = _timestamps(stamps, chunks, topic)
        for _attempt in range(3):
            info = self._topic_info(topic)
            targets = self._partitions(info, keys, partitions)
            try:
                self._append(info, values, keys, timestamps, targets, timeout)
                return
            except PartitionGoneError:
                self._forget(topic)  # deleted meanwhile: producing creates it again
        raise BusError(f"topic {topic!r} keeps disappearing while producing to it")

    def _topic_info(self, topic: str) -> TopicInfo:
        info = self._topics.get(topic)
        if info is None:
            info = self._bus.ensure_topic(TopicInfo(topic, 1))
            self._topics[topic] = info
        return info

    def _forget(self, topic: str) -> None:
        self._topics.pop(topic, None)
        for key in [k for k in self._writers if k[0] == topic]:
            self._writers.pop(key).close()

    def _partitions(self, info: TopicInfo, keys: list[Any], partitions: list[Any]) -> np.ndarray:
        """The partition of every record: explicit, else by key hash, else round-robin."""
        n, count = len(keys), info.partitions
        explicit = n - partitions.count(None)
        if explicit == 0 and count == 1:
            return np.zeros(n, dtype=np.int64)
        out = np.empty(n, dtype=np.int64)
        rest = np.ones(n, dtype=bool)
        if explicit:
            column = _objects(partitions)
            rest = _nulls(column)
            try:
                chosen = column[~rest].astype(np.int64)
            except (TypeError, ValueError) as exc:
                raise RecordError(
                    f"topic {info.name!r}: a record's partition is not an integer"
                ) from exc
            if len(chosen) and (chosen.min() < 0 or chosen.max() >= count):
                bad = int(chosen[(chosen < 0) | (chosen >= count)][0])
                raise RecordError(
                    f"topic {info.name!r} has partitions 0..{count - 1}, a record asks for {bad}",
                    hint="leave Record.partition None to choose by key",
                )
            out[~rest] = chosen
        keyed = rest.copy()
        if keys.count(None):
            keyed &= ~_nulls(_objects(keys))
        if keyed.any():
            chosen_keys = keys if keyed.all() else _objects(keys)[keyed].tolist()
            out[keyed] = partitions_for_keys(chosen_keys, count)
        spread = rest & ~keyed
        if spread.any():
            m = int(spread.sum())
            start = self._round_robin.get(info.name, random.randrange(count))
            out[spread] = (start + np.arange(m)) % count
            self._round_robin[info.name] = (start + m) % count
        return out

    def _append(
        self,
        info: TopicInfo,
        values: list[Any],
        keys: list[Any],
        timestamps: np.ndarray,
        targets: np.ndarray,
        timeout: float | None,
    ) -> None:
        n = len(values)
        if not n:
            return
        groups: list[tuple[int, list[Any], list[Any] | None, np.ndarray]]
        no_keys = keys.count(None) == n
        first = int(targets[0])
        if bool((targets == first).all()):
            groups = [(first, values, None if no_keys else keys, timestamps)]
        else:
            order = np.argsort(targets, kind="stable")
            bounds = np.concatenate(
                [[0], np.cumsum(np.bincount(targets, minlength=info.partitions))]
            )
            sorted_values = _objects(values)[order]
            sorted_keys = None if no_keys else _objects(keys)[order]
            sorted_stamps = timestamps[order]
            groups = []
            for p in range(info.partitions):
                lo, hi = int(bounds[p]), int(bounds[p + 1])
                if lo == hi:
                    continue
                part_keys = None
                if sorted_keys is not None:
                    part_keys = sorted_keys[lo:hi].tolist()
                    if part_keys.count(None) == hi - lo:
                        part_keys = None
                groups.append((p, sorted_values[lo:hi].tolist(), part_keys, sorted_stamps[lo:hi]))
        # Every partition is encoded before any is written: a bad record writes nothing.
        encoded = [
            (p, encode_batches(part_values, part_keys, part_stamps))
            for p, part_values, part_keys, part_stamps in groups
        ]
        for p, batches in encoded:
            self._writer(info.name, p).append(
                batches,
                retention_ms=info.retention_ms,
                retention_bytes=info.retention_bytes,
                timeout=timeout,
            )

    def _writer(self, topic: str, partition: int) -> PartitionWriter:
        writer = self._writers.get((topic, partition))
        if writer is None:
            writer = PartitionWriter(
                self._bus.partition_dir(topic, partition),
                segment_bytes=self._bus.segment_bytes,
                fsync=self._bus.fsync,
            )
            self._writers[(topic, partition)] = writer
        return writer


def _objects(items: list[Any]) -> np.ndarray:
    """A 1-d object array of the items (never a 2-d array, whatever they are)."""
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


_NONE = np.array(None, dtype=object)


def _nulls(column: np.ndarray) -> np.ndarray:
    """Where an object array holds None."""
    return np.asarray(np.equal(column, _NONE), dtype=bool)


def _estimate_bytes(records: list[Any]) -> int:
    """The buffered size, estimated from a few records (exact for short lists)."""
    step = max(1, len(records) // 16)
    sample = records[::step]
    size = 0
    for record in sample:
        value = getattr(record, "value", None)
        key = getattr(record, "key", None)
        size += (len(value) if isinstance(value, bytes | bytearray) else 0) + 16
        size += len(key) if isinstance(key, bytes | bytearray) else 0
    return size * len(records) // len(sample)


def _timestamps(stamps: list[Any], chunks: list[tuple[list[Any], int]], topic: str) -> np.ndarray:
    """Record timestamps, the time of `produce` where a record has none."""
    n = len(stamps)
    missing = stamps.count(None)
    if missing == n and len(chunks) == 1:
        return np.full(n, chunks[0][1], dtype=np.int64)
    try:
        if missing == 0:
            return np.array(stamps, dtype=np.int64)
        defaults = np.repeat(
            np.array([now for _, now in chunks], dtype=np.int64), [len(c) for c, _ in chunks]
        )
        column = _objects(stamps)
        absent = _nulls(column)
        column[absent] = defaults[absent]
        return column.astype(np.int64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise RecordError(
            f"topic {topic!r}: a record's timestamp_ms is not an integer (ms since the epoch)",
            hint="pass int(time.time() * 1000), or leave it None for the time of producing",
        ) from exc


def partitions_for_keys(keys: list[bytes], partitions: int) -> np.ndarray:
    """`partition_for` of many keys at once: Kafka's murmur2, vectorised per key length."""
    n = len(keys)
    try:
        if n < 64:
            return np.fromiter((partition_for(k, partitions) for k in keys), np.int64, n)
        lengths = np.fromiter(map(len, keys), dtype=np.int64, count=n)
    except TypeError as exc:
        bad = next(k for k in keys if not isinstance(k, bytes | bytearray))
        raise RecordError(
            f"a record key is {type(bad).__name__}, not bytes: {bad!r:.60}",
            hint="encode keys to bytes, for example `str(id).encode()`",
        ) from exc
    out = np.empty(n, dtype=np.int64)
    column = _objects(keys)
    for length in np.unique(lengths).tolist():
        rows = np.flatnonzero(lengths == length)
        chosen = column[rows].tolist()
        if length > 512 or len(rows) < 16:
            out[rows] = [partition_for(k, partitions) for k in chosen]
            continue
        data = np.frombuffer(b"".join(chosen), dtype=np.uint8).reshape(len(rows), length)
        out[rows] = (_murmur2_rows(data) & np.uint32(0x7FFFFFFF)) % partitions
    return out


def _murmur2_rows(data: np.ndarray) -> np.ndarray:
    """Kafka's murmur2 of every row of a (keys, length) uint8 array (uint32 wraps around)."""
    m = np.uint32(0x5BD1E995)
    count, length = data.shape
    h = np.full(count, (0x9747B28C ^ length) & 0xFFFFFFFF, dtype=np.uint32)
    blocks = length // 4
    if blocks:
        words = np.ascontiguousarray(data[:, : blocks * 4]).view("<u4")
        for j in range(blocks):
            k = words[:, j] * m
            k ^= k >> np.uint32(24)
            k *= m
            h *= m
            h ^= k
    tail = blocks * 4
    rest = length - tail
    if rest == 3:
        h ^= data[:, tail + 2].astype(np.uint32) << np.uint32(16)
    if rest >= 2:
        h ^= data[:, tail + 1].astype(np.uint32) << np.uint32(8)
    if rest >= 1:
        h ^= data[:, tail].astype(np.uint32)
        h *= m
    h ^= h >> np.uint32(13)
    h *= m
    h ^= h >> np.uint32(15)
    return h
