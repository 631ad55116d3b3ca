"""Run an iterator on a worker thread a few items ahead of its consumer.

The runner reads (parses, types) the next pieces of a streamed batch here while delta-rs
writes the previous ones: both release the GIL for their heavy work, so they overlap.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Generic, TypeVar, cast

__all__ = ["Prefetch"]

T = TypeVar("T")

_POLL_SECONDS = 0.05


class Prefetch(Generic[T]):
    """Iterate `source` on a worker thread, at most `depth` items ahead. An exception of
    `source` is raised to the consumer in its place; `close()` stops the worker (at its next
    item) and waits for it. Use as a context manager."""

    def __init__(self, source: Iterator[T], depth: int = 2) -> None:
        self._queue: queue.Queue[tuple[bool, T | None, BaseException | None]] = queue.Queue(depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(
            target=self._work, args=(source,), name="lakebed-prefetch", daemon=True
        )
        self._thread.start()

    def _work(self, source: Iterator[T]) -> None:
        try:
            for item in source:
                if not self._put((False, item, None)):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put((True, None, exc))
            return
        self._put((True, None, None))

    def _put(self, entry: tuple[bool, T | None, BaseException | None]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=_POLL_SECONDS)
            except queue.Full:
                continue
            return True
        return False

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        finished, item, error = self._queue.get()
        if finished:
            self._done = True
            if error is not None:
                raise error
            raise StopIteration
        return cast(T, item)

    def close(self) -> None:
        self._done = True
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Prefetch[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
