"""`lakebed run`, `runs`, `models`, `checks` and `lineage`: the model graph from the
terminal."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table as RichTable
from rich.text import Text

from lakebed import cli_render as render
from lakebed.cli_common import (
    FormatOption,
    ProjectOption,
    TableArgument,
    open_project,
    print_json,
    stderr,
    stdout,
)
from lakebed.errors import LakebedError
from lakebed.govern import CheckResult, blocking
from lakebed.orchestrate import NodeResult, RunSummary
from lakebed.transform.graph import close_matches

_STYLE = {"success": "green", "up_to_date": "dim", "failed": "red", "skipped": "yellow"}

SelectOption = Annotated[
    str | None,
    typer.Option(
        "--select",
        "-s",
        help="Models: name, gold.*, +name (with upstream), name+ (with downstream), 2+name "
        "(two steps up), @name, tag:x, layer:gold, materialized:incremental, source:x, "
        "state:modified (new or changed since their last build), result:failed (in the "
        "last run); separated by spaces for their union, by commas for their intersection "
        "(tag:daily,layer:gold).",
    ),
]
ExcludeOption = Annotated[
    str | None,
    typer.Option(
        "--exclude", "-x", help="Models to leave out of the selection, in the same syntax."
    ),
]


def _in_brief(results: list[CheckResult]) -> str:
    """`3 passed; unique(id): warn, range(x): 12 dropped`: the passes counted, the rest
    named (a drop check that took rows out says how many)."""
    checks = ", ".join(
        f"{c.check}: {c.failing_rows:,} dropped"
        if c.severity == "drop" and c.status == "warn"
        else f"{c.check}: {c.status}"
        for c in results
        if c.status != "pass"
    )
    passed = sum(1 for c in results if c.status == "pass")
    if passed:
        checks = f"{passed} passed" + (f"; {checks}" if checks else "")
    return checks


def _table_checks_view(summary: RunSummary) -> RichTable:
    view = RichTable(title="checks of the tables read", title_justify="left", header_style="bold")
    for column in ("table", "version", "checks"):
        view.add_column(column, justify="right" if column == "version" else "left")
    for table, results in summary.table_checks.items():
        blocked = bool(blocking(results))
        version = results[0].table_version if results else None
        view.add_row(
            table,
            "" if version is None else str(version),
            Text(_in_brief(results), style="red" if blocked else ""),
        )
    return view


def _first_line(error: str | None, limit: int = 200) -> str:
    """An error as a table cell: its first line (the hint follows on others), shortened
    when very long (`lakebed runs -f json` has it whole)."""
    line = (error or "").strip().splitlines()[0] if (error or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _column_of(names: list[str], column: str, table: str) -> str:
    """The table's own spelling of `column` (DuckDB matches names case-insensitively)."""
    for name in names:
        if name.lower() == column.lower():
            return name
    close = close_matches(column, names)
    raise LakebedError(
        f"{table} has no column {column!r}",
        hint=f"did you mean {', '.join(close)}?" if close else f"its columns: {', '.join(names)}",
    )


def _summary_view(summary: RunSummary) -> RichTable:
    view = RichTable(title=f"run {summary.run_id[:12]}", title_justify="left", header_style="bold")
    for column in ("model", "status", "mode", "rows", "quarantined", "checks", "seconds", "error"):
        view.add_column(column, justify="right" if column in ("rows", "seconds") else "left")
    for node in summary.nodes:
        checks = _in_brief(node.checks)
        view.add_row(
            node.model,
            Text(node.status.replace("_", " "), style=_STYLE.get(node.status, "")),
            (node.mode or "") + (f" ({node.reason})" if node.reason else ""),
            f"{node.rows:,}",
            f"{node.quarantined:,}" if node.quarantined else "",
            checks,
            f"{node.seconds:.2f}",
            Text(node.error or "", style="red"),
        )
    return view


def register(app: typer.Typer) -> None:
    """Add the model commands to the CLI."""

    @app.command("run")
    def run_command(
        ctx: typer.Context,
        select: SelectOption = None,
        exclude: ExcludeOption = None,
        full_refresh: Annotated[
            bool, typer.Option("--full-refresh", help="Rebuild incremental models in full.")
        ] = False,
        backfill: Annotated[
            str | None,
            typer.Option(
                "--backfill",
                metavar="START..END",
                help=(
                    "Recompute only these partitions of partitioned models: periods are "
                    "taken whole (2025-01..2025-03 is every day of January to March), other "
                    "values compare as the column does; one bound alone is one partition."
                ),
            ),
        ] = None,
        workers: Annotated[int, typer.Option("--workers", min=1, help="Parallel builds.")] = 2,
        fail_fast: Annotated[
            bool,
            typer.Option(
                "--fail-fast",
                help="Start no more models once one fails (else only its downstream is skipped).",
            ),
        ] = False,
        fmt: FormatOption = "table",
        project: ProjectOption = None,
    ) -> None:
        """Build the models of models/ in dependency order, checks before publishing.

        Exit code 1 when a model fails or a table check of severity fail blocks it.

        Example: [bold]lakebed run --select +gold.daily_revenue --exclude tag:slow[/bold]
        """
        with open_project(ctx, project) as lh:
            columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn())
            # Transient: the summary table replaces the bar (and an error in loading the
            # models is not printed under an empty one).
            with Progress(
                *columns, TimeElapsedColumn(), console=stderr(), transient=True
            ) as progress:
                task = progress.add_task("models", total=None)

                def report(event: str, node: NodeResult | None) -> None:
                    if node is None:
                        return
                    if event == "started":
                        progress.update(task, description=f"building {node.model}")
                    elif event in ("finished", "skipped"):
                        progress.advance(task)

                summary = lh.run(
                    select,
                    exclude=exclude,
                    full_refresh=full_refresh,
                    backfill=backfill,
                    workers=workers,
                    fail_fast=fail_fast,
                    report=report,
                    on_total=lambda n: progress.update(task, total=n),
                )
                progress.update(task, description="models")
        if fmt == "json":
            print_json({**dataclasses.asdict(summary), "ok": summary.ok})
        else:
            if summary.table_checks:
                stdout().print(_table_checks_view(summary))
            if summary.nodes:
                stdout().print(_summary_view(summary))
            elif select or exclude:
                chosen = " ".join(
                    f"{flag} {value!r}"
                    for flag, value in (("--select", select), ("--exclude", exclude))
                    if value
                )
                stdout().print(f"no model selected by {chosen}: nothing to build")
            else:
                stdout().print("no models yet: write models/<layer>/<name>.sql (or .py)")
        if not summary.ok:
            raise typer.Exit(1)

    @app.command()
    def runs(
        ctx: typer.Context,
        target: Annotated[
            str | None, typer.Argument(help="Only the runs of this model or source.")
        ] = None,
        limit: Annotated[int, typer.Option("--limit", "-n", min=1)] = 20,
        kind: Annotated[str | None, typer.Option("--kind", help="run, model, ingest...")] = None,
        status: Annotated[
            str | None, typer.Option("--status", help="success, failed or running.")
        ] = None,
        fmt: FormatOption = "table",
        project: ProjectOption = None,
    ) -> None:
        """The run history: what ran, when, how it ended.

        Example: [bold]lakebed runs silver.orders --status failed[/bold]
        """
        with open_project(ctx, project) as lh:
            records = lh.runs(limit=limit, kind=kind, target=target, status=status)
        if fmt == "json":
            print_json(records)
            return
        view = RichTable(header_style="bold")
        columns = (
            "started",
            "run",
            "kind",
            "target",
            "status",
            "rows",
            "bytes",
            "seconds",
            "error",
        )
        for column in columns:
            numeric = column in ("rows", "bytes", "seconds")
            view.add_column(column, justify="right" if numeric else "left")
        for r in records:
            seconds = (r.finished_at - r.started_at).total_seconds() if r.finished_at else None
            style = {"success": "green", "failed": "red"}.get(r.status, "yellow")
            view.add_row(
                render.iso_utc(r.started_at),
                # The run a model's build belongs to, as `lakebed run` prints it.
                Text(str(r.params.get("run") or r.run_id)[:12], style="dim"),
                r.kind,
                r.target or "",
                Text(r.status, style=style),
                "" if r.rows is None else f"{r.rows:,}",
                "" if r.bytes is None else render.human_size(r.bytes),
                "" if seconds is None else f"{seconds:.2f}",
                Text(_first_line(r.error), style="red"),
            )
        stdout().print(view)

    @app.command()
    def models(
        ctx: typer.Context,
        select: SelectOption = None,
        exclude: ExcludeOption = None,
        fmt: FormatOption = "table",
        project: ProjectOption = None,
    ) -> None:
        """List the models in build order: materialization, inputs, tags, schedule, last build.

        Like dbt ls, with how each model's latest build ended. Example:
        [bold]lakebed models -s tag:daily+[/bold]
        """
        with open_project(ctx, project) as lh:
            listed = lh.model_statuses(select, exclude=exclude)
        if fmt == "json":
            print_json([m.to_dict() for m in listed])
            return
        if not listed:
            stdout().print("no models: write models/<layer>/<name>.sql (or .py)")
            return
        view = RichTable(header_style="bold")
        for column in ("model", "materialized", "inputs", "tags", "schedule", "last run"):
            view.add_column(column, justify="left")
        view.add_column("rows", justify="right")
        for m in listed:
            kind = m.materialized + (f" on {', '.join(m.unique_key)}" if m.unique_key else "")
            last = m.last
            built: Text | str = Text("never", style="dim")
            if last is not None:
                status = (m.last_status or "").replace("_", " ")
                style = {"success": "green", "failed": "red", "up to date": "dim"}.get(status)
                built = Text(f"{status} {render.relative_time(last.started_at)}", style or "yellow")
            view.add_row(
                Text(m.model, style="cyan") if m.kind == "sql" else Text(f"{m.model} (py)"),
                kind,
                ", ".join(m.inputs),
                ", ".join(m.tags),
                m.schedule or "",
                built,
                "" if last is None or last.rows is None else f"{last.rows:,}",
            )
        stdout().print(view)

    @app.command()
    def checks(
        ctx: typer.Context,
        table: Annotated[str | None, typer.Argument(metavar="[TABLE]")] = None,
        run: Annotated[
            bool,
            typer.Option(
                "--run",
                help="First judge the tables with checks declared in lakebed.yml (or TABLE, "
                "which may be a model's: every row it holds, by its checks) now; exit 1 if "
                "a check of severity fail fails.",
            ),
        ] = False,
        fmt: FormatOption = "table",
        project: ProjectOption = None,
    ) -> None:
        """The latest result of every quality check, per table.

        Example: [bold]lakebed checks silver.orders[/bold]
        """
        blocked = False
        with open_project(ctx, project) as lh:
            if run:
                judged = lh.check_tables(*([table] if table else []))
                results = [r for found in judged.values() for r in found]
                blocked = bool(blocking(results))
            else:
                results = lh.check_results(table)
        if fmt == "json":
            print_json(results)
            if blocked:
                raise typer.Exit(1)
            return
        view = RichTable(header_style="bold")
        for column in (
            "table",
            "check",
            "severity",
            "status",
            "failing",
            "rows",
            "checked",
            "message",
        ):
            view.add_column(column, justify="right" if column in ("failing", "rows") else "left")
        for r in results:
            style = {"pass": "green", "warn": "yellow"}.get(r.status, "red")
            view.add_row(
                r.table,
                r.check,
                r.severity,
                Text(r.status, style=style),
                f"{r.failing_rows:,}",
                f"{r.total_rows:,}",
                render.relative_time(r.checked_at),
                Text(r.message or "", style="dim"),
            )
        stdout().print(
            view if results else "no check results yet; declare checks and `lakebed run`"
        )
        if blocked:
            raise typer.Exit(1)

    @app.command()
    def lineage(
        ctx: typer.Context,
        table: TableArgument,
        column: Annotated[str | None, typer.Option("--column", "-c")] = None,
        downstream: Annotated[
            bool, typer.Option("--downstream", help="What uses it (default: where it comes from).")
        ] = False,
        upstream: Annotated[bool, typer.Option("--upstream", help="Where it comes from.")] = False,
        tables: Annotated[
            bool, typer.Option("--tables", help="Tables only: what it is built from (or feeds).")
        ] = False,
        fmt: FormatOption = "table",
        project: ProjectOption = None,
    ) -> None:
        """Column lineage of a table, down to the source columns (or up to every use).

        With --tables, the tables alone. A Python model's columns are not traced: the
        tables it reads stand in for them.

        `--format json` prints the edges of the tree: downstream and upstream table and
        column, and the transform (copy, expression, aggregate, window; `table` with
        columns `*` for a table built from another).

        Example: [bold]lakebed lineage gold.daily_revenue --column revenue[/bold]
        """
        from lakebed.govern import lineage_reach, lineage_tree

        if downstream and upstream:
            raise typer.BadParameter("give --upstream or --downstream, not both")
        direction: Literal["upstream", "downstream"] = "downstream" if downstream else "upstream"
        with open_project(ctx, project) as lh:
            name = lh.describe(table).name  # a table or a view
            if column is not None:
                column = _column_of(lh.schema(name).names, column, name)
            edges = lh.metastore.lineage_edges()
        if fmt == "json":
            reached = lineage_reach(edges, name, column, direction, tables=tables)
            print_json(reached)
            return
        stdout().print(lineage_tree(edges, name, column, direction, tables=tables))
