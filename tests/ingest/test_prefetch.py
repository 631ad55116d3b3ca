"""Prefetch: an iterator run on a worker thread ahead of its consumer."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from lakebed.ingest.prefetch import Prefetch


def test_items_arrive_in_order_and_the_end_is_the_end() -> None:
    with Prefetch(iter(range(50)), depth=2) as ahead:
        assert list(ahead) == list(range(50))
        with pytest.raises(StopIteration):
            next(ahead)


def test_the_source_runs_on_another_thread_ahead_of_the_consumer() -> None:
    threads: list[str] = []
    produced: list[int] = []

    def source() -> Iterator[int]:
        for number in range(5):
            threads.append(threading.current_thread().name)
            produced.append(number)
            yield number

    with Prefetch(source(), depth=2) as ahead:
        assert next(ahead) == 0
        deadline = time.monotonic() + 5
        while len(produced) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert produced == [0, 1, 2]  # one taken, two waiting: no further
        assert list(ahead) == [1, 2, 3, 4]
    assert set(threads) == {"lakebed-prefetch"}


def test_an_error_of_the_source_is_raised_in_its_place() -> None:
    def source() -> Iterator[int]:
        yield 1
        raise ValueError("broken at 2")

    with Prefetch(source()) as ahead:
        assert next(ahead) == 1
        with pytest.raises(ValueError, match="broken at 2"):
            next(ahead)
        with pytest.raises(StopIteration):
            next(ahead)


def test_close_stops_a_source_the_consumer_gave_up_on() -> None:
    produced: list[int] = []

    def endless() -> Iterator[int]:
        number = 0
        while True:
            produced.append(number)
            yield number
            number += 1

    ahead = Prefetch(endless(), depth=1)
    assert next(ahead) == 0
    ahead.close()
    count = len(produced)
    time.sleep(0.2)
    assert len(produced) == count  # the worker has stopped
    with pytest.raises(StopIteration):
        next(ahead)
