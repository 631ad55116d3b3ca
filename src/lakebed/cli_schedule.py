"""`lakebed scheduler`: build models when their schedules come due, until stopped."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from types import FrameType
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table as RichTable
from rich.text import Text

from lakebed import cli_render as render
from lakebed.cli_common import (
    FormatOption,
    ProjectOption,
    open_project,
    print_json,
    stderr,
    stdout,
)
from lakebed.orchestrate.schedule import (
    SCHEDULES_FILE,
    Report,
    ScheduledRun,
    Scheduler,
    scheduler_lease,
)

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_NOTHING_SCHEDULED = (
    'nothing is scheduled: add `schedule: "0 * * * *"` to a model\'s .yml, '
    f"or groups to {SCHEDULES_FILE}"
)


def _schedules_view(scheduler: Scheduler, now: datetime) -> RichTable:
    view = RichTable(title="schedules (UTC)", title_justify="left", header_style="bold")
    for column in ("schedule", "cron", "select", "missed", "last due", "next due"):
        view.add_column(column, no_wrap=column != "select")
    for schedule in scheduler.schedules:
        last = scheduler.last_due(schedule)
        pending = scheduler.pending(schedule, now)
        upcoming: str | Text = render.iso_utc(scheduler.next_due(schedule, now))
        if pending:  # the scheduler runs these first, at its next look
            more = f" and {len(pending) - 1} more" if len(pending) > 1 else ""
            upcoming = Text(f"now: {render.iso_utc(pending[0])}{more}", style="yellow")
        view.add_row(
            Text(schedule.name, style="cyan"),
            schedule.cron,
            schedule.select,
            schedule.missed.replace("_", " "),
            render.iso_utc(last) if last is not None else Text("never", style="dim"),
            upcoming,
        )
    return view


def _report_to(console: Console) -> Report:
    def report(event: Literal["started", "finished"], run: ScheduledRun) -> None:
        due = render.iso_utc(run.due)
        name = run.schedule.name
        if event == "started":
            console.print(
                Text(f"{due}  {name}: building {run.schedule.select}", style="dim"),
                soft_wrap=True,
            )
            return
        nodes = run.summary.nodes if run.summary is not None else []
        built = sum(1 for n in nodes if n.status in ("success", "up_to_date"))
        rows = sum(n.rows for n in nodes)
        line = Text(f"{due}  {name}: ")
        line.append(run.status, style="green" if run.status == "success" else "red")
        line.append(f", {built} of {len(nodes)} models, {rows:,} rows in {run.seconds:.2f} s")
        if run.error:
            line.append(f": {run.error}", style="red")
        console.print(line, soft_wrap=True)

    return report


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM or SIGINT set `stop` (the run in progress finishes and is recorded); a second
    one aborts the run in progress with KeyboardInterrupt (recorded as failed)."""

    def handle(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            raise KeyboardInterrupt(f"aborted by a second {name}")
        stop.set()
        note = f"{name}: stopping after the run in progress (again to abort it)\n"
        # os.write, not print: the signal may have arrived in the middle of a print.
        with suppress(OSError, ValueError):
            os.write(sys.stderr.fileno(), note.encode())

    previous = {sig: signal.signal(sig, handle) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def register(app: typer.Typer) -> None:
    """Add the `schedules` and `scheduler` commands to the CLI."""

    @app.command("schedules")
    def schedules_command(
        ctx: typer.Context, fmt: FormatOption = "table", project: ProjectOption = None
    ) -> None:
        """List the schedules: cron, what they build, missed-run policy, last and next due.

        Example: [bold]lakebed schedules[/bold]
        """
        with open_project(ctx, project) as lh:
            scheduler = Scheduler(lh)
            now = scheduler.now()
            if fmt == "json":
                print_json(
                    [
                        {
                            "schedule": s.name,
                            "cron": s.cron,
                            "select": s.select,
                            "exclude": s.exclude,
                            "missed": s.missed,
                            "last_due": scheduler.last_due(s),
                            "next_due": scheduler.next_due(s, now),
                            "due_now": scheduler.pending(s, now),
                            "file": s.file,
                        }
                        for s in scheduler.schedules
                    ]
                )
                return
            if not scheduler.schedules:
                stdout().print(_NOTHING_SCHEDULED, soft_wrap=True)
                return
            stdout().print(_schedules_view(scheduler, now))

    @app.command("scheduler")
    def scheduler_command(
        ctx: typer.Context,
        once: Annotated[
            bool, typer.Option("--once", help="Run what is due now, then exit.")
        ] = False,
        poll: Annotated[
            float,
            typer.Option(
                "--poll",
                metavar="SECONDS",
                min=0.01,
                help="Look for due work at least this often (and at each next due time).",
            ),
        ] = 30.0,
        workers: Annotated[int, typer.Option("--workers", min=1, help="Parallel builds.")] = 2,
        project: ProjectOption = None,
    ) -> None:
        """Build models when their schedules come due, until SIGTERM or Ctrl-C.

        Schedules are a model's [bold]schedule:[/bold] (a cron expression in its .yml) and
        the groups of [bold]schedules.yml[/bold]. A stop signal lets the run in progress
        finish and be recorded, then exits 0.

        Example: [bold]lakebed scheduler --once[/bold]
        """
        out, err = stdout(), stderr()
        with open_project(ctx, project) as lh:
            scheduler = Scheduler(
                lh,
                workers=workers,
                report=_report_to(out),
                warn=lambda message: err.print(Text(f"warning: {message}", style="yellow")),
            )
            if not scheduler.schedules:
                out.print(_NOTHING_SCHEDULED, soft_wrap=True)
                return
            out.print(_schedules_view(scheduler, scheduler.now()))
            stop = threading.Event()
            if once:
                with stop_on_signals(stop):
                    runs = scheduler.tick(stop=stop)
                if not runs:
                    out.print("nothing is due")
                if any(run.status != "success" for run in runs):
                    raise typer.Exit(1)
                return
            with scheduler_lease(lh), stop_on_signals(stop):
                err.print(
                    f"scheduler running (checks at least every {poll:g} s); "
                    "stop with Ctrl-C or SIGTERM",
                    soft_wrap=True,
                )
                scheduler.run_forever(stop, poll_seconds=poll)
        err.print("scheduler stopped")
