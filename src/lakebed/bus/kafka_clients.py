"""The Kafka clients behind the bus: an idempotent producer and a batch consumer.

Both wrap confluent-kafka (librdkafka). The producer leaves batching and retries to librdkafka
and only hears back about failures; the consumer builds each `poll` result column by column
from librdkafka's message batch and tracks positions itself, so `position()` is exact and free.
"""

from __future__ import annotations

import gc
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any, cast

import pyarrow as pa
from confluent_kafka import Consumer as RawConsumer
from confluent_kafka import KafkaError, KafkaException, Message
from confluent_kafka import Producer as RawProducer
from confluent_kafka import TopicPartition as RawPartition

from lakebed.bus.base import (
    BEGINNING,
    END,
    RECORD_SCHEMA,
    Record,
    TopicPartition,
    empty_records,
)
from lakebed.errors import BusError, BusUnavailableError, RecordError, TopicNotFoundError

__all__ = ["KafkaConsumer", "KafkaProducer"]

_LOG = logging.getLogger("lakebed.bus.kafka")


class _LibrdkafkaLog:
    """Librdkafka's log lines, all at DEBUG: it logs every refused connection as an error,
    while what matters reaches the caller as an exception."""

    def log(self, level: int, message: str, *args: object) -> None:
        _LOG.debug(message, *args)


RDKAFKA_LOG = _LibrdkafkaLog()

# Librdkafka's own retries cover a broker restart; a record still unacknowledged after this
# fails with _MSG_TIMED_OUT, which also bounds flush(None).
_MESSAGE_TIMEOUT_MS = 120_000

_PRODUCER_SETTINGS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "partitioner": "murmur2_random",  # Java's default: the same partition for the same key
    "linger.ms": 5,
    "batch.size": 1_000_000,  # the broker's default message.max.bytes caps a batch near 1 MB
    "batch.num.messages": 100_000,
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
    "compression.type": "lz4",
    "message.timeout.ms": _MESSAGE_TIMEOUT_MS,
    "delivery.report.only.error": True,  # no Python callback per acknowledged record
}

# How consumers fetch: large fetches and a deep prefetch queue (the benchmarks' raw
# consumer uses them too, so that it differs from lakebed only in the per-record work).
FETCH_SETTINGS: dict[str, Any] = {
    "fetch.max.bytes": 104_857_600,
    "max.partition.fetch.bytes": 16_777_216,
    "queued.min.messages": 1_000_000,
    "queued.max.messages.kbytes": 262_144,
    "fetch.wait.max.ms": 100,
}
_CONSUMER_SETTINGS: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "enable.partition.eof": False,
    **FETCH_SETTINGS,
}

# The errors that mean "the broker is not there (yet)": worth retrying, not a bad request.
_UNAVAILABLE = {
    KafkaError._TRANSPORT,
    KafkaError._TIMED_OUT,
    KafkaError._MSG_TIMED_OUT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._RESOLVE,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NETWORK_EXCEPTION,
    KafkaError.NOT_CONTROLLER,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    # A restarted broker answers these while it takes its partitions back.
    KafkaError.UNKNOWN_LEADER_EPOCH,
    KafkaError.FENCED_LEADER_EPOCH,
    KafkaError.STALE_BROKER_EPOCH,
    KafkaError.REPLICA_NOT_AVAILABLE,
    KafkaError.NOT_ENOUGH_REPLICAS,
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError._WAIT_COORD,
}

# Unbound accessors: map() over them walks a batch in C, without a Python loop per record.
_error = Message.error
_partition = Message.partition
_offset = Message.offset
_timestamp = Message.timestamp
_key = Message.key
_value = Message.value
_topic = Message.topic
_second = itemgetter(1)


def kafka_error(exc: BaseException) -> KafkaError | None:
    """The KafkaError a confluent-kafka exception carries, if any."""
    arg = exc.args[0] if exc.args else None
    return arg if isinstance(arg, KafkaError) else None


def is_unavailable(error: KafkaError | None) -> bool:
    """Whether the error means the broker did not answer or is still electing leaders (as
    it does for a few seconds after a restart), so a retry may succeed."""
    return error is not None and (error.code() in _UNAVAILABLE or bool(error.retriable()))


class KafkaProducer:
    """Queues records in librdkafka, which batches them per partition; `flush` waits for acks."""

    def __init__(self, config: Mapping[str, Any], bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._failures: list[tuple[str, int, KafkaError]] = []
        self._fatal: KafkaError | None = None
        self._closed = False
        self._producer = RawProducer(
            {
                **config,
                **_PRODUCER_SETTINGS,
                "on_delivery": self._on_delivery,
                "error_cb": self._on_error,
            },
            logger=RDKAFKA_LOG,
        )

    def produce(self, topic: str, records: Iterable[Record]) -> None:
        if self._closed:
            raise BusError("produce() on a closed producer", hint="open a new one: bus.producer()")
        self._raise_fatal()
        produce = self._producer.produce
        try:
            for record in records:
                partition = -1 if record.partition is None else record.partition
                timestamp = record.timestamp_ms or 0
                while True:
                    try:
                        produce(topic, record.value, record.key, partition, timestamp=timestamp)
                        break
                    except BufferError:  # the local queue is full: serve acks until there is room
                        self._producer.poll(0.05)
                    except KafkaException as exc:
                        raise self._rejected(topic, record, exc) from exc
        except (TypeError, AttributeError) as exc:
            raise RecordError(
                f"a record for topic {topic!r} is not a Record of bytes: {exc}",
                hint="produce lakebed.bus.Record objects with bytes (or None) keys and values",
            ) from exc
        self._producer.poll(0)

    def flush(self, timeout: float | None = None) -> None:
        wait = _MESSAGE_TIMEOUT_MS / 1000 + 5 if timeout is None else timeout
        remaining = self._producer.flush(wait)
        self._raise_fatal()
        self._raise_failures()
        if remaining:
            raise BusUnavailableError(
                f"{remaining} records were not acknowledged by the Kafka broker at "
                f"{self.bootstrap} within {wait:g} s",
                hint="check that the broker is running; the records stay queued and the next "
                "flush() waits for them again",
            )

    def close(self) -> None:
        """Flush what is queued (up to 10 s), then release the client; raises if records
        remain (they are dropped)."""
        if self._closed:
            return
        try:
            self.flush(10.0)
        finally:
            self._closed = True
            self._producer.purge()
            self._producer.flush(0)
            self._producer.close()

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:  # only failures are reported (delivery.report.only.error)
            self._failures.append((message.topic() or "?", message.partition() or 0, error))

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = error
        else:
            _LOG.debug("kafka producer at %s: %s", self.bootstrap, error)

    def _raise_fatal(self) -> None:
        if self._fatal is not None:
            raise BusError(
                f"Kafka producer for {self.bootstrap} failed for good: {self._fatal.str()}",
                hint="close this producer and open a new one; unflushed records were lost",
            )

    def _raise_failures(self) -> None:
        failures, self._failures = self._failures, []
        if not failures:
            return
        places = sorted({f"{topic}[{partition}]" for topic, partition, _ in failures})
        reasons = sorted({error.str() for _, _, error in failures})
        message = (
            f"{len(failures)} records were not delivered to {', '.join(places[:5])} at "
            f"{self.bootstrap}: {'; '.join(reasons[:3])}"
        )
        if all(is_unavailable(error) for _, _, error in failures):
            raise BusUnavailableError(
                message, hint="check that the broker is running, then produce those records again"
            )
        raise BusError(message)

    def _rejected(self, topic: str, record: Record, exc: KafkaException) -> BusError:
        error = kafka_error(exc)
        code = error.code() if error is not None else None
        if code == KafkaError.MSG_SIZE_TOO_LARGE:
            size = len(record.value or b"") + len(record.key or b"")
            return RecordError(
                f"a record of {size:,} bytes for topic {topic!r} is larger than the producer's "
                "message.max.bytes",
                hint="split the record, or raise message.max.bytes on the broker and client",
            )
        if code == KafkaError._UNKNOWN_PARTITION:
            return RecordError(
                f"topic {topic!r} has no partition {record.partition}",
                hint="leave Record.partition unset to place records by key",
            )
        return BusError(f"cannot produce to {topic!r} at {self.bootstrap}: {error or exc}")


class KafkaConsumer:
    """Reads partitions in batches; positions are tracked here from the records handed out."""

    def __init__(
        self, config: Mapping[str, Any], bootstrap: str, group: str | None, *, timeout: float
    ) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self.timeout = timeout
        self._positions: dict[TopicPartition, int] = {}
        self._topics: set[str] = set()
        self._subscribed = False
        self._brokers_down = False
        self._fatal: KafkaError | None = None
        self._closed = False
        # librdkafka wants a group id even for assign(); a private one commits nothing.
        group_id = group or f"lakebed-assign-{uuid.uuid4().hex}"
        self._consumer = RawConsumer(
            {**config, **_CONSUMER_SETTINGS, "group.id": group_id, "error_cb": self._on_error},
            logger=RDKAFKA_LOG,
        )

    def subscribe(self, topics: Sequence[str]) -> None:
        self._require_group("subscribe")
        self._subscribed = True
        self._topics = set(topics)
        self._positions = {}
        self._consumer.subscribe(list(topics), on_assign=self._on_assign, on_revoke=self._on_revoke)

    def assign(self, positions: Mapping[TopicPartition, int]) -> None:
        resolved = {
            TopicPartition(*tp): self._resolve(tp, offset) for tp, offset in positions.items()
        }
        if self._subscribed:
            self._consumer.unsubscribe()
            self._subscribed = False
        self._topics = {tp.topic for tp in resolved}
        self._positions = resolved
        self._consumer.assign(
            [RawPartition(tp.topic, tp.partition, o) for tp, o in resolved.items()]
        )

    def seek(self, partition: TopicPartition, offset: int) -> None:
        tp = TopicPartition(*partition)
        if tp not in self._positions:
            raise BusError(
                f"cannot seek {tp.topic}[{tp.partition}]: it is not assigned to this consumer",
                hint="assign() it first, or poll() until the group hands it over",
            )
        resolved = self._resolve(tp, offset)
        try:
            self._consumer.seek(RawPartition(tp.topic, tp.partition, resolved))
        except KafkaException as exc:
            raise BusError(f"cannot seek {tp.topic}[{tp.partition}] to {offset}: {exc}") from exc
        self._positions[tp] = resolved

    def poll(self, max_records: int = 10_000, timeout: float = 1.0) -> pa.Table:
        if self._closed:
            raise BusError("poll() on a closed consumer", hint="open a new one with bus.consumer()")
        if self._fatal is not None:
            raise BusError(f"Kafka consumer for {self.bootstrap} failed: {self._fatal.str()}")
        if max_records <= 0:
            return empty_records()
        # A batch is up to a million short-lived Message objects: the cyclic garbage
        # collector would walk them again and again while they are made (none of them can
        # be in a cycle), so it is paused for the call.
        collecting = gc.isenabled()
        gc.disable()
        try:
            # librdkafka hands out at most 1,000,000 messages per call.
            messages = self._consumer.consume(min(max_records, 1_000_000), timeout)
            return self._batch(messages)
        except KafkaException as exc:
            raise BusError(f"cannot poll from {self.bootstrap}: {exc}") from exc
        finally:
            if collecting:
                gc.enable()

    def _batch(self, messages: list[Message]) -> pa.Table:
        if not messages:
            if self._brokers_down:
                self._brokers_down = False
                raise BusUnavailableError(
                    f"no Kafka broker at {self.bootstrap} answers",
                    hint="check that the broker is running; poll() again once it is",
                )
            return empty_records()
        self._brokers_down = False
        if any(map(_error, messages)):  # a KafkaError is truthy, None is not
            messages = self._drop_errors(messages)
            if not messages:
                return empty_records()
        return self._to_table(messages)

    def position(self) -> dict[TopicPartition, int]:
        return dict(self._positions)

    def assignment(self) -> list[TopicPartition]:
        return sorted(TopicPartition(tp.topic, tp.partition) for tp in self._consumer.assignment())

    def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        self._require_group("commit")
        chosen = self._positions if offsets is None else offsets
        if not chosen:
            return
        request = [RawPartition(tp[0], tp[1], offset) for tp, offset in chosen.items()]
        try:
            results = self._consumer.commit(offsets=request, asynchronous=False)
        except KafkaException as exc:
            error = kafka_error(exc)
            failure = f"cannot commit offsets of group {self.group!r} to {self.bootstrap}: {exc}"
            if is_unavailable(error):
                raise BusUnavailableError(failure) from exc
            raise BusError(failure) from exc
        failed = [tp for tp in results or [] if tp.error is not None]
        if failed:
            detail = ", ".join(f"{tp.topic}[{tp.partition}]: {tp.error}" for tp in failed)
            raise BusError(f"group {self.group!r} could not commit {detail}")

    def committed(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        self._require_group("read committed offsets")
        if not partitions:
            return {}
        request = [RawPartition(tp[0], tp[1]) for tp in partitions]
        try:
            found = self._consumer.committed(request, timeout=self.timeout)
        except KafkaException as exc:
            raise BusUnavailableError(
                f"cannot read the offsets of group {self.group!r} from {self.bootstrap}: {exc}",
                hint="check that the broker is running",
            ) from exc
        return {
            TopicPartition(tp.topic, tp.partition): tp.offset if tp.offset >= 0 else None
            for tp in found
        }

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._consumer.close()

    # -- internals -------------------------------------------------------------------------

    def _to_table(self, messages: list[Message]) -> pa.Table:
        """The batch as RECORD_SCHEMA columns: C-level map() over librdkafka's messages."""
        count = len(messages)
        # Messages without an error always carry their partition and offset.
        partitions = cast(list[int], list(map(_partition, messages)))
        offsets = cast(list[int], list(map(_offset, messages)))
        if len(self._topics) == 1:
            (topic,) = self._topics
            topic_column = pa.repeat(pa.scalar(topic, pa.string()), count)
            last = dict(zip(partitions, offsets, strict=True))  # later offsets win
            for partition, offset in last.items():
                self._positions[TopicPartition(topic, partition)] = offset + 1
        else:
            topics = cast(list[str], list(map(_topic, messages)))
            topic_column = pa.array(topics, pa.string())
            last_of = dict(zip(zip(topics, partitions, strict=True), offsets, strict=True))
            for (topic, partition), offset in last_of.items():
                self._positions[TopicPartition(topic, partition)] = offset + 1
        timestamps = list(map(_second, map(_timestamp, messages)))
        return pa.Table.from_arrays(
            [
                topic_column,
                pa.array(partitions, pa.int32()),
                pa.array(offsets, pa.int64()),
                pa.array(timestamps, pa.int64()).view(pa.timestamp("ms", tz="UTC")),
                pa.array(list(map(_key, messages)), pa.binary()),
                pa.array(list(map(_value, messages)), pa.binary()),
            ],
            schema=RECORD_SCHEMA,
        )

    def _drop_errors(self, messages: list[Message]) -> list[Message]:
        """Skip end-of-partition events (and missing topics of a subscription); raise for any
        other error, naming where it happened."""
        for message in messages:
            error = message.error()
            if error is None or error.code() == KafkaError._PARTITION_EOF:
                continue
            topic, partition = message.topic() or "?", message.partition()
            if error.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
                if self._subscribed:
                    continue  # as in Kafka's Java client: the group waits for the topic
                raise TopicNotFoundError(topic)
            where = f"{topic}[{partition}]" if partition is not None else topic
            failure = f"cannot read {where} from {self.bootstrap}: {error.str()}"
            if is_unavailable(error):
                raise BusUnavailableError(failure, hint="check that the broker is running")
            raise BusError(failure)
        return [message for message in messages if message.error() is None]

    def _resolve(self, tp: TopicPartition, offset: int) -> int:
        """A real offset for BEGINNING / END, so positions are exact from the start."""
        if offset >= 0:
            return offset
        if offset not in (BEGINNING, END):
            raise BusError(
                f"offset {offset} of {tp.topic}[{tp.partition}] is not valid",
                hint="use an offset >= 0, BEGINNING or END",
            )
        low, high = self._watermarks(tp)
        return low if offset == BEGINNING else high

    def _watermarks(self, tp: TopicPartition) -> tuple[int, int]:
        try:
            low, high = self._consumer.get_watermark_offsets(
                RawPartition(tp.topic, tp.partition), timeout=self.timeout, cached=False
            )
        except KafkaException as exc:
            error = kafka_error(exc)
            if error is not None and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise TopicNotFoundError(tp.topic) from exc
            raise BusUnavailableError(
                f"cannot read the offsets of {tp.topic}[{tp.partition}] from {self.bootstrap}: "
                f"{exc}",
                hint="check that the broker is running and the partition exists",
            ) from exc
        return int(low), int(high)

    def _on_assign(self, consumer: RawConsumer, partitions: list[RawPartition]) -> None:
        """Start each new partition at the group's committed offset or the beginning, and
        assign those offsets explicitly so `position()` is exact before the first record."""
        committed = consumer.committed(partitions, timeout=self.timeout)
        starts = []
        for tp in committed:
            key = TopicPartition(tp.topic, tp.partition)
            offset = tp.offset if tp.offset >= 0 else self._resolve(key, BEGINNING)
            self._positions[key] = offset
            starts.append(RawPartition(tp.topic, tp.partition, offset))
        consumer.assign(starts)

    def _on_revoke(self, consumer: RawConsumer, partitions: list[RawPartition]) -> None:
        for tp in partitions:
            self._positions.pop(TopicPartition(tp.topic, tp.partition), None)
        consumer.unassign()

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = error
        elif error.code() == KafkaError._ALL_BROKERS_DOWN:
            self._brokers_down = True
        else:
            _LOG.debug("kafka consumer at %s: %s", self.bootstrap, error)

    def _require_group(self, action: str) -> None:
        if self.group is None:
            raise BusError(
                f"a consumer without a group cannot {action}",
                hint="open it with bus.consumer(group=NAME)",
            )
