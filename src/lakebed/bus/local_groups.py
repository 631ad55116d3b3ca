"""Consumer groups of the embedded bus: committed offsets and partition ownership, shared by
processes through small files and flocks (a dead process's flocks are released by the OS).

    groups/<group>/~members/<member>.member   flock'ed while the member lives; its topics (JSON)
    groups/<group>/<topic>/<partition>.lock   flock'ed by the member that owns the partition
    groups/<group>/<topic>/<partition>.offset the committed offset (temp file + os.replace)

A member owns its fair share of each subscribed topic: members subscribed to the topic are
ranked by when they joined, and rank r of n owns P // n partitions, plus one if r < P % n,
preferring the contiguous range Kafka's range assignor would give it. Shares are re-checked
on every poll (at most every `REBALANCE_INTERVAL_S`): a member over its share releases
partitions, one under it claims free ones.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import quote

from lakebed.bus.base import TopicPartition
from lakebed.errors import BusError

REBALANCE_INTERVAL_S = 0.1
MEMBERS = "~members"  # `~` cannot appear in a topic name, so no topic folder collides


def group_dir(groups_root: Path, group: str) -> Path:
    """The folder of a consumer group (any group id: it is percent-encoded)."""
    name = quote(group, safe="-_").replace(".", "%2E")
    if not group or len(name) > 200:
        raise BusError(
            f"consumer group id {group!r:.80} is {'empty' if not group else 'too long'}",
            hint="use a short, non-empty name such as `orders-to-bronze`",
        )
    return groups_root / name


def commit_offsets(
    directory: Path, offsets: Mapping[TopicPartition, int], *, fsync: bool = False
) -> None:
    """Store committed offsets, each file replaced atomically."""
    for tp, offset in offsets.items():
        folder = directory / tp.topic
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{tp.partition}.offset"
        tmp = folder / f"{tp.partition}.offset~{os.getpid()}-{uuid.uuid4().hex[:8]}"
        with open(tmp, "w") as handle:
            handle.write(str(int(offset)))
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, target)


def committed_offsets(
    directory: Path, partitions: Iterable[TopicPartition]
) -> dict[TopicPartition, int | None]:
    result: dict[TopicPartition, int | None] = {}
    for tp in partitions:
        try:
            text = (directory / tp.topic / f"{tp.partition}.offset").read_text()
        except FileNotFoundError:
            result[tp] = None
            continue
        try:
            result[tp] = int(text)
        except ValueError:
            result[tp] = None  # not written by us: treat as never committed
    return result


def forget_topic(groups_root: Path, topic: str) -> None:
    """Drop every group's committed offsets of a deleted topic (its lock files stay, so live
    members and members of a re-created topic keep locking the same files)."""
    if not groups_root.is_dir():
        return
    for group in groups_root.iterdir():
        folder = group / topic
        if folder.is_dir():
            for path in folder.glob("*.offset"):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


def _create_locked(path: Path, content: bytes) -> int:
    """Create `path` already flock'ed by us (written and locked under a temp name, then
    renamed), so nobody ever sees it unlocked and takes its owner for dead."""
    while True:
        tmp = path.with_name(f"{path.name}~{uuid.uuid4().hex[:12]}")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, content)
            os.replace(tmp, path)
            return fd
        except FileNotFoundError:
            os.close(fd)  # a sweeper removed our temp file in the instant before we locked it
        except BaseException:
            os.close(fd)
            raise


class GroupMember:
    """One live member of a consumer group: holds its member file and partition locks."""

    def __init__(self, directory: Path, topics: Iterable[str]) -> None:
        self.directory = directory
        self.members = directory / MEMBERS
        self.members.mkdir(parents=True, exist_ok=True)
        self.id = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.topics = sorted(set(topics))
        self._fd = _create_locked(self._path, self._content())
        self._held: dict[TopicPartition, int] = {}  # partition -> fd of its flock'ed lock file

    @property
    def _path(self) -> Path:
        return self.members / f"{self.id}.member"

    def _content(self) -> bytes:
        return json.dumps({"topics": self.topics, "pid": os.getpid()}).encode()

    def set_topics(self, topics: Iterable[str]) -> None:
        old = self._fd
        self.topics = sorted(set(topics))
        self._fd = _create_locked(self._path, self._content())
        os.close(old)

    def held(self) -> list[TopicPartition]:
        return sorted(self._held)

    def live_members(self) -> dict[str, list[str]]:
        """Member id -> subscribed topics, for every live member (removing dead ones)."""
        live = {self.id: self.topics}
        for name in os.listdir(self.members):
            member = name.removesuffix(".member")
            if member == self.id or (member == name and "~" not in name):
                continue
            path = self.members / name
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    if member != name:  # a live member, not a temp file being written
                        with contextlib.suppress(ValueError):
                            live[member] = list(json.loads(os.pread(fd, 1 << 16, 0))["topics"])
                    continue
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # its owner died: the OS released its lock
            finally:
                os.close(fd)
        return live

    def claim(self, tp: TopicPartition) -> bool:
        folder = self.directory / tp.topic
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / f"{tp.partition}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._held[tp] = fd
        return True

    def release(self, tp: TopicPartition) -> None:
        fd = self._held.pop(tp, None)
        if fd is not None:
            os.close(fd)

    def _still_ours(self, tp: TopicPartition) -> bool:
        try:
            path_ino = (self.directory / tp.topic / f"{tp.partition}.lock").stat().st_ino
        except FileNotFoundError:
            return False
        return path_ino == os.fstat(self._held[tp]).st_ino

    def rebalance(
        self, partition_counts: Mapping[str, int]
    ) -> tuple[list[TopicPartition], list[TopicPartition]]:
        """Move towards this member's fair share of each topic: (claimed, released)."""
        claimed: list[TopicPartition] = []
        released: list[TopicPartition] = []
        for tp in list(self._held):
            if tp.partition >= partition_counts.get(tp.topic, 0) or not self._still_ours(tp):
                self.release(tp)
                released.append(tp)
        live = self.live_members()
        for topic, count in partition_counts.items():
            if count <= 0:
                continue
            ranked = sorted(m for m, topics in live.items() if topic in topics)
            rank, n = ranked.index(self.id), len(ranked)
            share = count // n + (1 if rank < count % n else 0)
            first = rank * (count // n) + min(rank, count % n)
            preferred = [*range(first, first + share)]
            order = preferred + [p for p in range(count) if p not in preferred]
            mine = [tp for tp in self._held if tp.topic == topic]
            if len(mine) > share:
                mine.sort(key=lambda tp: (tp.partition in preferred, -tp.partition))
                for tp in mine[: len(mine) - share]:
                    self.release(tp)
                    released.append(tp)
            elif len(mine) < share:
                for p in order:
                    tp = TopicPartition(topic, p)
                    if tp in self._held:
                        continue
                    if self.claim(tp):
                        claimed.append(tp)
                        mine.append(tp)
                        if len(mine) >= share:
                            break
        return claimed, released

    def close(self) -> None:
        for tp in list(self._held):
            self.release(tp)
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()
        os.close(self._fd)
