"""The watermark of a pipeline reading several partitions: a partition with records still
to read, or caught up only a moment ago, holds it back; one idle for a while does not."""

from __future__ import annotations

import time

import pyarrow as pa
import pytest

from lakebed.process import stream_state
from lakebed.process.stream_state import OperatorState
from lakebed.process.windows import EVENT_TIME, TIMESTAMP_US

SECOND = 1_000_000


def events(partition: int, *seconds: int) -> pa.Table:
    return pa.table(
        {
            "_partition": pa.array([partition] * len(seconds), pa.int32()),
            EVENT_TIME: pa.array([s * SECOND for s in seconds], pa.int64()).cast(TIMESTAMP_US),
        }
    )


def test_a_partition_caught_up_a_moment_ago_holds_the_watermark_until_it_is_idle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stream_state, "IDLE_SECONDS", 0.2)
    state = OperatorState("p", window=None, lateness_us=0, dedup_key=None, dedup_horizon_us=0)
    state.advance(events(1, 50), {0: 0, 1: 5}, {0: 0, 1: 5})
    # Partition 0 jumps ahead while partition 1 has just read everything it had so far:
    # its next records (a producer's batch landing later) may be as old as 50 s.
    state.advance(events(0, 100), {0: 10, 1: 5}, {0: 10, 1: 5})
    assert state.watermark == 50 * SECOND
    # A record still to read in partition 1 keeps holding it.
    state.advance(events(0, 110), {0: 11, 1: 5}, {0: 11, 1: 6})
    assert state.watermark == 50 * SECOND
    # Read, then nothing more for IDLE_SECONDS: partition 1 is idle and holds nothing back.
    state.advance(events(1, 60), {0: 11, 1: 6}, {0: 11, 1: 6})
    assert state.watermark == 60 * SECOND
    time.sleep(0.25)
    state.advance(events(1).slice(0, 0), {0: 11, 1: 6}, {0: 11, 1: 6})
    assert state.watermark == 110 * SECOND
