"""The event bus: an embedded durable log in the project folder, or Apache Kafka."""

from lakebed.bus.base import (
    BEGINNING,
    END,
    RECORD_SCHEMA,
    Bus,
    Consumer,
    Producer,
    Record,
    TopicInfo,
    TopicPartition,
    open_bus,
)

__all__ = [
    "BEGINNING",
    "END",
    "RECORD_SCHEMA",
    "Bus",
    "Consumer",
    "Producer",
    "Record",
    "TopicInfo",
    "TopicPartition",
    "open_bus",
]
