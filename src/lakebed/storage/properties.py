"""The Delta table properties lakebed lets users set, each with the values it takes.

delta-rs checks the keys of a new table's properties, but not their values, and sets any
key on an existing table: `delta.checkpointInterval: ten` would be stored and break the
next commit that reads it. So keys and values are checked here, before anything is
written, with the close matches of a mistyped key.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from difflib import get_close_matches

from lakebed.errors import StorageError

# The property that makes a table record a change data feed (update pre-images and all).
CHANGE_FEED = "delta.enableChangeDataFeed"

_INTERVAL = re.compile(
    r"interval\s+\d+\s+(nanosecond|microsecond|millisecond|second|minute|hour|day|week)s?",
    re.IGNORECASE,
)


def _boolean(value: str) -> str | None:
    return None if value in ("true", "false") else "true or false"


def _count(value: str) -> str | None:
    return None if value.isdigit() and int(value) > 0 else "a whole number above 0"


def _columns_indexed(value: str) -> str | None:
    return None if value == "-1" or value.isdigit() else "a whole number, or -1 for all"


def _interval(value: str) -> str | None:
    return None if _INTERVAL.fullmatch(value.strip()) else "an interval, e.g. `interval 7 days`"


def _isolation(value: str) -> str | None:
    levels = ("Serializable", "WriteSerializable", "SnapshotIsolation")
    return None if value in levels else " or ".join(levels)


def _column_list(value: str) -> str | None:
    return None if value.strip() else "column names separated by commas"


# Key → check of its value (None when valid, else what it should be).
TABLE_PROPERTIES: dict[str, Callable[[str], str | None]] = {
    "delta.appendOnly": _boolean,
    "delta.checkpointInterval": _count,
    "delta.checkpoint.writeStatsAsJson": _boolean,
    "delta.checkpoint.writeStatsAsStruct": _boolean,
    "delta.dataSkippingNumIndexedCols": _columns_indexed,
    "delta.dataSkippingStatsColumns": _column_list,
    "delta.deletedFileRetentionDuration": _interval,
    "delta.enableChangeDataFeed": _boolean,
    "delta.enableDeletionVectors": _boolean,
    "delta.enableExpiredLogCleanup": _boolean,
    "delta.isolationLevel": _isolation,
    "delta.logRetentionDuration": _interval,
    "delta.setTransactionRetentionDuration": _interval,
    "delta.targetFileSize": _count,
    "delta.tuneFileSizesForRewrites": _boolean,
}


def property_problems(properties: Mapping[str, str]) -> list[str]:
    """What is wrong with each bad property (an unknown key, or a value it does not take)."""
    problems: list[str] = []
    for key, value in properties.items():
        check = TABLE_PROPERTIES.get(key)
        if check is None:
            close = get_close_matches(key, list(TABLE_PROPERTIES), n=1, cutoff=0.7)
            problems.append(
                f"{key} is not a table property lakebed sets"
                + (f" (did you mean {close[0]}?)" if close else "")
            )
            continue
        wanted = check(value)
        if wanted is not None:
            problems.append(f"{key} takes {wanted}, not {value!r}")
    return problems


def check_properties(table: str, properties: Mapping[str, str]) -> None:
    """Raise `StorageError` naming every bad property of `table`."""
    problems = property_problems(properties)
    if problems:
        raise StorageError(
            f"cannot set the properties of {table}: {'; '.join(problems)}",
            table=table,
            hint=f"table properties are {', '.join(sorted(TABLE_PROPERTIES))}",
        )
