"""What `lakebed run` would change, worked out before anything is written.

`plan` compares every model with its table's last build (the fingerprint and columns its
newest model commit recorded):

- `new`: the model has never been built; `changed`: its fingerprint differs;
  `downstream`: unchanged, but it reads (directly or not) a new or changed model;
  `unchanged`: none of these.
- A changed SQL model's new columns are inferred without building it: its query runs with
  `LIMIT 0` (models upstream of it that are not built yet, or whose columns change, are
  read as empty relations with their new columns). `classify` compares them with the old
  ones: removing or retyping a column that a downstream model uses is **breaking**;
  anything else (added columns, columns nobody downstream reads, logic-only changes) is
  **non-breaking**. What a downstream model uses comes from its SQL (`column_uses`:
  column lineage plus the columns it filters, joins or groups on).

Example::

    result = plan(lh)
    for item in result.models:
        print(item.model, item.status, item.change)
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, traverse_scope
from sqlglot.schema import MappingSchema

from lakebed.errors import LakebedError
from lakebed.process import QueryResult
from lakebed.process.pruning import table_name_of
from lakebed.storage import DeltaStore, Table, TableName
from lakebed.transform.definition import Model
from lakebed.transform.graph import ModelGraph
from lakebed.transform.materialize import code_fingerprint, fingerprint, last_build, redefined

__all__ = [
    "Affected",
    "Change",
    "Classification",
    "ModelPlan",
    "Plan",
    "PlanSource",
    "Status",
    "classify",
    "column_uses",
    "plan",
    "type_name",
]

Status = Literal["new", "changed", "downstream", "unchanged"]
Change = Literal["breaking", "non-breaking", "unknown"]

_DIALECT = "duckdb"
_RELATION = "__lakebed_plan_{layer}_{name}"


class PlanSource(Protocol):
    """What planning needs of the lakehouse (transform sits below it)."""

    storage: DeltaStore

    def graph(self) -> ModelGraph: ...

    def table(self, name: str | TableName) -> Table: ...

    def sql(
        self, query: str, *, relations: Mapping[str, pa.Table] | None = None
    ) -> QueryResult: ...


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

    def __str__(self) -> str:
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
        for key, outputs in outputs_of.items():
            if key in changed:
                affected.append(Affected(model, old[key][0], changed[key], tuple(sorted(outputs))))
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


def _stored(dtype: pa.DataType) -> pa.DataType:
    """The type a Delta table keeps for `dtype` (µs timestamps in UTC, one string type)."""
    if pa.types.is_timestamp(dtype):
        return pa.timestamp("us", tz="UTC" if dtype.tz else None)
    if pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype):
        return pa.string()
    if pa.types.is_large_binary(dtype) or pa.types.is_binary_view(dtype):
        return pa.binary()
    if pa.types.is_dictionary(dtype):
        return _stored(dtype.value_type)
    if isinstance(dtype, pa.ListType | pa.LargeListType | pa.ListViewType):
        return pa.list_(_stored(dtype.value_type))
    if isinstance(dtype, pa.MapType):
        return pa.map_(_stored(dtype.key_type), _stored(dtype.item_type))
    if isinstance(dtype, pa.StructType):
        return pa.struct([pa.field(f.name, _stored(f.type)) for f in dtype])
    return dtype


def type_name(dtype: pa.DataType) -> str:
    """A type as plan compares and shows it: what a Delta table stores, without the names
    of list items (DuckDB and Delta name them differently)."""
    stored = _stored(dtype)
    if isinstance(stored, pa.ListType):
        return f"list<{type_name(stored.value_type)}>"
    if isinstance(stored, pa.MapType):
        return f"map<{type_name(stored.key_type)}, {type_name(stored.item_type)}>"
    if isinstance(stored, pa.StructType):
        return f"struct<{', '.join(f'{f.name}: {type_name(f.type)}' for f in stored)}>"
    return str(stored)


def _columns(schema: pa.Schema) -> dict[str, str]:
    return {f.name: type_name(f.type) for f in schema}


# -- the plan ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelPlan:
    """One model's place in the plan."""

    model: str
    kind: Literal["sql", "python"]
    status: Status
    fingerprint: str
    previous_fingerprint: str | None = None
    # For `downstream`: the new or changed models upstream that make it rebuild.
    upstream: tuple[str, ...] = ()
    # `breaking` / `non-breaking` for a changed model (and for a downstream model whose
    # columns change with its inputs); `unknown` when its columns cannot be inferred.
    change: Change | None = None
    classification: Classification | None = None
    columns: dict[str, str] | None = None  # the inferred new columns, name -> type
    notes: tuple[str, ...] = ()
    settings_only: bool = False  # changed: its settings did, not its SQL or source

    def details(self) -> list[str]:
        """Lines that explain the status and the change, for people."""
        lines: list[str] = []
        if self.status == "new":
            count = "columns unknown" if self.columns is None else _plural(self.columns, "column")
            lines.append(f"first build ({count})")
        if self.upstream:
            lines.append(f"after {', '.join(self.upstream)}")
        if self.classification is not None:
            lines.extend(self.classification.describe(settings_only=self.settings_only))
        lines.extend(self.notes)
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "kind": self.kind,
            "status": self.status,
            "fingerprint": self.fingerprint,
            "previous_fingerprint": self.previous_fingerprint,
            "upstream": list(self.upstream),
            "change": self.change,
            "classification": None
            if self.classification is None
            else self.classification.to_dict(),
            "columns": self.columns,
            "notes": list(self.notes),
            "settings_only": self.settings_only,
        }


@dataclass
class Plan:
    """Every (selected) model's status, in build order."""

    models: list[ModelPlan] = field(default_factory=list)

    def __getitem__(self, name: str | TableName) -> ModelPlan:
        wanted = str(TableName.parse(name))
        for item in self.models:
            if item.model == wanted:
                return item
        raise KeyError(wanted)

    def with_status(self, *statuses: Status) -> list[ModelPlan]:
        return [m for m in self.models if m.status in statuses]

    @property
    def breaking(self) -> list[ModelPlan]:
        return [m for m in self.models if m.change == "breaking"]

    @property
    def has_changes(self) -> bool:
        return any(m.status != "unchanged" for m in self.models)

    def summary(self) -> str:
        """One line: how many models are new, changed (how many breaking), downstream."""
        if not self.models:
            return "no models"
        if not self.has_changes:
            return f"no changes: {_plural(self.models, 'model')} up to date"
        parts = []
        changed = self.with_status("changed")
        if changed:
            breaking = sum(1 for m in changed if m.change == "breaking")
            unknown = sum(1 for m in changed if m.change == "unknown")
            extra = [f"{breaking} breaking"] if breaking else []
            extra += [f"{unknown} unknown"] if unknown else []
            suffix = f" ({', '.join(extra)})" if extra else ""
            parts.append(f"{len(changed)} changed{suffix}")
        for status, label in (
            ("new", "new"),
            ("downstream", "to rebuild downstream"),
            ("unchanged", "unchanged"),
        ):
            count = len(self.with_status(status))  # type: ignore[arg-type]
            if count:
                parts.append(f"{count} {label}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        counts = {
            status: len(self.with_status(status))
            for status in ("new", "changed", "downstream", "unchanged")
        }
        return {
            "models": [m.to_dict() for m in self.models],
            "summary": {**counts, "breaking": len(self.breaking), "text": self.summary()},
        }


def _differ(old: Mapping[str, str], new: Mapping[str, str]) -> bool:
    """Whether two column lists differ in more than order or the case of names."""
    return {k.lower(): v for k, v in old.items()} != {k.lower(): v for k, v in new.items()}


def _plural(items: Collection[object], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


@dataclass
class _State:
    model: Model
    status: Status
    fingerprint: str
    previous: str | None = None
    upstream: tuple[str, ...] = ()
    old: dict[str, str] | None = None  # the built table's columns, name -> type
    new: dict[str, str] | None = None  # the inferred columns
    relation: pa.Table | None = None  # an empty table with the new columns
    notes: list[str] = field(default_factory=list)
    settings_only: bool = False


def plan(lh: PlanSource, select: str | None = None, *, exclude: str | None = None) -> Plan:
    """Compare every model with its last build (see the module docstring).

    `select` and `exclude` (`lakebed run` selectors) limit the models shown; statuses and
    breaking changes still take the whole graph into account. Raises only for an invalid
    project (unknown inputs, cycles, bad settings, an unknown selector).
    """
    graph = lh.graph()
    chosen = graph.select(select) if select else graph.order()
    if exclude:
        left_out = set(graph.select(exclude))
        chosen = [name for name in chosen if name not in left_out]
    states: dict[TableName, _State] = {}
    for name in graph.order():
        states[name] = _status(lh, graph, name, states)
    needed: set[TableName] = set()
    for name in chosen:
        if states[name].status != "unchanged":
            needed.add(name)
            needed.update(u for u in graph.upstream(name) if states[u].status != "unchanged")
    for name in graph.order(needed):
        _infer(lh, states, name)
    items = []
    for name in chosen:
        state = states[name]
        classification: Classification | None = None
        change: Change | None = None
        notes = list(state.notes)
        if state.status in ("changed", "downstream") and state.old is not None:
            if state.new is None:
                change = "unknown" if state.status == "changed" else None
            elif state.status == "changed" or _differ(state.old, state.new):
                uses, use_notes = _downstream_uses(lh, graph, states, name)
                notes += use_notes
                classification = classify(state.old, state.new, uses)
                change = classification.kind
        items.append(
            ModelPlan(
                model=str(name),
                kind=state.model.kind,
                status=state.status,
                fingerprint=state.fingerprint,
                previous_fingerprint=state.previous,
                upstream=state.upstream,
                change=change,
                classification=classification,
                columns=state.new,
                notes=tuple(notes),
                settings_only=state.settings_only,
            )
        )
    return Plan(items)


def _status(
    lh: PlanSource, graph: ModelGraph, name: TableName, states: Mapping[TableName, _State]
) -> _State:
    model = graph.models[name]
    current = fingerprint(model)
    record = last_build(lh.table(name)) if lh.storage.exists(name) else None
    if record is None:
        return _State(model, "new", current)
    previous = str(record.get("fingerprint")) if record.get("fingerprint") else None
    old = _built_columns(lh.table(name), record)
    if previous != current:
        same_code = record.get("code") == code_fingerprint(model)
        state = _State(model, "changed", current, previous, old=old, settings_only=same_code)
        state.notes.extend(_kept_rows(model, record))
        return state
    causes: set[str] = set()
    for table in model.inputs:
        upstream = states.get(table)
        if upstream is None or upstream.status == "unchanged":
            continue
        causes.update(upstream.upstream if upstream.status == "downstream" else [str(table)])
    status: Status = "downstream" if causes else "unchanged"
    return _State(model, status, current, previous, tuple(sorted(causes)), old=old)


def _kept_rows(model: Model, record: Mapping[str, Any]) -> list[str]:
    """What happens to the rows a changed incremental or scd2 model's table holds."""
    config = model.config
    if config.materialized == "scd2":
        return ["scd2 keeps its history: the change applies to the versions recorded from now"]
    if config.materialized != "incremental":
        return []
    if not redefined(model, record):
        return ["incremental: its rows stay; the new settings apply from the next increment"]
    if config.full_refresh is False:
        return ["incremental, full_refresh: false: its rows stay; new rows get the new SQL"]
    return ["incremental: rebuilt in full at the next run"]


def _built_columns(table: Table, record: Mapping[str, Any]) -> dict[str, str]:
    """The columns the last build wrote, typed by the table's schema."""
    types = {f.name.lower(): type_name(f.type) for f in table.schema()}
    names = record.get("columns")
    if not isinstance(names, list):
        return _columns(table.schema())
    return {str(n): types.get(str(n).lower(), "unknown") for n in names}


def _infer(lh: PlanSource, states: dict[TableName, _State], name: TableName) -> None:
    """The model's new columns, from its query run with LIMIT 0."""
    state = states[name]
    model = state.model
    if model.kind != "sql" or model.sql is None:
        state.notes.append("a Python model's columns are known only once it runs")
        return
    relations: dict[TableName, str] = {}
    tables: dict[str, pa.Table] = {}
    for table in model.inputs:
        upstream = states.get(table)
        if upstream is None or upstream.status == "unchanged":
            continue
        if upstream.relation is None:
            if not lh.storage.exists(table):
                state.notes.append(
                    f"columns unknown: {table} is not built and has no known columns"
                )
                return
            state.notes.append(f"read {table} as last built (its new columns are unknown)")
            continue
        if upstream.status == "new" or upstream.new != upstream.old:
            relation = _RELATION.format(layer=table.layer, name=table.name)
            relations[table] = relation
            tables[relation] = upstream.relation
    try:
        sql = _reading(model.sql, relations) if relations else model.sql
        result = lh.sql(f"SELECT * FROM (\n{sql}\n) AS __lakebed_plan LIMIT 0", relations=tables)
    except (LakebedError, SqlglotError) as exc:
        message = exc.message if isinstance(exc, LakebedError) else str(exc)
        first = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
        state.notes.append(f"its query fails: {first}")
        return
    schema = pa.schema([pa.field(f.name, _stored(f.type)) for f in result.arrow().schema])
    state.new = _columns(schema)
    state.relation = schema.empty_table()


def _reading(sql: str, relations: Mapping[TableName, str]) -> str:
    """The SQL with each reference to a table of `relations` reading the relation instead."""
    tree = sqlglot.parse_one(sql, read=_DIALECT)
    for node in list(tree.find_all(exp.Table)):
        target = table_name_of(node)
        if target is not None and target in relations:
            node.replace(exp.to_table(relations[target]).as_(node.alias or target.name))
    return tree.sql(dialect=_DIALECT)


def _downstream_uses(
    lh: PlanSource, graph: ModelGraph, states: Mapping[TableName, _State], name: TableName
) -> tuple[dict[str, dict[str, set[str]]], list[str]]:
    """Per direct downstream model, the columns of `name` it uses (lineage against the
    current schemas), and notes on the ones that had to be assumed."""
    old = states[name].old or {}
    uses: dict[str, dict[str, set[str]]] = {}
    notes: list[str] = []
    for reader in graph.downstream(name, transitive=False):
        model = graph.models[reader]
        everything: dict[str, set[str]] = {column: set() for column in old}
        if model.kind != "sql" or model.sql is None:
            uses[str(reader)] = everything
            notes.append(f"{reader} is a Python model: assumed to use every column")
            continue
        schemas: dict[TableName, list[str]] = {}
        for table in model.inputs:
            state = states.get(table)
            if state is not None and state.old is not None:
                schemas[table] = list(state.old)
            elif lh.storage.exists(table):
                schemas[table] = lh.table(table).schema().names
            elif state is not None and state.new is not None:
                schemas[table] = list(state.new)
        built = states[reader].old
        try:
            uses[str(reader)] = column_uses(
                model.sql,
                name,
                schemas,
                output=reader,
                output_columns=list(built) if built is not None else None,
            )
        except (LakebedError, SqlglotError):
            uses[str(reader)] = everything
            notes.append(f"cannot trace {reader}'s columns: assumed to use every column")
    return uses, notes
