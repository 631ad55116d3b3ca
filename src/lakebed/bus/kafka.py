"""The Apache Kafka backend of the bus, over confluent-kafka (librdkafka).

    bus = open_bus("kafka://127.0.0.1:9092", project_root)

Producers are idempotent with `acks=all`, so a flushed record survives a broker crash, and use
the murmur2 partitioner, so a key lands in the partition that Kafka's Java client and the local
backend's `partition_for` pick. Consumers hand out whole Arrow tables built column by column
from librdkafka's batches (`consume`), and track their own positions so `position()` needs no
broker round trip. Admin calls (topics, offsets) are bounded by `timeout`: an unreachable
broker raises `BusUnavailableError` instead of hanging. The clients live in kafka_clients.py.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import TopicPartition as RawPartition

# confluent_kafka.admin re-exports these without __all__, which strict mypy does not accept.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ClusterMetadata,
    ConfigResource,
    NewTopic,
    OffsetSpec,
)

from lakebed.bus.base import Bus, TopicInfo, register_backend
from lakebed.bus.kafka_clients import (
    RDKAFKA_LOG,
    KafkaConsumer,
    KafkaProducer,
    is_unavailable,
    kafka_error,
)
from lakebed.errors import BusError, BusUnavailableError, ConfigError, TopicNotFoundError

__all__ = ["KafkaBus", "KafkaConsumer", "KafkaProducer", "open_kafka_bus"]


@register_backend("kafka")
def open_kafka_bus(url: str, project_root: Path) -> Bus:
    """`kafka://host:port[,host:port]`; the project folder holds nothing for Kafka."""
    return KafkaBus(url)


def _bootstrap_of(url: str) -> str:
    servers = url.removeprefix("kafka://").strip().strip("/")
    hosts = [server.strip() for server in servers.split(",")]
    if not url.startswith("kafka://") or not all(
        host.rpartition(":")[2].isdigit() and host.rpartition(":")[0] for host in hosts
    ):
        raise ConfigError(
            f"`bus`: {url!r} is not a Kafka URL",
            hint="write `kafka://host:port`, with more brokers after commas",
        )
    return ",".join(hosts)


class KafkaBus:
    """The bus on a Kafka cluster. Admin calls wait at most `timeout` seconds for the broker."""

    def __init__(
        self, url: str, *, timeout: float = 5.0, config: Mapping[str, Any] | None = None
    ) -> None:
        """`config` adds librdkafka settings (security, client.id, ...) to every client."""
        self.url = url
        self.bootstrap = _bootstrap_of(url)
        self.timeout = timeout
        self._config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "client.id": "lakebed",
            **(config or {}),
        }
        # The admin client must not create the topics it asks about.
        self._admin = AdminClient(
            {**self._config, "allow.auto.create.topics": False}, logger=RDKAFKA_LOG
        )

    # -- topics ----------------------------------------------------------------------------

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        *,
        retention_ms: int | None = None,
        retention_bytes: int | None = None,
    ) -> TopicInfo:
        # -1 is Kafka's "no limit": without it the broker's default (7 days) would apply.
        config = {
            "retention.ms": str(-1 if retention_ms is None else retention_ms),
            "retention.bytes": str(-1 if retention_bytes is None else retention_bytes),
        }
        futures = self._admin.create_topics(
            [NewTopic(name, partitions, -1, config=config)],
            operation_timeout=self.timeout,
            request_timeout=self.timeout,
        )
        try:
            futures[name].result()
        except KafkaException as exc:
            error = kafka_error(exc)
            if error is None or error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise self._failed(f"create topic {name!r}", exc) from exc
            existing = self._describe([name])[name]
            if existing.partitions != partitions:
                raise BusError(
                    f"topic {name!r} already exists with {existing.partitions} partitions, "
                    f"not {partitions}",
                    hint="create it with the same count, or delete it first (its records too)",
                ) from None
            return existing
        # Ready when every partition has a leader: offsets cannot be listed before.
        self._await_topic(
            name,
            lambda meta: (
                meta is not None
                and len(meta.partitions) == partitions
                and all(p.leader >= 0 and p.error is None for p in meta.partitions.values())
            ),
        )
        return TopicInfo(name, partitions, retention_ms, retention_bytes)

    def delete_topic(self, name: str) -> None:
        futures = self._admin.delete_topics(
            [name], operation_timeout=self.timeout, request_timeout=self.timeout
        )
        try:
            futures[name].result()
        except KafkaException as exc:
            error = kafka_error(exc)
            if error is not None and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise TopicNotFoundError(name, self._topic_names()) from None
            raise self._failed(f"delete topic {name!r}", exc) from exc
        # Deletion completes asynchronously; creating the name again before it does fails.
        self._await_topic(name, lambda meta: meta is None)

    def topics(self) -> dict[str, TopicInfo]:
        return self._describe(self._topic_names())

    # -- clients ---------------------------------------------------------------------------

    def producer(self) -> KafkaProducer:
        return KafkaProducer(self._config, self.bootstrap)

    def consumer(self, group: str | None = None) -> KafkaConsumer:
        return KafkaConsumer(self._config, self.bootstrap, group, timeout=self.timeout)

    # -- offsets ---------------------------------------------------------------------------

    def start_offsets(self, topic: str) -> dict[int, int]:
        return self._list_offsets(topic, OffsetSpec.earliest())  # type: ignore[no-untyped-call]

    def end_offsets(self, topic: str) -> dict[int, int]:
        return self._list_offsets(topic, OffsetSpec.latest())  # type: ignore[no-untyped-call]

    def offsets_for_time(self, topic: str, timestamp_ms: int) -> dict[int, int]:
        found = self._list_offsets(topic, OffsetSpec.for_timestamp(timestamp_ms))
        if all(offset >= 0 for offset in found.values()):
            return found
        ends = self.end_offsets(topic)  # -1: no record that late in that partition
        return {p: offset if offset >= 0 else ends[p] for p, offset in found.items()}

    def apply_retention(self) -> int:
        return 0  # the broker applies retention on its own schedule

    def close(self) -> None:
        pass  # the admin client holds no resources beyond its connections, freed with it

    # -- internals -------------------------------------------------------------------------

    def _failed(self, action: str, exc: BaseException) -> BusError:
        """The lakebed error for a failed admin call: unavailable (retryable) or not."""
        error = kafka_error(exc)
        if error is None or is_unavailable(error):
            return BusUnavailableError(
                f"Kafka broker at {self.bootstrap} did not answer ({action}): "
                f"{error.str() if error is not None else exc}",
                hint="check that the broker is running and that `bus:` in lakebed.yml "
                "names its host:port",
            )
        return BusError(f"Kafka at {self.bootstrap}: cannot {action}: {error.str()}")

    def _metadata(self, topic: str | None = None) -> ClusterMetadata:
        try:
            return self._admin.list_topics(topic=topic, timeout=self.timeout)
        except KafkaException as exc:
            raise self._failed("list topics", exc) from exc

    def _topic_names(self) -> list[str]:
        # Names starting with "__" are the broker's own (offsets, transactions).
        return sorted(name for name in self._metadata().topics if not name.startswith("__"))

    def _partitions(self, topic: str) -> int:
        meta = self._metadata(topic).topics.get(topic)
        if meta is not None and meta.error is not None and is_unavailable(meta.error):
            # A broker just restarted elects the topic's leaders for a few seconds: a
            # pipeline waits that out (retries) rather than stop as if the topic were gone.
            raise BusUnavailableError(
                f"topic {topic!r} on {self.bootstrap} is not ready: {meta.error.str()}",
                hint="the broker is starting or electing leaders; this is retried",
            )
        if meta is None or meta.error is not None or not meta.partitions:
            raise TopicNotFoundError(topic, self._topic_names())
        return len(meta.partitions)

    def _await_topic(self, name: str, done: Any) -> None:
        """Wait (up to `timeout`) until the broker's metadata shows the topic as `done` wants."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            meta = self._metadata(name).topics.get(name)
            if done(None if meta is None or meta.error is not None else meta):
                return
            time.sleep(0.05)

    def _describe(self, names: list[str]) -> dict[str, TopicInfo]:
        if not names:
            return {}
        metadata = self._metadata().topics
        missing = [name for name in names if name not in metadata]
        if missing:
            raise TopicNotFoundError(missing[0], list(metadata))
        resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
        futures = self._admin.describe_configs(resources, request_timeout=self.timeout)
        infos = {}
        for resource, future in futures.items():
            entries = self._result(future, f"describe topic {resource.name!r}")
            infos[resource.name] = TopicInfo(
                resource.name,
                len(metadata[resource.name].partitions),
                _limit(entries, "retention.ms"),
                _limit(entries, "retention.bytes"),
            )
        return {name: infos[name] for name in names}

    def _list_offsets(self, topic: str, spec: OffsetSpec) -> dict[int, int]:
        count = self._partitions(topic)
        request = {RawPartition(topic, p): spec for p in range(count)}
        # Just after a topic is created or a broker restarts, metadata can name a leader that
        # does not yet know it leads (NOT_LEADER_FOR_PARTITION): retry such errors until the
        # timeout rather than fail a call that succeeds a moment later.
        deadline = time.monotonic() + self.timeout
        while True:
            futures = self._admin.list_offsets(request, request_timeout=self.timeout)
            try:
                return {
                    tp.partition: int(self._result(future, f"list offsets of {topic!r}").offset)
                    for tp, future in futures.items()
                }
            except BusUnavailableError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    def _result(self, future: Future[Any], action: str) -> Any:
        try:
            return future.result()
        except KafkaException as exc:
            raise self._failed(action, exc) from exc


def _limit(entries: Mapping[str, Any], name: str) -> int | None:
    entry = entries.get(name)
    value = int(entry.value) if entry is not None and entry.value is not None else -1
    return None if value < 0 else value
