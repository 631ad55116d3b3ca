"""The `lakebed` command: parses arguments, calls the public API, renders the result.

Every command takes `--project/-p DIR` (default: $LAKEBED_PROJECT, else the current folder),
before or after the command name. A `LakebedError` is printed as `error: ...` on stderr with
exit code 1; machine-readable output (json, ndjson, csv) is the only thing on stdout.
"""

import gc
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import pyarrow as pa
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.syntax import Syntax
from rich.text import Text

import lakebed
from lakebed import cli_ingest, cli_plan, cli_schedule, cli_stream, cli_transform
from lakebed import cli_render as render
from lakebed.cli_common import ProjectOption, TableArgument, open_project, stderr, stdout
from lakebed.config import CONFIG_FILE, STATE_DIR
from lakebed.demo import build_shop
from lakebed.errors import LakebedError
from lakebed.lakehouse import COLUMN_PROPERTY
from lakebed.process import render_table

Format = Literal["table", "csv", "json", "ndjson", "parquet"]
_SUFFIX_FORMATS: dict[str, Format] = {
    ".csv": "csv",
    ".json": "json",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_TABLE_ROWS = 50


class _Group(typer.core.TyperGroup):
    """Reports a `LakebedError` from any command as `error: ...` on stderr, exit code 1."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except LakebedError as exc:
            stderr().print(render.error_text(exc), soft_wrap=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    name="lakebed",
    cls=_Group,
    help="lakebed: a Delta Lake lakehouse with bronze, silver and gold layers on one machine.\n\n"
    "Start with [bold]lakebed demo[/bold], then [bold]lakebed -p demo-shop tables[/bold].",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"lakebed {lakebed.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    project: ProjectOption = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    ctx.obj = project


def _next_steps(console: Console, commands: list[str]) -> None:
    console.print("\nnext, try:", style="bold")
    for command in commands:
        console.print(Text(f"  {command}", style="green"), soft_wrap=True)


# -- project -----------------------------------------------------------------------------------


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Folder for the new project.")],
) -> None:
    """Create a new project folder (lakebed.yml, model folders, metastore).

    Example: [bold]lakebed init my-lake[/bold]
    """
    root = lakebed.init_project(directory)
    console = stdout()
    console.print(Text(f"created project {root.name} in {root}", style="bold"), soft_wrap=True)
    for made in (CONFIG_FILE, ".gitignore", "models/bronze/", "models/silver/", "models/gold/"):
        console.print(f"  {made}")
    console.print(f"  {STATE_DIR}/metastore.db  (the catalog)")
    where = shlex.quote(str(directory))
    _next_steps(
        console,
        [
            f"lakebed -p {where} tables",
            f'lakebed -p {where} sql "select 42 as answer"',
            "lakebed demo demo-shop   # a complete sample lakehouse",
        ],
    )


def _clear_for_demo(target: Path, force: bool) -> None:
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        return
    if not target.is_dir():
        raise LakebedError(f"{target} exists and is not a folder", hint="choose another path")
    if not force:
        raise LakebedError(
            f"{target} is not empty",
            hint="choose a new folder, or pass --force to delete everything in it first",
        )
    cwd = Path.cwd().resolve()
    if target in (cwd, Path.home().resolve()) or target in cwd.parents:
        raise LakebedError(
            f"refusing to wipe {target}: it is the current folder, one of its parents or home",
            hint="name a folder of its own, e.g. lakebed demo demo-shop --force",
        )
    shutil.rmtree(target)


@app.command()
def demo(
    directory: Annotated[
        Path, typer.Argument(metavar="DIR", help="Folder to build the demo in.")
    ] = Path("demo-shop"),
    force: Annotated[
        bool, typer.Option("--force", help="Delete everything in DIR first if it is not empty.")
    ] = False,
    orders: Annotated[int, typer.Option(min=1, help="How many orders to generate.")] = 1_000_000,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same data.")] = 7,
) -> None:
    """Build the shop demo: a year of orders through bronze, silver, quarantine and gold.

    Example: [bold]lakebed demo demo-shop[/bold]
    """
    target = directory.expanduser().resolve()
    _clear_for_demo(target, force)
    started = time.perf_counter()
    columns = (TextColumn("{task.description:<32}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=stderr(), transient=True) as bar:
        task = bar.add_task("starting", total=None)

        def progress(step: str, done: int, total: int) -> None:
            bar.update(task, description=step, completed=done, total=total)

        summary = build_shop(target, orders=orders, seed=seed, progress=progress)
    elapsed = time.perf_counter() - started
    console = stdout()
    console.print(
        Text(f"built the shop demo in {target} in {elapsed:.1f} s", style="bold"), soft_wrap=True
    )
    console.print(render.demo_view(summary))
    with lakebed.open(target) as lh:
        result = lh.sql(summary.sample_query)
    console.print("\nsample gold query:", style="bold")
    console.print(
        Syntax(summary.sample_query, "sql", theme="ansi_dark", background_color="default")
    )
    console.print(render_table(result.table, max_rows=_TABLE_ROWS))
    where = shlex.quote(str(directory))
    _next_steps(
        console,
        [
            f"lakebed -p {where} tables",
            f"lakebed -p {where} describe silver.orders",
            f"lakebed -p {where} history bronze.orders",
            f'lakebed -p {where} sql "select _check, _reason, count(*) as n '
            'from quarantine.silver_orders group by all"',
            f"lakebed -p {where} sources",
            f"lakebed -p {where} checks",
            f"lakebed -p {where} checks --run   # judge the bronze tables of lakebed.yml now",
            f"lakebed -p {where} lineage gold.daily_revenue",
            f'lakebed -p {where} sql --as-of 1 "select count(*) from bronze.orders"',
            f'lakebed -p {where} sql --format json "select * from gold.product_sales limit 3"',
            f"lakebed -p {where} stream --status",
            f'lakebed -p {where} sql "select * from gold.revenue_per_minute limit 5"',
            f"lakebed -p {where} demo-events   # live events; `lakebed stream` in another terminal",
        ],
    )


# -- catalog -----------------------------------------------------------------------------------


@app.command()
def tables(
    ctx: typer.Context,
    layer: Annotated[
        str | None,
        typer.Option("--layer", "-l", help="Only this layer: bronze, silver, gold, quarantine."),
    ] = None,
    iso: Annotated[bool, typer.Option("--iso", help="Show last writes as ISO timestamps.")] = False,
    project: ProjectOption = None,
) -> None:
    """List the tables in the catalog with rows, size, version, owner and last write.

    Example: [bold]lakebed tables --layer gold[/bold]
    """
    with open_project(ctx, project) as lh:
        records = lh.tables(layer)
    console = stdout()
    if not records:
        where = f"in layer {layer}" if layer else "yet"
        console.print(f"no tables {where}; `lakebed demo` builds a sample lakehouse")
        return
    console.print(render.tables_view(records, iso=iso))


@app.command()
def describe(ctx: typer.Context, table: TableArgument, project: ProjectOption = None) -> None:
    """Show a table's catalog entry, columns, partitioning, properties and schema history.

    Example: [bold]lakebed describe silver.orders[/bold]
    """
    with open_project(ctx, project) as lh:
        record = lh.describe(table)
        schema = lh.schema(table)
        history = lh.schema_history(record.name)
    console = stdout()
    console.print(render.catalog_view(record))
    console.print()
    descriptions = {
        key.removeprefix(COLUMN_PROPERTY): value
        for key, value in record.properties.items()
        if key.startswith(COLUMN_PROPERTY)
    }
    console.print(render.columns_view(schema, record.partition_by, descriptions))
    console.print()
    console.print(render.schema_history_view(history))


@app.command()
def history(
    ctx: typer.Context,
    table: TableArgument,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", min=1, help="Show only the latest N commits.")
    ] = None,
    project: ProjectOption = None,
) -> None:
    """Show a table's commits, newest first: operation, parameters, rows and files changed.

    Example: [bold]lakebed history bronze.orders --limit 5[/bold]
    """
    with open_project(ctx, project) as lh:
        entries = lh.table(table).history(limit)
    stdout().print(render.history_view(entries))


# -- SQL ---------------------------------------------------------------------------------------


def _choose_format(fmt: Format | None, output: Path | None) -> Format:
    if fmt is None:
        if output is None:
            return "table"
        inferred = _SUFFIX_FORMATS.get(output.suffix.lower())
        if inferred is None:
            raise typer.BadParameter(
                f"cannot tell the format from {output.name!r}; pass --format",
                param_hint="'--output'",
            )
        return inferred
    if fmt == "parquet" and output is None:
        raise typer.BadParameter("--format parquet needs --output FILE", param_hint="'--format'")
    if fmt == "table" and output is not None:
        raise typer.BadParameter(
            "--output needs --format csv, json, ndjson or parquet", param_hint="'--output'"
        )
    return fmt


def _emit(table: pa.Table, fmt: Format, output: Path | None) -> None:
    try:
        _write(table, fmt, output)
    except OSError as exc:
        raise LakebedError(
            f"cannot write {output or 'to stdout'}: {exc.strerror or exc}",
            hint="check that the folder exists and is writable",
        ) from exc


def _write(table: pa.Table, fmt: Format, output: Path | None) -> None:
    if fmt == "parquet":
        assert output is not None  # _choose_format requires it
        render.write_parquet(table, output)
    elif fmt == "csv":
        if output is None:
            sys.stdout.flush()
            render.write_csv(table, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        else:
            with output.open("wb") as sink:
                render.write_csv(table, sink)
    elif output is None:
        render.write_json(table, sys.stdout, lines=fmt == "ndjson")
        sys.stdout.flush()
    else:
        with output.open("w", encoding="utf-8") as sink:
            render.write_json(table, sink, lines=fmt == "ndjson")


@app.command()
def sql(
    ctx: typer.Context,
    query: Annotated[
        str, typer.Argument(metavar="QUERY", help="A read-only SQL query, or - to read stdin.")
    ],
    fmt: Annotated[
        Format | None,
        typer.Option(
            "--format",
            "-f",
            help="table (default), csv, json, ndjson or parquet; "
            "with --output, taken from the file suffix when not given.",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", metavar="FILE", help="Write to FILE.")
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            metavar="VERSION|TIMESTAMP",
            help="Read every table as of a version (3) or an ISO timestamp (2025-06-01T12:00Z).",
        ),
    ] = None,
    max_rows: Annotated[
        int | None,
        typer.Option(
            "--max-rows",
            min=0,
            help=f"Output at most N rows (default: all; {_TABLE_ROWS} for --format table).",
        ),
    ] = None,
    project: ProjectOption = None,
) -> None:
    """Run a SQL query (DuckDB dialect) over one snapshot of each table; tables are layer.name.

    Examples:

      [bold]lakebed sql "select country, sum(revenue) from gold.daily_revenue group by 1"[/bold]

      [bold]lakebed sql --format json --as-of 2 "select * from silver.orders limit 10"[/bold]

      [bold]echo "select 1" | lakebed sql - --format csv[/bold]
    """
    chosen = _choose_format(fmt, output)
    text = sys.stdin.read() if query == "-" else query
    started = time.perf_counter()
    with open_project(ctx, project) as lh:
        result = lh.sql(text, as_of=as_of)
    elapsed = time.perf_counter() - started
    table = result.table
    if chosen == "table":
        console = stdout()
        console.print(render_table(table, max_rows=_TABLE_ROWS if max_rows is None else max_rows))
        read = [
            f"{name} v{version}" + _files_note(result.files_scanned, result.files_total, name)
            for name, version in sorted(result.versions.items())
        ]
        note = ("read " + ", ".join(read) if read else "read no tables") + f" in {elapsed:.2f} s"
        if as_of is not None:
            note += f" (as of {as_of})"
        console.print(Text(note, style="dim"), soft_wrap=True)
        return
    if max_rows is not None and table.num_rows > max_rows:
        stderr().print(f"output limited to {max_rows:,} of {table.num_rows:,} rows")
        table = table.slice(0, max_rows)
    _emit(table, chosen, output)
    if output is not None:
        stderr().print(f"wrote {table.num_rows:,} rows to {output} ({chosen})", soft_wrap=True)


def _files_note(scanned: dict[str, int], total: dict[str, int], name: str) -> str:
    if name not in total:
        return ""
    return f" ({scanned.get(name, total[name])} of {total[name]} files)"


# -- maintenance -------------------------------------------------------------------------------


@app.command()
def optimize(
    ctx: typer.Context,
    table: TableArgument,
    zorder: Annotated[
        list[str] | None,
        typer.Option(
            "--zorder",
            "-z",
            metavar="COL",
            help="Cluster by these columns (repeat, or comma-separate).",
        ),
    ] = None,
    target_size: Annotated[
        int | None,
        typer.Option("--target-size", metavar="BYTES", min=1, help="Target file size in bytes."),
    ] = None,
    project: ProjectOption = None,
) -> None:
    """Compact small files into larger ones, or Z-order them by columns.

    Example: [bold]lakebed optimize silver.orders --zorder customer_id[/bold]
    """
    columns = [c.strip() for item in zorder or [] for c in item.split(",") if c.strip()]
    with open_project(ctx, project) as lh, lh.track_run("optimize", table, zorder=columns):
        result = lh.table(table).optimize(zorder_by=columns or None, target_size=target_size)
    added = int(result.metrics.get("numFilesAdded", 0))
    removed = int(result.metrics.get("numFilesRemoved", 0))
    how = f"z-ordered by {', '.join(columns)}" if columns else "compacted"
    stdout().print(
        f"{result.table}: {how}; {added} files added, {removed} files removed; "
        f"now at version {result.version}",
        soft_wrap=True,
    )


@app.command()
def vacuum(
    ctx: typer.Context,
    table: TableArgument,
    retain_hours: Annotated[
        int | None,
        typer.Option(
            "--retain-hours",
            min=0,
            help="Keep files needed by versions newer than this (default: the table's, 168).",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be deleted; delete nothing.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Allow a retention below the table's minimum."),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="List the files.")] = False,
    project: ProjectOption = None,
) -> None:
    """Delete data files that no version inside the retention window needs.

    Example: [bold]lakebed vacuum silver.orders --retain-hours 0 --force --dry-run[/bold]
    """
    with open_project(ctx, project) as lh, lh.track_run("vacuum", table, dry_run=dry_run):
        handle = lh.table(table)
        files = handle.vacuum(
            retain_hours=retain_hours, dry_run=dry_run, enforce_retention=not force
        )
    console = stdout()
    verb = "would delete" if dry_run else "deleted"
    plural = "" if len(files) == 1 else "s"
    console.print(f"{handle.name}: {verb} {len(files)} file{plural}", soft_wrap=True)
    if verbose:
        for file in files:
            console.print(Text(f"  {file}"), soft_wrap=True)


@app.command()
def restore(
    ctx: typer.Context,
    table: TableArgument,
    version: Annotated[
        str,
        typer.Argument(metavar="VERSION", help="A version number or an ISO timestamp."),
    ],
    project: ProjectOption = None,
) -> None:
    """Make an earlier version of a table the latest one (a new commit; history is kept).

    Example: [bold]lakebed restore silver.orders 3[/bold]
    """
    with open_project(ctx, project) as lh, lh.track_run("restore", table, to=version):
        result = lh.table(table).restore(version)
    stdout().print(
        f"restored {result.table} to {version}; it is now at version {result.version}",
        soft_wrap=True,
    )


def _at_terminal() -> bool:
    """Whether someone can answer a question (stdin is a terminal)."""
    return sys.stdin.isatty()


@app.command()
def drop(
    ctx: typer.Context,
    table: TableArgument,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask; needed when not at a terminal.")
    ] = False,
    project: ProjectOption = None,
) -> None:
    """Delete a table with its files, history and catalog entry (or a view's entry).

    Nothing brings a dropped table back: its earlier versions go with it. A model's table
    is built again at the next `lakebed run`.

    Example: [bold]lakebed drop gold.old_report --yes[/bold]
    """
    with open_project(ctx, project) as lh:
        record = lh.describe(table)  # an unknown table stops here, with close matches
        what = "view" if not record.path else "table"
        if not yes:
            if not _at_terminal():
                raise LakebedError(
                    f"dropping {record.name} deletes it for good; not at a terminal to ask",
                    hint=f"pass --yes: lakebed drop {record.name} --yes",
                )
            typer.confirm(f"Delete the {what} {record.name} and all its history?", abort=True)
        with lh.track_run("drop", record.name):
            lh.drop_table(record.name)
    stdout().print(f"dropped the {what} {record.name}", soft_wrap=True)


cli_ingest.register(app)
cli_transform.register(app)
cli_plan.register(app)
cli_schedule.register(app)
cli_stream.register(app)


def main() -> None:
    """Entry point of the `lakebed` console script."""
    # The modules imported so far (a few hundred thousand objects) live until exit: frozen,
    # the garbage collector no longer walks them in every full collection, nor at exit,
    # which cost a command a fifth of a second.
    gc.freeze()
    try:
        app()
    except LakebedError as exc:  # raised outside a command, e.g. by a parameter callback
        stderr().print(render.error_text(exc), soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
