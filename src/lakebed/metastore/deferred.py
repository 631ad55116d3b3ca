"""Catalog records put off while a run builds: each model's commit is recorded when the run
ends, all in one transaction, instead of holding up the models downstream."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Generic, TypeVar

_T = TypeVar("_T")


class Deferred(Generic[_T]):
    """Items written at once (`write([item])`), or, inside `deferring()`, kept and written
    together when the outermost `deferring()` ends."""

    def __init__(self, write: Callable[[Sequence[_T]], None]) -> None:
        self._write = write
        self._lock = threading.Lock()
        self._depth = 0
        self._kept: list[_T] = []

    @contextmanager
    def deferring(self) -> Iterator[None]:
        with self._lock:
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                kept, self._kept = (self._kept, []) if self._depth == 0 else ([], self._kept)
            if kept:
                self._write(kept)

    def flush(self) -> None:
        """Write what is kept now (deferring goes on)."""
        with self._lock:
            kept, self._kept = self._kept, []
        if kept:
            self._write(kept)

    def submit(self, item: _T) -> None:
        with self._lock:
            if self._depth:
                self._kept.append(item)
                return
        self._write([item])
