"""Compute a model's rows and publish them as its table: full rebuilds and increments.

`compute` reads one snapshot of every input; an incremental model reads only the rows its
inputs changed since the versions its table last processed (recorded in the table's own
commits), through the change data feed or, for append-only inputs, the files they added.
`publish` commits the result with those input versions in the same Delta commit, so a
crash never processes an input change twice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import pyarrow as pa

from lakebed.errors import LakebedError, ModelError, QueryError, TransformError
from lakebed.ingest.runner import Catalog
from lakebed.process import QueryResult
from lakebed.storage import CHANGE_FEED, KeyLookup, Table, TableName, WriteResult, last_per_key
from lakebed.transform.backfill import Backfill
from lakebed.transform.definition import Model
from lakebed.transform.execute import run_python
from lakebed.transform.fingerprints import (
    code_fingerprint,
    definition_fingerprint,
    fingerprint,
    redefined,
)
from lakebed.transform.incremental import Increase, Rebuild, read_increment
from lakebed.transform.increments import volatile_call
from lakebed.transform.latest import MIN_ROWS, LatestPlan, latest_plan
from lakebed.transform.scd2 import history_changes

STATE_KEY = "lakebed.model"


class Workspace(Catalog, Protocol):
    """What building a model needs of the lakehouse (transform sits below it): the tables
    ingestion needs, and SQL."""

    def sql(
        self,
        query: str,
        *,
        as_of: Any = None,
        params: list[Any] | None = None,
        relations: Mapping[str, pa.Table] | None = None,
    ) -> QueryResult: ...


@dataclass
class Computed:
    """A model's new rows, ready for checks and publishing."""

    model: Model
    mode: Literal["full", "incremental", "up_to_date"]
    data: pa.Table
    inputs: dict[str, int]  # the input versions these rows reflect
    deleted_keys: pa.Table | None = None
    notes: list[str] = field(default_factory=list)
    previous_fingerprint: str | None = None  # of the build before this one
    # Why the model was built the way it was, when that is not the usual (for people).
    reason: str | None = None
    # Key values an increment computed again from all their rows (per input): what the
    # model's checks dropped of them before is dropped again, not kept twice.
    recomputed: list[pa.Table] = field(default_factory=list)
    looked_up: KeyLookup | None = None  # the rows its merge replaces, if already found


def app_id(model: Model) -> str:
    return f"lakebed-model:{model.name}"


def next_build(ws: Workspace, model: Model) -> int:
    """The number the model's next commit to its table carries (its application
    transaction version): a build that died before committing is built again under it."""
    if not ws.storage.exists(model.name):
        return 1
    return (ws.table(model.name).transaction_version(app_id(model)) or 0) + 1


def last_build(table: Table) -> dict[str, Any] | None:
    """What the newest model commit of a table recorded: `inputs` (versions processed),
    `fingerprint` and `columns`."""
    # The newest commit is nearly always a model build: read it alone from its log file.
    found = _state_of(table.commit_info(table.version()) or {})
    limit = 1
    while found is None:
        # Else newest first, a page at a time: reading the whole history costs a read per
        # commit the table ever had.
        entries = table.history(limit)
        found, known = _newest_state(entries)
        if not known or (found is None and len(entries) < limit):
            return None
        limit *= 16
    return found


def _newest_state(entries: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, bool]:
    """The model state of the newest build among commits (newest first) that the table's
    rows still reflect: a restore to version k brings back the rows, and so the build, of
    the newest build at or before k. False when a restore's target is not known."""
    bound: int | None = None
    for entry in entries:
        version = int(entry.get("version", -1))
        if bound is not None and version > bound:
            continue  # undone by a restore
        if entry.get("operation") == "RESTORE":
            target = (entry.get("operationParameters") or {}).get("version")
            if target is None or not str(target).isdigit():
                return None, False  # restored to a time: rebuild rather than guess
            bound = int(target)
            continue
        found = _state_of(entry)
        if found is not None:
            return found, True
    return None, True


def _state_of(commit: dict[str, Any]) -> dict[str, Any] | None:
    """The model state a commit's metadata holds, if it holds one."""
    raw = commit.get(STATE_KEY)
    if raw is None:
        return None
    return dict(json.loads(raw) if isinstance(raw, str) else raw)


def processed_versions(table: Table) -> dict[str, int] | None:
    """The input versions the model's table last processed, from its newest model commit."""
    return _processed(last_build(table))


def _input_versions(ws: Workspace, model: Model) -> dict[str, int]:
    return {str(name): ws.table(name).version() for name in model.inputs}


def _full(ws: Workspace, model: Model) -> Computed:
    _feed_inputs(ws, model)
    if model.kind == "sql":
        assert model.sql is not None
        plan = latest_plan(model.sql) if len(model.inputs) == 1 else None
        result = _latest(ws, model.sql, plan) if plan is not None else ws.sql(model.sql)
        versions = dict(result.versions)
        return Computed(model, "full", result.arrow(), versions)
    versions = _input_versions(ws, model)
    frames = {name: ws.sql(f"select * from {name}", as_of=None).arrow() for name in model.inputs}
    return Computed(model, "full", run_python(model, frames), versions)


def _latest(ws: Workspace, sql: str, plan: LatestPlan) -> QueryResult:
    """The rows of a latest-per-key SELECT (`latest.latest_plan`), with the window over
    the keys that repeat when that costs less; one version of its input read throughout."""
    # The row count in the log (files without statistics count none): a guide only.
    total = ws.table(plan.table).snapshot().num_rows if ws.storage.exists(plan.table) else 0
    if total < MIN_ROWS:
        return ws.sql(sql)  # a view, or too few rows to be worth a second query
    try:
        found = ws.sql(plan.repeated_sql)
    except LakebedError:
        return ws.sql(sql)  # what is wrong is said of the model's own SQL
    query, relations = plan.query(found.arrow(), total)
    return ws.sql(query, as_of=found.versions[str(plan.table)], relations=relations)


def _feed_inputs(ws: Workspace, model: Model) -> None:
    """Before an incremental model reads its inputs in full (its first build, or a rebuild
    because an input's changes could not be read), turn on the change data feed of its
    input tables that lack one, so their next changes reach it as changes. A full
    build reads each input anyway: looking at its properties costs nothing more."""
    for name in model.feed_inputs:
        if ws.storage.exists(name):
            table = ws.table(name)
            if table.properties().get(CHANGE_FEED) != "true":
                table.set_properties({CHANGE_FEED: "true"})


def _scd2(ws: Workspace, model: Model, previous: Mapping[str, Any] | None) -> Computed:
    """The history changes of a keyed snapshot: new versions to insert, old ones to close.
    With none, the model is up to date unless its SQL changed or returns a column its table
    lacks (the column is added to the table then, and the build recorded, though no key
    has a new version yet)."""
    snapshot = _full(ws, model)
    _require_setting_columns(model, snapshot.data.schema.names)
    changes = history_changes(ws, model, snapshot.data, datetime.now(UTC))
    mode: Literal["full", "incremental", "up_to_date"] = "incremental"
    if not ws.storage.exists(model.name):
        mode = "full"
    elif (
        changes.num_rows == 0
        and (previous or {}).get("fingerprint") == fingerprint(model)
        and set(snapshot.data.schema.names) <= set(ws.table(model.name).schema().names)
    ):
        mode = "up_to_date"
    return Computed(model, mode, changes, snapshot.inputs)


def _backfill(
    ws: Workspace, model: Model, backfill: Backfill, previous: Mapping[str, Any] | None
) -> Computed:
    """The window's partitions computed again. Its commit records the input versions the
    build before it processed, not the ones it read: the table's other partitions still
    reflect those, so the next run applies what changed since then to the whole table (a
    table is rebuilt; a merged model merges the changes, its window's rows again, which
    computes them as they are). An appending model is caught up first (see `run`)."""
    partitions = model.config.partition_by
    if model.config.materialized == "scd2":
        raise TransformError(
            f"{model.name} is an scd2 model: its partitions hold history, which a backfill "
            "would replace",
            hint="leave it out of the run (--exclude), or --full-refresh it",
        )
    if len(partitions) != 1 or model.kind != "sql" or model.sql is None:
        raise TransformError(
            f"{model.name} cannot be backfilled: it needs exactly one partition column "
            "and SQL (set partition_by in its .yml)",
        )
    if not ws.storage.exists(model.name):
        raise TransformError(f"{model.name} has never been built: run it in full first")
    column = partitions[0]
    dtype = ws.table(model.name).schema().field(column).type
    condition = backfill.predicate(column, dtype)
    result = ws.sql(f"select * from ({model.sql}) as __lakebed_model where {condition}")
    computed = Computed(model, "full", result.arrow(), dict(result.versions))
    processed = _processed(dict(previous)) if previous is not None else None
    appending = model.config.incremental_strategy == "append"
    if processed is not None and not (model.config.materialized == "incremental" and appending):
        computed.inputs = processed
    computed.notes.append(condition)
    window = (
        backfill.start if backfill.start == backfill.end else backfill.start + ".." + backfill.end
    )
    computed.reason = f"backfill of {column} {window}"
    return computed


def compute(
    ws: Workspace,
    model: Model,
    *,
    full_refresh: bool = False,
    backfill: Backfill | None = None,
) -> Computed:
    """The model's new rows: everything for a table, or what changed for an increment.

    A table model whose SQL and inputs are as they were at its last build is up to date:
    rebuilding it would write the same rows and make everything downstream rebuild too.
    """
    previous = last_build(ws.table(model.name)) if ws.storage.exists(model.name) else None
    before = None if previous is None else previous.get("fingerprint")
    if not full_refresh and backfill is None and model.config.materialized == "table":
        now = _unchanged_since(ws, model, previous)
        if now is not None:
            return Computed(model, "up_to_date", pa.table({}), now, previous_fingerprint=before)
    reason = None
    if model.config.materialized == "incremental" and previous is not None and not backfill:
        full_refresh, reason = _incremental_rebuild(model, previous, full_refresh)
    try:
        computed = _compute(ws, model, previous, full_refresh=full_refresh, backfill=backfill)
    except QueryError as exc:
        raise _in_model(model, exc) from exc
    if computed.mode != "up_to_date":
        _require_setting_columns(model, computed.data.schema.names)
    computed.previous_fingerprint = before
    computed.reason = reason or computed.reason
    return computed


def compute_ahead(ws: Workspace, model: Model, planned: Mapping[str, int]) -> Computed | None:
    """An incremental model's increment from inputs whose next commits are `planned`
    (input → the version it is to commit, whose change rows its handle already holds), to be
    published once they land; None when it cannot be known that way (then it is computed
    when they have landed): the planned inputs must be the only ones changed since its
    last build, each built last from the version before its plan (and at that version or
    the planned one now), and read as changed rows alone."""
    if model.config.materialized != "incremental" or not ws.storage.exists(model.name):
        return None
    if not all(ws.storage.exists(name) for name in model.inputs):
        return None  # a view input
    previous = last_build(ws.table(model.name))
    if previous is None or _incremental_rebuild(model, previous, False)[0]:
        return None
    last = _processed(previous) or {}
    now = _input_versions(ws, model)
    if set(last) != set(now) or _replaced(ws, previous):
        return None
    for name, version in planned.items():
        # Its commit may have landed meanwhile: the rows are the same either way.
        if last.get(name) != version - 1 or now.get(name) not in (version - 1, version):
            return None
        now[name] = version
    changed = [TableName.parse(n) for n, v in now.items() if v != last[n]]
    if {str(n) for n in changed} != set(planned):
        return None
    try:
        found = read_increment(ws, model, changed, last, now, ahead=True)
    except LakebedError:
        return None  # computed again once the inputs landed, where a real error shows
    if isinstance(found, Rebuild):
        return None
    computed = _increment(model, found, now)
    computed.previous_fingerprint = previous.get("fingerprint")
    _require_setting_columns(model, computed.data.schema.names)
    return computed


def _require_setting_columns(model: Model, columns: list[str]) -> None:
    """The columns the model's settings name (its key, partitioning) are among those its
    SELECT returns."""
    config = model.config
    named = {"unique_key": config.unique_key, "partition_by": config.partition_by}
    for setting, wanted in named.items():
        missing = [c for c in wanted if c not in columns]
        if missing:
            raise ModelError(
                f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not among "
                f"the columns of its SELECT ({', '.join(columns)})",
                file=str(model.path.with_suffix(".yml")),
                key=setting,
                model=str(model.name),
                hint=f"name columns the model returns, or add them to {model.path.name}",
            )


def _in_model(model: Model, exc: QueryError) -> ModelError:
    """The query error as an error of the model's file, at the line that names what the
    error names (`Referenced column "amout" not found`), when one does."""
    first = exc.message.splitlines()[0] if exc.message else ""
    names = re.findall(r'"([^"]+)"', first) + re.findall(r"'(\w+)\(", first)
    line = None
    if model.kind == "sql" and names:
        try:
            text = model.path.read_text(encoding="utf-8")
        except OSError:
            text = model.sql or ""
        for number, content in enumerate(text.splitlines(), start=1):
            code = content.split("--", 1)[0]
            if any(re.search(rf"\b{re.escape(n)}\b", code, re.IGNORECASE) for n in names):
                line = number
                break
    return ModelError(
        exc.message, file=str(model.path), line=line, model=str(model.name), hint=exc.hint
    )


def _incremental_rebuild(
    model: Model, previous: Mapping[str, Any], full_refresh: bool
) -> tuple[bool, str | None]:
    """Whether an incremental model with a table is built in full, and why when that is not
    what was asked: its rows are recomputed when it defines them otherwise than at its last
    build (as SQLMesh does), unless `full_refresh: false` keeps them."""
    keep = model.config.full_refresh is False
    if full_refresh:
        return (False, "kept its rows (full_refresh: false)") if keep else (True, None)
    if not redefined(model, previous):
        return False, None
    if keep:
        return False, "model changed: new rows only (full_refresh: false)"
    return True, "model changed"


def is_current(ws: Workspace, model: Model) -> bool:
    """Whether building the table or incremental model now would change nothing: its table
    was last built by the model as it is defined now, from the input versions there are now.
    Reads only (a run asks it before taking the model's lease); False when unsure."""
    if model.config.materialized not in ("table", "incremental"):
        return False
    if not ws.storage.exists(model.name):
        return False
    return _unchanged_since(ws, model, last_build(ws.table(model.name))) is not None


def _unchanged_since(
    ws: Workspace, model: Model, previous: dict[str, Any] | None
) -> dict[str, int] | None:
    """The input versions now, when the build `previous` recorded is of the model as it is
    defined now and processed exactly those versions (and, for a table, its SQL does not
    read the clock or chance); None otherwise."""
    if previous is None:
        return None
    if model.config.materialized == "incremental":
        # Its checks or settings changing leave its rows as they are (they apply to the
        # next increment), and so does a new definition with `full_refresh: false`.
        if redefined(model, previous) and model.config.full_refresh is not False:
            return None
    elif previous.get("fingerprint") != fingerprint(model):
        return None
    elif model.sql and volatile_call(model.sql):
        return None  # a table's `WHERE ts > now() - INTERVAL 1 DAY` changes with no new rows
    if not all(ws.storage.exists(name) for name in model.inputs):
        return None  # a view input has no versions to compare
    now = _input_versions(ws, model)
    processed = _processed(previous) or {}
    if set(processed) != set(now) or _replaced(ws, previous):
        return None
    for name, version in now.items():
        # Commits that only set properties (a change data feed turned on) change no row.
        before = processed[name]
        if version < before:
            return None
        if version > before and ws.table(TableName.parse(name)).rows_changed(before + 1, version):
            return None
    return now


def _replaced(ws: Workspace, previous: Mapping[str, Any]) -> list[str]:
    """The inputs of a build that are other tables now (dropped and written anew): their
    versions count from the start again, and say nothing of what the build read."""
    ids = previous.get("input_ids")
    if not isinstance(ids, dict):
        return []  # built before ids were recorded
    return [
        str(name)
        for name, table_id in ids.items()
        if ws.storage.exists(TableName.parse(name))
        and ws.table(TableName.parse(name)).table_id() != table_id
    ]


def _processed(record: dict[str, Any] | None) -> dict[str, int] | None:
    if record is None:
        return None
    return {str(k): int(v) for k, v in record.get("inputs", {}).items()}


def _compute(
    ws: Workspace,
    model: Model,
    previous: dict[str, Any] | None,
    *,
    full_refresh: bool,
    backfill: Backfill | None,
) -> Computed:
    if backfill is not None and model.config.partition_by:
        return _backfill(ws, model, backfill, previous)
    if model.config.materialized == "scd2":
        return _scd2(ws, model, previous)
    if model.config.materialized != "incremental" or full_refresh:
        return _full(ws, model)
    if not ws.storage.exists(model.name):
        return _full(ws, model)
    views = [str(name) for name in model.inputs if not ws.storage.exists(name)]
    if views:
        return _rebuilt(
            _full(ws, model), f"it reads {', '.join(views)}: a view has no changes to read"
        )
    last = _processed(previous)
    now = _input_versions(ws, model)
    replaced = _replaced(ws, previous or {})
    if replaced:
        return _rebuilt(
            _full(ws, model), f"{', '.join(replaced)}: a new table since its last build"
        )
    if last is None or set(last) != set(now):
        return _rebuilt(_full(ws, model), "its inputs are not those of its last build")
    changed = [TableName.parse(n) for n, v in now.items() if v != last[n]]
    if not changed:
        return Computed(model, "up_to_date", pa.table({}), now)
    restored = [str(n) for n in changed if now[str(n)] < last[str(n)]]
    if restored:
        return _rebuilt(_full(ws, model), f"{', '.join(restored)} went back to an older version")
    found = read_increment(ws, model, changed, last, now)
    if isinstance(found, Rebuild):
        return _rebuilt(_full(ws, model), found.reason)
    return _increment(model, found, now)


def _increment(model: Model, found: Increase, now: dict[str, int]) -> Computed:
    return Computed(
        model,
        "incremental",
        found.data,
        now,
        deleted_keys=found.deleted_keys,
        recomputed=found.recomputed,
        looked_up=found.looked_up,
    )


def _rebuilt(computed: Computed, reason: str | None) -> Computed:
    computed.reason = reason
    return computed


def _table_properties(ws: Workspace, model: Model) -> dict[str, str] | None:
    """Delta properties of a new model table: the model's own; a change data feed only when
    an incremental model reads the table (as Delta's default, and as Databricks turns it on
    for the tables a materialized view refreshes from: the feed's pre-images cost each
    merge a read of the whole rows it replaces); and for a merged model deletion vectors to
    mark the rows an increment replaces, so a small change does not rewrite every file
    holding one of its keys (local storage: the merge commits its own log entry)."""
    config = model.config
    merged = (
        config.materialized == "incremental"
        and config.incremental_strategy == "merge"
        and bool(config.unique_key)
        and not config.partition_by
    )
    properties = {CHANGE_FEED: "true" if model.read_incrementally else "false"}
    if merged and "://" not in ws.storage.root:
        properties["delta.enableDeletionVectors"] = "true"
    properties.update(config.properties)
    return properties


def sync_properties(ws: Workspace, model: Model) -> None:
    """Set the model's table properties that its table does not hold (yet) as declared."""
    wanted = model.config.properties
    if not wanted or not ws.storage.exists(model.name):
        return
    table = ws.table(model.name)
    current = table.properties()
    changed = {k: v for k, v in wanted.items() if current.get(k) != v}
    if changed:
        table.set_properties(changed)


def publish(
    ws: Workspace,
    computed: Computed,
    data: pa.Table,
    on_planned: Callable[[int], None] | None = None,
) -> WriteResult | None:
    """Commit the (audited) rows with the input versions they reflect, atomically.
    `on_planned(version)`: told the version a merge is planned as (`Table.merge`)."""
    model = computed.model
    if computed.mode == "up_to_date":
        return None
    config = model.config
    state = {
        "inputs": computed.inputs,
        "input_ids": {name: ws.table(name).table_id() for name in computed.inputs},
        "fingerprint": fingerprint(model),
        "code": code_fingerprint(model),
        "definition": definition_fingerprint(model),
        "columns": [c for c in data.schema.names if c != "__action"],
        "materialized": config.materialized,
    }
    metadata = {STATE_KEY: json.dumps(state)}
    scd2 = config.materialized == "scd2"
    creating = not ws.storage.exists(model.name)
    if creating and computed.mode == "full" and not scd2 and not config.partition_by:
        # The table's first commit holds its rows (rather than an empty table, then an
        # overwrite): one commit, one catalog update.
        result = ws.storage.create_from_rows(
            model.name,
            data,
            description=config.description,
            properties=_table_properties(ws, model),
            app_transaction=(app_id(model), 1),
            metadata=metadata,
        )
        ws.create_table(  # the table exists now: this enters its owner, domain and tags
            model.name,
            data.schema,
            description=config.description,
            owner=config.owner,
            domain=config.domain,
            tags=config.tags or None,
            exist_ok=True,
        )
        return result
    if creating:
        table = ws.create_table(
            model.name,
            data.drop_columns(["__action"]).schema if scd2 else data.schema,
            partition_by=config.partition_by or None,
            description=config.description,
            owner=config.owner,
            domain=config.domain,
            tags=config.tags or None,
            properties=_table_properties(ws, model),
        )
    else:
        sync_properties(ws, model)
        table = ws.table(model.name)
    txn = (app_id(model), next_build(ws, model))
    if scd2:
        return table.apply_history(data, config.unique_key, app_transaction=txn, metadata=metadata)
    if computed.mode == "full" and computed.notes:
        # A backfill: replace exactly the partitions it recomputed.
        return table.overwrite(
            data, predicate=computed.notes[0], app_transaction=txn, metadata=metadata
        )
    if computed.mode == "full":
        return table.overwrite(
            data,
            schema_mode="overwrite",
            partition_by=config.partition_by,
            app_transaction=txn,
            metadata=metadata,
        )
    if config.incremental_strategy == "merge":
        if data.num_rows and config.unique_key:
            data = last_per_key(data, config.unique_key)
        return table.merge(
            data,
            config.unique_key,
            allow_missing_columns=True,
            delete_keys=computed.deleted_keys,
            app_transaction=txn,
            metadata=metadata,
            looked_up=computed.looked_up,
            on_planned=on_planned,
        )
    return table.append(data, allow_missing_columns=True, app_transaction=txn, metadata=metadata)
