"""Run a selection of the model graph: independent models in parallel, each computed,
audited (write-audit-publish) and published; a failure skips only what depends on it."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal, Protocol

import pyarrow as pa

from lakebed.errors import LakebedError, ModelError, Retryable, TransformError
from lakebed.govern import (
    Audit,
    Check,
    CheckResult,
    ColumnEdge,
    audit,
    blocking,
    column_lineage,
    table_edges,
)
from lakebed.orchestrate.quarantine import keep_dropped
from lakebed.orchestrate.settings import (
    describe,
    freshness_checks,
    judge_freshness,
    require_built_inputs,
    settings_problem,
    undescribed,
)
from lakebed.orchestrate.table_checks import TableChecks, judge, model_checks
from lakebed.storage import TableName
from lakebed.transform import Model, ModelGraph
from lakebed.transform.backfill import Backfill
from lakebed.transform.fingerprints import fingerprint
from lakebed.transform.materialize import (
    Workspace,
    compute,
    is_current,
    last_build,
    next_build,
    publish,
    sync_properties,
)

NodeStatus = Literal["success", "up_to_date", "failed", "skipped"]
_log = logging.getLogger(__name__)
# A lease outlives any sane build; a crashed holder's lease lapses after it.
LEASE_SECONDS = 3600.0


class RunContext(Workspace, Protocol):
    """What a run needs of the lakehouse beyond building one model."""

    def views(self) -> dict[TableName, str]: ...

    def warm(self) -> None: ...

    def deferring_catalog_writes(self) -> AbstractContextManager[None]: ...

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


@dataclass
class RunSummary:
    run_id: str
    nodes: list[NodeResult]
    # Checks declared on the tables the models read (lakebed.yml), per table.
    table_checks: dict[str, list[CheckResult]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(n.status in ("success", "up_to_date") for n in self.nodes)


Report = Callable[[str, NodeResult | None], None]


def _dead(holder: str) -> bool:
    """True when a lease holder ran on this host in a process that no longer exists."""
    _, _, where = holder.partition("@")
    host, _, pid = where.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@functools.cache
def _warm_imports() -> None:
    """Import pandas on a thread of its own, once per process. pyarrow imports it on its
    first conversion of Python values (a fifth of a second, on whichever model gets there
    first); started here, the import runs while the first models' queries are in DuckDB,
    which releases the interpreter."""

    def load() -> None:
        with contextlib.suppress(ImportError):
            importlib.import_module("pandas")

    threading.Thread(target=load, name="lakebed-warm-imports", daemon=True).start()


def _now(job: Callable[[], None]) -> None:
    job()


def _record_lineage(ctx: RunContext, model: Model, columns: list[str]) -> None:
    """Record the tables the model reads and, for SQL, the columns each column comes from."""
    tables = table_edges(model.name, model.inputs)
    if model.sql is None:  # Python: its columns are not traced
        ctx.metastore.replace_lineage(str(model.name), tables)
        return
    views = ctx.views()
    schemas = {
        # Views have no files to read a schema from: ask the engine for theirs.
        name: ctx.sql(f"select * from {name} limit 0").columns
        if name in views
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


@dataclass(frozen=True)
class _Catalog:
    """The catalog's views (their SELECTs) and records, read once for a run's views (beside
    its first builds: by the time its views come up it is at hand)."""

    views: dict[TableName, str]
    records: dict[str, Any]  # name → TableRecord

    @classmethod
    def read(cls, ctx: RunContext) -> _Catalog:
        return cls(ctx.views(), {r.name: r for r in ctx.metastore.list_tables()})


def _view_current(ctx: RunContext, model: Model, catalog: _Catalog | None = None) -> bool:
    """Whether the catalog (read now, or `catalog` read earlier in the run) holds the view
    as the model defines it now."""
    if catalog is None:
        if ctx.view_sql(model.name) != model.sql:
            return False
        record = ctx.metastore.get_table(str(model.name))
    else:
        if catalog.views.get(model.name) != model.sql or ctx.storage.exists(model.name):
            return False
        record = catalog.records.get(str(model.name))
    if record is None:
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


def build_model(
    ctx: RunContext,
    model: Model,
    *,
    run_id: str,
    full_refresh: bool = False,
    backfill: Backfill | None = None,
    inputs_changed: bool = True,
    later: Callable[[Callable[[], None]], None] | None = None,
) -> NodeResult:
    """Compute, audit and publish one model; raises on failure (the caller records it).

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
        if not inputs_changed and not full_refresh and fresh and _view_current(ctx, model):
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
    written = publish(ctx, computed, data)
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


def run_models(
    ctx: RunContext,
    graph: ModelGraph,
    selected: Iterable[TableName],
    *,
    full_refresh: bool = False,
    backfill: Backfill | None = None,
    workers: int = 2,
    retries: int = 2,
    report: Report | None = None,
    table_checks: TableChecks | None = None,
    fail_fast: bool = False,
) -> RunSummary:
    """Build the selected models in dependency order, `workers` at a time; first judge the
    tables they read that have checks of their own (`table_checks`). A failed model skips
    its downstream; with `fail_fast`, every model not started yet (as dbt's --fail-fast)."""
    _warm_imports()
    chosen = list(dict.fromkeys(selected))
    wanted = set(chosen)
    deps = {n: [u for u in graph.upstream(n, transitive=False) if u in wanted] for n in chosen}
    for name in chosen:
        # A relationships check reads its target: build the target first.
        for check in graph.models[name].config.checks:
            target = check.get("relationships")
            target_name = target.get("to") if isinstance(target, dict) else None
            if isinstance(target_name, str):
                try:
                    parsed = TableName.parse(target_name)
                except LakebedError:
                    continue
                if parsed in wanted and parsed != name and parsed not in deps[name]:
                    deps[name].append(parsed)
    results: dict[TableName, NodeResult] = {}
    tracked = ctx.track_run("run", None, models=[str(n) for n in chosen])
    # Commits are recorded in the catalog beside the builds, all before the run ends.
    with tracked as run, ctx.deferring_catalog_writes():
        run_id = str(run.run_id)

        me = f"{run_id}@{socket.gethostname()}:{os.getpid()}"
        checked, blocked = _judge_inputs(ctx, graph, chosen, table_checks or {}, run_id)

        # Work beside the builds that they need not wait for: opening a model's tables
        # while it takes its lease, releasing the lease and reading the table its commit
        # left (for the catalog) once it is built.
        aside = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lakebed-aside")
        set_aside: list[Future[None]] = []
        begun: dict[str, Future[Any]] = {}
        begun_lock = threading.Lock()

        def once(key: str, job: Callable[[], Any]) -> Future[Any]:
            """`job` set aside, the first time `key` is asked for."""
            with begun_lock:
                if key not in begun:
                    begun[key] = aside.submit(job)
                return begun[key]

        def read_catalog() -> _Catalog:
            return _Catalog.read(ctx)

        def warm() -> None:
            # The engine's first workspace (a DuckDB cursor, its catalog and schemas), for
            # the first build's query; what fails here fails again where it counts.
            with contextlib.suppress(Exception):
                ctx.warm()

        def open_tables(name: TableName) -> None:
            """Open the tables a model's build reads, in the order it needs them: each
            table (its schema comes first), then the files of its own (where a merge looks;
            those of the up-to-date models it queries are read as they are found so)."""
            inputs = graph.models[name].inputs
            with contextlib.suppress(LakebedError):  # the build says what is wrong
                for table in [*inputs, name]:
                    if ctx.storage.exists(table):
                        ctx.table(table).delta(refresh=False)
                if ctx.storage.exists(name):
                    ctx.table(name).snapshot()

        def read_built(table: TableName) -> None:
            if ctx.storage.exists(table):  # not a view
                ctx.table(table).snapshot()

        def attempt(name: TableName) -> NodeResult:
            quick = unchanged(name)
            if quick is not None:
                return quick
            set_aside.append(aside.submit(open_tables, name))
            once("engine", warm)
            lease = f"model:{name}"
            record: str | None = None
            # The lease and the model's run record: one transaction.
            with ctx.metastore.together():
                holder = ctx.metastore.acquire_lease(lease, me, seconds=LEASE_SECONDS)
                if holder is not None and _dead(holder):
                    # Its process is gone (killed mid-build): the lease is free to take over.
                    holder = ctx.metastore.acquire_lease(
                        lease, me, seconds=LEASE_SECONDS, stale_holder=holder
                    )
                if holder is None:
                    record = ctx.metastore.start_run("model", str(name), {"run": run_id})
            if holder is not None:
                return NodeResult(
                    str(name),
                    "failed",
                    error=f"run {holder[:12]} is building {name}; run again when it ends",
                )
            try:
                node, record = build(name, record)
            except BaseException:
                ctx.metastore.release_lease(lease, me)
                raise
            # Its run record finished and its lease given back: one transaction.
            with ctx.metastore.together():
                if record is not None:
                    ctx.metastore.finish_run(
                        record, status="success", rows=node.rows, bytes=node.bytes
                    )
                ctx.metastore.release_lease(lease, me)
            config = graph.models[name].config
            merged = node.mode == "incremental" and config.incremental_strategy == "merge"
            if node.status == "success" and not merged:  # a merge knows what it left
                set_aside.append(aside.submit(read_built, name))  # for the catalog at the end
            if any(graph.models[n].config.materialized == "view" for n in chosen):
                once("catalog", read_catalog)  # for the views, read as the builds end
            return node

        # Models found up to date without a lease; their run records are written together.
        current: list[tuple[str, datetime, datetime]] = []

        def unchanged(name: TableName) -> NodeResult | None:
            """The result of a model that needs no build, found by reading alone (no lease,
            no run record of its own), or None when it may need one."""
            if full_refresh or backfill is not None:
                return None
            model = graph.models[name]
            started, clock = datetime.now(UTC), time.perf_counter()
            if model.config.materialized == "view":
                if (
                    inputs_changed(name)
                    or model.sql is None
                    or freshness_checks(model)  # its rows age unchanged: judged by a build
                    or not _view_current(ctx, model, once("catalog", read_catalog).result())
                ):
                    return None
                mode = "view"
            elif (
                is_current(ctx, model)
                and not settings_problem(ctx, model)
                and not freshness_checks(model)  # judged on the table, by a build's lease
            ):
                mode = "up_to_date"
                describe(ctx, model)  # descriptions may change without the model changing
                sync_properties(ctx, model)  # so may an incremental model's table properties
                if any(name in graph.models[d].inputs for d in chosen):
                    # Its files, for the models downstream to query.
                    set_aside.append(aside.submit(read_built, name))
            else:
                return None
            current.append((str(name), started, datetime.now(UTC)))
            node = NodeResult(str(name), "up_to_date", mode, attempts=1)
            node.seconds = time.perf_counter() - clock
            return node

        def inputs_changed(name: TableName) -> bool:
            """True unless every input is a model of this run that kept its columns (built
            incrementally, or up to date)."""
            model = graph.models[name]
            for upstream in model.inputs:
                done = results.get(upstream)
                if upstream not in deps[name] or done is None:
                    return True
                if done.status != "up_to_date" and done.mode != "incremental":
                    return True
            return False

        def build(name: TableName, record: str | None) -> tuple[NodeResult, str | None]:
            """Build the model, again after retryable errors, each try with a run record
            (`record`: the first one's, already started): its result, and the record for
            the caller to finish when it succeeded."""
            model = graph.models[name]
            tries = 0
            changed = inputs_changed(name)
            clock = time.perf_counter()
            while True:
                tries += 1
                if record is None:
                    record = ctx.metastore.start_run("model", str(name), {"run": run_id})
                try:
                    try:
                        require_built_inputs(ctx, graph, name)
                        node = build_model(
                            ctx,
                            model,
                            run_id=run_id,
                            full_refresh=full_refresh,
                            backfill=backfill,
                            inputs_changed=changed,
                            later=lambda job: lineage.append(recorder.submit(job)),
                        )
                    except BaseException as exc:
                        ctx.metastore.finish_run(record, status="failed", error=str(exc))
                        record = None
                        raise
                    node.attempts = tries
                    return node, record
                except LakebedError as exc:
                    if isinstance(exc, Retryable) and tries <= retries:
                        time.sleep(min(5.0, 0.2 * 2**tries) * (0.5 + random.random()))
                        continue
                    seconds = time.perf_counter() - clock
                    failed = NodeResult(
                        str(name), "failed", attempts=tries, error=str(exc), seconds=seconds
                    )
                    return failed, None
                except Exception as exc:
                    # Not an error lakebed foresaw (a bug, a library's own): this model
                    # fails with it, as a foreseen error would, and the run goes on.
                    _log.exception("building %s failed unexpectedly", name)
                    error = f"unexpected {type(exc).__name__}: {exc}"
                    seconds = time.perf_counter() - clock
                    failed = NodeResult(
                        str(name), "failed", attempts=tries, error=error, seconds=seconds
                    )
                    return failed, None

        pending = set(chosen)
        running: dict[Future[NodeResult], TableName] = {}
        halted: str | None = None  # why nothing more starts (fail_fast)
        # Column lineage is traced (pure Python, sqlglot) on a thread of its own, while the
        # models downstream run their queries, and is all recorded before the run ends.
        lineage: list[Future[None]] = []
        recorder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lakebed-lineage")
        with aside, recorder, ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            while pending or running:
                for name in sorted(pending):
                    states = [results.get(d) for d in deps[name]]
                    stopped = [blocked[i] for i in graph.models[name].inputs if i in blocked]
                    if (
                        halted
                        or stopped
                        or any(s is not None and s.status in ("failed", "skipped") for s in states)
                    ):
                        why = halted or (stopped[0] if stopped else "an upstream model failed")
                        skipped = NodeResult(str(name), "skipped", error=why)
                        results[name] = skipped
                        pending.discard(name)
                        if report:
                            report("skipped", skipped)
                    elif all(s is not None for s in states) and len(running) < workers:
                        pending.discard(name)
                        if report:
                            report("started", NodeResult(str(name), "success"))
                        running[pool.submit(attempt, name)] = name
                if not running:
                    continue
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    name = running.pop(future)
                    node = future.result()
                    results[name] = node
                    if fail_fast and node.status == "failed" and halted is None:
                        halted = f"not started: {name} failed (fail fast)"
                    if report:
                        report("finished", node)
            for recorded in lineage:
                recorded.result()  # lineage is best effort, but a bug in it is not hidden
        for job in set_aside:
            failure = job.exception()
            if failure is not None:  # a lease left behind expires; its run is not alive
                _log.warning("run %s: bookkeeping beside a build failed: %s", run_id, failure)
        ctx.metastore.record_finished_runs("model", current, {"run": run_id, "up_to_date": True})
        nodes = [results[n] for n in chosen]
        run.rows = sum(n.rows for n in nodes)
        run.bytes = sum(n.bytes for n in nodes)
        failed = [n.model for n in nodes if n.status == "failed"]
        if failed or blocked:
            summary = RunSummary(run_id, nodes, checked)
            reasons = [f"models failed: {', '.join(failed)}"] if failed else []
            raise _RunFailedError(summary, "; ".join(reasons + list(blocked.values())))
    return RunSummary(run_id, nodes, checked)


def _judge_inputs(
    ctx: RunContext,
    graph: ModelGraph,
    chosen: list[TableName],
    table_checks: TableChecks,
    run_id: str,
) -> tuple[dict[str, list[CheckResult]], dict[TableName, str]]:
    """Judge the tables with checks of their own that the chosen models read: the results
    per table, and why each table whose checks block its readers does."""
    read = {i for name in chosen for i in graph.models[name].inputs if i in table_checks}
    checked: dict[str, list[CheckResult]] = {}
    blocked: dict[TableName, str] = {}
    for table in sorted(read):
        if not ctx.storage.exists(table):
            continue  # the models that read it fail on their own, naming it
        try:
            results = judge(ctx, table, table_checks[table], run_id=run_id)
        except LakebedError as exc:
            blocked[table] = f"the checks of {table} could not run: {exc.message}"
            continue
        checked[str(table)] = results
        failures = blocking(results)
        if failures:
            counts = ", ".join(
                f"{r.check} ({r.failing_rows:,} row{'' if r.failing_rows == 1 else 's'})"
                for r in failures
            )
            blocked[table] = f"checks of {table} failed: {counts}"
    return checked, blocked


class _RunFailedError(LakebedError):
    """Marks the run record failed while handing the summary back to `run`."""

    def __init__(self, summary: RunSummary, message: str) -> None:
        self.summary = summary
        super().__init__(message)


def run(
    ctx: RunContext,
    graph: ModelGraph,
    selected: Iterable[TableName],
    **options: Any,
) -> RunSummary:
    """`run_models`, returning the summary whether or not some models failed."""
    try:
        return run_models(ctx, graph, selected, **options)
    except _RunFailedError as failed:
        return failed.summary
