"""`lakebed plan`: what the next run changes, and whether a change breaks downstream models."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Literal

import typer
from rich.table import Table as RichTable
from rich.text import Text

from lakebed.cli_common import ProjectOption, open_project, stdout
from lakebed.transform.plan import ModelPlan, Plan, plan

_STATUS_STYLE = {
    "new": "cyan",
    "changed": "bold yellow",
    "downstream": "yellow",
    "unchanged": "dim",
}
_CHANGE_STYLE = {"breaking": "bold red", "non-breaking": "green", "unknown": "magenta"}


def _details(item: ModelPlan) -> Text:
    text = Text()
    for index, line in enumerate(item.details()):
        if index:
            text.append("\n")
        style = "red" if line.startswith("breaks ") else ""
        if line in item.notes:
            style = "red" if line.startswith("its query fails") else "dim italic"
        text.append(line, style=style)
    return text


def plan_view(result: Plan) -> RichTable:
    view = RichTable(title="plan", title_justify="left", header_style="bold")
    view.add_column("model", style="cyan", no_wrap=True)
    view.add_column("status", no_wrap=True)
    view.add_column("change", no_wrap=True)
    view.add_column("details")
    for item in result.models:
        view.add_row(
            item.model,
            Text(item.status, style=_STATUS_STYLE[item.status]),
            Text(item.change or "", style=_CHANGE_STYLE.get(item.change or "", "")),
            _details(item),
        )
    return view


def register(app: typer.Typer) -> None:
    """Add `plan` to the CLI."""

    @app.command("plan")
    def plan_command(
        ctx: typer.Context,
        select: Annotated[
            str | None,
            typer.Option(
                "--select",
                "-s",
                help="Models to show, as `lakebed run --select` takes them: name, gold.*, "
                "+name, name+, 2+name, @name, tag:x, layer:gold, materialized:x, source:x, "
                "state:modified, result:failed; "
                "spaces for their union, commas for their intersection.",
            ),
        ] = None,
        exclude: Annotated[
            str | None,
            typer.Option("--exclude", "-x", help="Models to leave out, in the same syntax."),
        ] = None,
        fmt: Annotated[
            Literal["table", "json"],
            typer.Option("--format", "-f", help="table (default) or json (on stdout only)."),
        ] = "table",
        project: ProjectOption = None,
    ) -> None:
        """Show which models changed since their last build and what rebuilds downstream.

        Each change is classified as breaking (a column removed or retyped that a
        downstream model uses) or non-breaking. Writes nothing.

        Example: [bold]lakebed plan --select silver.orders+[/bold]
        """
        with open_project(ctx, project) as lh:
            lh.validate_checks()  # a check that does not parse would fail the run
            result = plan(lh, select, exclude=exclude)
        if fmt == "json":
            json.dump(result.to_dict(), sys.stdout, indent=2)
            sys.stdout.write("\n")
            sys.stdout.flush()
            return
        console = stdout()
        if result.models:
            console.print(plan_view(result))
        console.print(result.summary(), soft_wrap=True)
