"""Column lineage edges in the metastore: which upstream columns each table column is made from.

One row per edge `downstream_table.downstream_column <- upstream_table.upstream_column`, with
how the value is derived (`transform`). A model's edges are replaced as a whole each time
its SQL is traced, so the stored graph always describes the SQL that last built the table.
The functions take a connection inside the caller's transaction; `Metastore` wraps them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from sqlalchemy import Connection, delete, insert, select, text

from lakebed.errors import MetastoreError
from lakebed.metastore.schema import lineage as lineage_t

__all__ = [
    "LINEAGE_TRANSFORMS",
    "WHOLE_TABLE",
    "LineageEdge",
    "LineageTransform",
    "lineage_edges",
    "replace_lineage",
]

# How a downstream value is derived, from the plainest to the most transformed; `table`
# says a table is built from another (columns `*`), which every model records for each
# table it reads, whether or not a column of it was traced (a Python model's never are).
LineageTransform = Literal["copy", "expression", "aggregate", "window", "table"]
WHOLE_TABLE = "*"
LINEAGE_TRANSFORMS: tuple[LineageTransform, ...] = get_args(LineageTransform)

_NAMES = ("downstream_table", "downstream_column", "upstream_table", "upstream_column")
# Namespace of the PostgreSQL advisory locks that serialise replaces of one table's edges.
_PG_LOCK_CLASS = 0x6C62


@dataclass(frozen=True, order=True)
class LineageEdge:
    """`downstream_table.downstream_column` is computed from `upstream_table.upstream_column`.

    `transform` says how: `copy` (the column itself, maybe renamed), `expression` (a scalar
    expression over it), `aggregate` or `window`. `recorded_at` is set on edges read back
    from the metastore and takes no part in comparisons.
    """

    downstream_table: str
    downstream_column: str
    upstream_table: str
    upstream_column: str
    transform: LineageTransform
    recorded_at: datetime | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return (
            f"{self.downstream_table}.{self.downstream_column} <- "
            f"{self.upstream_table}.{self.upstream_column} ({self.transform})"
        )


def _edge(value: LineageEdge | Mapping[str, Any]) -> LineageEdge:
    if isinstance(value, LineageEdge):
        edge = value
    else:
        missing = [key for key in (*_NAMES, "transform") if not value.get(key)]
        if missing:
            raise MetastoreError(
                f"lineage edge {dict(value)!r} lacks {', '.join(missing)}",
                hint=f"give {', '.join(_NAMES)} and transform",
            )
        edge = LineageEdge(
            downstream_table=str(value["downstream_table"]),
            downstream_column=str(value["downstream_column"]),
            upstream_table=str(value["upstream_table"]),
            upstream_column=str(value["upstream_column"]),
            transform=value["transform"],
        )
    if edge.transform not in LINEAGE_TRANSFORMS:
        raise MetastoreError(
            f"lineage edge {edge} has an unknown transform {edge.transform!r}",
            hint=f"use one of {', '.join(LINEAGE_TRANSFORMS)}",
        )
    return edge


def replace_lineage(
    conn: Connection, table: str, edges: Iterable[LineageEdge | Mapping[str, Any]]
) -> int:
    """Make `edges` the only stored edges whose downstream is `table`; returns their count."""
    found: dict[tuple[str, ...], LineageEdge] = {}
    for value in edges:
        edge = _edge(value)
        if edge.downstream_table != table:
            raise MetastoreError(
                f"lineage edge {edge} does not lead into {table}",
                hint=f"replace_lineage({table!r}, ...) takes only edges into {table}",
            )
        key = tuple(getattr(edge, name) for name in _NAMES)
        earlier = found.setdefault(key, edge)
        if earlier.transform != edge.transform:
            raise MetastoreError(
                f"lineage edge {edge} is given twice with different transforms "
                f"({earlier.transform}, {edge.transform})"
            )
    if conn.dialect.name == "postgresql":
        # Two replaces of one table would each delete only the rows committed before them
        # and then collide on insert; in turn, the second deletes what the first wrote.
        # (SQLite writers are serialised by BEGIN IMMEDIATE already.)
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:lock_class, hashtext(:table))"),
            {"lock_class": _PG_LOCK_CLASS, "table": table},
        )
    now = datetime.now(UTC)
    conn.execute(delete(lineage_t).where(lineage_t.c.downstream_table == table))
    if found:
        conn.execute(
            insert(lineage_t),
            [
                {name: getattr(edge, name) for name in (*_NAMES, "transform")}
                | {"recorded_at": now}
                for edge in found.values()
            ],
        )
    return len(found)


def lineage_edges(
    conn: Connection, *, downstream: str | None = None, upstream: str | None = None
) -> list[LineageEdge]:
    """Stored edges into `downstream` and/or out of `upstream` (every edge if neither), sorted."""
    query = select(lineage_t).order_by(*(lineage_t.c[name] for name in _NAMES))
    if downstream is not None:
        query = query.where(lineage_t.c.downstream_table == downstream)
    if upstream is not None:
        query = query.where(lineage_t.c.upstream_table == upstream)
    return [
        LineageEdge(
            downstream_table=row["downstream_table"],
            downstream_column=row["downstream_column"],
            upstream_table=row["upstream_table"],
            upstream_column=row["upstream_column"],
            transform=row["transform"],
            recorded_at=row["recorded_at"],
        )
        for row in conn.execute(query).mappings()
    ]
