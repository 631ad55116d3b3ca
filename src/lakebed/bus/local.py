"""The embedded `local` bus: a durable, crash-safe log in the project folder, shared by any
number of producer and consumer processes, with Kafka's semantics.

    .lakebed/bus/topics.lock                   flock'ed while a topic is created or deleted
    .lakebed/bus/topics/<topic>/topic.json     partitions and retention
    .lakebed/bus/topics/<topic>/<partition>/   segments and their indexes (see `local_log`)
    .lakebed/bus/groups/<group>/               committed offsets and members (see `local_groups`)

Durability: `produce` buffers records in memory and writes them once 100,000 records or about
32 MiB are waiting; `flush` writes the rest. A record is acknowledged when `flush` returns: it
has been written (write(2)) to its segment under the partition's lock, so it survives kill -9
of any process. Surviving power loss as well needs fsync, which is off by default: pass
`LocalBus(root, fsync=True)` or set `LAKEBED_BUS_FSYNC=1`. When `flush` raises, the records
it held are not acknowledged (some may have been written): produce them again.

Producers and consumers are not thread-safe; use one per thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from lakebed.bus.base import Bus, TopicInfo, register_backend
from lakebed.bus.local_append import PartitionGoneError, PartitionWriter, fsync_dir
from lakebed.bus.local_consumer import LocalConsumer
from lakebed.bus.local_groups import forget_topic
from lakebed.bus.local_log import (
    SEGMENT_BYTES,
    offset_for_time,
    partition_bounds,
    segment_path,
    validate_topic,
)
from lakebed.bus.local_producer import LocalProducer
from lakebed.errors import BusError, TopicNotFoundError

__all__ = ["LocalBus", "LocalConsumer", "LocalProducer", "open_local_bus", "validate_topic"]


@register_backend("local")
def open_local_bus(url: str, project_root: Path) -> Bus:
    if url != "local":
        raise BusError(f"unknown local bus url {url!r}", hint="write `bus: local`")
    return LocalBus(project_root)


class LocalBus:
    """The event log under `project_root/.lakebed/bus`. `fsync` (default: the environment
    variable LAKEBED_BUS_FSYNC=1, else off) makes every flush and commit fsync; without it a
    record survives the crash of any process but not of the machine. `segment_bytes` is the
    size at which a partition starts a new segment file (retention removes whole segments)."""

    url = "local"

    def __init__(
        self,
        project_root: Path,
        *,
        fsync: bool | None = None,
        segment_bytes: int = SEGMENT_BYTES,
    ) -> None:
        self.root = Path(project_root) / ".lakebed" / "bus"
        self.topics_dir = self.root / "topics"
        self.groups_dir = self.root / "groups"
        self.fsync = os.environ.get("LAKEBED_BUS_FSYNC") == "1" if fsync is None else fsync
        self.segment_bytes = segment_bytes
        self.topics_dir.mkdir(parents=True, exist_ok=True)
        self.groups_dir.mkdir(parents=True, exist_ok=True)

    # -- topics ---------------------------------------------------------------------------

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        *,
        retention_ms: int | None = None,
        retention_bytes: int | None = None,
    ) -> TopicInfo:
        """Create a topic; an existing one with the same partition count is left as it is."""
        validate_topic(name)
        if not isinstance(partitions, int) or partitions < 1:
            raise BusError(
                f"topic {name!r}: partitions must be a positive integer, not {partitions!r}"
            )
        for setting, value in (
            ("retention_ms", retention_ms),
            ("retention_bytes", retention_bytes),
        ):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise BusError(
                    f"topic {name!r}: {setting} must be a non-negative integer, not {value!r}",
                    hint="or None to keep records forever",
                )
        info = TopicInfo(name, partitions, retention_ms, retention_bytes)
        existing = self.ensure_topic(info)
        if existing.partitions != partitions:
            raise BusError(
                f"topic {name!r} already exists with {existing.partitions} partitions, "
                f"not {partitions}",
                hint="use the existing count, or delete the topic first (its records go too)",
            )
        return existing

    def ensure_topic(self, info: TopicInfo) -> TopicInfo:
        """Create the topic unless it exists; returns what is there now."""
        existing = self.read_topic(info.name)
        if existing is not None:
            return existing
        with self._admin_lock():
            existing = self.read_topic(info.name)
            if existing is not None:
                return existing
            staging = self.topics_dir / f"tmp~{uuid.uuid4().hex}"
            staging.mkdir()
            for p in range(info.partitions):
                (staging / str(p)).mkdir()
                segment_path(staging / str(p), 0).touch()
            (staging / "topic.json").write_text(
                json.dumps(
                    {
                        "name": info.name,
                        "partitions": info.partitions,
                        "retention_ms": info.retention_ms,
                        "retention_bytes": info.retention_bytes,
                    }
                )
            )
            target = self.topics_dir / info.name
            if target.exists():  # left half-made or half-deleted by a crash
                self._discard(target)
            os.rename(staging, target)
            if self.fsync:
                fsync_dir(self.topics_dir)
            return info

    def delete_topic(self, name: str) -> None:
        validate_topic(name)
        with self._admin_lock():
            target = self.topics_dir / name
            if self.read_topic(name) is None:
                raise TopicNotFoundError(name, self.topics())
            self._discard(target)
            forget_topic(self.groups_dir, name)

    def _discard(self, folder: Path) -> None:
        # Renamed away first: the topic disappears at once, then its files go.
        trash = self.topics_dir / f"trash~{uuid.uuid4().hex}"
        os.rename(folder, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def topics(self) -> dict[str, TopicInfo]:
        found = {}
        for name in sorted(os.listdir(self.topics_dir)):
            if "~" not in name:
                info = self.read_topic(name)
                if info is not None:
                    found[name] = info
        return found

    def topic(self, name: str) -> TopicInfo:
        """The topic's settings; `TopicNotFoundError` if it does not exist."""
        info = self.read_topic(validate_topic(name))
        if info is None:
            raise TopicNotFoundError(name, self.topics())
        return info

    def read_topic(self, name: str) -> TopicInfo | None:
        """The topic's settings, or None if it does not exist."""
        path = self.topics_dir / name / "topic.json"
        try:
            data = json.loads(path.read_text())
            return TopicInfo(
                name,
                int(data["partitions"]),
                data.get("retention_ms"),
                data.get("retention_bytes"),
            )
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise BusError(
                f"{path} is not a valid topic file: {exc}",
                hint=f"delete the topic folder {path.parent} to drop the topic",
            ) from exc

    def partition_dir(self, topic: str, partition: int) -> Path:
        return self.topics_dir / topic / str(partition)

    @contextlib.contextmanager
    def _admin_lock(self) -> Iterator[None]:
        fd = os.open(self.root / "topics.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            for name in os.listdir(self.topics_dir):  # left by a crash while holding the lock
                if name.startswith(("tmp~", "trash~")):
                    shutil.rmtree(self.topics_dir / name, ignore_errors=True)
            yield
        finally:
            os.close(fd)

    # -- clients --------------------------------------------------------------------------

    def producer(self) -> LocalProducer:
        return LocalProducer(self)

    def consumer(self, group: str | None = None) -> LocalConsumer:
        return LocalConsumer(self, group)

    # -- offsets --------------------------------------------------------------------------

    def start_offsets(self, topic: str) -> dict[int, int]:
        info = self.topic(topic)
        return {
            p: partition_bounds(self.partition_dir(topic, p))[0] for p in range(info.partitions)
        }

    def end_offsets(self, topic: str) -> dict[int, int]:
        info = self.topic(topic)
        return {
            p: partition_bounds(self.partition_dir(topic, p))[1] for p in range(info.partitions)
        }

    def offsets_for_time(self, topic: str, timestamp_ms: int) -> dict[int, int]:
        info = self.topic(topic)
        return {
            p: offset_for_time(self.partition_dir(topic, p), timestamp_ms)
            for p in range(info.partitions)
        }

    def apply_retention(self) -> int:
        removed = 0
        for info in self.topics().values():
            if info.retention_ms is None and info.retention_bytes is None:
                continue
            for p in range(info.partitions):
                writer = PartitionWriter(
                    self.partition_dir(info.name, p),
                    segment_bytes=self.segment_bytes,
                    fsync=self.fsync,
                )
                try:
                    removed += writer.apply_retention(info.retention_ms, info.retention_bytes)
                except PartitionGoneError:
                    pass  # deleted meanwhile
                finally:
                    writer.close()
        return removed

    def close(self) -> None:
        """Nothing to release: producers and consumers hold their own files."""
