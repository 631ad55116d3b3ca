"""Appending to one partition of the embedded bus, and retention.

Appends take an exclusive flock on the partition's `.lock` file: offsets are assigned under
it from the real end of the log, so producers in any number of processes never reuse one.
Before writing, the appender repairs what a crash left: a torn batch at the tail is truncated
and index entries the log has but the index lacks are added.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from lakebed.bus.local_batch import EncodedBatch, batch_header
from lakebed.bus.local_log import (
    INDEX_DTYPE,
    INDEX_ENTRY_SIZE,
    index_path,
    list_segments,
    persist_index,
    segment_path,
    segment_state,
    segment_tail,
)
from lakebed.errors import BusError, BusUnavailableError


class PartitionGoneError(BusError):
    """The partition's folder does not exist (its topic was deleted)."""


class PartitionWriter:
    """Appends batches to one partition under an exclusive flock: offsets come from the real
    end of the log, so producers in any number of processes never reuse one. Repairs what a
    crash left (a torn tail, an index that is behind) before writing."""

    def __init__(self, directory: Path, *, segment_bytes: int, fsync: bool) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self._lock_fd: int | None = None
        self._seg_fd: int | None = None
        self._idx_fd: int | None = None
        self._segment = -1
        self._size = -1  # the segment size after our last append (cache key)
        self._next = 0

    def close(self) -> None:
        for fd in (self._lock_fd, self._seg_fd, self._idx_fd):
            if fd is not None:
                os.close(fd)
        self._lock_fd = self._seg_fd = self._idx_fd = None
        self._segment = self._size = -1

    @contextlib.contextmanager
    def locked(self, timeout: float | None = None) -> Iterator[None]:
        """Hold the partition's append lock (waiting up to `timeout` seconds)."""
        lock_path = self.directory / ".lock"
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._lock_fd is None:
                try:
                    self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
                except FileNotFoundError as exc:
                    raise PartitionGoneError(f"{self.directory} does not exist") from exc
            _flock(self._lock_fd, deadline, self.directory)
            try:
                same = os.stat(lock_path).st_ino == os.fstat(self._lock_fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            # The topic was deleted (and maybe created again): lock the file that is there now.
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            self.close()
        try:
            yield
        finally:
            if self._lock_fd is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def append(
        self,
        batches: list[EncodedBatch],
        *,
        retention_ms: int | None = None,
        retention_bytes: int | None = None,
        timeout: float | None = None,
    ) -> tuple[int, int]:
        """Append the batches; returns (offset of the first record, end offset). When a
        segment rolls, retention is applied too."""
        with self.locked(timeout):
            self._sync()
            first = self._next
            rolled = False
            pending: list[bytes] = []
            entries: list[tuple[int, int, int, int, int]] = []
            for batch in batches:
                if self._size > 0 and self._size + batch.length > self.segment_bytes:
                    self._write(pending, entries)
                    pending, entries = [], []
                    self._roll()
                    rolled = True
                entries.append((self._next, self._size, batch.max_ts, batch.count, batch.length))
                pending.append(batch_header(batch, self._next))
                pending += batch.parts
                self._next += batch.count
                self._size += batch.length
            self._write(pending, entries)
            if rolled and (retention_ms is not None or retention_bytes is not None):
                self._retain(retention_ms, retention_bytes)
            return first, self._next

    def apply_retention(self, retention_ms: int | None, retention_bytes: int | None) -> int:
        """Delete the oldest segments retention allows; returns the records removed."""
        with self.locked():
            self._sync()
            return self._retain(retention_ms, retention_bytes)

    def _open_segment(self, base: int, *, create: bool = False) -> None:
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | (os.O_EXCL if create else 0)
        seg_fd = os.open(segment_path(self.directory, base), flags, 0o644)
        idx_fd = os.open(
            index_path(self.directory, base), os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644
        )
        for fd in (self._seg_fd, self._idx_fd):
            if fd is not None:
                os.close(fd)
        self._seg_fd, self._idx_fd, self._segment = seg_fd, idx_fd, base
        if create and self.fsync:
            fsync_dir(self.directory)

    def _sync(self) -> None:
        """Find the real end of the log (under the lock), repairing a torn tail or index."""
        segments = list_segments(self.directory)
        if not segments:
            if not self.directory.is_dir():
                raise PartitionGoneError(f"{self.directory} does not exist")
            self._open_segment(0, create=True)
            self._size, self._next = 0, 0
            return
        active = segments[-1]
        seg_fd = self._seg_fd
        if (
            active == self._segment
            and seg_fd is not None
            and os.fstat(seg_fd).st_size == self._size
        ):
            return  # nobody appended since we did
        self._open_segment(active)
        assert self._seg_fd is not None
        assert self._idx_fd is not None
        tail = segment_tail(self.directory, active, self._seg_fd)
        if tail.end_position < tail.size:  # a crash tore the last batch: drop it
            os.ftruncate(self._seg_fd, tail.end_position)
        if os.fstat(self._idx_fd).st_size != tail.indexed * INDEX_ENTRY_SIZE or len(tail.scanned):
            os.ftruncate(self._idx_fd, tail.indexed * INDEX_ENTRY_SIZE)
            _write_all(self._idx_fd, [tail.scanned.tobytes()])
        self._size, self._next = tail.end_position, tail.end_offset

    def _write(self, parts: list[bytes], entries: list[tuple[int, int, int, int, int]]) -> None:
        if not entries:
            return
        assert self._seg_fd is not None
        assert self._idx_fd is not None
        start = entries[0][1]
        try:
            _write_all(self._seg_fd, parts)
            if self.fsync:
                os.fdatasync(self._seg_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._seg_fd, start)  # leave no partial batch behind
            path = segment_path(self.directory, self._segment)
            self._segment = self._size = -1
            raise BusUnavailableError(
                f"could not append to {path}: {exc}",
                hint="check free disk space and permissions of the project's .lakebed folder",
            ) from exc
        _write_all(self._idx_fd, [np.array(entries, dtype=INDEX_DTYPE).tobytes()])

    def _roll(self) -> None:
        self._open_segment(self._next, create=True)
        self._size = 0

    def _retain(self, retention_ms: int | None, retention_bytes: int | None) -> int:
        segments = list_segments(self.directory)
        if not segments:
            return 0
        cutoff = None if retention_ms is None else int(time.time() * 1000) - retention_ms
        states: dict[int, int | None] = {}
        if cutoff is not None and self._size > 0:
            active = self._segment_max_ts(self._segment, states)
            if active is not None and active < cutoff:
                self._roll()  # everything in the active segment expired: let it go too
                segments.append(self._segment)
        sizes = [_file_size(segment_path(self.directory, s)) for s in segments]
        total = sum(sizes)
        removed = 0
        kept = 0
        for i, base in enumerate(segments[:-1]):
            expired = False
            if cutoff is not None:
                max_ts = self._segment_max_ts(base, states)
                expired = max_ts is None or max_ts < cutoff
            too_big = retention_bytes is not None and total - sizes[i] >= retention_bytes
            if not (expired or too_big):
                break
            # The log goes first: an index without its log is ignored, not the reverse.
            for path in (segment_path(self.directory, base), index_path(self.directory, base)):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            total -= sizes[i]
            removed += segments[i + 1] - base
            kept = i + 1
        for name in os.listdir(self.directory):  # indexes a reader rebuilt for deleted segments
            if name.endswith(".index") and len(name) == 26 and int(name[:20]) < segments[kept]:
                with contextlib.suppress(FileNotFoundError):
                    (self.directory / name).unlink()
        return removed

    def _segment_max_ts(self, base: int, cache: dict[int, int | None]) -> int | None:
        if base not in cache:
            try:
                fd = os.open(segment_path(self.directory, base), os.O_RDONLY)
            except FileNotFoundError:
                return None
            try:
                state = segment_state(self.directory, base, fd)
            finally:
                os.close(fd)
            if base != self._segment and len(state.entries) > state.indexed:
                persist_index(self.directory, base, state.entries, self.fsync)
            entries = state.entries
            cache[base] = int(entries["max_ts"].max()) if len(entries) else None
        return cache[base]


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _flock(fd: int, deadline: float | None, where: Path) -> None:
    if deadline is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    delay = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise BusUnavailableError(
                    f"timed out waiting for the append lock of {where}",
                    hint="another process holds it; retry, or flush with a longer timeout",
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.01)


def _write_all(fd: int, parts: list[bytes]) -> None:
    """Write every part (writev, resuming after short writes)."""
    views = [memoryview(p) for p in parts if len(p)]
    while views:
        chunk = views[:512]
        try:
            written = os.writev(fd, chunk)
        except InterruptedError:
            continue
        if written == 0:
            raise OSError(errno.EIO, "write returned 0")
        done = 0
        while done < len(chunk) and written >= len(chunk[done]):
            written -= len(chunk[done])
            done += 1
        views = views[done:]
        if written:
            views[0] = views[0][written:]


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
