"""What a local table's Delta log says without opening the table: its newest version, its
id, and each commit's actions (delta-rs replays the whole log to answer the same)."""

from __future__ import annotations

import contextlib
import json
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deltalake import DeltaTable


def newest_commit(path: str) -> int | None:
    """The version of the newest commit file in a local table's log."""
    try:
        names = os.listdir(f"{path}/_delta_log")
    except OSError:
        return None
    versions = [
        int(n[:20]) for n in names if len(n) == 25 and n.endswith(".json") and n[:20].isdigit()
    ]
    return max(versions) if versions else None


class LogReading:
    """Log reads of a `Table` (its `path`, and `delta()` where the log file is not local)."""

    path: str

    def delta(self, *, refresh: bool = True) -> DeltaTable:
        raise NotImplementedError

    def table_id(self) -> str:
        """The table's id, fixed for its life: a table dropped and written anew under the
        same name has another (so what was read of the old one says nothing of it)."""
        if "://" not in self.path:
            # The first commit names it, where opening the table replays the whole log.
            first = f"{self.path}/_delta_log/{0:020d}.json"
            with (
                contextlib.suppress(OSError, ValueError, KeyError),
                open(first, encoding="utf-8") as log,
            ):
                for line in log:
                    if line.startswith('{"metaData"'):
                        return str(json.loads(line)["metaData"]["id"])
        return str(self.delta().metadata().id)

    def log_entry(self, version: int) -> list[str] | None:
        """The lines (one action each) of a commit's log file: local tables only; None
        elsewhere, or when the file is gone (cleaned up after a checkpoint)."""
        if "://" in self.path:
            return None
        try:
            with open(f"{self.path}/_delta_log/{version:020d}.json", encoding="utf-8") as f:
                return f.readlines()
        except OSError:
            return None

    def bytes_written(self, version: int) -> int | None:
        """The bytes of the files one commit added (data and change data files), from its
        log file: local tables only (`log_entry`)."""
        lines = self.log_entry(version)
        if lines is None:
            return None
        total = 0
        for line in lines:
            if line.startswith(('{"add"', '{"cdc"')):
                action = json.loads(line)
                total += int(next(iter(action.values())).get("size") or 0)
        return total

    def rows_changed(self, first: int, last: int) -> bool:
        """Whether commits `first`..`last` changed rows: added or removed a file, or their
        log files are gone (then they may have); a commit that only set properties did
        not. Local tables only (`log_entry`); elsewhere always True."""
        for version in range(first, last + 1):
            lines = self.log_entry(version)
            if lines is None:
                return True
            for line in lines:
                if line.startswith(('{"add"', '{"remove"', '{"cdc"')):
                    return True
        return False

    def commit_info(self, version: int) -> dict[str, Any] | None:
        """What `history` says of one commit, read from its log file (`log_entry`)."""
        for line in self.log_entry(version) or []:
            if line.startswith('{"commitInfo"'):
                info = json.loads(line)["commitInfo"]
                return {**info, "version": version}
        return None
