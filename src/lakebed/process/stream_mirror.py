"""A pipeline's durable positions, copied to its consumer group off the pipeline's thread.

A group commit waits for the group's coordinator. After a broker restart librdkafka holds a
commit until it finds the coordinator again, or for up to the session timeout (45 s), and a
pipeline committing on its own thread stood still all that while. Here a thread with a
consumer of its own commits the newest positions it was handed; the pipeline only hands
them over, so no broker round trip for the mirror ever blocks a micro-batch.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Mapping

from lakebed.bus import Bus, Consumer, TopicPartition

__all__ = ["GroupMirror"]

_LOG = logging.getLogger("lakebed.process.stream")


class GroupMirror:
    """Commits offered positions of `topic` to `group`, newest first, on a thread of its own."""

    def __init__(self, bus: Bus, group: str, topic: str, *, name: str = "") -> None:
        self.bus = bus
        self.group = group
        self.topic = topic
        self._name = name or group
        self._wake = threading.Condition()
        self._pending: dict[int, int] | None = None
        self._closing = False
        self._thread: threading.Thread | None = None

    def offer(self, offsets: Mapping[int, int]) -> None:
        """Commit these positions soon; they replace an earlier offer not yet committed."""
        with self._wake:
            if self._closing:
                return
            self._pending = dict(offsets)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"stream-mirror-{self._name}", daemon=True
                )
                self._thread.start()
            self._wake.notify()

    def close(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the last offer to be committed; returns whether
        the thread finished (one still waiting on the broker ends on its own later)."""
        with self._wake:
            self._closing = True
            self._wake.notify()
            thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _next(self) -> dict[int, int] | None:
        with self._wake:
            while self._pending is None and not self._closing:
                self._wake.wait()
            offsets, self._pending = self._pending, None
            return offsets

    def _run(self) -> None:
        consumer: Consumer | None = None
        try:
            while (offsets := self._next()) is not None:
                try:
                    if consumer is None:
                        consumer = self.bus.consumer(self.group)
                    consumer.commit({TopicPartition(self.topic, p): o for p, o in offsets.items()})
                except Exception as exc:  # the Delta log is the truth: the next offer retries
                    _LOG.debug("mirroring %s to group %s failed: %s", self.topic, self.group, exc)
                    if consumer is not None:
                        with contextlib.suppress(Exception):
                            consumer.close()
                        consumer = None
        finally:
            if consumer is not None:
                with contextlib.suppress(Exception):
                    consumer.close()
