"""File skipping: find the simple predicates a query applies to each table reference and drop
the data files whose Delta statistics (min, max, null count, partition values) prove that no
row can match.

Only conjuncts of a WHERE clause that certainly filter the rows of one table reference are
used; a reference on the null-supplying side of an outer join, or one read through a CTE or
subquery without a WHERE of its own, keeps all of its files. Any doubt keeps the file.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from lakebed.storage import LAYERS, Snapshot, TableName

# Delta string statistics may be truncated prefixes: such a max is no upper bound.
STRING_STAT_TRUNCATION = 32

_FLIP: dict[type[exp.Expr], type[exp.Expr]] = {
    exp.GT: exp.LT,
    exp.GTE: exp.LTE,
    exp.LT: exp.GT,
    exp.LTE: exp.GTE,
}


@dataclass(frozen=True)
class Predicate:
    """`column <op> values` on one table reference; op is =, !=, <, <=, >, >=, in, between,
    is_null or not_null."""

    column: str
    op: str
    values: tuple[Any, ...] = ()


# A reference's predicates; an empty list means "every file is needed".
Reference = list[Predicate]


def table_name_of(node: exp.Table) -> TableName | None:
    """The lakehouse table a `layer.name` reference points at, if it is one."""
    if node.args.get("catalog") is not None or not node.db:
        return None
    layer = node.db.lower()
    if layer not in LAYERS:
        return None
    try:
        return TableName.parse(f"{layer}.{node.name.lower()}")
    except Exception:
        return None


def _conjuncts(condition: exp.Expr) -> Iterator[exp.Expr]:
    if isinstance(condition, exp.Paren):
        yield from _conjuncts(condition.this)
    elif isinstance(condition, exp.And):
        yield from _conjuncts(condition.this)
        yield from _conjuncts(condition.expression)
    else:
        yield condition


def _literal(node: exp.Expr) -> Any:
    """The Python value of a literal, or raise ValueError."""
    if isinstance(node, exp.Paren):
        return _literal(node.this)
    if isinstance(node, exp.Neg):
        value = _literal(node.this)
        if isinstance(value, int | float | Decimal):
            return -value
        raise ValueError("not a number")
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Literal):
        if node.is_string:
            return str(node.this)
        text = str(node.this)
        try:
            return int(text)
        except ValueError:
            try:
                return Decimal(text) if "e" not in text.lower() else float(text)
            except InvalidOperation as exc:
                raise ValueError(text) from exc
    if isinstance(node, exp.Cast) and isinstance(node.this, exp.Literal) and node.this.is_string:
        kind = node.to.this
        text = str(node.this.this)
        if kind == exp.DataType.Type.DATE:
            return dt.date.fromisoformat(text)
        if kind in (
            exp.DataType.Type.TIMESTAMP,
            exp.DataType.Type.TIMESTAMPNTZ,
            exp.DataType.Type.TIMESTAMPTZ,
        ):
            return dt.datetime.fromisoformat(text)
    raise ValueError("not a literal")


def _predicate(condition: exp.Expr) -> tuple[exp.Column, Predicate] | None:
    """Recognise `column op literal` shapes; anything else is not used for skipping."""
    try:
        if isinstance(condition, exp.Not) and isinstance(condition.this, exp.Is):
            inner = condition.this
            if isinstance(inner.this, exp.Column) and isinstance(inner.expression, exp.Null):
                return inner.this, Predicate(inner.this.name, "not_null")
            return None
        if isinstance(condition, exp.Is):
            if isinstance(condition.this, exp.Column) and isinstance(
                condition.expression, exp.Null
            ):
                return condition.this, Predicate(condition.this.name, "is_null")
            return None
        if isinstance(condition, exp.In) and isinstance(condition.this, exp.Column):
            if condition.args.get("query") or not condition.expressions:
                return None
            values = tuple(_literal(v) for v in condition.expressions)
            return condition.this, Predicate(condition.this.name, "in", values)
        if isinstance(condition, exp.Between) and isinstance(condition.this, exp.Column):
            low, high = _literal(condition.args["low"]), _literal(condition.args["high"])
            return condition.this, Predicate(condition.this.name, "between", (low, high))
        ops: dict[type[exp.Expr], str] = {
            exp.EQ: "=",
            exp.NEQ: "!=",
            exp.GT: ">",
            exp.GTE: ">=",
            exp.LT: "<",
            exp.LTE: "<=",
        }
        kind: type[exp.Expr] = type(condition)
        if kind not in ops:
            return None
        left, right = condition.this, condition.expression
        if not isinstance(left, exp.Column) and isinstance(right, exp.Column):
            left, right = right, left
            kind = _FLIP.get(kind, kind)
        if not isinstance(left, exp.Column):
            return None
        return left, Predicate(left.name, ops[kind], (_literal(right),))
    except (ValueError, KeyError, TypeError):
        return None


def references(
    tree: exp.Expr, columns_of: Callable[[TableName], set[str]]
) -> dict[TableName, list[Reference]]:
    """Every lakehouse table the query reads, with the predicates of each reference."""
    found: dict[TableName, list[Reference]] = {}
    handled: set[int] = set()
    for select in tree.find_all(exp.Select):
        from_ = select.args.get("from_") or select.args.get("from")
        if from_ is None:
            continue
        sources: list[tuple[exp.Expr, bool]] = [(from_.this, True)]
        for join in select.args.get("joins") or []:
            side = (join.side or "").upper()
            method = str(join.args.get("method") or "").upper()
            if side in ("RIGHT", "FULL") or method == "POSITIONAL":
                # Rows pair up by position in a positional join: no side may lose rows.
                sources = [(node, False) for node, _ in sources]
            # An ASOF join matches the nearest right row: removing rows changes the match.
            prunable = side not in ("LEFT", "FULL") and method not in ("ASOF", "POSITIONAL")
            sources.append((join.this, prunable))
        tables: dict[str, tuple[exp.Table, TableName, bool]] = {}
        other_sources = False
        for node, prunable in sources:
            name = table_name_of(node) if isinstance(node, exp.Table) else None
            if name is None or not isinstance(node, exp.Table):
                other_sources = True
                continue
            alias = node.args.get("alias")
            if alias is not None and alias.args.get("columns"):
                prunable = False  # `t(a, b)` renames columns: names no longer match stats
            tables[(node.alias_or_name or name.name).lower()] = (node, name, prunable)
        predicates: dict[int, Reference] = {id(node): [] for node, _, _ in tables.values()}
        where = select.args.get("where")
        if where is not None and tables:
            for conjunct in _conjuncts(where.this):
                parsed = _predicate(conjunct)
                if parsed is None:
                    continue
                column, predicate = parsed
                qualifier = column.table.lower() if column.table else None
                if qualifier is not None:
                    target = tables.get(qualifier)
                else:
                    owners = [t for t in tables.values() if column.name in columns_of(t[1])]
                    target = owners[0] if len(owners) == 1 and not other_sources else None
                if target is not None and target[2]:
                    predicates[id(target[0])].append(predicate)
        for node, name, _ in tables.values():
            handled.add(id(node))
            found.setdefault(name, []).append(predicates[id(node)])
    for node in tree.find_all(exp.Table):
        name = table_name_of(node)
        if name is not None and id(node) not in handled:
            found.setdefault(name, []).append([])
    return found


def _stat_value(value: Any, dtype: pa.DataType) -> pa.Scalar | None:
    """The literal as a scalar comparable with the statistics column, or None if unsure."""
    try:
        if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
            return pa.scalar(value, pa.string()) if isinstance(value, str) else None
        if pa.types.is_boolean(dtype):
            return pa.scalar(value) if isinstance(value, bool) else None
        if pa.types.is_integer(dtype) or pa.types.is_floating(dtype):
            if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
                return None
            return pa.scalar(float(value) if isinstance(value, Decimal) else value)
        if pa.types.is_decimal(dtype):
            if isinstance(value, bool) or not isinstance(value, int | Decimal):
                return None
            return pa.scalar(Decimal(value)).cast(dtype)
        if pa.types.is_date(dtype):
            if isinstance(value, str):
                value = dt.date.fromisoformat(value)
            if isinstance(value, dt.datetime):
                return None
            return pa.scalar(value, pa.date32()) if isinstance(value, dt.date) else None
        if pa.types.is_timestamp(dtype):
            if isinstance(value, str):
                value = dt.datetime.fromisoformat(value)
            elif isinstance(value, dt.date) and not isinstance(value, dt.datetime):
                value = dt.datetime.combine(value, dt.time())
            if not isinstance(value, dt.datetime):
                return None
            if dtype.tz is not None and value.tzinfo is None:
                value = value.replace(tzinfo=dt.UTC)  # the engine runs with TimeZone UTC
            elif dtype.tz is None and value.tzinfo is not None:
                return None
            return pa.scalar(value, pa.timestamp("us", tz=dtype.tz))
    except (ValueError, TypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return None


def _keep(snapshot: Snapshot, predicate: Predicate) -> pa.ChunkedArray | pa.Array | None:
    """Per file: may it hold a row matching `predicate`? None when statistics cannot say."""
    files = snapshot.files
    column = predicate.column
    rows = files.column("num_records")
    if column in snapshot.partition_by:
        part = files.column(f"partition.{column}")
        low = high = part
        nulls = pc.if_else(pc.is_null(part), rows, pa.scalar(0, rows.type))
    else:
        low, high = snapshot.stat("min", column), snapshot.stat("max", column)
        nulls = snapshot.stat("null_count", column)
    # A file without a statistic (e.g. written before the column existed) is kept.
    if predicate.op == "is_null":
        return None if nulls is None else pc.fill_null(pc.greater(nulls, 0), True)
    if predicate.op == "not_null":
        return None if nulls is None else pc.fill_null(pc.less(nulls, rows), True)
    if low is None or high is None or pa.types.is_nested(low.type):
        return None
    if column not in snapshot.partition_by:
        if pa.types.is_string(high.type):
            truncated = pc.greater_equal(pc.utf8_length(high), STRING_STAT_TRUNCATION)
            high = pc.if_else(truncated, pa.scalar(None, high.type), high)
        elif pa.types.is_timestamp(high.type):
            # Delta keeps timestamp statistics in milliseconds, truncated: widen the max.
            high = pc.add(high, pa.scalar(1000, pa.duration("us")))

    values = [_stat_value(v, low.type) for v in predicate.values]
    if not values or any(v is None for v in values):
        return None

    def eq(value: pa.Scalar) -> Any:
        return pc.and_kleene(pc.less_equal(low, value), pc.greater_equal(high, value))

    op = predicate.op
    if op == "=":
        keep = eq(values[0])
    elif op == "in":
        keep = eq(values[0])
        for value in values[1:]:
            keep = pc.or_kleene(keep, eq(value))
    elif op == "between":
        keep = pc.and_kleene(pc.greater_equal(high, values[0]), pc.less_equal(low, values[1]))
    elif op == "!=":
        keep = pc.invert(pc.and_kleene(pc.equal(low, values[0]), pc.equal(high, values[0])))
    else:
        compare = {">": pc.greater, ">=": pc.greater_equal, "<": pc.less, "<=": pc.less_equal}
        bound = high if op in (">", ">=") else low
        keep = compare[op](bound, values[0])
    keep = pc.fill_null(keep, True)
    if nulls is not None:
        # A file of only nulls matches no comparison.
        all_null = pc.fill_null(pc.equal(nulls, rows), False)
        keep = pc.and_(keep, pc.invert(all_null))
    return keep


def prune(snapshot: Snapshot, refs: list[Reference]) -> Snapshot:
    """Keep the files any reference may need: the union over references of the files that
    survive all of that reference's predicates."""
    if snapshot.num_files == 0 or any(not ref for ref in refs):
        return snapshot
    needed: Any = None
    for ref in refs:
        keep: Any = None
        for predicate in ref:
            mask = _keep(snapshot, predicate)
            if mask is not None:
                mask = pc.fill_null(mask, True)
                keep = mask if keep is None else pc.and_(keep, mask)
        if keep is None:
            return snapshot
        needed = keep if needed is None else pc.or_(needed, keep)
    return snapshot.select(needed)
