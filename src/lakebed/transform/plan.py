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

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from lakebed.errors import LakebedError
from lakebed.process import QueryResult
from lakebed.process.pruning import table_name_of
from lakebed.storage import DeltaStore, Table, TableName
from lakebed.transform.definition import Model
from lakebed.transform.fingerprints import code_fingerprint, fingerprint, redefined
from lakebed.transform.graph import ModelGraph
from lakebed.transform.impact import (
    Affected,
    Classification,
    classify,
    column_types,
    column_uses,
    stored_type,
    type_name,
)
from lakebed.transform.increments import increment_shape, volatile_call
from lakebed.transform.materialize import last_build
from lakebed.transform.scd2 import with_history_columns

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

    def view_sql(self, name: TableName) -> str | None: ...

    def schema(self, name: str) -> pa.Schema: ...

    def sql(
        self, query: str, *, relations: Mapping[str, pa.Table] | None = None
    ) -> QueryResult: ...


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


def build_state(lh: PlanSource, model: Model) -> Literal["new", "modified", "unchanged"]:
    """How a model stands against its last build, for the `state:` selectors: never built,
    built from another definition (SQL, code or settings), or as it is defined now."""
    if model.config.materialized == "view" and not lh.storage.exists(model.name):
        stored = lh.view_sql(model.name)
        if stored is None:
            return "new"
        return "modified" if stored != model.sql else "unchanged"
    if not lh.storage.exists(model.name):
        return "new"
    record = last_build(lh.table(model.name))
    if record is None:
        return "new"
    return "modified" if record.get("fingerprint") != fingerprint(model) else "unchanged"


def _status(
    lh: PlanSource, graph: ModelGraph, name: TableName, states: Mapping[TableName, _State]
) -> _State:
    model = graph.models[name]
    current = fingerprint(model)
    if model.config.materialized == "view" and not lh.storage.exists(name):
        # A view keeps no build record: its SQL in the catalog is what was built.
        stored = lh.view_sql(name)
        if stored is None:
            return _State(model, "new", current)
        old = _view_columns(lh, name)
        if stored != model.sql:
            return _State(model, "changed", current, old=old)
        previous: str | None = current
    else:
        record = last_build(lh.table(name)) if lh.storage.exists(name) else None
        if record is None:
            return _State(model, "new", current, notes=_increments(lh, model))
        previous = str(record.get("fingerprint")) if record.get("fingerprint") else None
        old = _built_columns(lh.table(name), record)
        if previous != current:
            same_code = record.get("code") == code_fingerprint(model)
            state = _State(model, "changed", current, previous, old=old, settings_only=same_code)
            state.notes.extend(_kept_rows(model, record) + _increments(lh, model))
            state.notes.extend(_becomes_view(model, record))
            return state
    causes: set[str] = set()
    for table in model.inputs:
        upstream = states.get(table)
        if upstream is None or upstream.status == "unchanged":
            continue
        causes.update(upstream.upstream if upstream.status == "downstream" else [str(table)])
    status: Status = "downstream" if causes else "unchanged"
    state = _State(model, status, current, previous, tuple(sorted(causes)), old=old)
    call = volatile_call(model.sql) if model.sql and model.config.materialized == "table" else None
    if call:
        state.notes.append(f"rebuilt at every run: its SQL reads {call}")
    return state


def _becomes_view(model: Model, record: Mapping[str, Any]) -> list[str]:
    """What becomes of the table of a model that is a view now (see `lakebed run`)."""
    if model.config.materialized != "view":
        return []
    if record.get("materialized") == "table":
        return ["a view now: the run drops its table"]
    return [f"a view now: the run keeps its table and fails; `lakebed drop {model.name}` first"]


def _increments(lh: PlanSource, model: Model) -> list[str]:
    """A merged model whose increments cannot be exact from the rows of the keys they
    touch: a change to such an input rebuilds it in full, which its author will want to
    know."""
    config = model.config
    merged = config.materialized == "incremental" and config.incremental_strategy == "merge"
    if not merged or not all(lh.storage.exists(table) for table in model.inputs):
        return []
    schemas = {table: lh.table(table).schema().names for table in model.inputs}
    if model.sql is None:
        keyless = [str(t) for t in model.inputs if not set(config.unique_key) <= set(schemas[t])]
        if not keyless:
            return []
        return [
            f"incremental, but its function reads {', '.join(keyless)} without its key: a "
            "change there rebuilds it in full"
        ]
    full = [
        str(table)
        for table in model.inputs
        if increment_shape(model.sql, model.name, table, config.unique_key, schemas).shape == "full"
    ]
    if not full:
        return []
    return [
        f"incremental, but its SQL reads {', '.join(full)} neither row by row nor by key "
        "(rows combined across keys, an anti join, the optional side of an outer join): a "
        "change there rebuilds it in full (group and partition by its unique_key to "
        "recompute only the keys a change touches)"
    ]


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


def _view_columns(lh: PlanSource, name: TableName) -> dict[str, str] | None:
    """A view's columns as it is defined now; None when it no longer binds."""
    try:
        return column_types(lh.schema(str(name)))
    except LakebedError:
        return None


def _built_columns(table: Table, record: Mapping[str, Any]) -> dict[str, str]:
    """The columns the last build wrote, typed by the table's schema."""
    types = {f.name.lower(): type_name(f.type) for f in table.schema()}
    names = record.get("columns")
    if not isinstance(names, list):
        return column_types(table.schema())
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
    schema = pa.schema([pa.field(f.name, stored_type(f.type)) for f in result.arrow().schema])
    if model.config.materialized == "scd2":
        schema = with_history_columns(schema)
    state.new = column_types(schema)
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
) -> tuple[dict[str, dict[str, set[str]] | list[str]], list[str]]:
    """Per direct downstream model, the columns of `name` it uses (lineage against the
    current schemas: each with what it feeds), and notes on the ones that had to be
    assumed (every column, as a plain list: how it is used is not known)."""
    old = states[name].old or {}
    uses: dict[str, dict[str, set[str]] | list[str]] = {}
    notes: list[str] = []
    for reader in graph.downstream(name, transitive=False):
        model = graph.models[reader]
        everything = list(old)
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
