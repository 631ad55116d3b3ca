"""The rows a model's checks dropped, kept in `quarantine.<layer>_<name>` with the check
and the reason: replaced by a full build (it checks every row again), added to by an
increment, exactly once.

An increment's quarantine rows are committed before the model's own commit, so a build
that dies between the two is run again over the same changes. Each quarantine commit
records the build it belongs to (`ATTEMPT_KEY`, the model's next commit number); a build
that finds its own earlier commits on top of the table first restores the version before
them, so no dropped row is kept twice and none is lost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from lakebed.storage import Table
from lakebed.transform import Model

if TYPE_CHECKING:
    from lakebed.orchestrate.build import RunContext

__all__ = ["ATTEMPT_KEY", "keep_dropped"]

ATTEMPT_KEY = "lakebed.attempt"


def keep_dropped(
    ctx: RunContext,
    model: Model,
    rows: pa.Table,
    *,
    replace: bool,
    attempt: str,
    recomputed: list[pa.Table] | None = None,
) -> None:
    """Keep the rows a model's checks dropped; a full build (`replace`) replaces the
    earlier ones, an increment adds to them, after taking out those of the keys it
    `recomputed` (checked again, from all their rows)."""
    name = model.quarantine
    metadata = {ATTEMPT_KEY: attempt}
    if not ctx.storage.exists(name):
        ctx.create_table(
            name,
            rows.schema,
            description=f"Rows of {model.name} dropped by its checks, with the reason",
            owner=model.config.owner,
            domain=model.config.domain,
        )
    table = ctx.table(name)
    if replace:
        table.overwrite(rows, schema_mode="overwrite", partition_by=[], metadata=metadata)
        return
    before = _before_attempt(table, attempt)
    if before is not None:
        table.restore(before)  # what a build that died left here goes
    for keys in recomputed or []:
        table.merge(
            keys,
            keys.column_names,
            when_matched="delete",
            when_not_matched="ignore",
            allow_missing_columns=True,  # only the keys: the rows matched go
            metadata=metadata,
        )
    if rows.num_rows:
        table.append(rows, allow_missing_columns=True, metadata=metadata)


def _before_attempt(table: Table, attempt: str) -> int | None:
    """The version before the newest run of commits that `attempt` wrote, when the newest
    commit is one of them; else None."""
    version = table.version()
    found = None
    while version > 0:
        info = table.commit_info(version) or {}
        if info.get(ATTEMPT_KEY) != attempt:
            break
        found = version - 1
        version -= 1
    return found
