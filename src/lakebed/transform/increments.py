"""What a merged incremental model must read of an input that changed, for its increment
to equal a full rebuild.

- `rows`: the changed rows alone. Each output row comes from one row of the input (no
  aggregate, window, DISTINCT, LIMIT or set operation; the input read once, and not on
  the optional side of an outer join), so the changed rows give exactly the changed
  output rows.
- `keys`: every row of the input that shares the `by` columns (some or all of the
  model's unique key, copied from the input, or computed from its columns alone and
  grouped by, as `date_trunc('day', ordered_at) AS day`) with a changed row, old or new. The SQL
  aggregates or uses windows, but only within those columns: it groups and partitions by
  them. A late-arriving older version of a row, or one order among a customer's many, then
  recomputes its key from all its rows, as a full rebuild would (and an output row of
  those keys that is no longer computed is deleted).
- `latest`: a `keys` shape that keeps one row per key, the first by an order of columns it
  copies (`QUALIFY row_number() OVER (PARTITION BY key ORDER BY updated_at DESC) = 1` over
  one input, filtered row by row). When the input only gained rows, the key's new first
  row is the first of its current row and the new rows' first, so the new rows alone are
  read and compared with the model's own rows (a key's history is not read again; with
  any other change, it is read as for `keys`).
- `full`: anything else (a global aggregate, a running total, a window over other
  columns): only a full rebuild is exact.

(An appending model's SQL runs over each batch of new rows on its own, by definition.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Literal, TypeGuard

import sqlglot
from sqlglot import exp

from lakebed.process.pruning import table_name_of
from lakebed.storage import TableName

if TYPE_CHECKING:
    from lakebed.govern import ColumnEdge

Shape = Literal["rows", "keys", "latest", "full"]
_Schemas = tuple[tuple[str, tuple[str, ...]], ...]

_ACROSS_ROWS = (exp.AggFunc, exp.Window, exp.Group, exp.Distinct, exp.Having, exp.Qualify)
_WHOLE_RESULT = (exp.Limit, exp.Offset, exp.Union, exp.Intersect, exp.Except)


@dataclass(frozen=True)
class Increment:
    """How to read a changed input: `shape`; for `keys` and `latest` the columns (of the
    input and the model's unique key alike) whose values select the rows to read; for
    `latest` the order that picks a key's row: its columns, each with its ORDER BY item
    (DuckDB SQL over the model's columns)."""

    shape: Shape
    by: tuple[str, ...] = ()
    order: tuple[tuple[str, str], ...] = ()
    # Those of `by` that the model computes from the input's columns rather than copies
    # (`date_trunc('day', ordered_at) AS day`, grouped by): each with its expression, DuckDB
    # SQL over the input's columns.
    computed: tuple[tuple[str, str], ...] = ()


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
    if len(reads) != 1 or _uses(tree, target) != 1:
        return Increment("full")
    if tree.find(*_WHOLE_RESULT) is not None or _optional(tree, reads[0]):
        return Increment("full")
    if tree.find(*_ACROSS_ROWS) is None:
        return Increment("rows")
    columns = {str(c).lower() for c in dict(schemas).get(changed, ())}
    candidates = {k.lower() for k in keys if k.lower() in columns}
    alias = (reads[0].alias or reads[0].name).lower()
    partitions = _partitioned_by(tree, candidates, alias)
    copied = _copied(sql, output, target, tuple(sorted(partitions)), schemas)
    rest = [k.lower() for k in keys if k.lower() not in copied]
    computed = _computed_keys(tree, rest, alias, columns) if rest else {}
    if not copied and not computed:
        return Increment("full")
    if computed:
        by = tuple(k for k in keys if k.lower() in copied or k.lower() in computed)
        return Increment("keys", by, computed=tuple(computed.items()))
    by = tuple(k for k in keys if k.lower() in copied)
    order = first_per_key(tree, copied, alias)
    if order and len(by) == len(keys):
        ordering = tuple(sorted({c.lower() for c, _ in order}))
        if _copied(sql, output, target, ordering, schemas) == set(ordering):
            return Increment("latest", by, tuple(order))
    return Increment("keys", by)


def _uses(tree: exp.Expr, target: TableName) -> int:
    """How many times the query reads `target`'s rows: once per reference to it, or to a
    CTE over it (a CTE joined to itself reads them twice)."""
    ctes = {cte.alias_or_name.lower(): cte for cte in tree.find_all(exp.CTE)}
    if len(ctes) != len(list(tree.find_all(exp.CTE))):
        return -1  # a name defined twice: not worth telling apart

    def weight(table: exp.Table, uses: dict[str, int]) -> int:
        if table_name_of(table) == target:
            return 1
        return 0 if table.db else uses.get(table.name.lower(), 0)

    uses: dict[str, int] = {}
    for _ in range(len(ctes) + 1):  # a CTE reads only those defined before it
        uses = {
            name: sum(
                weight(t, uses) for t in cte.find_all(exp.Table) if t.find_ancestor(exp.CTE) is cte
            )
            for name, cte in ctes.items()
        }
    return sum(
        weight(t, uses) for t in tree.find_all(exp.Table) if t.find_ancestor(exp.CTE) is None
    )


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
    """Whether output rows do not come from rows of the changed input one by one: it may
    be missing from them (the outer side of an outer join, a scalar subquery), it takes
    rows away (the side of an anti join, NOT EXISTS, NOT IN), the row it gives depends on
    its other rows (the side an ASOF join picks from), or rows pair by position
    (POSITIONAL JOIN). Its changes then cannot say which output rows to recompute."""
    for join in tree.find_all(exp.Join):
        side = (join.side or "").upper()
        kind = (join.kind or "").upper()
        method = (join.args.get("method") or "").upper()
        if side == "FULL" or side == "RIGHT" or method == "POSITIONAL":
            return True
        if join.this is read and (side == "LEFT" or kind == "ANTI" or method == "ASOF"):
            return True
    return _decides_values(read)


# Where a query may sit and still be read as a table.
_TABLE_LIKE = (exp.From, exp.Join, exp.CTE, exp.Subquery, exp.Lateral, exp.SetOperation)


def _decides_values(read: exp.Table) -> bool:
    """Whether the changed input is read in a subquery that is not a filter keeping rows
    (`EXISTS` / `IN` joined by AND/OR in a WHERE): a scalar subquery gives a value also
    to rows it finds nothing for, and NOT EXISTS / NOT IN / a CASE on EXISTS change rows
    its new rows do not give."""
    node: exp.Expr = read
    while node.parent is not None:
        parent = node.parent
        if isinstance(node, (exp.Select, exp.Subquery)):
            if isinstance(parent, exp.Exists) or (
                isinstance(parent, exp.In) and node.arg_key == "query"
            ):
                if not _keeps_rows(parent):
                    return True
            elif not isinstance(parent, _TABLE_LIKE):
                return True
        node = parent
    return False


def _keeps_rows(condition: exp.Expr) -> bool:
    """Whether `condition` is part of a WHERE that rows must pass, through AND/OR alone."""
    node = condition
    while isinstance(node.parent, (exp.And, exp.Or, exp.Paren)):
        node = node.parent
    return isinstance(node.parent, exp.Where)


def first_per_key(tree: exp.Expr, by: set[str], alias: str) -> list[tuple[str, str]]:
    """For a single SELECT over one table whose only row-combining part is `QUALIFY
    row_number() OVER (PARTITION BY <by> ORDER BY <columns>) = 1`: each order column and
    its ORDER BY item as DuckDB SQL; empty for anything else."""
    if not _single_select(tree):
        return []
    if len(list(tree.find_all(exp.Table))) != 1 or tree.args.get("joins"):
        return []
    if any(tree.args.get(part) for part in ("group", "having", "distinct", "with", "windows")):
        return []
    windows = list(tree.find_all(exp.Window))
    qualify = tree.args.get("qualify")
    if len(windows) != 1 or qualify is None or tree.find(exp.AggFunc) is not None:
        return []
    window = windows[0]
    if not isinstance(window.this, exp.RowNumber) or not _is_first(qualify.this, window, tree):
        return []
    partition = window.args.get("partition_by") or []
    if not _plain(partition, alias) or {c.name.lower() for c in partition} != by:
        return []
    ordered = window.args.get("order")
    items = list(ordered.expressions) if ordered is not None else []
    if not items or not _plain([i.this for i in items], alias):
        return []
    found = []
    for item in items:
        column = item.this.name
        unqualified = item.copy()
        unqualified.set("this", exp.column(column, quoted=True))
        found.append((column, unqualified.sql(dialect="duckdb")))
    return found


# Functions whose value is not the same for the same arguments: no key computed with them.
_VOLATILE = {
    "random",
    "uuid",
    "gen_random_uuid",
    "uuidv4",
    "uuidv7",
    "nextval",
    "setseed",
    "now",
    "today",
    "current_date",
    "current_time",
    "current_timestamp",
    "get_current_time",
    "get_current_timestamp",
    "localtime",
    "localtimestamp",
    "transaction_timestamp",
}


def _computed_keys(
    tree: exp.Expr, wanted: list[str], alias: str, columns: set[str]
) -> dict[str, str]:
    """Those `wanted` key columns (lower-case) that a single grouping SELECT computes from
    the changed input's columns alone and groups by (`date_trunc('day', ordered_at) AS
    day ... GROUP BY 1`), each with its expression as DuckDB SQL over the input: an
    output row of a key then comes only from input rows whose expression gives that key."""
    if not _single_select(tree):
        return {}
    group = tree.args.get("group")
    if group is None or tree.find(exp.Window) is not None or tree.args.get("with"):
        return {}
    distinct = tree.args.get("distinct")
    if distinct is not None and distinct.args.get("on") is not None:
        return {}  # one row per other values, across the groups
    grouped = _grouped(tree, group)
    found: dict[str, str] = {}
    for item in tree.expressions:
        name = item.alias_or_name.lower()
        inner = item.unalias()
        if name not in wanted or name in found or isinstance(inner, exp.Column):
            continue
        if inner.find(exp.AggFunc, exp.Window, exp.Subquery, exp.Select) is not None:
            continue
        used = list(inner.find_all(exp.Column))
        if not used or not _plain(used, alias) or any(c.name.lower() not in columns for c in used):
            continue
        if any(_volatile(f) for f in inner.find_all(exp.Func)):
            continue
        by_name = name not in columns and any(
            isinstance(g, exp.Column) and not g.table and g.name.lower() == name for g in grouped
        )
        if not by_name and not any(g == inner for g in grouped):
            continue
        bare = inner.copy()
        for column in bare.find_all(exp.Column):
            column.set("table", None)
        found[name] = bare.sql(dialect="duckdb")
    return found


def _volatile(function: exp.Func) -> bool:
    name = function.sql_name() if not isinstance(function, exp.Anonymous) else function.name
    return name.lower() in _VOLATILE or isinstance(
        function, (exp.Rand, exp.CurrentDate, exp.CurrentTime, exp.CurrentTimestamp)
    )


@lru_cache(maxsize=256)
def volatile_call(sql: str) -> str | None:
    """The first function in `sql` whose value changes from run to run with the same input
    rows (`now()`, `current_date`, `random()`), as written; None if it has none (or does
    not parse: DuckDB says why when it runs)."""
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except sqlglot.errors.SqlglotError:
        return None
    for function in tree.find_all(exp.Func):
        if _volatile(function):
            return function.sql(dialect="duckdb")
    return None


def _single_select(tree: exp.Expr) -> TypeGuard[exp.Select]:
    """Whether the query is one SELECT, with no subquery, CTE or set operation."""
    return isinstance(tree, exp.Select) and len(list(tree.find_all(exp.Select))) == 1


def _plain(expressions: Sequence[exp.Expr], alias: str) -> bool:
    """Whether each expression is a column of the table read under `alias` (or unqualified)."""
    return all(isinstance(e, exp.Column) and e.table.lower() in ("", alias) for e in expressions)


def _is_first(condition: exp.Expr, window: exp.Window, select: exp.Select) -> bool:
    """Whether a QUALIFY condition keeps exactly the rows the window numbers 1 (`= 1`,
    `<= 1`, `< 2`, on the window or on the select-list name given to it)."""
    named = {
        e.alias.lower() for e in select.expressions if isinstance(e, exp.Alias) and e.this is window
    }

    def is_window(side: exp.Expr) -> bool:
        if side is window:
            return True
        return isinstance(side, exp.Column) and not side.table and side.name.lower() in named

    def number(side: exp.Expr) -> int | None:
        return int(side.name) if isinstance(side, exp.Literal) and side.is_int else None

    if not isinstance(condition, exp.Binary):
        return False
    left, right = condition.this, condition.expression
    limits = {exp.EQ: 1, exp.LTE: 1, exp.LT: 2}  # window <op> number
    flipped = {exp.EQ: 1, exp.GTE: 1, exp.GT: 2}  # number <op> window
    kind = type(condition)
    return (kind in limits and is_window(left) and number(right) == limits[kind]) or (
        kind in flipped and is_window(right) and number(left) == flipped[kind]
    )


def _partitioned_by(tree: exp.Expr, candidates: set[str], alias: str) -> set[str]:
    """The candidate columns that every window (and DISTINCT ON) partitions by and every
    query that aggregates groups by (columns of the changed input: unqualified or under its alias);
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
    for distinct in tree.find_all(exp.Distinct):
        on = distinct.args.get("on")
        if on is not None:  # DISTINCT ON (x) keeps one row per x, as a window over x would
            by &= names(on.expressions if isinstance(on, exp.Tuple) else [on])
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


@lru_cache(maxsize=256)
def without_qualify(sql: str) -> str:
    """The SELECT without its QUALIFY clause (for a `latest` model over rows that hold each
    key once, where it keeps every row)."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    tree.set("qualify", None)
    return tree.sql(dialect="duckdb")
