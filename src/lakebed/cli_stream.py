"""`lakebed produce`, `lakebed stream` and `lakebed topics`: the real-time layer from the
terminal."""

from __future__ import annotations

import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Annotated

import typer
from rich.live import Live
from rich.table import Table as RichTable
from rich.text import Text

from lakebed import cli_render as render
from lakebed import demo_stream
from lakebed.bus.records import ndjson_records, rejected_lines_error
from lakebed.cli_common import ProjectOption, open_project, stderr, stdout
from lakebed.cli_schedule import stop_on_signals
from lakebed.errors import ConfigError, LakebedError
from lakebed.lakehouse import Lakehouse
from lakebed.process.stream_metrics import REGISTRY, PipelineMetrics

_STATE_STYLE = {"running": "green", "stopped": "dim", "failed": "red", "dead": "red"}


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "never"
    return render.relative_time(datetime.fromtimestamp(epoch, UTC))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:.1f} s"


def _lag(lag: dict[str, int]) -> str:
    """Records behind in all, and per partition while that stays short."""
    total = sum(lag.values())
    behind = sorted((int(p), n) for p, n in lag.items() if n)
    if not total or len(behind) > 4:
        return f"{total:,}"
    return f"{total:,} (" + ", ".join(f"p{p} {n:,}" for p, n in behind) + ")"


def status_view(statuses: list[PipelineMetrics]) -> RichTable:
    view = RichTable(title="pipelines", title_justify="left", header_style="bold")
    headers = ("pipeline", "state", "target", "events/s", "lag", "event-time delay")
    for column in (*headers, "in", "out", "late", "quarantined", "last commit"):
        right = column not in ("pipeline", "state", "target", "last commit")
        view.add_column(column, justify="right" if right else "left", no_wrap=True)
    for s in statuses:
        view.add_row(
            Text(s.pipeline, style="cyan"),
            Text(s.state, style=_STATE_STYLE.get(s.state, "yellow")),
            s.target,
            f"{s.events_per_second:,.0f}",
            Text(_lag(s.lag), style="yellow" if s.total_lag else ""),
            _duration(s.watermark_delay_seconds),
            f"{s.events_in:,}",
            f"{s.rows_out:,}",
            Text(f"{s.late:,}", style="yellow" if s.late else ""),
            Text(f"{s.quarantined:,}", style="yellow" if s.quarantined else ""),
            _when(s.last_commit_at),
        )
    return view


def _running(names: list[str]) -> list[PipelineMetrics]:
    return [s for s in REGISTRY.snapshot() if s.pipeline in names]


def _produce_file(
    lh: Lakehouse, topic: str, stream: IO[bytes], source: str, key: str | None
) -> int:
    producer = lh.bus.producer()
    produced = 0
    bad: list[tuple[int, str]] = []
    try:
        for records, rejected in ndjson_records(stream, key=key):
            bad.extend(rejected)
            if records:
                producer.produce(topic, records)
                produced += len(records)
        producer.flush()
    finally:
        producer.close()
    if bad:
        raise rejected_lines_error(source, bad, produced)
    return produced


def register(app: typer.Typer) -> None:
    """Add the streaming commands to the CLI."""

    @app.command()
    def produce(
        ctx: typer.Context,
        topic: Annotated[str, typer.Argument(help="The topic to send to.")],
        file: Annotated[
            str,
            typer.Argument(metavar="[FILE|-]", help="NDJSON events, one per line (- is stdin)."),
        ] = "-",
        key: Annotated[
            str | None,
            typer.Option("--key", "-k", metavar="FIELD", help="Field whose value keys events."),
        ] = None,
        project: ProjectOption = None,
    ) -> None:
        """Send NDJSON events to a topic of the project's bus (one JSON object per line).

        Lines that are not JSON objects (or lack the --key field) are rejected and listed
        with their line numbers; the exit code is then 1.

        Example: [bold]lakebed produce orders events.ndjson --key order_id[/bold]
        """
        started = time.perf_counter()
        with open_project(ctx, project) as lh:
            if file == "-":
                produced = _produce_file(lh, topic, sys.stdin.buffer, "<stdin>", key)
            else:
                path = Path(file)
                if not path.is_file():
                    raise ConfigError(f"{file}: no such file", hint="give an NDJSON file or -")
                with path.open("rb") as stream:
                    produced = _produce_file(lh, topic, stream, file, key)
        seconds = time.perf_counter() - started
        stderr().print(f"produced {produced:,} events to {topic} in {seconds:.2f} s")

    @app.command()
    def stream(
        ctx: typer.Context,
        names: Annotated[
            list[str] | None,
            typer.Argument(metavar="[NAME]...", help="Pipelines to run (default: all)."),
        ] = None,
        status: Annotated[
            bool, typer.Option("--status", help="Show each pipeline's state and lag, then exit.")
        ] = False,
        until_caught_up: Annotated[
            bool,
            typer.Option(
                "--until-caught-up", help="Exit once everything on the topics is processed."
            ),
        ] = False,
        project: ProjectOption = None,
    ) -> None:
        """Run stream pipelines continuously: topic → streaming SQL → Delta table, exactly once.

        SIGTERM or Ctrl-C finishes the batch in progress, commits it and exits 0.

        Pipelines are declared in lakebed.yml under `pipelines:`; windows are written in SQL:
        TUMBLE(topic.NAME, ts, INTERVAL '1 minute'), HOP(topic.NAME, ts, slide, size) or
        SESSION(topic.NAME, ts, gap, key...).

        Example: [bold]lakebed stream revenue_per_minute[/bold]
        """
        with open_project(ctx, project) as lh:
            if status:
                statuses = lh.stream_status()
                if not statuses:
                    stdout().print("no pipeline has run yet; start them with `lakebed stream`")
                    return
                stdout().print(status_view(statuses))
                return
            stop = threading.Event()
            chosen = names or sorted(lh.pipelines())
            failed: list[LakebedError] = []

            def work() -> None:
                try:
                    lh.stream(chosen, stop=stop, until_caught_up=until_caught_up)
                except LakebedError as exc:
                    failed.append(exc)
                    stop.set()

            console = stderr()
            with stop_on_signals(stop):
                runner = threading.Thread(target=work, name="lakebed-stream")
                runner.start()
                if console.is_terminal:
                    with Live(console=console, refresh_per_second=2, transient=False) as live:
                        while runner.is_alive():
                            runner.join(0.5)
                            live.update(status_view(_running(chosen)))
                else:  # a log, not a screen: one table at the end
                    runner.join()
                    stdout().print(status_view(_running(chosen)))
            if failed:
                console.print(render.error_text(failed[0]), soft_wrap=True)
                raise typer.Exit(1)

    @app.command()
    def topics(
        ctx: typer.Context,
        create: Annotated[
            str | None, typer.Option("--create", metavar="NAME", help="Create a topic.")
        ] = None,
        partitions: Annotated[
            int, typer.Option("--partitions", min=1, help="Partitions of a created topic.")
        ] = 1,
        retention_hours: Annotated[
            float | None,
            typer.Option("--retention-hours", help="Keep records this long (default: forever)."),
        ] = None,
        project: ProjectOption = None,
    ) -> None:
        """List the bus's topics with partitions, records kept and retention; or create one.

        Example: [bold]lakebed topics --create orders --partitions 4[/bold]
        """
        with open_project(ctx, project) as lh:
            bus = lh.bus
            if create is not None:
                retention_ms = None if retention_hours is None else int(retention_hours * 3.6e6)
                bus.create_topic(create, partitions, retention_ms=retention_ms)
            view = RichTable(title=f"topics on {bus.url}", title_justify="left")
            for column in ("topic", "partitions", "records", "first offsets", "retention"):
                view.add_column(column, justify="left" if column == "topic" else "right")
            for name, info in sorted(bus.topics().items()):
                if name.startswith("__"):
                    continue  # Kafka's own
                starts, ends = bus.start_offsets(name), bus.end_offsets(name)
                kept = sum(ends[p] - starts.get(p, 0) for p in ends)
                retention = (
                    "forever" if info.retention_ms is None else f"{info.retention_ms / 3.6e6:g} h"
                )
                view.add_row(
                    Text(name, style="cyan"),
                    str(info.partitions),
                    f"{kept:,}",
                    ", ".join(str(starts[p]) for p in sorted(starts)),
                    retention,
                )
            stdout().print(view)

    @app.command("demo-events")
    def demo_events(
        ctx: typer.Context,
        rate: Annotated[float, typer.Option("--rate", min=0.1, help="Events per second.")] = 50.0,
        count: Annotated[
            int | None, typer.Option("--count", min=1, help="Stop after this many events.")
        ] = None,
        project: ProjectOption = None,
    ) -> None:
        """Send the shop demo's live checkout events to its order_events topic until Ctrl-C.

        Events are stamped now; watch them with `lakebed stream` in another terminal.

        Example: [bold]lakebed -p demo-shop demo-events --rate 200[/bold]
        """
        stop = threading.Event()
        started = time.perf_counter()
        with open_project(ctx, project) as lh, stop_on_signals(stop):
            stderr().print(f"sending {rate:g} events/s to {demo_stream.TOPIC} (Ctrl-C stops)")
            sent = demo_stream.produce_live(lh.bus, rate=rate, stop=stop, limit=count)
        seconds = time.perf_counter() - started
        stderr().print(f"sent {sent:,} events in {seconds:.1f} s")
