"""Catalog records put off while a run builds, written together when it ends."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from lakebed.metastore.deferred import Deferred


def test_items_are_written_at_once_outside_deferring() -> None:
    written: list[list[int]] = []
    deferred = Deferred[int](lambda items: written.append(list(items)))
    deferred.submit(1)
    deferred.submit(2)
    assert written == [[1], [2]]


def test_items_are_kept_until_the_outermost_deferring_ends_and_written_together() -> None:
    written: list[list[int]] = []
    deferred = Deferred[int](lambda items: written.append(list(items)))
    with deferred.deferring():
        deferred.submit(1)
        with deferred.deferring():
            deferred.submit(2)
        assert written == []  # an inner end writes nothing yet
        deferred.submit(3)
    assert written == [[1, 2, 3]]
    deferred.submit(4)
    assert written == [[1, 2, 3], [4]]


def test_what_was_kept_is_written_when_the_deferring_body_fails() -> None:
    written: list[list[int]] = []
    deferred = Deferred[int](lambda items: written.append(list(items)))

    def failing_run() -> None:
        with deferred.deferring():
            deferred.submit(1)
            raise RuntimeError("a model failed")

    with pytest.raises(RuntimeError):
        failing_run()
    assert written == [[1]]


def test_a_failing_write_raises_at_the_end() -> None:
    def write(items: Sequence[int]) -> None:
        raise OSError("metastore gone")

    deferred = Deferred[int](write)
    with pytest.raises(OSError, match="metastore gone"), deferred.deferring():
        deferred.submit(1)


def test_flush_writes_what_is_kept_and_deferring_goes_on() -> None:
    written: list[list[int]] = []
    deferred = Deferred[int](lambda items: written.append(list(items)))
    with deferred.deferring():
        deferred.submit(1)
        deferred.flush()
        assert written == [[1]]
        deferred.submit(2)
        assert written == [[1]]
    assert written == [[1], [2]]
