"""`lakebed ingest` and `lakebed sources`: batch ingestion from the terminal."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table as RichTable
from rich.text import Text

from lakebed import cli_render as render
from lakebed.cli_common import ProjectOption, open_project, stderr, stdout
from lakebed.errors import LakebedError
from lakebed.ingest import IngestSummary, SourceContext
from lakebed.lakehouse import Lakehouse
from lakebed.metastore import RunRecord


def _summary_view(summaries: list[IngestSummary]) -> RichTable:
    view = RichTable(title="ingested", title_justify="left", header_style="bold")
    view.add_column("source", style="cyan", no_wrap=True)
    view.add_column("table", no_wrap=True)
    view.add_column("status", no_wrap=True)
    view.add_column("rows loaded", justify="right")
    view.add_column("quarantined", justify="right")
    view.add_column("bytes", justify="right")
    view.add_column("seconds", justify="right")
    for s in summaries:
        status = Text(s.status, style="green" if s.status == "success" else "red")
        if s.status == "success" and s.batches == 0:
            status = Text("up to date", style="dim")
        quarantined = Text(f"{s.quarantined:,}", style="yellow" if s.quarantined else "")
        view.add_row(
            s.source,
            s.target,
            status,
            f"{s.rows:,}",
            quarantined,
            render.human_size(s.bytes),
            f"{s.seconds:.2f}",
        )
    return view


def _reporter(progress: Progress, task: TaskID) -> Callable[[str, int, int | None], None]:
    """Draws a connector's counts: the bar follows files or pages, rows go in the text."""
    counts: dict[str, int] = {}

    def report(unit: str, done: int, total: int | None) -> None:
        counts[unit] = done
        detail = "  ".join(f"{n:,} {u}" for u, n in counts.items())
        lead = next((u for u in ("files", "pages") if u in counts), None)
        if lead == unit:
            progress.update(task, completed=done, total=total, detail=detail)
        else:
            progress.update(task, detail=detail)

    return report


def ingest_sources(
    lh: Lakehouse, names: list[str], stdout: Console, stderr: Console
) -> list[IngestSummary]:
    """Run each source with a progress bar; a failed source does not stop the others."""
    chosen = names or sorted(lh.sources())
    summaries: list[IngestSummary] = []
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=stderr, transient=False) as progress:
        for name in chosen:
            task = progress.add_task(name, total=None, detail="")
            report = _reporter(progress, task)
            try:
                summary = lh.ingest(name, report=report)
            except LakebedError as exc:
                summary = IngestSummary(name, "", status="failed", error=exc.message)
                progress.update(task, detail=Text("failed", style="red"))
                stderr.print(render.error_text(exc), soft_wrap=True)
            else:
                total = progress.tasks[task].total
                progress.update(task, completed=total or 1, total=total or 1)
            summaries.append(summary)
    stdout.print(_summary_view(summaries))
    return summaries


def sources_view(lh: Lakehouse) -> RichTable:
    view = RichTable(header_style="bold")
    for column in ("source", "kind", "table", "disposition", "last run", "state"):
        view.add_column(column, no_wrap=column in ("source", "kind", "table"))
    runs: dict[str | None, RunRecord] = {}
    for record in lh.runs(limit=500, kind="ingest"):
        runs.setdefault(record.target, record)
    for name, spec in sorted(lh.sources().items()):
        last = runs.get(name)
        when = "never"
        if last is not None:
            style = {"success": "green", "failed": "red"}.get(last.status, "yellow")
            when = f"[{style}]{last.status}[/{style}] {render.relative_time(last.started_at)}"
            if last.rows is not None:
                when += f", {last.rows:,} rows"
        connector = spec.connector(spec.options, SourceContext(name, lh.root))
        view.add_row(
            name,
            spec.config.kind,
            str(spec.target),
            spec.config.write_disposition,
            when,
            Text(connector.describe_state(lh.source_state(name)), style="dim"),
        )
    return view


def register(app: typer.Typer) -> None:
    """Add the ingestion commands to the CLI."""

    @app.command()
    def ingest(
        ctx: typer.Context,
        names: Annotated[
            list[str] | None,
            typer.Argument(metavar="[NAME]...", help="Sources to run (default: all)."),
        ] = None,
        project: ProjectOption = None,
    ) -> None:
        """Load what is new in each source into its bronze table, exactly once.

        Example: [bold]lakebed ingest orders customers[/bold]
        """
        with open_project(ctx, project) as lh:
            if not lh.sources():
                stdout().print("no sources declared; add them under `sources:` in lakebed.yml")
                return
            summaries = ingest_sources(lh, names or [], stdout(), stderr())
        if any(s.status != "success" for s in summaries):
            raise typer.Exit(1)

    @app.command()
    def sources(ctx: typer.Context, project: ProjectOption = None) -> None:
        """List the sources of lakebed.yml with their last run and what they have loaded.

        Example: [bold]lakebed sources[/bold]
        """
        with open_project(ctx, project) as lh:
            if not lh.sources():
                stdout().print("no sources declared; add them under `sources:` in lakebed.yml")
                return
            stdout().print(sources_view(lh))
