"""How a change of a model's columns affects the models that read it: which columns a
downstream model uses (`column_uses`: its column lineage plus the columns it filters,
joins or groups on), and whether a change breaks them (`classify`: a used column removed
or retyped is breaking, anything else is not). Golden files in tests/fixtures hold cases.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, traverse_scope
from sqlglot.schema import MappingSchema

from lakebed.process.pruning import table_name_of
from lakebed.storage import TableName

__all__ = [
    "Affected",
    "Classification",
    "classify",
    "column_types",
    "column_uses",
    "stored_type",
    "type_name",
]

_DIALECT = "duckdb"


# -- classification ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Affected:
    """A downstream model that uses a column a change removes or retypes."""

    model: str  # the downstream model
    column: str  # the changed model's column it uses
    change: Literal["removed", "retyped"]
    # The downstream's output columns computed from it; empty when it only filters, joins,
    # groups or orders by it.
    outputs: tuple[str, ...] = ()
    # False when the downstream is assumed to use every column (a Python model, or SQL
    # whose columns could not be traced).
    traced: bool = True

    def __str__(self) -> str:
        if not self.traced:
            return f"{self.model} may use {self.column} ({self.change}; its uses are not traced)"
        uses = f"feeds {', '.join(self.outputs)}" if self.outputs else "filters/joins on it"
        return f"{self.model} uses {self.column} ({self.change}; {uses})"


@dataclass(frozen=True)
class Classification:
    """How a model's columns change, and whether that breaks a downstream model."""

    kind: Literal["breaking", "non-breaking"]
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    retyped: tuple[tuple[str, str, str], ...] = ()  # (column, old type, new type)
    affected: tuple[Affected, ...] = ()

    def describe(self, *, settings_only: bool = False) -> list[str]:
        """One line per kind of change, then one per affected downstream use."""
        lines = []
        if self.removed:
            lines.append(f"removed: {', '.join(self.removed)}")
        if self.added:
            lines.append(f"added: {', '.join(self.added)}")
        if self.retyped:
            retyped = (f"{c} {old} → {new}" for c, old, new in self.retyped)
            lines.append(f"retyped: {', '.join(retyped)}")
        if not lines:
            lines.append(f"same columns ({'settings' if settings_only else 'logic'} only)")
        lines.extend(f"breaks {use}" for use in self.affected)
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "added": list(self.added),
            "removed": list(self.removed),
            "retyped": [{"column": c, "old": old, "new": new} for c, old, new in self.retyped],
            "affected": [
                {
                    "model": a.model,
                    "column": a.column,
                    "change": a.change,
                    "outputs": list(a.outputs),
                    "traced": a.traced,
                }
                for a in self.affected
            ],
        }


def classify(
    old_columns: Mapping[str, str],
    new_columns: Mapping[str, str],
    downstream_uses: Mapping[str, Collection[str] | Mapping[str, Collection[str]]],
) -> Classification:
    """Compare a model's columns (name -> type) before and after a change.

    `downstream_uses` gives, per downstream model, the columns of this model it uses; a
    mapping of column -> the downstream's output columns computed from it (as
    `column_uses` returns) also names those outputs. Column names compare without case,
    as DuckDB's do. Breaking when a used column is removed or retyped.
    """
    old = {name.lower(): (name, kind) for name, kind in old_columns.items()}
    new = {name.lower(): (name, kind) for name, kind in new_columns.items()}
    added = tuple(name for key, (name, _) in new.items() if key not in old)
    removed = tuple(name for key, (name, _) in old.items() if key not in new)
    retyped = tuple(
        (name, kind, new[key][1])
        for key, (name, kind) in old.items()
        if key in new and new[key][1] != kind
    )
    changed: dict[str, Literal["removed", "retyped"]] = {c.lower(): "removed" for c in removed}
    changed.update({c.lower(): "retyped" for c, _, _ in retyped})
    affected: list[Affected] = []
    for model, uses in sorted(downstream_uses.items()):
        outputs_of: dict[str, set[str]] = {}
        for column in uses:
            outputs = uses[column] if isinstance(uses, Mapping) else ()
            outputs_of.setdefault(column.lower(), set()).update(outputs)
        traced = isinstance(uses, Mapping)
        for key, outputs in outputs_of.items():
            if key in changed:
                found = Affected(model, old[key][0], changed[key], tuple(sorted(outputs)), traced)
                affected.append(found)
    affected.sort(key=lambda a: (a.model, a.column.lower()))
    kind: Literal["breaking", "non-breaking"] = "breaking" if affected else "non-breaking"
    return Classification(kind, added, removed, retyped, tuple(affected))


# -- what a downstream model uses ----------------------------------------------------------------


def column_uses(
    sql: str,
    table: TableName | str,
    schemas: Mapping[TableName, Sequence[str]],
    *,
    output: TableName | str = "gold.__plan__",
    output_columns: Sequence[str] | None = None,
) -> dict[str, set[str]]:
    """The columns of `table` that a model's SQL uses, each with the model's output columns
    computed from it (column lineage); a column the SQL only filters, joins, groups or
    orders by maps to an empty set.

    `schemas` gives the current columns of the tables the SQL reads (`table` included).
    Columns a `*` passes through count only where they reach an output or a clause.
    Raises like `column_lineage` when the SQL does not parse.
    """
    from lakebed.govern.lineage import column_lineage

    target = TableName.parse(table)
    columns = {c.lower(): c for c in schemas.get(target, ())}
    uses: dict[str, set[str]] = {}
    for edge in column_lineage(sql, output, schemas, output_columns=output_columns):
        if TableName.parse(edge.upstream_table) == target:
            column = columns.get(edge.upstream_column.lower(), edge.upstream_column)
            uses.setdefault(column, set()).add(edge.downstream_column)
    for key in _referenced(sql, target, schemas):
        uses.setdefault(columns.get(key, key), set())
    return uses


def _referenced(
    sql: str, target: TableName, schemas: Mapping[TableName, Sequence[str]]
) -> set[str]:
    """Lower-case names of the columns of `target` the SQL names anywhere (so that removing
    one fails the query), or reaches through a `*` from a clause or an outer query."""
    layers: dict[str, dict[str, dict[str, str]]] = {}
    for name, names in schemas.items():
        layers.setdefault(name.layer, {})[name.name] = dict.fromkeys(names, "UNKNOWN")
    mapping: dict[str, object] = {**layers}
    every = {c.lower() for c in schemas.get(target, ())}
    tree = sqlglot.parse_one(sql, read=_DIALECT)
    try:
        qualified = qualify(
            tree,
            dialect=_DIALECT,
            schema=MappingSchema(mapping, dialect=_DIALECT),
            expand_stars=False,
            validate_qualify_columns=False,
            identify=False,
        )
        scopes = traverse_scope(qualified)
    except SqlglotError:
        # Shapes sqlglot cannot qualify: every named column of the table may be a use.
        return {c.name.lower() for c in tree.find_all(exp.Column)} & every
    found: set[str] = set()
    resolver = _Resolver(target, every)
    for scope in scopes:
        reads_target = any(_is_target(s, target) for s in scope.sources.values())
        if reads_target and next(scope.expression.find_all(exp.Columns), None) is not None:
            found |= every  # DuckDB's COLUMNS(...) picks columns by pattern
        if reads_target and isinstance(scope.expression, exp.Select):
            for select in scope.expression.selects:
                star = select.this if isinstance(select, exp.Column) else select
                if isinstance(star, exp.Star):
                    # `* EXCLUDE (c)` fails once c is gone.
                    excluded = star.args.get("except_") or star.args.get("except") or []
                    found |= {c.name.lower() for c in excluded} & every
        for column in scope.columns:
            found |= resolver.column(scope, column)
    return found


def _is_target(source: object, target: TableName) -> bool:
    return isinstance(source, exp.Table) and table_name_of(source) == target


class _Resolver:
    """Follows a column reference to the columns of one table it reads."""

    def __init__(self, target: TableName, every: set[str]) -> None:
        self._target = target
        self._every = every
        self._active: set[tuple[int, str]] = set()

    def column(self, scope: Scope, column: exp.Column) -> set[str]:
        name = column.name.lower()
        if column.table:
            source = _source(scope, column.table)
            sources = [] if source is None else [source]
        else:
            # Unresolved (ambiguous, or from a source whose columns are unknown): it may
            # come from any source of its scope.
            sources = [s for s in scope.sources.values() if isinstance(s, exp.Table | Scope)]
        found: set[str] = set()
        for each in sources:
            if isinstance(each, exp.Table):
                found |= {name} & self._every if _is_target(each, self._target) else set()
            else:
                found |= self.projection(each, name)
        return found

    def projection(self, scope: Scope, name: str) -> set[str]:
        """The target's columns an output column `name` of a subquery or CTE reaches through
        a `*`; a column it names explicitly is counted where it is named."""
        key = (id(scope), name)
        if key in self._active:
            return set()  # a recursive CTE
        self._active.add(key)
        try:
            if isinstance(scope.expression, exp.SetOperation):
                found: set[str] = set()
                for branch in scope.set_operation_scopes:
                    found |= self.projection(branch, name)
                return found
            selects = scope.expression.selects if isinstance(scope.expression, exp.Query) else []
            if any(s.alias_or_name.lower() == name for s in selects):
                return set()
            found = set()
            for select in selects:
                if isinstance(select, exp.Star) or (
                    isinstance(select, exp.Column) and isinstance(select.this, exp.Star)
                ):
                    found |= self._star(scope, select, name)
            return found
        finally:
            self._active.discard(key)

    def _star(self, scope: Scope, star: exp.Expr, name: str) -> set[str]:
        qualifier = star.table if isinstance(star, exp.Column) else ""
        sources = (
            [scope.sources[qualifier]]
            if qualifier and qualifier in scope.sources
            else list(scope.selected_sources.values())
        )
        found: set[str] = set()
        for source in sources:
            if isinstance(source, tuple):
                source = source[1]
            if isinstance(source, exp.Table):
                if _is_target(source, self._target) and name in self._every:
                    found.add(name)
            elif isinstance(source, Scope):
                found |= self.projection(source, name)
        return found


def _source(scope: Scope, alias: str) -> exp.Table | Scope | None:
    """What a column's table alias names: in its own scope, else in an enclosing one (a
    correlated subquery)."""
    current: Scope | None = scope
    while current is not None:
        source = current.sources.get(alias)
        if isinstance(source, exp.Table | Scope):
            return source
        current = current.parent
    return None


# -- types ---------------------------------------------------------------------------------------


def stored_type(dtype: pa.DataType) -> pa.DataType:
    """The type a Delta table keeps for `dtype` (µs timestamps in UTC, one string type)."""
    if pa.types.is_timestamp(dtype):
        return pa.timestamp("us", tz="UTC" if dtype.tz else None)
    if pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype):
        return pa.string()
    if pa.types.is_large_binary(dtype) or pa.types.is_binary_view(dtype):
        return pa.binary()
    if pa.types.is_dictionary(dtype):
        return stored_type(dtype.value_type)
    if isinstance(dtype, pa.ListType | pa.LargeListType | pa.ListViewType):
        return pa.list_(stored_type(dtype.value_type))
    if isinstance(dtype, pa.MapType):
        return pa.map_(stored_type(dtype.key_type), stored_type(dtype.item_type))
    if isinstance(dtype, pa.StructType):
        return pa.struct([pa.field(f.name, stored_type(f.type)) for f in dtype])
    return dtype


def type_name(dtype: pa.DataType) -> str:
    """A type as plan compares and shows it: what a Delta table stores, without the names
    of list items (DuckDB and Delta name them differently)."""
    stored = stored_type(dtype)
    if isinstance(stored, pa.ListType):
        return f"list<{type_name(stored.value_type)}>"
    if isinstance(stored, pa.MapType):
        return f"map<{type_name(stored.key_type)}, {type_name(stored.item_type)}>"
    if isinstance(stored, pa.StructType):
        return f"struct<{', '.join(f'{f.name}: {type_name(f.type)}' for f in stored)}>"
    return str(stored)


def column_types(schema: pa.Schema) -> dict[str, str]:
    return {f.name: type_name(f.type) for f in schema}
