"""The segments of one partition of the embedded bus, their indexes, and reading them.

A partition folder holds::

    .lock                         flock'ed (exclusive) by whoever appends or applies retention
    00000000000000000000.log      a segment: batches (see `local_batch`) back to back, named by
                                  the offset of its first record; a new one starts at 64 MiB
    00000000000000000000.index    derived: one entry per batch, rebuilt from the log if missing

An index entry (32 bytes: base_offset i64 | position i64 | max_ts i64 | count u32 | length
u32) is appended after its batch is written; it serves both seeks by offset (bisect on base
offsets) and by time (the first batch whose max timestamp reaches the target). Whatever the
index lacks (a crash between the two writes, a deleted file) is found by scanning the log.

Readers take no lock: they return only complete, crc-valid batches up to the end of the log
when they looked, so a batch being written (or torn by a crash) is simply not there yet.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lakebed.bus.local_batch import HEADER_SIZE, Batch, parse_header, read_batches
from lakebed.errors import BusError

SEGMENT_BYTES = 64 * 1024 * 1024
INDEX_DTYPE = np.dtype(
    [("base", "<i8"), ("pos", "<i8"), ("max_ts", "<i8"), ("count", "<u4"), ("length", "<u4")]
)
INDEX_ENTRY_SIZE = INDEX_DTYPE.itemsize  # 32
STALE_RECHECK_S = 1.0  # re-read an invalid tail at least this often, whatever its stat says
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def validate_topic(name: str, error: type[BusError] = BusError) -> str:
    """Kafka's rule, which also makes every topic name a safe folder name: 1 to 249 of
    [A-Za-z0-9._-], and not `.` or `..`."""
    if not isinstance(name, str) or not _TOPIC_NAME.fullmatch(name) or name in {".", ".."}:
        raise error(
            f"invalid topic name {name!r:.300}",
            hint="a topic name is 1 to 249 letters, digits, `.`, `_` or `-` (not `.` or `..`)",
        )
    return name


def segment_path(directory: Path, base: int) -> Path:
    return directory / f"{base:020d}.log"


def index_path(directory: Path, base: int) -> Path:
    return directory / f"{base:020d}.index"


def list_segments(directory: Path) -> list[int]:
    """Base offsets of the partition's segments, oldest first ([] if the folder is gone)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(int(n[:20]) for n in names if len(n) == 24 and n.endswith(".log"))


def scan_segment(
    fd: int, position: int, size: int, expected_base: int
) -> tuple[list[tuple[int, int, int, int, int]], int, int]:
    """Index entries (base, pos, max_ts, count, length) of the valid batches from `position`:
    (entries, position after the last valid batch, the offset after it)."""
    entries: list[tuple[int, int, int, int, int]] = []
    while True:
        batches, after = read_batches(fd, position, size, expected_base)
        if not batches:
            return entries, position, expected_base
        entries += [(b.base, b.position, b.max_ts, b.count, b.length) for b in batches]
        position = after
        expected_base = batches[-1].end


def read_index(path: Path) -> np.ndarray:
    """The index entries in `path` (whole entries only; empty if missing)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return np.empty(0, dtype=INDEX_DTYPE)
    whole = len(data) - len(data) % INDEX_ENTRY_SIZE
    return np.frombuffer(data, dtype=INDEX_DTYPE, count=whole // INDEX_ENTRY_SIZE)


def _consistent_prefix(entries: np.ndarray, base: int, size: int) -> int:
    """How many leading entries chain from `base` without gaps and lie inside `size` bytes."""
    if not len(entries):
        return 0
    ends = entries["pos"] + entries["length"]
    offset_ends = entries["base"] + entries["count"]
    ok = (ends <= size) & (entries["length"] > 0) & (entries["count"] > 0)
    ok[0] &= bool(entries["pos"][0] == 0 and entries["base"][0] == base)
    ok[1:] &= (entries["pos"][1:] == ends[:-1]) & (entries["base"][1:] == offset_ends[:-1])
    bad = np.flatnonzero(~ok)
    return int(bad[0]) if len(bad) else len(entries)


@dataclass(slots=True)
class SegmentState:
    """Every valid batch of one segment, as index entries, and where the valid log ends."""

    entries: np.ndarray
    indexed: int  # how many of `entries` the index file holds (the rest came from a scan)
    end_position: int
    end_offset: int
    size: int  # the file size seen


def segment_state(directory: Path, base: int, fd: int) -> SegmentState:
    """Read the segment's index and scan (crc-checked) what it does not cover yet."""
    size = os.fstat(fd).st_size
    entries = read_index(index_path(directory, base))
    indexed = _consistent_prefix(entries, base, size)
    entries = entries[:indexed]
    if indexed:
        last = entries[-1]
        position, expected = int(last["pos"] + last["length"]), int(last["base"] + last["count"])
    else:
        position, expected = 0, base
    scanned, end_position, end_offset = scan_segment(fd, position, size, expected)
    if scanned:
        entries = np.concatenate([entries, np.array(scanned, dtype=INDEX_DTYPE)])
    return SegmentState(entries, indexed, end_position, end_offset, size)


@dataclass(slots=True)
class SegmentTail:
    """Where a segment's valid log ends: the index entries to trust, the batches after them."""

    indexed: int  # leading entries of the index file that hold
    scanned: np.ndarray  # entries of the valid batches the index does not hold yet
    end_position: int
    end_offset: int
    size: int


def segment_tail(directory: Path, base: int, fd: int) -> SegmentTail:
    """Like `segment_state`, but reading only the index's last entry (checked against its
    batch header) and the log after it; the whole index only when that entry is wrong."""
    size = os.fstat(fd).st_size
    last = _last_index_entry(index_path(directory, base))
    if last is not None:
        count, entry = last
        position, length = int(entry["pos"]), int(entry["length"])
        first, records = int(entry["base"]), int(entry["count"])
        header = None
        if position + length <= size:
            header = parse_header(os.pread(fd, HEADER_SIZE, position), 0)
        if header is not None and header[:3] == (length, records, first):
            scanned, end_position, end_offset = scan_segment(
                fd, position + length, size, first + records
            )
            return SegmentTail(
                count, np.array(scanned, dtype=INDEX_DTYPE), end_position, end_offset, size
            )
    state = segment_state(directory, base, fd)
    return SegmentTail(
        state.indexed,
        state.entries[state.indexed :],
        state.end_position,
        state.end_offset,
        state.size,
    )


def _last_index_entry(path: Path) -> tuple[int, np.void] | None:
    """(number of whole entries, the last one), or None if the index is missing or empty."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        count = os.fstat(fd).st_size // INDEX_ENTRY_SIZE
        if not count:
            return None
        data = os.pread(fd, INDEX_ENTRY_SIZE, (count - 1) * INDEX_ENTRY_SIZE)
        if len(data) < INDEX_ENTRY_SIZE:
            return None
        return count, np.frombuffer(data, dtype=INDEX_DTYPE)[0]
    finally:
        os.close(fd)


def persist_index(directory: Path, base: int, entries: np.ndarray, fsync: bool = False) -> None:
    """Replace the index of a closed segment atomically (readers may rebuild it)."""
    target = index_path(directory, base)
    tmp = directory / f"{base:020d}.index~{os.getpid()}-{time.monotonic_ns()}"
    try:
        with open(tmp, "wb") as handle:
            handle.write(entries.tobytes())
            if fsync:
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except FileNotFoundError:
        pass  # the partition was deleted meanwhile
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


# ---------------------------------------------------------------------------------------------
# Reading


class PartitionReader:
    """Reads one partition from any offset without taking a lock: only complete, crc-valid
    batches, up to what was written when it looked. Keeps the batches it read but has not
    handed out yet, so small polls do not re-read the file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fd: int | None = None
        self._segment = -1
        self._file_pos = 0
        self._next = 0  # the offset of the batch at _file_pos
        self._batches: deque[Batch] = deque()
        self._stale: tuple[int, int, int, int] | None = None  # where an invalid tail was seen
        self._stale_at = 0.0

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._batches.clear()

    def read(
        self, position: int, max_records: int, max_bytes: int = 64 * 1024 * 1024
    ) -> tuple[list[tuple[Batch, int, int]], int]:
        """Up to `max_records` (and about `max_bytes`) from `position`: ([(batch, first index,
        count)], next position). A position below the first kept offset, or past the end,
        moves to the first kept one (Kafka's auto.offset.reset=earliest)."""
        if self._batches and self._fd is not None and os.fstat(self._fd).st_nlink == 0:
            self._batches.clear()  # read before retention removed them: not to be returned
        if not self._covers(position):
            position = self._locate(position)
        out: list[tuple[Batch, int, int]] = []
        remaining = max_records
        size = 0
        relocations = 0
        while remaining > 0 and size < max_bytes:
            while self._batches and self._batches[0].end <= position:
                self._batches.popleft()
            if not self._batches:
                status = self._fill()
                if status == _GONE and relocations < 3:
                    relocations += 1
                    position = self._locate(position)
                    continue
                if status != _NEW:
                    break
                continue
            batch = self._batches[0]
            first = position - batch.base
            take = min(batch.count - first, remaining)
            out.append((batch, first, take))
            position += take
            remaining -= take
            size += batch.length * take // batch.count
        return out, position

    def _covers(self, position: int) -> bool:
        if self._fd is None:
            return False
        if self._batches:
            return self._batches[0].base <= position < self._batches[-1].end
        return position == self._next

    def _open(self, base: int) -> None:
        fd = os.open(segment_path(self.directory, base), os.O_RDONLY)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        self._segment = base
        self._stale = None

    def _locate(self, position: int) -> int:
        """Point the reader at the batch holding `position`; returns the position it serves."""
        self._batches.clear()
        for _ in range(100):  # segments can come and go between listing and opening
            segments = list_segments(self.directory)
            if not segments:
                self.close()
                self._next = position
                return position
            position = max(position, segments[0])
            at = _bisect_right(segments, position) - 1
            base = segments[at]
            try:
                self._open(base)
            except FileNotFoundError:
                continue
            assert self._fd is not None
            state = segment_state(self.directory, base, self._fd)
            if at + 1 < len(segments) and len(state.entries) > state.indexed:
                persist_index(self.directory, base, state.entries)  # closed: safe to rebuild
            if position < state.end_offset:
                entries = state.entries
                k = _bisect_right(entries["base"], position) - 1
                self._file_pos, self._next = int(entries["pos"][k]), int(entries["base"][k])
                return position
            if position == state.end_offset:
                self._file_pos, self._next = state.end_position, state.end_offset
                return position
            # Past the end of this segment, which is the last one (or a gap follows it).
            if at + 1 < len(segments):
                position = segments[at + 1]
            elif list_segments(self.directory) == segments:
                position = segments[0]  # out of range: Kafka's auto.offset.reset=earliest
        raise BusError(f"could not locate offset {position} in {self.directory}")

    def _fill(self) -> str:
        """Read the next batches into the buffer: _NEW, _NOTHING, or _GONE when retention
        (or delete_topic) removed the segment being read."""
        while True:
            if self._fd is None:
                return _NOTHING
            stat = os.fstat(self._fd)
            if stat.st_nlink == 0:
                return _GONE
            key = (self._file_pos, stat.st_size, stat.st_mtime_ns, self._segment)
            now = time.monotonic()
            stale = key == self._stale and now - self._stale_at < STALE_RECHECK_S
            if self._file_pos < stat.st_size and not stale:
                batches, after = read_batches(self._fd, self._file_pos, stat.st_size, self._next)
                if batches:
                    self._batches.extend(batches)
                    self._file_pos = after
                    self._next = batches[-1].end
                    self._stale = None
                    return _NEW
                self._stale, self._stale_at = key, now
            # At the end of this segment: a newer one is named by the offset that follows.
            if self._next > self._segment and segment_path(self.directory, self._next).exists():
                try:
                    self._open(self._next)
                except FileNotFoundError:
                    return _GONE
                self._file_pos = 0
                continue
            return _NOTHING


_NEW, _NOTHING, _GONE = "new", "nothing", "gone"


def _bisect_right(values: Sequence[int] | np.ndarray, x: int) -> int:
    return int(np.searchsorted(np.asarray(values), x, side="right"))


def partition_bounds(directory: Path) -> tuple[int, int]:
    """(first kept offset, end offset) of a partition, read without a lock."""
    for _ in range(100):
        segments = list_segments(directory)
        if not segments:
            return 0, 0
        try:
            fd = os.open(segment_path(directory, segments[-1]), os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            return segments[0], segment_tail(directory, segments[-1], fd).end_offset
        finally:
            os.close(fd)
    raise BusError(f"could not read the offsets of {directory}")


def offset_for_time(directory: Path, timestamp_ms: int) -> int:
    """The first offset whose timestamp is >= `timestamp_ms`, or the end offset."""
    end = 0
    segments = list_segments(directory)
    for base in segments:
        try:
            fd = os.open(segment_path(directory, base), os.O_RDONLY)
        except FileNotFoundError:
            continue  # removed by retention: later segments hold what is left
        try:
            state = segment_state(directory, base, fd)
            if base != segments[-1] and len(state.entries) > state.indexed:
                persist_index(directory, base, state.entries)  # closed: safe to rebuild
            end = state.end_offset
            hits = np.flatnonzero(state.entries["max_ts"] >= timestamp_ms)
            if not len(hits):
                continue
            entry = state.entries[hits[0]]
            batches, _ = read_batches(
                fd, int(entry["pos"]), state.size, int(entry["base"]), int(entry["length"])
            )
            if batches:
                first = int(np.argmax(batches[0].timestamps() >= timestamp_ms))
                return int(entry["base"]) + first
        finally:
            os.close(fd)
    return end
