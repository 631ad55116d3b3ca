"""One SQLAlchemy engine per metastore database in a process, as SQLAlchemy intends an
engine to be used: opening a project again (a notebook, a test, a scheduler reopening
its lakehouse) finds the statements it runs already compiled, where a new engine compiles
each one again (a few milliseconds per run of models).

An engine's pooled connections close when the last metastore using it closes (so the
database file can be removed or replaced); the engine stays, with its compiled
statements, for the next one. A forked child makes engines of its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import URL, Engine


@dataclass
class _Entry:
    engine: Engine
    users: int = 0


_entries: dict[tuple[int, str, str], _Entry] = {}
_lock = threading.Lock()


def acquire(url: URL, options: dict[str, object], make: Callable[[], Engine]) -> Engine:
    """The engine for `url` with `options`, made by `make` the first time in this process."""
    key = (os.getpid(), url.render_as_string(hide_password=False), repr(sorted(options.items())))
    with _lock:
        entry = _entries.get(key)
        if entry is None:
            entry = _entries[key] = _Entry(make())
        entry.users += 1
        return entry.engine


def release(engine: Engine) -> None:
    """A metastore is done with `engine`: its connections close once no metastore uses it."""
    with _lock:
        entry = next(e for e in _entries.values() if e.engine is engine)
        entry.users -= 1
        if entry.users == 0:
            engine.dispose()  # a new pool is made if the engine is used again
