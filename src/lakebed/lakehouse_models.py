"""The models half of the lakehouse facade: the model graph, runs and quality checks
(`Lakehouse` inherits it; kept apart to keep each module readable)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from lakebed.config import CONFIG_FILE
from lakebed.conflicts import refuse_shared_quarantine, refuse_unknown_domains
from lakebed.errors import ConfigError, LakebedError, TransformError
from lakebed.govern import CheckResult
from lakebed.orchestrate import NodeResult, RunSummary
from lakebed.orchestrate import run as run_graph
from lakebed.orchestrate.results import ModelStatus, last_results, model_statuses
from lakebed.orchestrate.table_checks import (
    TableChecks,
    model_checks,
    parse_table_checks,
    published_checks,
)
from lakebed.orchestrate.table_checks import judge as judge_table
from lakebed.storage import TableName
from lakebed.transform import Model, ModelGraph, load_models
from lakebed.transform.backfill import Backfill
from lakebed.transform.plan import build_state

if TYPE_CHECKING:
    from lakebed.config import ProjectConfig
    from lakebed.ingest import SourceSpec
    from lakebed.lakehouse import Lakehouse
    from lakebed.metastore import Metastore, RunRecord, TableRecord
    from lakebed.process.stream_spec import PipelineSpec
    from lakebed.storage import DeltaStore


@dataclass
class RunProgress:
    """What a tracked run reports when it ends (set by the work inside `track_run`)."""

    run_id: str
    rows: int | None = None
    bytes: int | None = None


class ModelsMixin:
    """Models, runs and checks of a `Lakehouse`, which inherits them."""

    # What the lakehouse gives (see `Lakehouse`).
    root: Path
    config: ProjectConfig
    metastore: Metastore
    storage: DeltaStore
    _lock: threading.RLock
    _catalogued: set[TableName]

    if TYPE_CHECKING:

        def tables(self, layer: str | None = None) -> list[TableRecord]: ...
        def sources(self) -> dict[str, SourceSpec]: ...
        def pipelines(self) -> dict[str, PipelineSpec]: ...

    def _lakehouse(self) -> Lakehouse:
        return cast("Lakehouse", self)

    def models(self) -> dict[TableName, Model]:
        """The models of models/<layer>/, validated (SQL parsed, settings checked)."""
        return load_models(self.root)

    def graph(self) -> ModelGraph:
        """The model dependency graph; catalog tables and ingestion targets are its roots."""
        sources = {TableName.parse(name) for name in self.metastore.table_names()}
        with self._lock:  # a run opens most of them: no catalog query per table
            self._catalogued |= sources
        targets = {name: spec.target for name, spec in self.sources().items()}
        sources |= set(targets.values())
        models = self.models()
        refuse_shared_quarantine(self.config, models.values())
        refuse_unknown_domains(self.config, models.values())
        streams: dict[str, TableName] = {}
        with contextlib.suppress(LakebedError):  # a broken pipeline stops `lakebed stream` only
            streams = {name: spec.target for name, spec in self.pipelines().items()}
        return ModelGraph(
            models,
            sources=sources,
            source_targets=targets,
            pipeline_targets=streams,
            state=lambda model: build_state(self._lakehouse(), model),
            results=lambda: last_results(self.metastore),
        )

    def model_statuses(
        self, select: str | None = None, *, exclude: str | None = None
    ) -> list[ModelStatus]:
        """The models (all, or those `select` picks less those `exclude` picks) in build
        order, with their settings and how each one's latest build ended."""
        graph = self.graph()
        return model_statuses(self.metastore, graph.models, _selected(graph, select, exclude))

    def run(
        self,
        select: str | None = None,
        *,
        exclude: str | None = None,
        full_refresh: bool = False,
        backfill: str | None = None,
        workers: int = 2,
        fail_fast: bool = False,
        report: Callable[[str, NodeResult | None], None] | None = None,
        on_total: Callable[[int], None] | None = None,
    ) -> RunSummary:
        """Build the selected models (all by default; less those `exclude` selects) in
        dependency order, checks first.

        `backfill="START..END"` recomputes only those partitions of partitioned models.
        `fail_fast` starts no more models once one fails (else only its downstream is
        skipped).
        """
        window = Backfill.parse(backfill) if backfill else None
        graph = self.graph()
        selected = _selected(graph, select, exclude)
        if window is not None and not any(graph.models[n].config.partition_by for n in selected):
            raise TransformError(
                f"--backfill {backfill} recomputes partitions, and no selected model is "
                "partitioned",
                hint="set partition_by in a model's .yml, or select partitioned models "
                "with --select",
            )
        if on_total is not None:
            on_total(len(selected))
        return run_graph(
            self._lakehouse(),
            graph,
            selected,
            full_refresh=full_refresh,
            backfill=window,
            workers=workers,
            report=report,
            table_checks=self.table_checks(graph.models, known=self._checkable(graph)),
            fail_fast=fail_fast,
        )

    def validate_checks(self) -> None:
        """Parse every check declared (lakebed.yml's, and each enabled model's) as a run
        would; the first one that does not parse raises `CheckConfigError` (`lakebed plan`
        says so before anything runs)."""
        graph = self.graph()
        self.table_checks(graph.models, known=self._checkable(graph))
        for model in graph.models.values():
            if model.config.checks:
                model_checks(model)

    def _checkable(self, graph: ModelGraph) -> set[TableName]:
        """The tables lakebed.yml's checks may name: those in the catalog, on disk, or
        written by a source or pipeline."""
        on_disk = set()
        for key in self.config.checks:
            with contextlib.suppress(LakebedError):  # a bad name: parse_table_checks says so
                name = TableName.parse(key)
                if self.storage.exists(name):
                    on_disk.add(name)
        return set(graph.sources) | on_disk

    def table_checks(
        self,
        models: Iterable[TableName] | None = None,
        *,
        known: Iterable[TableName] | None = None,
    ) -> TableChecks:
        """The checks lakebed.yml declares on tables that no model builds, validated (with
        `known`, the tables there are or will be: checks of any other are an error)."""
        built = self.models() if models is None else models
        file = str(self.root / CONFIG_FILE)
        return parse_table_checks(self.config.checks, models=built, file=file, known=known)

    def check_results(self, table: str | None = None) -> list[CheckResult]:
        """The latest result of each check declared now (on a model, or in lakebed.yml), of
        one table or of all: a check taken out of a model's settings leaves no stale
        verdict behind. A project whose models do not load shows every result recorded."""
        results = self.metastore.latest_check_results(table)
        try:
            models = self.models()
            declared = {
                str(name): {check.name for check in checks}
                for name, checks in self.table_checks(models).items()
            }
            for name, model in models.items():
                if model.config.enabled and model.config.checks:
                    names = {check.name for check in model_checks(model)}
                    declared.setdefault(str(name), set()).update(names)
        except LakebedError:
            return results
        return [r for r in results if r.check in declared.get(r.table, ())]

    def check_tables(self, *tables: str) -> dict[str, list[CheckResult]]:
        """Judge tables by the checks lakebed.yml declares on them (all such tables by
        default), now, or a model's table by its model's checks (every row it holds, as
        `dbt test` does); the results are recorded, as a run's are."""
        models = self.models()
        declared = self.table_checks(models)
        names = [TableName.parse(t) for t in tables] or sorted(declared)
        for name in names:
            model = models.get(name)
            if model is not None and model.config.checks:
                if model.config.materialized == "view":
                    raise TransformError(
                        f"{name} is a view: it holds no rows to judge apart from a run",
                        hint="`lakebed run --select` it: its checks judge its rows first",
                    )
                declared[name] = published_checks(model)
        unknown = [str(n) for n in names if n not in declared]
        if unknown:
            raise ConfigError(
                f"no checks are declared on {', '.join(unknown)}",
                file=str(self.root / CONFIG_FILE),
                key="checks",
                hint="declare them under `checks:` in lakebed.yml, or a model's in its .yml",
            )
        return {
            str(n): judge_table(self._lakehouse(), n, declared[n], run_id=None, again=True)
            for n in names
        }

    # -- run log ----------------------------------------------------------------------------

    @contextmanager
    def track_run(
        self, kind: str, target: str | None = None, **params: Any
    ) -> Iterator[RunProgress]:
        """Record a piece of work in the run log: started, then succeeded or failed.

        Set `rows` / `bytes` on the yielded object; an exception marks the run failed with
        its message and propagates.
        """
        run_id = self.metastore.start_run(kind, target, params or None)
        progress = RunProgress(run_id)
        try:
            yield progress
        except BaseException as exc:
            self.metastore.finish_run(
                run_id, status="failed", rows=progress.rows, bytes=progress.bytes, error=str(exc)
            )
            raise
        self.metastore.finish_run(
            run_id, status="success", rows=progress.rows, bytes=progress.bytes
        )

    def runs(
        self,
        *,
        limit: int = 50,
        kind: str | None = None,
        target: str | None = None,
        status: str | None = None,
    ) -> list[RunRecord]:
        """The run log, newest first: of one kind (`run`, `model`, `ingest`...), target (a
        model or source) and status (`success`, `failed`, `running`) when given."""
        return self.metastore.runs(limit=limit, kind=kind, target=target, status=status)


def _selected(graph: ModelGraph, select: str | None, exclude: str | None) -> list[TableName]:
    """The models `select` picks (all by default) less those `exclude` picks, in build order."""
    selected = graph.select(select) if select else graph.order()
    if exclude:
        left_out = set(graph.select(exclude))
        selected = [name for name in selected if name not in left_out]
    return selected
