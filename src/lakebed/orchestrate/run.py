"""Run a selection of the model graph: independent models in parallel, each computed,
audited (write-audit-publish) and published; a failure skips only what depends on it."""

from __future__ import annotations

import contextlib
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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from lakebed.errors import LakebedError, Retryable
from lakebed.govern import (
    CheckResult,
    blocking,
)
from lakebed.metastore import TableRecord
from lakebed.orchestrate.build import (
    Ahead,
    NodeResult,
    RunContext,
    UpstreamFailedError,
    build_model,
    view_current,
)
from lakebed.orchestrate.settings import (
    describe,
    freshness_checks,
    require_built_inputs,
    settings_problem,
)
from lakebed.orchestrate.table_checks import TableChecks, judge
from lakebed.storage import TableName
from lakebed.transform import ModelGraph
from lakebed.transform.backfill import Backfill
from lakebed.transform.materialize import (
    is_current,
    sync_properties,
)

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
# A planned commit that will not land as planned (its build tries again).
VOID = -1
# A lease outlives any sane build; a crashed holder's lease lapses after it.
LEASE_SECONDS = 3600.0


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
                    set_aside.append(begun[key])
                return begun[key]

        def read_catalog() -> dict[str, TableRecord]:
            """The catalog's records, read once for the run's views (beside its builds)."""
            return {record.name: record for record in ctx.metastore.list_tables()}

        def warm() -> None:
            # The engine's first workspace (a DuckDB cursor, its catalog and schemas), for
            # the first build's query; what fails here fails again where it counts.
            with contextlib.suppress(Exception):
                ctx.warm()

        def open_tables(name: TableName) -> None:
            """Open the tables a model's build reads, in the order it needs them: each
            table (its schema comes first), the files of its own (where a merge looks), and
            the scans of the up-to-date tables its query joins (a dimension, say)."""
            inputs = graph.models[name].inputs
            with contextlib.suppress(LakebedError):  # the build says what is wrong
                for table in [*inputs, name]:
                    if ctx.storage.exists(table):
                        ctx.table(table).delta(refresh=False)
                if ctx.storage.exists(name):
                    ctx.table(name).snapshot()
            current = [i for i in inputs if getattr(results.get(i), "status", "") == "up_to_date"]
            if current:
                with contextlib.suppress(Exception):  # the query says what is wrong
                    ctx.warm(current)

        def read_built(table: TableName) -> None:
            if ctx.storage.exists(table):  # not a view
                ctx.table(table).snapshot()

        def attempt(name: TableName, ahead: dict[TableName, Ahead]) -> NodeResult:
            try:
                return attempt_now(name, ahead)
            finally:
                _settle(landed[name], None)  # it commits nothing more

        def attempt_now(name: TableName, ahead: dict[TableName, Ahead]) -> NodeResult:
            # A table whose input committed (or plans to) in this run is not current.
            table_like = graph.models[name].config.materialized in ("table", "incremental")
            fed = table_like and any(committed[d].done() or d in ahead for d in deps[name])
            quick = None if fed else unchanged(name)
            if quick is not None:
                return quick
            once(f"open:{name}", functools.partial(open_tables, name))
            once("engine", warm)
            for reader in readers[name]:  # what will read its new rows, opened beside it
                once(f"open:{reader}", functools.partial(open_tables, reader))
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
                node, record = build(name, record, ahead)
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
                    or not view_current(ctx, model, once("catalog", read_catalog).result())
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

        def build(
            name: TableName, record: str | None, ahead: dict[TableName, Ahead]
        ) -> tuple[NodeResult, str | None]:
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
                            on_commit=functools.partial(on_commit, name),
                            on_planned=functools.partial(_settle, planned[name]),
                            ahead=ahead or None,
                        )
                    except BaseException as exc:
                        ctx.metastore.finish_run(record, status="failed", error=str(exc))
                        record = None
                        raise
                    node.attempts = tries
                    return node, record
                except UpstreamFailedError as exc:
                    # An input planned a commit and did not make it: as if it had failed
                    # before this model started.
                    error = f"an upstream model failed ({exc.message})"
                    return NodeResult(str(name), "skipped", attempts=tries, error=error), None
                except LakebedError as exc:
                    if isinstance(exc, Retryable) and tries <= retries:
                        if planned[name].done():
                            # The commit it planned did not land: what computed from its
                            # change rows computes again (a new try computes anew).
                            _settle(landed[name], VOID)
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
        # Set once a model's rows are committed: a table or incremental model reading it
        # starts then, while it records its size, description and run.
        committed: dict[TableName, Future[int]] = {n: Future() for n in chosen}
        # Set once a merged model's commit is planned (its change rows known): an
        # incremental model reading it computes from them while it commits (`Ahead`).
        planned: dict[TableName, Future[int]] = {n: Future() for n in chosen}
        # The version a model committed, or None once its build ended without a commit.
        landed: dict[TableName, Future[int | None]] = {n: Future() for n in chosen}

        def on_commit(name: TableName, version: int | None) -> None:
            if version is not None:
                _settle(committed[name], version)
            _settle(landed[name], version)

        readers = {
            n: [
                r
                for r in chosen
                if n in deps[r] and graph.models[r].config.materialized in ("table", "incremental")
            ]
            for n in chosen
        }

        def ready(name: TableName) -> bool:
            materialized = graph.models[name].config.materialized
            built = materialized in ("table", "incremental")
            early = materialized == "incremental" and not full_refresh and backfill is None
            return all(
                results.get(d) is not None
                or (built and committed[d].done())
                or (early and planned[d].done())
                for d in deps[name]
            )

        def ahead_of(name: TableName) -> dict[TableName, Ahead]:
            """The inputs of a model starting that have planned their commit, not landed it."""
            return {
                d: Ahead(planned[d].result(), landed[d])
                for d in deps[name]
                if results.get(d) is None and not committed[d].done() and planned[d].done()
            }

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
                    elif ready(name) and len(running) < workers:
                        pending.discard(name)
                        if report:
                            report("started", NodeResult(str(name), "success"))
                        running[pool.submit(attempt, name, ahead_of(name))] = name
                if not running:
                    continue
                watched: list[Future[Any]] = [*running]
                for n in running.values():
                    watched += [f for f in (committed[n], planned[n]) if not f.done()]
                done, _ = wait(watched, return_when=FIRST_COMPLETED)
                for future in done:
                    if future not in running:
                        continue  # a commit, or a plan: what reads it may start
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
        with ctx.metastore.together():  # the run's last records: one transaction
            up_to_date = {"run": run_id, "up_to_date": True}
            ctx.metastore.record_finished_runs("model", current, up_to_date)
            ctx.flush_catalog_writes()
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


def _settle(future: Future[_T], value: _T) -> None:
    if not future.done():  # a retried build commits once
        future.set_result(value)
