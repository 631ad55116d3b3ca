"""Reading ahead: a thread polls the bus while the pipeline parses and writes the batch before.

Turning a Kafka fetch into Arrow costs about as much as parsing and writing it (the client
makes a Python object per message); overlapping the two on separate cores is what lets a
pipeline keep up with a raw consumer. The thread holds at most `depth` batches, so a slow
sink holds the reading back instead of filling memory.
"""

from __future__ import annotations

import queue
import threading
import time

import pyarrow as pa

from lakebed.bus import Consumer


class Prefetcher:
    """Polls `consumer` in a thread; `take` returns what it has read, in order."""

    def __init__(self, consumer: Consumer, max_records: int, *, depth: int = 2) -> None:
        self.consumer = consumer
        self.max_records = max_records
        self._batches: queue.Queue[pa.Table | BaseException] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        # Held while the thread polls, so the pipeline can commit offsets in between.
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self._work, name="lakebed-prefetch", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                with self.lock:
                    records = self.consumer.poll(self.max_records, timeout=0.05)
            except BaseException as exc:  # handed to the pipeline, which decides
                self._put(exc)
                return
            if records.num_rows:
                self._put(records)

    def _put(self, item: pa.Table | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._batches.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def take(self, max_records: int, wait: float) -> pa.Table:
        """Up to about `max_records` records: waits up to `wait` seconds for the first
        batch, then takes only batches already read."""
        parts: list[pa.Table] = []
        count = 0
        deadline = time.monotonic() + wait
        while count < max_records:
            left = 0.0 if parts else deadline - time.monotonic()
            try:
                item = self._batches.get(timeout=left) if left > 0 else self._batches.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, BaseException):
                raise item
            parts.append(item)
            count += item.num_rows
        return pa.concat_tables(parts) if parts else pa.table({})

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
