"""Building one model: computed, audited (write-audit-publish) and published, or, for a
view, entered in the catalog; what a run needs of the lakehouse to do it."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal, Protocol

import pyarrow as pa

from lakebed.errors import LakebedError, ModelError, TransformError
from lakebed.govern import (
    Audit,
    Check,
    CheckResult,
    ColumnEdge,
    audit,
    column_lineage,
    table_edges,
)
from lakebed.metastore import TableRecord
from lakebed.orchestrate.quarantine import keep_dropped
from lakebed.orchestrate.settings import (
    describe,
    freshness_checks,
    judge_freshness,
    settings_problem,
    undescribed,
)
from lakebed.orchestrate.table_checks import model_checks
from lakebed.storage import TableName
from lakebed.transform import Model
from lakebed.transform.backfill import Backfill
from lakebed.transform.fingerprints import fingerprint
from lakebed.transform.materialize import (
    Computed,
    Workspace,
    compute,
    compute_ahead,
    is_current,
    last_build,
    next_build,
    publish,
    sync_properties,
)

NodeStatus = Literal["success", "up_to_date", "failed", "skipped"]
_log = logging.getLogger(__name__)


class RunContext(Workspace, Protocol):
    """What a run needs of the lakehouse beyond building one model."""

    def warm(self, tables: Iterable[TableName] = ()) -> None: ...

    def deferring_catalog_writes(self) -> AbstractContextManager[None]: ...

    def flush_catalog_writes(self) -> None: ...

    def view_sql(self, name: TableName) -> str | None: ...

    def describe_table(
        self,
        name: str | TableName,
        *,
        description: str | None = None,
        owner: str | None = None,
        domain: str | None = None,
        tags: list[str] | None = None,
        columns: dict[str, str] | None = None,
    ) -> None: ...

    def drop_table(self, name: str | TableName) -> None: ...

    def register_view(
        self,
        name: str | TableName,
        sql: str,
        *,
        description: str | None = None,
        owner: str | None = None,
        domain: str | None = None,
        tags: list[str] | None = None,
    ) -> Any: ...


@dataclass(frozen=True)
class Ahead:
    """An input whose next commit is planned but has not landed: the version it is to be,
    and its landing (the version committed; None when it did not commit; another number
    when what lands is not that plan)."""

    version: int
    landed: Future[int | None]


class UpstreamFailedError(LakebedError):
    """An input planned a commit that did not land: the model reading it is skipped."""


@dataclass
class NodeResult:
    """How one model fared in a run."""

    model: str
    status: NodeStatus
    mode: str | None = None
    # Why it was built that way when that is not what was asked ("model changed").
    reason: str | None = None
    rows: int = 0
    bytes: int = 0  # of the files its commit added
    quarantined: int = 0
    seconds: float = 0.0
    attempts: int = 0
    error: str | None = None
    checks: list[CheckResult] = field(default_factory=list)


def _now(job: Callable[[], None]) -> None:
    job()


def _record_lineage(ctx: RunContext, model: Model, columns: list[str]) -> None:
    """Record the tables the model reads and, for SQL, the columns each column comes from."""
    tables = table_edges(model.name, model.inputs)
    if model.sql is None:  # Python: its columns are not traced
        ctx.metastore.replace_lineage(str(model.name), tables)
        return
    schemas = {
        # Views have no files to read a schema from: ask the engine for theirs.
        name: ctx.sql(f"select * from {name} limit 0").columns
        if ctx.view_sql(name) is not None
        else ctx.table(name).schema().names
        for name in model.inputs
    }
    frozen = tuple(sorted((name, tuple(names)) for name, names in schemas.items()))
    try:
        edges = [*_lineage(model.sql, model.name, frozen, tuple(columns)), *tables]
    except LakebedError:
        edges = tables  # column lineage is best effort: it never fails a build
    stamp = model.config.updated_at if model.config.materialized == "scd2" else None
    if stamp:  # an scd2 version is valid from its `updated_at` until the next one's
        edges += [
            dataclasses.replace(edge, downstream_column=column, transform="expression")
            for edge in edges
            if edge.downstream_column == stamp and edge.transform != "table"
            for column in ("valid_from", "valid_to")
        ]
    ctx.metastore.replace_lineage(str(model.name), edges)


@lru_cache(maxsize=256)
def _lineage(
    sql: str,
    name: TableName,
    schemas: tuple[tuple[TableName, tuple[str, ...]], ...],
    columns: tuple[str, ...],
) -> tuple[ColumnEdge, ...]:
    """`column_lineage`, once per SQL and input schemas (a scheduler builds the same models
    over and over; tracing columns through sqlglot's scopes is pure Python work)."""
    return tuple(column_lineage(sql, name, dict(schemas), output_columns=list(columns)))


def _give_way_to_view(ctx: RunContext, model: Model) -> None:
    """Drop the table a model built before it became a view (as dbt replaces a relation of
    another type), when its rows can be computed again: it was built as a table. The rows
    of an incremental or scd2 table may not be (its inputs no longer hold them), and a
    table the model did not build is not the model's to drop."""
    record = last_build(ctx.table(model.name))
    was = None if record is None else record.get("materialized")
    if was == "table":
        ctx.drop_table(model.name)
        return
    if record is None:
        built = "was not built by the model"
    elif was is None:  # built before lakebed recorded how
        built = "holds rows of an earlier build that may not be computed again"
    else:
        built = f"holds the rows of its {was} builds, which may not be computed again"
    raise TransformError(
        f"{model.name} is a view now, and its table {built}",
        hint=f"keep its rows elsewhere if they matter, then `lakebed drop {model.name}` "
        "and run again; or leave the model as it was",
    )


def view_current(
    ctx: RunContext, model: Model, records: Mapping[str, TableRecord] | None = None
) -> bool:
    """Whether the catalog (read now, or `records` of it read earlier in the run) holds
    the view as the model defines it now."""
    name = str(model.name)
    record = ctx.metastore.get_table(name) if records is None else records.get(name)
    if record is None or record.view_sql != model.sql or ctx.storage.exists(model.name):
        return False
    config = model.config
    wanted = {
        "description": config.description,
        "owner": config.owner,
        "domain": config.domain,
        "tags": config.tags or None,
    }
    stored = {
        "description": record.description,
        "owner": record.owner,
        "domain": record.domain,
        "tags": record.tags,
    }
    # Settings left out keep what the catalog has (as registering would).
    return all(value is None or stored[key] == value for key, value in wanted.items())


def _audited(
    ctx: RunContext, model: Model, checks: list[Check], data: pa.Table, run_id: str
) -> Audit:
    """The checks' verdict on the model's new rows, recorded; raises when one blocks."""
    outcome = audit(data, checks, table=str(model.name), lookup=lambda q: ctx.sql(q).arrow())
    ctx.metastore.record_check_results(outcome.results, run_id=run_id)
    outcome.raise_if_failed()
    return outcome


def _view_checks(ctx: RunContext, model: Model, run_id: str) -> list[CheckResult]:
    """A view's checks, judged on the rows it returns before it is (re)defined: a failed
    check of severity fail leaves the view as it was and skips what reads it."""
    assert model.sql is not None
    checks = model_checks(model)
    dropping = [c.name for c in checks if c.severity == "drop"]
    if dropping:
        raise ModelError(
            f"{', '.join(dropping)}: a view has no rows of its own to drop to quarantine",
            file=str(model.path.with_suffix(".yml")),
            key="checks",
            model=str(model.name),
            hint="use severity warn or fail, or make the model a table",
        )
    rows = ctx.sql(model.sql).arrow()
    return _audited(ctx, model, checks, rows, run_id).results


def _computed_ahead(
    ctx: RunContext, model: Model, ahead: Mapping[TableName, Ahead]
) -> Computed | None:
    """The increment computed while its inputs' planned commits land (`compute_ahead`),
    once they have landed as planned; None when it is to be computed now."""
    computed = compute_ahead(ctx, model, {str(n): a.version for n, a in ahead.items()})
    landed = {name: a.landed.result() for name, a in ahead.items()}
    failed = [str(name) for name, version in landed.items() if version is None]
    if failed:
        raise UpstreamFailedError(f"{', '.join(failed)} did not commit its rows")
    if any(landed[name] != a.version for name, a in ahead.items()):
        # Another writer's commit came first, or the build tries again: the plan is not
        # what landed (or lands).
        return None
    return computed


def build_model(
    ctx: RunContext,
    model: Model,
    *,
    run_id: str,
    full_refresh: bool = False,
    backfill: Backfill | None = None,
    inputs_changed: bool = True,
    later: Callable[[Callable[[], None]], None] | None = None,
    on_commit: Callable[[int | None], None] | None = None,
    on_planned: Callable[[int], None] | None = None,
    ahead: Mapping[TableName, Ahead] | None = None,
) -> NodeResult:
    """Compute, audit and publish one model; raises on failure (the caller records it).
    `on_commit` is called once its rows are committed (before what follows: recording its
    size, description and lineage), for what reads them to start.

    `inputs_changed` False says no input of the model was rebuilt in full or redefined in
    this run (so none lost or retyped a column): a view already in the catalog as it is
    defined still binds and is left as it is. `later` takes work that need not hold up
    what depends on the model (recording its column lineage); without it, it is done here.
    """
    started = time.perf_counter()
    if model.config.materialized == "view":
        if model.sql is None:
            raise TransformError(f"{model.name}: only SQL models can be views ({model.path})")
        # A view's freshness is judged on its rows at every run (they age unchanged).
        fresh = not freshness_checks(model)
        if not inputs_changed and not full_refresh and fresh and view_current(ctx, model):
            seconds = time.perf_counter() - started
            return NodeResult(str(model.name), "up_to_date", "view", seconds=seconds)
        if ctx.storage.exists(model.name):
            _give_way_to_view(ctx, model)
        checks = _view_checks(ctx, model, run_id) if model.config.checks else []
        ctx.register_view(
            model.name,
            model.sql,
            description=model.config.description,
            owner=model.config.owner,
            domain=model.config.domain,
            tags=model.config.tags or None,
        )
        view_columns = ctx.sql(f"select * from {model.name} limit 0").columns
        (later or _now)(lambda: _record_lineage(ctx, model, view_columns))
        seconds = time.perf_counter() - started
        return NodeResult(str(model.name), "success", "view", seconds=seconds, checks=checks)
    config = model.config
    appending = config.materialized == "incremental" and config.incremental_strategy == "append"
    if backfill is not None and appending and config.partition_by and not is_current(ctx, model):
        # Append what its inputs gained first: the backfill then records the versions it
        # read for the whole table (an append applied after it would repeat rows).
        build_model(ctx, model, run_id=run_id, inputs_changed=inputs_changed, later=later)
    computed = _computed_ahead(ctx, model, ahead) if ahead else None
    if computed is None:
        computed = compute(ctx, model, full_refresh=full_refresh, backfill=backfill)
    result = NodeResult(str(model.name), "success", computed.mode, computed.reason)
    if computed.mode == "up_to_date":
        problem = settings_problem(ctx, model)  # checks may change without the model
        if problem is not None:
            raise problem
        describe(ctx, model)  # so may its descriptions, owner...
        sync_properties(ctx, model)  # ...and its table properties
        result.checks = judge_freshness(ctx, model, run_id)
        result.status = "up_to_date"
        result.seconds = time.perf_counter() - started
        return result
    data = computed.data
    problem = undescribed(model, data.schema.names)
    if problem is not None:
        raise problem
    if model.config.checks:
        outcome = _audited(ctx, model, model_checks(model), data, run_id)
        result.checks = outcome.results
        replace = computed.mode == "full" and not computed.notes  # not for a backfill
        # An existing quarantine table is visited even with no new rows: a full build
        # empties it, and a build attempted again takes out what the dead one left.
        if outcome.quarantined.num_rows or ctx.storage.exists(model.quarantine):
            keep_dropped(
                ctx,
                model,
                outcome.quarantined,
                replace=replace,
                recomputed=computed.recomputed,
                attempt=str(next_build(ctx, model)),
            )
            result.quarantined = outcome.quarantined.num_rows
        data = outcome.passed
    written = publish(ctx, computed, data, on_planned)
    if on_commit is not None:
        on_commit(None if written is None else written.version)
    if written is not None:
        result.bytes = ctx.table(model.name).bytes_written(written.version) or 0
    describe(ctx, model)
    # An unchanged model has the lineage recorded at its last build (--full-refresh
    # records it again).
    unchanged = computed.previous_fingerprint == fingerprint(model) and not full_refresh
    if not unchanged:
        columns = data.schema.names
        (later or _now)(lambda: _record_lineage(ctx, model, columns))
    result.rows = data.num_rows
    result.seconds = time.perf_counter() - started
    return result
