"""Pieces every CLI module shares: consoles, the --project option, opening a project."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console

import lakebed
from lakebed.config import CONFIG_FILE
from lakebed.errors import ConfigError
from lakebed.lakehouse import PROJECT_ENV, Lakehouse, project_dir


def stdout() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Piped into a file or a pager: 80 columns would squash the wide tables.
        console = Console(highlight=False, width=160)
    return console


def stderr() -> Console:
    return Console(stderr=True, highlight=False)


ProjectOption = Annotated[
    Path | None,
    typer.Option(
        "--project",
        "-p",
        metavar="DIR",
        help="Project folder (default: $LAKEBED_PROJECT, else the current folder).",
        show_default=False,
    ),
]
TableArgument = Annotated[str, typer.Argument(metavar="TABLE", help="A table as layer.name.")]
OutputFormat = Literal["table", "json"]
FormatOption = Annotated[
    OutputFormat,
    typer.Option("--format", "-f", help="table (default) or json (on stdout, for scripts)."),
]


def print_json(value: Any) -> None:
    """Write `value` (dataclasses, lists, dicts; times as ISO 8601) to stdout as JSON."""
    json.dump(_plain(value), sys.stdout, indent=2, default=_json_default)
    sys.stdout.write("\n")
    sys.stdout.flush()


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def open_project(ctx: typer.Context, project: Path | None) -> Lakehouse:
    root = project_dir(project if project is not None else ctx.obj)
    # Refuse rather than create a metastore in whatever folder a typo or a wrong cwd names.
    if not (root / CONFIG_FILE).is_file():
        raise ConfigError(
            f"{root} is not a lakebed project (it has no {CONFIG_FILE})",
            hint=f"create one with `lakebed init {root}`, or pass --project DIR "
            f"or set {PROJECT_ENV}",
        )
    return lakebed.open(root)
