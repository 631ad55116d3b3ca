"""Consuming from the embedded bus: assigned or group-subscribed partitions, read without
locks and handed out as Arrow tables built from the log's columnar batches."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from lakebed.bus.base import BEGINNING, END, RECORD_SCHEMA, TopicPartition, empty_records
from lakebed.bus.local_batch import Batch
from lakebed.bus.local_groups import (
    REBALANCE_INTERVAL_S,
    GroupMember,
    commit_offsets,
    committed_offsets,
    group_dir,
)
from lakebed.bus.local_log import PartitionReader, partition_bounds, validate_topic
from lakebed.errors import BusError

if TYPE_CHECKING:
    from lakebed.bus.local import LocalBus

POLL_BYTES = 64 * 1024 * 1024  # a poll returns about this much at most, like fetch.max.bytes


class LocalConsumer:
    """Reads assigned (or, with a group, subscribed) partitions; `poll` returns Arrow tables
    built from the log's columnar batches without per-record work."""

    def __init__(self, bus: LocalBus, group: str | None) -> None:
        self._bus = bus
        self._group_dir = None if group is None else group_dir(bus.groups_dir, group)
        self._positions: dict[TopicPartition, int] = {}
        self._readers: dict[TopicPartition, PartitionReader] = {}
        self._member: GroupMember | None = None
        self._subscription: list[str] = []
        self._rebalanced_at = 0.0
        self._next_partition = 0
        self._topic_columns: dict[str, pa.Array] = {}
        self._closed = False

    # -- assignment -----------------------------------------------------------------------

    def subscribe(self, topics: Sequence[str]) -> None:
        self._check_open()
        if self._group_dir is None:
            raise BusError(
                "subscribe() needs a consumer group",
                hint="open the consumer with bus.consumer(group='NAME'), or use assign()",
            )
        names = [validate_topic(t) for t in topics]
        self._unassign(list(self._positions))
        self._subscription = names
        if self._member is None:
            self._member = GroupMember(self._group_dir, names)
        else:
            for tp in self._member.held():
                self._member.release(tp)
            self._member.set_topics(names)
        self._rebalance()

    def assign(self, positions: Mapping[TopicPartition, int]) -> None:
        self._check_open()
        if self._member is not None:
            self._member.close()
            self._member = None
            self._subscription = []
        resolved = {}
        for tp, offset in positions.items():
            tp = TopicPartition(*tp)
            self._check_partition(tp)
            resolved[tp] = self._resolve(tp, offset)
        self._unassign(list(self._positions))
        self._positions.update(resolved)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self._check_open()
        tp = TopicPartition(*partition)
        if tp not in self._positions:
            raise BusError(
                f"seek() on {tp.topic}[{tp.partition}], which this consumer is not assigned",
                hint=f"assigned: {self.assignment() or 'nothing'}",
            )
        self._positions[tp] = self._resolve(tp, offset)

    def _resolve(self, tp: TopicPartition, offset: int) -> int:
        if offset == BEGINNING:
            return partition_bounds(self._bus.partition_dir(*tp))[0]
        if offset == END:
            return partition_bounds(self._bus.partition_dir(*tp))[1]
        if not isinstance(offset, int) or offset < 0:
            raise BusError(
                f"{tp.topic}[{tp.partition}]: invalid offset {offset!r}",
                hint="use an offset >= 0, BEGINNING or END",
            )
        return offset

    def _check_partition(self, tp: TopicPartition) -> None:
        info = self._bus.topic(tp.topic)
        if not 0 <= tp.partition < info.partitions:
            raise BusError(
                f"topic {tp.topic!r} has partitions 0..{info.partitions - 1}, not {tp.partition}"
            )

    def _unassign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._positions.pop(tp, None)
            reader = self._readers.pop(tp, None)
            if reader is not None:
                reader.close()

    def _rebalance(self) -> None:
        assert self._member is not None
        assert self._group_dir is not None
        self._rebalanced_at = time.monotonic()
        counts = {}
        for topic in self._subscription:
            info = self._bus.read_topic(topic)
            counts[topic] = 0 if info is None else info.partitions
        claimed, released = self._member.rebalance(counts)
        self._unassign(released)
        committed = committed_offsets(self._group_dir, claimed)
        for tp in claimed:
            offset = committed[tp]
            self._positions[tp] = self._resolve(tp, BEGINNING if offset is None else offset)

    def position(self) -> dict[TopicPartition, int]:
        return dict(self._positions)

    def assignment(self) -> list[TopicPartition]:
        return sorted(self._positions)

    # -- reading --------------------------------------------------------------------------

    def poll(self, max_records: int = 10_000, timeout: float = 1.0) -> pa.Table:
        self._check_open()
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            if self._member is not None and (
                time.monotonic() - self._rebalanced_at >= REBALANCE_INTERVAL_S
            ):
                self._rebalance()
            table = self._fetch(max_records)
            left = deadline - time.monotonic()
            if table.num_rows or left <= 0:
                return table
            time.sleep(min(delay, left))
            delay = min(delay * 1.5, 0.02)

    def _fetch(self, max_records: int) -> pa.Table:
        partitions = list(self._positions)
        if not partitions or max_records <= 0:
            return empty_records()
        start = self._next_partition % len(partitions)
        self._next_partition += 1
        remaining = max_records
        size = 0
        runs: list[tuple[TopicPartition, int, list[tuple[Batch, int, int]]]] = []
        for tp in partitions[start:] + partitions[:start]:
            if remaining <= 0 or size >= POLL_BYTES:
                break
            reader = self._readers.get(tp)
            if reader is None:
                reader = self._readers[tp] = PartitionReader(self._bus.partition_dir(*tp))
            pieces, after = reader.read(self._positions[tp], remaining, POLL_BYTES - size)
            if pieces:
                first_offset = pieces[0][0].base + pieces[0][1]
                runs.append((tp, first_offset, pieces))
                remaining -= after - first_offset
                size += sum(b.length * c // b.count for b, _, c in pieces)
            self._positions[tp] = after
        if not runs:
            return empty_records()
        return pa.Table.from_batches(
            [batch for run in runs for batch in self._record_batches(*run)], schema=RECORD_SCHEMA
        )

    def _record_batches(
        self, tp: TopicPartition, first_offset: int, pieces: list[tuple[Batch, int, int]]
    ) -> list[pa.RecordBatch]:
        """Arrow batches of one partition's consecutive records: zero-copy slices of the read
        buffers, or one concatenated batch when the log holds many small batches."""
        columns: list[tuple[pa.Array, pa.Array, pa.Array]] = []
        for batch, first, count in pieces:
            arrays = batch.columns()
            if first or count != batch.count:
                arrays = (
                    arrays[0].slice(first, count),
                    arrays[1].slice(first, count),
                    arrays[2].slice(first, count),
                )
            columns.append(arrays)
        total = sum(count for _, _, count in pieces)
        small = total < 4096 * len(columns) and total * len(tp.topic) < 2**30
        if len(columns) > 1 and small:
            columns = [
                (
                    pa.concat_arrays([c[0] for c in columns]),
                    pa.concat_arrays([c[1] for c in columns]),
                    pa.concat_arrays([c[2] for c in columns]),
                )
            ]
        out = []
        offset = first_offset
        for timestamps, keys, values in columns:
            n = len(timestamps)
            out.append(
                pa.RecordBatch.from_arrays(
                    [
                        self._topic_column(tp.topic, n),
                        pa.array(np.full(n, tp.partition, dtype=np.int32)),
                        pa.array(np.arange(offset, offset + n, dtype=np.int64)),
                        timestamps,
                        keys,
                        values,
                    ],
                    schema=RECORD_SCHEMA,
                )
            )
            offset += n
        return out

    def _topic_column(self, topic: str, n: int) -> pa.Array:
        """`topic` repeated n times, sliced from a cached array."""
        column = self._topic_columns.get(topic)
        if column is None or len(column) < n:
            size = max(n, 1024)
            name = topic.encode()
            offsets = (np.arange(size + 1, dtype=np.int64) * len(name)).astype(np.int32)
            column = pa.Array.from_buffers(
                pa.string(), size, [None, pa.py_buffer(offsets), pa.py_buffer(name * size)]
            )
            self._topic_columns[topic] = column
        return column.slice(0, n)

    # -- committed offsets ----------------------------------------------------------------

    def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        self._check_open()
        directory = self._require_group("commit")
        chosen = self._positions if offsets is None else offsets
        clean = {}
        for tp, offset in chosen.items():
            if not isinstance(offset, int) or offset < 0:
                raise BusError(f"cannot commit offset {offset!r} for {tp.topic}[{tp.partition}]")
            clean[TopicPartition(*tp)] = offset
        commit_offsets(directory, clean, fsync=self._bus.fsync)

    def committed(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        directory = self._require_group("committed")
        return committed_offsets(directory, [TopicPartition(*tp) for tp in partitions])

    def _require_group(self, what: str) -> Path:
        if self._group_dir is None:
            raise BusError(
                f"{what}() needs a consumer group",
                hint="open the consumer with bus.consumer(group='NAME')",
            )
        return self._group_dir

    def _check_open(self) -> None:
        if self._closed:
            raise BusError("this consumer is closed", hint="open a new bus.consumer()")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._unassign(list(self._positions))
        if self._member is not None:
            self._member.close()
            self._member = None
