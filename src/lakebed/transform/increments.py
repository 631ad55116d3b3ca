"""What a merged incremental model must read of an input that changed, for its increment
to equal a full rebuild.

- `rows`: the changed rows alone. Each output row comes from one row of the input (no
  aggregate, window, DISTINCT, LIMIT or set operation; the input read once, and not on
  the optional side of an outer join), so the changed rows give exactly the changed
  output rows.
- `keys`: every row of the input that shares the `by` columns (some or all of the
  model's unique key, copied from the input) with a changed row, old or new. The SQL
  aggregates or uses windows, but only within those columns: it groups and partitions by
  them. A late-arriving older version of a row, or one order among a customer's many, then
  recomputes its key from all its rows, as a full rebuild would (and an output row of
  those keys that is no longer computed is deleted).
- `full`: anything else (a global aggregate, a running total, a window over other
  columns): only a full rebuild is exact.

(An appending model's SQL runs over each batch of new rows on its own, by definition.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

import sqlglot
from sqlglot import exp

from lakebed.process.pruning import table_name_of
from lakebed.storage import TableName

if TYPE_CHECKING:
    from lakebed.govern import ColumnEdge

Shape = Literal["rows", "keys", "full"]
_Schemas = tuple[tuple[str, tuple[str, ...]], ...]

_ACROSS_ROWS = (exp.AggFunc, exp.Window, exp.Group, exp.Distinct, exp.Having, exp.Qualify)
_WHOLE_RESULT = (exp.Limit, exp.Offset, exp.Union, exp.Intersect, exp.Except)


@dataclass(frozen=True)
class Increment:
    """How to read a changed input: `shape`, and for `keys` the columns (of the input and
    the model's unique key alike) whose values select the rows to read."""

    shape: Shape
    by: tuple[str, ...] = ()


def increment_shape(
    sql: str,
    output: TableName,
    changed: TableName,
    keys: Sequence[str],
    schemas: Mapping[TableName, Sequence[str]],
) -> Increment:
    """How the model's SELECT `sql` must read `changed` for an exact increment (see the
    module docstring); `schemas` holds the columns of every table it reads."""
    try:
        return _shape(sql, str(output), str(changed), tuple(keys), _frozen(schemas))
    except Exception:  # what cannot be analysed is rebuilt in full, which is exact
        return Increment("full")


def _frozen(schemas: Mapping[TableName, Sequence[str]]) -> _Schemas:
    """`schemas` in a form the analysis caches can key on."""
    return tuple(sorted((str(t), tuple(c)) for t, c in schemas.items()))


@lru_cache(maxsize=256)
def _shape(
    sql: str,
    output: str,
    changed: str,
    keys: tuple[str, ...],
    schemas: _Schemas,
) -> Increment:
    tree = sqlglot.parse_one(sql, read="duckdb")
    target = TableName.parse(changed)
    reads = [t for t in tree.find_all(exp.Table) if table_name_of(t) == target]
    if len(reads) != 1 or tree.find(*_WHOLE_RESULT) is not None or _optional(tree, reads[0]):
        return Increment("full")
    if tree.find(*_ACROSS_ROWS) is None:
        return Increment("rows")
    columns = {str(c).lower() for c in dict(schemas).get(changed, ())}
    candidates = {k.lower() for k in keys if k.lower() in columns}
    by = _partitioned_by(tree, candidates, (reads[0].alias or reads[0].name).lower())
    copied = _copied(sql, output, target, tuple(sorted(by)), schemas)
    if not copied:
        return Increment("full")
    return Increment("keys", tuple(k for k in keys if k.lower() in copied))


def key_source(
    sql: str,
    output: TableName,
    keys: Sequence[str],
    schemas: Mapping[TableName, Sequence[str]],
) -> TableName | None:
    """The input the model reads row by row and copies its whole unique key from, if one
    does: the output rows of given keys are then those its rows of the keys give."""
    frozen = _frozen(schemas)
    wanted = {k.lower() for k in keys}
    for table, columns in schemas.items():
        if not keys or not wanted <= {str(c).lower() for c in columns}:
            continue
        try:
            if _shape(sql, str(output), str(table), tuple(keys), frozen).shape != "rows":
                continue
            copied = _copied(sql, str(output), table, tuple(sorted(wanted)), frozen)
        except Exception:  # what cannot be analysed has no source: rebuilt in full
            continue
        if copied == wanted:
            return table
    return None


def _optional(tree: exp.Expr, read: exp.Table) -> bool:
    """Whether the changed input may be missing from output rows (the outer side of an
    outer join): such a row then comes from no row of it, and its changes cannot say
    which output rows to recompute."""
    for join in tree.find_all(exp.Join):
        side = (join.side or "").upper()
        if side == "FULL" or side == "RIGHT" or (side == "LEFT" and join.this is read):
            return True
    return False


def _partitioned_by(tree: exp.Expr, candidates: set[str], alias: str) -> set[str]:
    """The candidate columns that every window partitions by and every query that
    aggregates groups by (columns of the changed input: unqualified or under its alias);
    empty when a query aggregates without grouping."""

    def names(expressions: Sequence[exp.Expr]) -> set[str]:
        found = set()
        for expression in expressions:
            if isinstance(expression, exp.Column) and expression.table.lower() in ("", alias):
                found.add(expression.name.lower())
        return found

    by = set(candidates)
    for window in tree.find_all(exp.Window):
        by &= names(window.args.get("partition_by") or [])
    for select in tree.find_all(exp.Select):
        group = select.args.get("group")
        aggregates = [
            a
            for a in select.find_all(exp.AggFunc)
            if a.find_ancestor(exp.Select) is select and not isinstance(a.parent, exp.Window)
        ]
        if group is not None:
            by &= names(_grouped(select, group))
        elif aggregates:
            return set()  # one row for the whole input
    return by


def _grouped(select: exp.Select, group: exp.Group) -> list[exp.Expr]:
    """What a GROUP BY groups by, with `GROUP BY ALL` and positions (`GROUP BY 1`) read
    as the select list's expressions they stand for."""
    chosen = [e.unalias() for e in select.expressions]
    if group.args.get("all"):
        return [e for e in chosen if e.find(exp.AggFunc) is None]
    found: list[exp.Expr] = []
    for expression in group.expressions:
        if isinstance(expression, exp.Literal) and expression.is_int:
            position = int(expression.name) - 1
            if 0 <= position < len(chosen):
                found.append(chosen[position])
        else:
            found.append(expression)
    return found


def _copied(
    sql: str,
    output: str,
    changed: TableName,
    columns: tuple[str, ...],
    schemas: _Schemas,
) -> set[str]:
    """Those of `columns` (lower-case) that the model copies unchanged from the changed
    input into its own column of the same name."""
    if not columns:
        return set()
    edges = _lineage(sql, output, schemas)
    found = set()
    for column in columns:
        sources = [e for e in edges if e.downstream_column.lower() == column]
        if [(e.upstream_table, e.upstream_column.lower(), e.transform) for e in sources] == [
            (str(changed), column, "copy")
        ]:
            found.add(column)
    return found


@lru_cache(maxsize=256)
def _lineage(sql: str, output: str, schemas: _Schemas) -> tuple[ColumnEdge, ...]:
    """The model's column lineage (traced once per SQL, whichever input asks)."""
    from lakebed.govern.lineage import column_lineage  # governance sits above transform

    known = {TableName.parse(t): list(c) for t, c in schemas}
    return tuple(column_lineage(sql, output, known))
