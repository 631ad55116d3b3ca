"""A pipeline's operator state: events of windows not yet closed, deduplication keys and the
watermark. None of it is stored: the processor rebuilds it by replaying the topic."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lakebed.errors import StreamError
from lakebed.process.windows import EVENT_TIME, TIMESTAMP_US, Window

Offsets = dict[int, int]
# How long a partition must have had nothing more to read before it stops holding the
# watermark back. A producer's records for several partitions land one partition at a time
# (after a broker restart, a partition can lag its neighbours): a partition that is caught
# up for an instant may be about to receive events as old as those just read elsewhere.
IDLE_SECONDS = 1.0


def _micros(value: int) -> pa.Scalar:
    return pa.scalar(value, pa.int64()).cast(TIMESTAMP_US)


class OperatorState:
    """What one pipeline remembers between micro-batches."""

    def __init__(
        self,
        pipeline: str,
        *,
        window: Window | None,
        lateness_us: int | None,
        dedup_key: list[str] | None,
        dedup_horizon_us: int,
    ) -> None:
        self.pipeline = pipeline
        self.window = window
        self.lateness = lateness_us  # None: nothing is ever late
        self.dedup_key = dedup_key
        self.dedup_horizon = dedup_horizon_us
        self.events: pa.Table | None = None  # events of windows not yet closed
        self.seen: dict[tuple[Any, ...], tuple[int, int, int]] = {}  # key -> (t, part, offset)
        self.watermark: int | None = None
        self.partition_max: dict[int, int] = {}  # newest event time seen per partition
        self.caught_up_since: dict[int, float] = {}  # monotonic time, per caught-up partition

    @property
    def rows(self) -> int:
        return 0 if self.events is None else int(self.events.num_rows)

    def late(self, events: pa.Table) -> tuple[pa.Table, pa.Table]:
        """(on time, late): an event is late when every window holding it has closed."""
        if self.lateness is None or self.watermark is None or not events.num_rows:
            return events, events.slice(0, 0)
        times = events.column(EVENT_TIME).cast(pa.int64()).to_numpy()
        ends = self.window.last_end_us(times) if self.window is not None else times + 1
        late = ends <= self.watermark
        if not late.any():
            return events, events.slice(0, 0)
        return events.filter(pa.array(~late)), events.filter(pa.array(late))

    def dedup(self, events: pa.Table) -> tuple[pa.Table, int]:
        """The events whose key was not seen within the horizon, and how many were dropped."""
        if self.dedup_key is None or not events.num_rows:
            return events, 0
        missing = [k for k in self.dedup_key if k not in events.column_names]
        if missing:
            raise StreamError(
                f"pipeline {self.pipeline}: dedup key {', '.join(missing)} is not a field "
                f"of the events (fields: {', '.join(events.column_names)})"
            )
        columns = [events.column(k).to_pylist() for k in self.dedup_key]
        times = events.column(EVENT_TIME).cast(pa.int64()).to_pylist()
        partitions = events.column("_partition").to_pylist()
        offsets = events.column("_offset").to_pylist()
        keep = np.ones(events.num_rows, dtype=bool)
        seen = self.seen
        for i, key in enumerate(zip(*columns, strict=True)):
            first = seen.get(key)
            if first is not None and abs(times[i] - first[0]) <= self.dedup_horizon:
                keep[i] = False
            else:
                seen[key] = (times[i], partitions[i], offsets[i])
        dropped = int((~keep).sum())
        return (events.filter(pa.array(keep)) if dropped else events), dropped

    def add(self, events: pa.Table, positions: Offsets, ends: Offsets) -> None:
        """Hold `events` (when windowed) and move the watermark on."""
        if self.window is not None and events.num_rows:
            if self.events is None or not self.events.num_rows:
                self.events = events
            else:
                self.events = pa.concat_tables([self.events, events], promote_options="permissive")
        self.advance(events, positions, ends)

    def advance(self, events: pa.Table, positions: Offsets, ends: Offsets) -> None:
        """Event time has reached the newest event of the partition furthest behind.

        Partitions are read at different speeds; a partition with records still to read
        holds the watermark back (with its newest event time seen, or entirely if none was
        read yet), so one fast partition does not make the others' events late. A partition
        caught up for `IDLE_SECONDS` holds nothing back (it would stall the watermark while
        idle); called with no events, only that passing of time moves the watermark.
        """
        if self.lateness is None:
            return
        now = time.monotonic()
        for partition, end in ends.items():
            if positions.get(partition, 0) < end:
                self.caught_up_since.pop(partition, None)
            else:
                self.caught_up_since.setdefault(partition, now)
        holding = [
            p
            for p in ends
            if p not in self.caught_up_since or now - self.caught_up_since[p] < IDLE_SECONDS
        ]
        if not events.num_rows:
            self._move_watermark(holding)
            return
        newest = events.group_by("_partition").aggregate([(EVENT_TIME, "max")])
        for partition, value in zip(
            newest.column("_partition").to_pylist(),
            newest.column(f"{EVENT_TIME}_max").cast(pa.int64()).to_pylist(),
            strict=True,
        ):
            seen = self.partition_max.get(int(partition))
            self.partition_max[int(partition)] = value if seen is None else max(seen, value)
        self._move_watermark(holding)

    def _move_watermark(self, holding: list[int]) -> None:
        """The watermark from the newest event of the partition furthest behind among those
        `holding` it back (the newest event anywhere when none does)."""
        assert self.lateness is not None
        if not self.partition_max or any(p not in self.partition_max for p in holding):
            return
        held = [self.partition_max[p] for p in holding]
        reached = min(held) if held else max(self.partition_max.values())
        candidate = reached - self.lateness
        self.watermark = candidate if self.watermark is None else max(self.watermark, candidate)

    def evict(self) -> None:
        """Forget the events of closed windows and the keys older than the horizon."""
        if self.watermark is None:
            return
        if self.seen:
            horizon_start = self.watermark - self.dedup_horizon
            self.seen = {k: v for k, v in self.seen.items() if v[0] >= horizon_start}
        if self.window is None or self.events is None:
            return
        if self.window.kind == "session":
            assigned = self.window.assign(self.events)
            still_open = pc.greater(assigned.column("window_end"), _micros(self.watermark))
            self.events = assigned.filter(still_open).drop_columns(["window_start", "window_end"])
        else:
            times = self.events.column(EVENT_TIME).cast(pa.int64()).to_numpy()
            keep = self.window.last_end_us(times) > self.watermark
            if not keep.all():
                self.events = self.events.filter(pa.array(keep))

    def emit(
        self, events: pa.Table, positions: Offsets, ends: Offsets, *, upsert: bool
    ) -> pa.Table | None:
        """Add a batch's events; the rows (with their windows) the query must run over now.

        Appending: the windows the watermark closed with this batch. Upserting: every window
        this batch's events fall in, with all of its events so far.
        """
        assert self.window is not None
        before = self.watermark
        self.add(events, positions, ends)
        if self.events is None or not self.events.num_rows or self.watermark is None:
            return None
        assigned = self.window.assign(self.events)
        ends_column = assigned.column("window_end")
        if upsert:
            touched = self.window.assign(events).column("window_start").unique()
            chosen = pc.is_in(assigned.column("window_start"), value_set=touched)
        else:
            chosen = pc.less_equal(ends_column, _micros(self.watermark))
        if before is not None:  # windows closed before this batch were emitted already
            chosen = pc.and_(chosen, pc.greater(ends_column, _micros(before)))
        emitting = assigned.filter(chosen)
        self.evict()
        return emitting if emitting.num_rows else None

    def replay_offsets(self, positions: Offsets) -> Offsets:
        """Per partition, the oldest offset still held: where a restart re-reads from."""
        replay = dict(positions)
        if self.events is not None and self.events.num_rows:
            low = self.events.group_by("_partition").aggregate([("_offset", "min")])
            for p, o in zip(
                low.column("_partition").to_pylist(),
                low.column("_offset_min").to_pylist(),
                strict=True,
            ):
                replay[int(p)] = min(replay.get(int(p), o), int(o))
        for _, partition, offset in self.seen.values():
            replay[partition] = min(replay.get(partition, offset), offset)
        return replay
