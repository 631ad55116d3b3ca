"""Stream pipelines: micro-batches from a topic into a Delta table, exactly once.

Each micro-batch n is committed to the target table with the Delta application transaction
(`lakebed-stream:<pipeline>`, n) and, in the commit metadata, the progress it reached: the
next offset per partition, the watermark, and the replay offsets (where the oldest event
still held in window or deduplication state sits). Bad and late records go first to
`quarantine.<pipeline>` under the same transaction number with the batch's end offsets, so
a crash between the two commits re-forms exactly that batch and commits the target.

Operator state is not stored apart: on start, the pipeline re-reads the topic from the
replay offsets to the committed ones, leaves out what the quarantine holds, and rebuilds its
windows and deduplication keys from those events, emitting nothing. The same events give
the same state, so a kill -9 at any point neither loses nor double-counts an event.

Windows close on event time: the watermark is the largest event time seen minus the
allowed lateness; a window is emitted (appended) once the watermark passes its end, and an
event whose every window has already closed is late: it goes to quarantine, reason `late`.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lakebed.bus import Bus, Consumer, Record, TopicPartition
from lakebed.errors import (
    DuplicateTransactionError,
    LakebedError,
    Retryable,
    StreamError,
    TopicNotFoundError,
)
from lakebed.ingest.runner import Catalog
from lakebed.process.result import QueryResult
from lakebed.process.stream_decode import QUARANTINE_SCHEMA, Decoded, decode, quarantine_rows
from lakebed.process.stream_metrics import REGISTRY, MetricsRegistry, PipelineMetrics, write_status
from lakebed.process.stream_mirror import GroupMirror
from lakebed.process.stream_progress import (
    STREAM_KEY,
    Progress,
    committed_progress,
    location_keys,
    per_partition_ends,
)
from lakebed.process.stream_spec import PipelineSpec
from lakebed.process.stream_state import OperatorState
from lakebed.process.windows import EVENT_TIME, STREAM_RELATION, parse_duration_us
from lakebed.storage import Table, TableName

_REPLAY_STALL_SECONDS = 30.0
# A broker restart takes seconds: retry soon after it is back (waits grow to 5 s, as
# Kafka's own clients reconnect within a second), and give up (failing the pipeline) once
# failures have gone on for 5 minutes.
RETRY_GIVE_UP_SECONDS = 300.0
RETRY_MAX_SECONDS = 5.0
# How often progress is mirrored to the consumer group (on a thread of its own), and how
# long a stopping pipeline waits for its last positions to reach the group.
MIRROR_SECONDS = 2.0
MIRROR_CLOSE_SECONDS = 10.0


class StreamCatalog(Catalog, Protocol):
    """What a pipeline needs of the lakehouse: ingestion's catalog, plus SQL and the
    project's state folder (kept abstract: process sits below the lakehouse)."""

    state_dir: Path

    def sql(
        self, query: str, *, relations: Mapping[str, pa.Table] | None = None
    ) -> QueryResult: ...


class StreamProcessor:
    """Runs one pipeline: recover, then micro-batches until told to stop."""

    def __init__(
        self,
        catalog: StreamCatalog,
        spec: PipelineSpec,
        bus: Bus,
        *,
        registry: MetricsRegistry = REGISTRY,
    ) -> None:
        self.catalog = catalog
        self.spec = spec
        self.bus = bus
        self.metrics = registry.register(PipelineMetrics(spec.name, spec.topic, str(spec.target)))
        config = spec.config
        self.max_records = config.max_batch_records
        self.max_wait = parse_duration_us(config.max_batch_wait) / 1e6
        self.commit_interval = parse_duration_us(config.commit_interval) / 1e6
        self.window = spec.query.window if spec.query is not None else None
        self.schema_hint = spec.declared_schema
        self.consumer: Consumer | None = None
        self.state = self._new_state()
        self.batch = 0
        self.positions: dict[int, int] = {}
        self.durable: dict[int, int] = {}  # the positions committed to Delta
        self.ends: dict[int, int] = {}  # the topic's end offsets, as last looked up
        self.pending_end: dict[int, int] | None = None
        self._uncommitted = False
        self._last_mirror = 0.0
        self._group_mirror: GroupMirror | None = None
        self.stop_when_caught_up = False
        self._last_commit = time.monotonic()
        self._output: Table | None = None
        self._producer = bus.producer() if config.topic_out else None

    def _new_state(self) -> OperatorState:
        dedup = self.spec.config.dedup
        return OperatorState(
            self.spec.name,
            window=self.window,
            lateness_us=self.spec.lateness_us,
            dedup_key=list(dedup.key) if dedup is not None else None,
            dedup_horizon_us=parse_duration_us(dedup.within) if dedup is not None else 0,
        )

    # -- recovery ----------------------------------------------------------------------------

    def _existing(self, name: TableName) -> Table | None:
        return self.catalog.table(name) if self.catalog.storage.exists(name) else None

    def recover(self) -> None:
        """Find the committed progress, and rebuild window and dedup state from the topic."""
        self.metrics.state = "recovering"
        spec = self.spec
        topics = self.bus.topics()
        if spec.topic not in topics:
            raise TopicNotFoundError(spec.topic, topics)
        starts = self.bus.start_offsets(spec.topic)
        self.ends = self.bus.end_offsets(spec.topic)
        output = self._existing(spec.target)
        quarantine = self._existing(spec.quarantine)
        progress = self._committed(output)
        side = self._committed(quarantine)
        if side is not None and side.batch > (progress.batch if progress else 0):
            if side.final:  # a batch that only quarantined: its whole record
                progress = side
            else:  # the target commit of that batch never happened: re-form it exactly
                self.pending_end = side.offsets
        if progress is not None:
            self.batch = progress.batch
            self.positions = dict(progress.offsets)
            self.state.watermark = progress.watermark_us
            replay = dict(progress.replay)
        else:
            self.positions = self._start_offsets(starts)
            replay = {}
        for partition, first in starts.items():
            self.positions.setdefault(partition, first)
            # Retention dropped events before they were processed: go on from what is kept.
            self.positions[partition] = max(self.positions[partition], first)
        self.durable = dict(self.positions)
        self._replay(replay, quarantine)
        # No group: this consumer never waits on the group's coordinator (see GroupMirror).
        self.consumer = self.bus.consumer()
        self.consumer.assign(
            {TopicPartition(spec.topic, p): o for p, o in sorted(self.positions.items())}
        )
        self._output = self._existing(spec.target)
        if self._output is not None:
            self._hint_from(self._output)

    def _hint_from(self, table: Table) -> None:
        """Parse new events into the types the target table already has: each batch's own
        inference could differ (ISO times with and without fractions read as text and as
        timestamps), and the table would refuse the batch."""
        if self.schema_hint is not None or self.spec.query is not None:
            return
        schema = table.schema()
        payload = [f for f in schema if f.name not in ("_topic", "_partition", "_offset")]
        self.schema_hint = pa.schema([f for f in payload if f.name != EVENT_TIME])

    def _start_offsets(self, starts: dict[int, int]) -> dict[int, int]:
        """Where a pipeline with nothing committed begins: `start:` in its settings. A
        `latest` or timed start is kept in the pipeline's consumer group by its first run,
        so a run that read nothing does not move the start on (an `earliest` pipeline whose
        target was dropped starts over)."""
        config = self.spec.config
        if config.start == "earliest":
            return dict(starts)
        reader = self.bus.consumer(self.spec.group)
        try:
            partitions = [TopicPartition(self.spec.topic, p) for p in starts]
            began = reader.committed(partitions)
        finally:
            reader.close()
        if all(began.get(tp) is not None for tp in partitions):
            return {tp.partition: int(began[tp] or 0) for tp in partitions}
        if config.start == "latest":
            return dict(self.bus.end_offsets(self.spec.topic))
        at = config.start_ms
        assert at is not None
        return dict(self.bus.offsets_for_time(self.spec.topic, at))

    def _committed(self, table: Table | None) -> Progress | None:
        if table is None:
            return None
        batch = table.transaction_version(self.spec.app_id)
        if not batch:
            return None
        progress = committed_progress(table, self.spec.name, batch)
        if progress is None:
            raise StreamError(
                f"{table.name} holds batch {batch} of pipeline {self.spec.name} but its "
                "progress is not in the table's log",
                hint="the table was rewritten by another writer; drop it to start over",
            )
        return progress

    def _replay(self, replay: dict[int, int], quarantine: Table | None) -> None:
        ranges = {
            p: (start, self.positions[p])
            for p, start in replay.items()
            if p in self.positions and start < self.positions[p]
        }
        if not ranges or (self.window is None and self.spec.config.dedup is None):
            return
        reader = self.bus.consumer()
        reader.assign({TopicPartition(self.spec.topic, p): s for p, (s, _) in ranges.items()})
        parts, remaining = [], dict(ranges)
        last_progress = time.monotonic()
        try:
            while remaining:
                records = reader.poll(self.max_records, timeout=0.5)
                if not records.num_rows:
                    if time.monotonic() - last_progress > _REPLAY_STALL_SECONDS:
                        raise StreamError(
                            f"cannot re-read {self.spec.topic} partitions "
                            f"{sorted(remaining)} to rebuild the state of {self.spec.name}",
                            hint="check the bus is up and retention still keeps those events",
                        )
                    continue
                last_progress = time.monotonic()
                ends = pa.array([ranges[p][1] for p in records.column("partition").to_pylist()])
                records = records.filter(pc.less(records.column("offset"), ends))
                parts.append(records)
                reached = reader.position()
                for tp, position in reached.items():
                    if tp.partition in remaining and position >= remaining[tp.partition][1]:
                        del remaining[tp.partition]
        finally:
            reader.close()
        records = pa.concat_tables(parts)
        if quarantine is not None and records.num_rows:
            low = min(start for start, _ in ranges.values())
            done = self.catalog.sql(
                f"SELECT _partition, _offset FROM {self.spec.quarantine} WHERE _offset >= {low}"
            ).table
            if done.num_rows:
                excluded = location_keys(done.column("_partition"), done.column("_offset"))
                keys = location_keys(records.column("partition"), records.column("offset"))
                records = records.filter(pa.array(~np.isin(keys, excluded)))
        events = self._decode(records).events
        events = self.state.dedup(events)[0]
        self.state.add(events, self.positions, self.ends)
        self.state.evict()

    # -- one micro-batch -----------------------------------------------------------------------

    def _decode(self, records: pa.Table) -> Decoded:
        config = self.spec.config
        return decode(
            records,
            self.spec.name,
            fmt=config.format,
            schema=self.schema_hint,
            event_time=self.spec.event_time_column,
            event_time_unit=config.event_time_unit,
        )

    def _poll(self) -> pa.Table:
        """Up to `max_batch_records`: waits up to `max_batch_wait` for the first records,
        then takes only what is already there (a batch never waits to fill up)."""
        if self.pending_end is not None:
            return self._pending_batch()
        if self.stop_when_caught_up and self.caught_up():
            return pa.table({})
        return self._available()

    def _pending_batch(self) -> pa.Table:
        """The records of the interrupted batch, up to its recorded bounds."""
        assert self.consumer is not None
        parts: list[pa.Table] = []
        count = 0
        while count < self.max_records:
            records = self._within_pending(
                self.consumer.poll(self.max_records - count, timeout=0.05)
            )
            parts.append(records)
            count += records.num_rows
            if self._pending_reached():
                break
        return pa.concat_tables(parts) if parts else pa.table({})

    def _available(self) -> pa.Table:
        # Reading ahead in a thread was measured slower: on two cores the JSON parser and
        # the Delta writer already use both, and the GIL serialises the message objects.
        assert self.consumer is not None
        parts: list[pa.Table] = []
        count = 0
        deadline = time.monotonic() + self.max_wait
        while count < self.max_records:
            left = 0.0 if parts else deadline - time.monotonic()
            records = self.consumer.poll(self.max_records - count, timeout=max(left, 0.0))
            if records.num_rows:
                parts.append(records)
                count += records.num_rows
            elif parts or left <= 0:
                break
        return pa.concat_tables(parts) if parts else pa.table({})

    def _within_pending(self, records: pa.Table) -> pa.Table:
        """Only what the interrupted batch held: a crash between its quarantine commit and
        its target commit must not change the batch's bounds."""
        assert self.pending_end is not None
        assert self.consumer is not None
        if records.num_rows:
            limit = pa.array(
                [self.pending_end.get(p, 0) for p in records.column("partition").to_pylist()]
            )
            records = records.filter(pc.less(records.column("offset"), limit))
        for tp, position in self.consumer.position().items():
            bound = self.pending_end.get(tp.partition)
            if bound is not None and position > bound:
                self.consumer.seek(tp, bound)
        return records

    def _pending_reached(self) -> bool:
        assert self.pending_end is not None
        assert self.consumer is not None
        positions = {tp.partition: o for tp, o in self.consumer.position().items()}
        return all(positions.get(p, 0) >= end for p, end in self.pending_end.items())

    def step(self) -> int:
        """Read, process and commit one micro-batch; returns the number of events read."""
        started = time.perf_counter()
        records = self._poll()
        if not records.num_rows:
            output = self._idle_windows()
            due = time.monotonic() - self._last_commit > self.commit_interval
            if output is not None or (self._uncommitted and due):
                self._commit(output, QUARANTINE_SCHEMA.empty_table(), 0, 0)
            self._report(0, started)
            return 0
        self.positions.update(per_partition_ends(records))
        try:
            self.ends = self.bus.end_offsets(self.spec.topic)
        except LakebedError:  # unknown ends: count every partition as behind (the watermark
            # waits) rather than as caught up (it could run ahead of a partition's events)
            self.ends = {p: max(self.ends.get(p, 0), o + 1) for p, o in self.positions.items()}
        decoded = self._decode(records)
        events: pa.Table = decoded.events
        if self.schema_hint is None and self.spec.query is not None and events.num_rows:
            self.schema_hint = pa.schema([f for f in events.schema if not f.name.startswith("_")])
        rejects = [decoded.rejects]
        events, late = self.state.late(events)
        if late.num_rows:
            keys = location_keys(late.column("_partition"), late.column("_offset"))
            mask = np.isin(
                location_keys(records.column("partition"), records.column("offset")), keys
            )
            rejects.append(
                quarantine_rows(
                    records.filter(pa.array(mask)),
                    self.spec.name,
                    "late",
                    "the event's windows had closed (event time older than the watermark)",
                )
            )
        events, duplicates = self.state.dedup(events)
        output = self._process(events)
        reject_table = pa.concat_tables(rejects)
        self._commit(output, reject_table, late.num_rows, duplicates)
        self.metrics.events_in += records.num_rows
        self._report(records.num_rows, started)
        return int(records.num_rows)

    def _idle_windows(self) -> pa.Table | None:
        """On a poll with nothing to read: the windows closed by partitions having gone idle
        (see `OperatorState.advance`), or None."""
        held = self.state.events
        if self.window is None or held is None or not held.num_rows:
            return None
        with contextlib.suppress(LakebedError):
            self.ends = self.bus.end_offsets(self.spec.topic)
        return self._process(held.slice(0, 0))

    def _process(self, events: pa.Table) -> pa.Table | None:
        query = self.spec.query
        if query is None or self.window is None:
            self.state.advance(events, self.positions, self.ends)
            if query is None:
                return events
            if not events.num_rows:
                return None
            return self.catalog.sql(query.sql, relations={STREAM_RELATION: events}).table
        upsert = self.spec.config.output == "upsert"
        emitting = self.state.emit(events, self.positions, self.ends, upsert=upsert)
        if emitting is None:
            return None
        return self.catalog.sql(query.sql, relations={STREAM_RELATION: emitting}).table

    # -- committing ----------------------------------------------------------------------------

    def _output_table(self, output: pa.Table) -> Table:
        if self._output is None:
            config = self.spec.config
            self._output = self.catalog.create_table(
                self.spec.target,
                output.schema,
                description=config.description
                or f"Stream pipeline {self.spec.name} from topic {self.spec.topic}",
                owner=config.owner,
                domain=config.domain,
                exist_ok=True,
            )
            self._hint_from(self._output)
        return self._output

    def _commit(
        self,
        output: pa.Table | None,
        rejects: pa.Table,
        late: int,
        duplicates: int,
        *,
        force: bool = False,
    ) -> None:
        spec = self.spec
        rows = 0 if output is None else output.num_rows
        due = force or time.monotonic() - self._last_commit > self.commit_interval
        if not rows and not rejects.num_rows and not due:
            self._uncommitted = True
            self._count(0, 0, late, duplicates)
            return
        number = self.batch + 1
        target = self._output is not None or rows > 0
        progress = Progress(
            number,
            dict(self.positions),
            self.state.replay_offsets(self.positions),
            self.state.watermark,
            final=not target,
        )
        metadata = {STREAM_KEY: progress.to_json(spec.name)}
        txn = (spec.app_id, number)
        if not target and not rejects.num_rows:
            self._uncommitted = True  # nothing written anywhere yet: replay covers it
            self._count(0, 0, late, duplicates)
            return
        if rejects.num_rows:
            quarantine = self.catalog.create_table(
                spec.quarantine,
                QUARANTINE_SCHEMA,
                description=f"Events pipeline {spec.name} could not process, with the reason",
                owner=spec.config.owner,
                domain=spec.config.domain,
                exist_ok=True,
            )
            # Already there when a crash came between this commit and the target's.
            with contextlib.suppress(DuplicateTransactionError):
                quarantine.append(rejects, app_transaction=txn, metadata=metadata)
        if target:
            progress.final = False
            metadata = {STREAM_KEY: progress.to_json(spec.name)}
            if output is None or not rows:
                assert self._output is not None
                output = self._output.schema().empty_table()
            table = self._output_table(output)
            if spec.config.output == "upsert" and rows:
                table.merge(
                    output,
                    spec.upsert_key,
                    allow_missing_columns=True,
                    app_transaction=txn,
                    metadata=metadata,
                )
            else:
                table.append(
                    output, allow_missing_columns=True, app_transaction=txn, metadata=metadata
                )
        self.batch = number
        self.durable = dict(self.positions)
        self.pending_end = None
        self._uncommitted = False
        self._last_commit = time.monotonic()
        self.metrics.last_commit_at = time.time()
        self._count(rows, rejects.num_rows, late, duplicates)
        self._after_commit(output if rows else None)

    def _count(self, rows: int, rejected: int, late: int, duplicates: int) -> None:
        metrics = self.metrics
        metrics.batches += 1
        metrics.rows_out += rows
        metrics.quarantined += rejected
        metrics.late += late
        metrics.duplicates += duplicates

    def _after_commit(self, output: pa.Table | None) -> None:
        self._mirror()
        if output is not None and self._producer is not None and self.spec.config.topic_out:
            key_columns = self.spec.upsert_key
            records = []
            for row in output.to_pylist():
                key = "|".join(str(row.get(k)) for k in key_columns) if key_columns else None
                records.append(
                    Record(
                        json.dumps(row, default=str).encode(),
                        key=key.encode() if key is not None else None,
                    )
                )
            self._producer.produce(self.spec.config.topic_out, records)
            self._producer.flush(30.0)

    def _mirror(self, *, force: bool = False) -> None:
        """Copy the durable positions to the bus's consumer group (at most every few
        seconds, without waiting for the broker), so Kafka's own tools show this pipeline's
        lag too. The Delta log stays the truth; before a pipeline's first commit, the group
        remembers where a `latest` or timed start began."""
        if not self.durable or (
            not force and time.monotonic() - self._last_mirror < MIRROR_SECONDS
        ):
            return
        self._last_mirror = time.monotonic()
        if self._group_mirror is None:
            spec = self.spec
            self._group_mirror = GroupMirror(self.bus, spec.group, spec.topic, name=spec.name)
        self._group_mirror.offer(self.durable)

    def _close_mirror(self) -> None:
        if self._group_mirror is not None:
            self._group_mirror.close(MIRROR_CLOSE_SECONDS)
            self._group_mirror = None

    def _report(self, events: int, started: float) -> None:
        metrics = self.metrics
        elapsed = time.perf_counter() - started
        metrics.last_batch_seconds = elapsed
        if events:
            rate = events / max(elapsed, 1e-6)
            metrics.events_per_second = (
                rate
                if not metrics.events_per_second
                else 0.7 * metrics.events_per_second + 0.3 * rate
            )
        metrics.positions = {str(p): o for p, o in self.positions.items()}
        if not events:  # an idle poll: look the ends up here (a batch did in step)
            with contextlib.suppress(LakebedError):
                self.ends = self.bus.end_offsets(self.spec.topic)
        metrics.lag = {
            str(p): max(0, end - self.positions.get(p, 0)) for p, end in self.ends.items()
        }
        watermark = self.state.watermark
        if watermark is not None:
            metrics.watermark = watermark / 1e6
            metrics.watermark_delay_seconds = max(0.0, time.time() - watermark / 1e6)
        metrics.state_rows = self.state.rows
        write_status(self.catalog.state_dir, metrics)

    # -- running -----------------------------------------------------------------------------

    def caught_up(self) -> bool:
        """Whether everything on the topic has been read (looks the end offsets up)."""
        self.ends = self.bus.end_offsets(self.spec.topic)
        return all(self.positions.get(p, 0) >= end for p, end in self.ends.items())

    def _close_consumer(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None

    def _reset(self) -> None:
        """Forget everything not committed: the next `recover` starts from the Delta log."""
        with contextlib.suppress(Exception):
            self._close_consumer()
        self.consumer = None
        self.state = self._new_state()
        self.pending_end = None
        self.batch = 0
        self._uncommitted = False
        self._output = None
        self.schema_hint = self.spec.declared_schema

    def _retry_after(self, exc: Exception, attempt: int, stop: threading.Event) -> None:
        """A retryable failure (the broker is restarting, a commit raced): wait, then start
        over from the committed progress, as a restarted process would."""
        delay = min(RETRY_MAX_SECONDS, 0.25 * 2**attempt)
        self.metrics.state = "retrying"
        self.metrics.error = f"{exc} (retry {attempt + 1} in {delay:.1f} s)"
        with contextlib.suppress(Exception):
            write_status(self.catalog.state_dir, self.metrics)
        self._reset()
        stop.wait(delay)

    def run(
        self,
        stop: threading.Event,
        *,
        until_caught_up: bool = False,
        max_batches: int | None = None,
    ) -> PipelineMetrics:
        """Process until `stop` is set (the current batch is finished and committed).

        Retryable failures (an unreachable broker, a lost commit race) are waited out with
        backoff and the pipeline resumes from its last commit; other errors are raised.
        """
        attempt = 0
        failing_since: float | None = None
        batches = 0
        self.stop_when_caught_up = until_caught_up
        try:
            while not stop.is_set():
                try:
                    if self.consumer is None:
                        self.recover()
                        self.metrics.state = "running"
                        self.metrics.error = None
                        write_status(self.catalog.state_dir, self.metrics)
                    read = self.step()
                except Exception as exc:
                    now = time.monotonic()
                    failing_since = now if failing_since is None else failing_since
                    if (
                        not isinstance(exc, Retryable)
                        or now - failing_since > RETRY_GIVE_UP_SECONDS
                    ):
                        raise
                    self._retry_after(exc, attempt, stop)
                    attempt += 1
                    continue
                attempt, failing_since = 0, None
                batches += 1
                if max_batches is not None and batches >= max_batches:
                    break
                if until_caught_up and not read and self.pending_end is None and self.caught_up():
                    break
            if self._uncommitted:  # record how far it got, so a restart replays less
                self._commit(None, QUARANTINE_SCHEMA.empty_table(), 0, 0, force=True)
            self._mirror(force=True)
            self.metrics.state = "stopped"
        except BaseException as exc:
            self.metrics.state = "failed"
            self.metrics.error = str(exc)
            raise
        finally:
            with contextlib.suppress(Exception):
                write_status(self.catalog.state_dir, self.metrics)
            self._close_consumer()
            self._close_mirror()
            if self._producer is not None:
                self._producer.close()
        return self.metrics
