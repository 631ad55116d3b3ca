"""Column lineage: which `layer.name` columns each output column of a model is computed from.

`column_lineage` traces a model's SELECT with sqlglot: `qualify` resolves every column to
its source and expands stars against the upstream schemas, and `sqlglot.lineage` follows
each output column through CTEs, subqueries and set operations down to lakehouse tables.
Only value lineage is kept: a column read only by WHERE, JOIN, GROUP BY or QUALIFY shapes
which rows there are, not what they hold, and yields no edge. `lineage_tree` draws the
stored edges as a tree (`lineage_view`).

Example::

    edges = column_lineage(
        "SELECT customer_id, SUM(amount) AS revenue FROM silver.orders GROUP BY ALL",
        "gold.revenue",
        {TableName("silver", "orders"): ["order_id", "customer_id", "amount"]},
    )
    # gold.revenue.customer_id <- silver.orders.customer_id (copy)
    # gold.revenue.revenue <- silver.orders.amount (aggregate)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, SqlglotError
from sqlglot.lineage import Node, to_node
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, build_scope, find_all_in_scope
from sqlglot.schema import MappingSchema

from lakebed.errors import QueryError, SqlSyntaxError
from lakebed.metastore.lineage_store import (
    LINEAGE_TRANSFORMS,
    LineageEdge,
    LineageTransform,
)
from lakebed.process.pruning import table_name_of
from lakebed.storage import TableName

__all__ = ["ColumnEdge", "Transform", "column_lineage"]

# The metastore's row type is the lineage edge: one class from tracing to storage.
ColumnEdge = LineageEdge
Transform = LineageTransform

_DIALECT = "duckdb"
# Along a path the most transforming step wins: a window over a copy is a window.
_RANK: dict[str, int] = {name: rank for rank, name in enumerate(LINEAGE_TRANSFORMS)}
_COPY, _EXPRESSION, _AGGREGATE, _WINDOW = (
    _RANK[name] for name in ("copy", "expression", "aggregate", "window")
)
# DuckDB aggregates that sqlglot parses as anonymous functions.
_ANONYMOUS_AGGREGATES = frozenset(
    {
        "bitstring_agg",
        "entropy",
        "favg",
        "fsum",
        "histogram",
        "kahan_sum",
        "product",
        "reservoir_quantile",
        "sumkahan",
    }
)

# Upstream columns reached by one lineage node: (table, column) -> transform rank.
_Reached = dict[tuple[TableName, str], int]


def column_lineage(
    sql: str,
    output: TableName | str,
    schemas: Mapping[TableName, Sequence[str]],
    *,
    output_columns: Sequence[str] | None = None,
) -> list[ColumnEdge]:
    """The lineage edges of every output column of a model's SELECT (DuckDB SQL).

    `schemas` gives the columns of the tables the SQL reads; they expand `*` and resolve
    unqualified columns. `output_columns`, the built table's columns in order, names the
    outputs exactly as DuckDB did (otherwise names come from the SQL and `schemas`).
    An edge whose column the schemas do not know, or whose source is not a `layer.name`
    table, is left out; so is an output column sqlglot cannot follow. Raises
    `SqlSyntaxError` if the SQL does not parse and `QueryError` if it is not one query
    (a DuckDB `PIVOT` statement included: write it as `SELECT * FROM (PIVOT ...)`).
    """
    target = str(TableName.parse(output))
    known = {
        TableName.parse(table): {column.lower(): column for column in columns}
        for table, columns in schemas.items()
    }
    tree = _parse(sql, target)
    layers: dict[str, dict[str, dict[str, str]]] = {}
    for table, columns in known.items():
        # Lineage needs names only; sqlglot's schema wants a type for each.
        layers.setdefault(table.layer, {})[table.name] = dict.fromkeys(columns.values(), "UNKNOWN")
    mapping: dict[str, object] = {**layers}
    schema = MappingSchema(mapping, dialect=_DIALECT)
    scope, query = _scope(tree, schema, target, sql)
    names = _output_names(tree, query, known, output_columns)
    tracer = _Tracer(known)
    # Shared by every output column, as `sqlglot.lineage.lineage` does: each CTE column's
    # node is built once, which keeps deep CTE chains linear instead of exponential.
    nodes: dict[tuple[object, ...], Node] = {}
    selects: dict[int, tuple[bool, dict[str, exp.Expr]]] = {}
    edges: list[ColumnEdge] = []
    for index, name in enumerate(names):
        if name == "*":
            continue  # a star over a table the schemas do not know: its columns are unknown
        try:
            # By position, not name: DuckDB keeps duplicate names (as name_1, ...).
            node = to_node(
                index,
                scope,
                _DIALECT,
                schema,
                trim_selects=False,
                _cache=nodes,
                _scope_meta=selects,
            )
        except (SqlglotError, LookupError, ValueError, AttributeError):
            # Shapes sqlglot's lineage does not follow (some PIVOTs): this column gets no
            # edges, the others still do.
            continue
        reached = tracer.reached(node)
        for (table, column), rank in sorted(reached.items()):
            edges.append(
                LineageEdge(
                    downstream_table=target,
                    downstream_column=name,
                    upstream_table=str(table),
                    upstream_column=column,
                    transform=LINEAGE_TRANSFORMS[rank],
                )
            )
    return edges


def _parse(sql: str, target: str) -> exp.Query:
    try:
        statements = [s for s in sqlglot.parse(sql, read=_DIALECT) if s is not None]
    except ParseError as exc:
        detail = exc.errors[0] if exc.errors else {}
        where = f" at line {detail['line']}, column {detail['col']}" if "line" in detail else ""
        message = str(detail.get("description") or exc).splitlines()[0]
        raise SqlSyntaxError(
            f"cannot trace the lineage of {target}: its SQL does not parse{where}: {message}",
            query=sql,
            hint="fix the model's SQL; `lakebed run` reports the same error",
        ) from exc
    except SqlglotError as exc:
        raise SqlSyntaxError(
            f"cannot trace the lineage of {target}: its SQL does not parse: {exc}", query=sql
        ) from exc
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        raise QueryError(
            f"cannot trace the lineage of {target}: its SQL must be exactly one SELECT",
            query=sql,
            hint="a SQL model is one query (SELECT, WITH ... SELECT or a set operation)",
        )
    return statements[0]


def _scope(
    tree: exp.Query, schema: MappingSchema, target: str, sql: str
) -> tuple[Scope, exp.Query]:
    """The root scope of the qualified query; without the schemas if they contradict it."""
    try:
        qualified = _qualify(tree, schema)
    except SqlglotError:
        # e.g. USING a column the schema lacks: trace what can be traced without schemas.
        try:
            qualified = _qualify(tree, None)
        except SqlglotError as exc:
            raise QueryError(
                f"cannot trace the lineage of {target}: {exc}",
                query=sql,
                hint="check that the tables and columns the model reads exist",
            ) from exc
    scope = build_scope(_set_operations_by_value(qualified))
    if scope is None or not isinstance(scope.expression, exp.Query):
        raise QueryError(f"cannot trace the lineage of {target}: it is not a query", query=sql)
    return scope, scope.expression


def _qualify(tree: exp.Query, schema: MappingSchema | None) -> exp.Expr:
    return qualify(
        _inline_named_windows(tree.copy()),
        dialect=_DIALECT,
        schema=schema,
        validate_qualify_columns=False,  # unknown columns become unresolved, not errors
        identify=False,
    )


def _inline_named_windows(tree: exp.Expr) -> exp.Expr:
    """`OVER w ... WINDOW w AS (PARTITION BY k)` as `OVER (PARTITION BY k)`: lineage reads
    only the select list, where the named window's columns would be missed."""
    for select in list(tree.find_all(exp.Select)):
        named: dict[str, exp.Window] = {}
        for window in select.args.get("windows") or []:
            named[window.name.lower()] = _with_named_spec(window, named)
        if not named:
            continue
        for window in list(find_all_in_scope(select, exp.Window)):
            window.replace(_with_named_spec(window, named))
        select.set("windows", None)
    return tree


def _with_named_spec(window: exp.Window, named: Mapping[str, exp.Window]) -> exp.Window:
    """`window` completed with the partition, order and frame of the window it refers to
    (`OVER (w ORDER BY y)` or, in a definition, `w2 AS (w ORDER BY y)`)."""
    reference = window.args.get("alias")
    source = named.get(reference.name.lower()) if reference is not None else None
    if source is None:
        return window
    merged = window.copy()
    merged.set("alias", None)
    for part in ("partition_by", "order", "spec"):
        if not merged.args.get(part) and source.args.get(part):
            merged.set(part, source.copy().args[part])
    return merged


def _set_operations_by_value(tree: exp.Expr) -> exp.Expr:
    """Rewrite set operations so that each output column reads the branch columns whose
    values it holds: `A EXCEPT B` keeps only A (B only removes rows), and the branches of
    `UNION BY NAME` are lined up by name (sqlglot's lineage pairs columns by position)."""
    for node in list(tree.find_all(exp.SetOperation)):
        if not isinstance(node, exp.Except):
            continue
        left = node.this
        if node.args.get("with_") is not None and isinstance(left, exp.Query):
            left.set("with_", node.args["with_"])
        if node is tree:
            tree = left
        node.replace(left)
    for node in reversed(list(tree.find_all(exp.SetOperation))):
        if not node.args.get("by_name"):
            continue
        leaves = _by_name_leaves(node)
        names: dict[str, str] = {}
        for leaf in leaves or []:
            for name in leaf.named_selects:
                names.setdefault(name.lower(), name)
        if leaves is None or "*" in names:
            # Branches we cannot line up: keep the first, whose columns are certain.
            if node is tree:
                tree = node.this
            node.replace(node.this)
            continue
        for leaf in leaves:
            by_name = {select.alias_or_name.lower(): select for select in leaf.selects}
            leaf.set(
                "expressions",
                [
                    by_name.get(lower) or exp.alias_(exp.null(), name)
                    for lower, name in names.items()
                ],
            )
    return tree


def _by_name_leaves(node: exp.Expr) -> list[exp.Select] | None:
    """The SELECTs a chain of `UNION BY NAME` combines, or None if one is of another kind."""
    if isinstance(node, exp.Subquery):
        return _by_name_leaves(node.this)
    if isinstance(node, exp.Select):
        return [node]
    if isinstance(node, exp.SetOperation) and node.args.get("by_name"):
        left, right = _by_name_leaves(node.this), _by_name_leaves(node.expression)
        return None if left is None or right is None else left + right
    return None


def _is_star(select: exp.Expr) -> bool:
    return (
        isinstance(select, exp.Star)
        or (isinstance(select, exp.Column) and isinstance(select.this, exp.Star))
        or isinstance(select, exp.Columns)
    )


def _output_names(
    original: exp.Query,
    qualified: exp.Query,
    known: Mapping[TableName, Mapping[str, str]],
    output_columns: Sequence[str] | None,
) -> list[str]:
    """The names of the output columns, spelled and de-duplicated as DuckDB does."""
    traced = [select.alias_or_name for select in qualified.selects]
    if output_columns is not None and len(output_columns) == len(traced):
        return list(output_columns)
    spelled: dict[str, str] = {}
    for columns in known.values():
        for lower, column in columns.items():
            spelled.setdefault(lower, column)
    written = original.selects
    if len(written) == len(traced) and not any(_is_star(s) for s in written):
        # Qualification lower-cases names; DuckDB keeps an alias as written and names a
        # bare column as its table does.
        names = [
            spelled.get(s.name.lower(), s.name) if isinstance(s, exp.Column) else s.alias_or_name
            for s in written
        ]
        names = [name or fallback for name, fallback in zip(names, traced, strict=True)]
    else:
        aliases = {s.alias.lower(): s.alias for s in written if isinstance(s, exp.Alias)}
        names = [aliases.get(name.lower()) or spelled.get(name.lower(), name) for name in traced]
    seen: set[str] = set()
    unique = []
    for name in names:
        candidate, suffix = name, 0
        while candidate.lower() in seen:
            suffix += 1
            candidate = f"{name}_{suffix}"
        seen.add(candidate.lower())
        unique.append(candidate)
    return unique


class _Tracer:
    """Walks sqlglot lineage nodes down to the lakehouse columns each one is computed from."""

    def __init__(self, known: Mapping[TableName, Mapping[str, str]]) -> None:
        self._known = known
        # Keyed by id, holding the node so that its id is not reused by another.
        self._memo: dict[int, tuple[Node, _Reached]] = {}
        self._active: set[int] = set()

    def reached(self, node: Node) -> _Reached:
        key = id(node)
        if key in self._memo:
            return self._memo[key][1]
        if key in self._active:
            return {}  # a recursive CTE refers to itself
        self._active.add(key)
        found: _Reached = {}
        # A set operation's node only gathers its branches; the branches hold the selects.
        gathers = isinstance(node.source, exp.SetOperation)
        pivoted = set() if gathers else _pivot_aggregated(node.source)
        for child in node.downstream:
            anchors = [] if gathers else _anchors(node.expression, child)
            step = _COPY if gathers else _step(node.expression, anchors)
            if pivoted and not anchors and _last_name(child) in pivoted:
                step = max(step, _AGGREGATE)  # read through a PIVOT's aggregate
            if isinstance(child.expression, exp.Table):
                column = _leaf_column(child, anchors)
                upstream = self._column(child.expression, column)
                if upstream is not None:
                    found[upstream] = max(found.get(upstream, _COPY), step)
            elif not isinstance(child.expression, exp.Placeholder):
                for upstream, rank in self.reached(child).items():
                    found[upstream] = max(found.get(upstream, _COPY), step, rank)
        self._active.discard(key)
        self._memo[key] = (node, found)
        return found

    def _column(self, table: exp.Table, column: str | None) -> tuple[TableName, str] | None:
        name = table_name_of(table)
        columns = self._known.get(name) if name is not None else None
        if name is None or columns is None or column is None:
            return None
        spelled = columns.get(column.lower())
        return None if spelled is None else (name, spelled)


def _pivot_aggregated(query: exp.Expr) -> set[str]:
    """The columns the PIVOTs `query` reads aggregate (sqlglot's lineage links a pivoted
    column straight to them, past the aggregate), lower-cased."""
    return {
        column.name.lower()
        for pivot in find_all_in_scope(query, exp.Pivot)
        if not pivot.unpivot
        for aggregate in pivot.expressions
        for column in aggregate.find_all(exp.Column)
    }


def _last_name(node: Node) -> str:
    """The column name a lineage node is named after (`alias.column` or `column`)."""
    try:
        return exp.to_column(node.name).name.lower()
    except SqlglotError:
        return node.name.rsplit(".", 1)[-1].lower()


def _anchors(expression: exp.Expr, child: Node) -> Sequence[exp.Expr]:
    """The columns (or the scalar subquery) of `expression` through which `child` is read."""
    columns: list[exp.Expr] = []
    for column in find_all_in_scope(expression, exp.Column):
        qualified = f"{column.table}.{column.name}" if column.table else column.name
        if child.name in (qualified, column.sql(comments=False)):
            columns.append(column)
    if columns:
        return columns
    return [
        query
        for query in find_all_in_scope(expression, *exp.UNWRAPPED_QUERIES)
        if isinstance(query, exp.Query) and child.name in query.named_selects
    ][:1]


def _root(expression: exp.Expr) -> exp.Expr:
    """A select expression without its alias and enclosing parentheses."""
    root = expression.unalias()
    while isinstance(root, exp.Paren | exp.Subquery):
        root = root.this
    return root


def _is_aggregate(node: exp.Expr) -> bool:
    if isinstance(node, exp.AggFunc):
        return True
    if isinstance(node, exp.Anonymous):
        return str(node.this).lower() in _ANONYMOUS_AGGREGATES
    # FILTER (WHERE ...) and WITHIN GROUP (ORDER BY ...) wrap the aggregate they feed.
    return isinstance(node, exp.Filter | exp.WithinGroup) and _is_aggregate(node.this)


def _step(expression: exp.Expr, anchors: Sequence[exp.Expr]) -> int:
    """How one select expression derives its value from the columns at `anchors`."""
    root = _root(expression)
    if not anchors:
        # The link to the column is lost (a set operation's branch): judge the whole select.
        if isinstance(root, exp.Column):
            return _COPY
        if root.find(exp.Window):
            return _WINDOW
        return _AGGREGATE if any(_is_aggregate(n) for n in root.walk()) else _EXPRESSION
    return max(_step_at(expression, root, anchor) for anchor in anchors)


def _step_at(expression: exp.Expr, root: exp.Expr, anchor: exp.Expr) -> int:
    if anchor is root:
        return _COPY
    rank = _EXPRESSION
    node = anchor.parent
    while node is not None and node is not expression:
        if isinstance(node, exp.Window):
            return _WINDOW
        if _is_aggregate(node):
            rank = _AGGREGATE
        node = node.parent
    return rank


def _leaf_column(leaf: Node, anchors: Sequence[exp.Expr]) -> str | None:
    if anchors and isinstance(anchors[0], exp.Column):
        return anchors[0].name
    try:
        return exp.to_column(leaf.name).name or None
    except SqlglotError:
        return None
