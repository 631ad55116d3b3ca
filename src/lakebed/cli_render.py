"""How the CLI shows things: rich tables for people, JSON/CSV/Parquet for programs."""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import IO, Any

import pyarrow as pa
from rich.console import Group, RenderableType
from rich.table import Table as RichTable
from rich.text import Text

from lakebed.demo import DemoSummary
from lakebed.errors import LakebedError
from lakebed.metastore import SchemaVersion, TableRecord

__all__ = [
    "catalog_view",
    "columns_view",
    "demo_view",
    "error_text",
    "history_view",
    "human_size",
    "iso_utc",
    "json_rows",
    "relative_time",
    "schema_history_view",
    "tables_view",
    "write_csv",
    "write_json",
    "write_parquet",
]

# -- small formats -----------------------------------------------------------------------------


def human_size(size: int | None) -> str:
    """Bytes as people read them: 1.5 KiB, 21.1 MiB."""
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def iso_utc(moment: datetime | None, *, millis: bool = False) -> str:
    if moment is None:
        return ""
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds" if millis else "seconds")
    return text.replace("+00:00", "Z")


def relative_time(moment: datetime | None, now: datetime | None = None) -> str:
    """`3 min ago`, `2 h ago`, `5 days ago`; the ISO date past a month."""
    if moment is None:
        return ""
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    if seconds < 0:
        return iso_utc(moment)
    for limit, unit, size in ((60, "s", 1), (3600, "min", 60), (86_400, "h", 3600)):
        if seconds < limit:
            return f"{int(seconds // size)} {unit} ago"
    days = int(seconds // 86_400)
    if days <= 31:
        return f"{days} day{'s' if days != 1 else ''} ago"
    return iso_utc(moment)


def _count(value: Any) -> str:
    return "" if value is None else f"{int(value):,}"


def error_text(exc: LakebedError) -> Text:
    """`error: <message>` in red, then the hint on its own line."""
    text = Text("error: ", style="bold red")
    text.append(exc.message, style="red")
    if exc.hint:
        text.append("\nhint: ", style="bold yellow")
        text.append(exc.hint, style="yellow")
    return text


# -- catalog -----------------------------------------------------------------------------------


def tables_view(records: Iterable[TableRecord], *, iso: bool = False) -> RichTable:
    """The catalog as a table: one row per lakehouse table."""
    view = RichTable(header_style="bold")
    view.add_column("table", no_wrap=True, style="cyan")
    view.add_column("rows", justify="right", no_wrap=True)
    view.add_column("size", justify="right", no_wrap=True)
    view.add_column("version", justify="right", no_wrap=True)
    view.add_column("owner (domain)")
    view.add_column("last write", no_wrap=True)
    view.add_column("description")
    for record in records:
        owner = record.owner or ""
        if record.domain:
            owner = f"{owner} ({record.domain})" if owner else f"({record.domain})"
        when = iso_utc(record.last_write_at) if iso else relative_time(record.last_write_at)
        view.add_row(
            record.name,
            _count(record.row_count),
            human_size(record.size_bytes),
            Text("view", style="dim")
            if record.view_sql is not None
            else ("" if record.version is None else str(record.version)),
            Text(owner),
            when,
            Text(record.description or "", style="dim"),
        )
    return view


def catalog_view(record: TableRecord) -> RichTable:
    """One table's catalog entry as `field  value` lines."""
    grid = RichTable.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    last_write = iso_utc(record.last_write_at)
    if last_write and record.last_operation:
        last_write += f" ({record.last_operation})"
    fields: list[tuple[str, str]] = [
        ("table", record.name),
        ("layer", record.layer),
        ("domain", record.domain or ""),
        ("owner", record.owner or ""),
        ("description", record.description or ""),
        ("tags", ", ".join(record.tags)),
        ("location", record.path),
        ("version", "" if record.version is None else str(record.version)),
        ("rows", _count(record.row_count)),
        ("size", human_size(record.size_bytes)),
        ("created", iso_utc(record.created_at)),
        ("last write", last_write),
        ("partitioned by", ", ".join(record.partition_by) or "(not partitioned)"),
    ]
    for key, value in record.properties.items():
        fields.append((f"property {key}", value))
    for key, value in fields:
        grid.add_row(key, Text(value))
    return grid


def columns_view(
    schema: pa.Schema, partition_by: list[str], descriptions: dict[str, str] | None = None
) -> RichTable:
    view = RichTable(title="columns", title_justify="left", header_style="bold")
    view.add_column("#", justify="right", style="dim")
    view.add_column("column", style="cyan", no_wrap=True)
    view.add_column("type")
    view.add_column("nullable")
    if descriptions:
        view.add_column("description")
    for index, field in enumerate(schema, start=1):
        name = Text(field.name)
        if field.name in partition_by:
            name.append(" (partition)", style="dim")
        cells: list[str | Text] = [
            str(index),
            name,
            Text(str(field.type)),
            "yes" if field.nullable else "no",
        ]
        if descriptions:
            cells.append(Text(descriptions.get(field.name, ""), style="dim"))
        view.add_row(*cells)
    return view


def schema_history_view(history: list[SchemaVersion]) -> RenderableType:
    """Each schema with the table version where it appeared, and what changed."""
    lines: list[RenderableType] = [Text("schema history", style="bold")]
    if not history:
        lines.append(Text("  (not recorded)", style="dim"))
    previous: dict[str, str] = {}
    for entry in history:
        columns = {str(c["name"]): str(c["type"]) for c in entry.columns}
        head = Text(f"  version {entry.table_version}", style="cyan")
        head.append(f"  {iso_utc(entry.recorded_at)}  {len(columns)} columns", style="dim")
        lines.append(head)
        changes = [f"+ {name} {kind}" for name, kind in columns.items() if name not in previous]
        if not previous:
            changes = [", ".join(columns)]
        changes += [f"- {name}" for name in previous if name not in columns]
        changes += [
            f"~ {name}: {previous[name]} -> {kind}"
            for name, kind in columns.items()
            if name in previous and previous[name] != kind
        ]
        lines.extend(Text(f"      {change}") for change in changes)
        previous = columns
    return Group(*lines)


# -- history -----------------------------------------------------------------------------------

_PARAMETERS = {
    "mode": "mode",
    "partitionBy": "partition by",
    "predicate": "where",
    "mergePredicate": "merge on",
    "version": "to version",
    "timestamp": "to time",
    "zOrderBy": "z-order by",
    "targetSize": "target size",
}
_METRICS = {
    "rows added": ("num_added_rows", "num_target_rows_inserted", "num_inserted_rows"),
    "rows deleted": ("num_deleted_rows", "num_target_rows_deleted"),
    "rows updated": ("num_updated_rows", "num_target_rows_updated"),
    "files added": (
        "num_added_files",
        "numFilesAdded",
        "num_target_files_added",
        "numRestoredFile",
    ),
    "files removed": (
        "num_removed_files",
        "numFilesRemoved",
        "num_target_files_removed",
        "numRemovedFile",
    ),
}


def _metric(metrics: Mapping[str, Any], keys: tuple[str, ...]) -> str:
    for key in keys:
        if metrics.get(key) is not None:
            return _count(metrics[key])
    return ""


def _parameters(parameters: Mapping[str, Any]) -> str:
    shown = []
    for key, label in _PARAMETERS.items():
        value = parameters.get(key)
        if value is None or str(value) in ("", "[]", "null"):
            continue
        text = str(value)
        if key == "partitionBy":
            with contextlib.suppress(ValueError, TypeError):
                text = ", ".join(json.loads(text))
        shown.append(f"{label}={text}")
    return "; ".join(shown)


def history_view(entries: list[dict[str, Any]]) -> RichTable:
    """Commits newest first, with the parameters and metrics worth reading."""
    view = RichTable(header_style="bold")
    view.add_column("version", justify="right", style="cyan", no_wrap=True)
    view.add_column("timestamp (UTC)", no_wrap=True)
    view.add_column("operation", no_wrap=True)
    view.add_column("parameters", overflow="fold", min_width=16)
    # Only the metric columns some commit has a value for.
    metrics_shown = {
        label: keys
        for label, keys in _METRICS.items()
        if any(_metric(e.get("operationMetrics") or {}, keys) for e in entries)
    }
    for label in metrics_shown:
        view.add_column(label, justify="right")
    for entry in entries:
        stamp = entry.get("timestamp")
        moment = None
        if stamp is not None:
            # Milliseconds: commits within the same second stay apart for --as-of.
            moment = datetime.fromtimestamp(stamp // 1000, UTC)
            moment += timedelta(milliseconds=stamp % 1000)
        metrics = entry.get("operationMetrics") or {}
        view.add_row(
            str(entry.get("version", "")),
            iso_utc(moment, millis=True),
            str(entry.get("operation", "")),
            Text(_parameters(entry.get("operationParameters") or {})),
            *(_metric(metrics, keys) for keys in metrics_shown.values()),
        )
    return view


# -- demo --------------------------------------------------------------------------------------


def demo_view(summary: DemoSummary) -> RichTable:
    view = RichTable(title="built", title_justify="left", header_style="bold")
    view.add_column("table", style="cyan", no_wrap=True)
    view.add_column("rows", justify="right")
    view.add_column("files", justify="right")
    view.add_column("size", justify="right")
    for table in summary.tables:
        size = human_size(table.size_bytes)
        view.add_row(table.name, f"{table.rows:,}", f"{table.files:,}", size)
    return view


# -- machine-readable output -------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A Python value as JSON can hold it (Decimal is kept for `_encode`)."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        # Arrow maps arrive as lists of (key, value) pairs.
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
            return {str(k): _plain(v) for k, v in value}
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str | Decimal):
        return value
    return str(value)


def _encode(value: Any) -> str:
    """JSON text of one value; decimals are written as exact JSON numbers."""
    if isinstance(value, Decimal):
        return str(value) if value.is_finite() else "null"
    if isinstance(value, dict):
        items = (f"{json.dumps(k, ensure_ascii=False)}:{_encode(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_encode(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def json_rows(table: pa.Table) -> Iterable[str]:
    """One JSON object per row, as text."""
    keys = [json.dumps(name, ensure_ascii=False) for name in table.column_names]
    for batch in table.to_batches(max_chunksize=10_000):
        columns = [[_encode(_plain(v)) for v in column.to_pylist()] for column in batch.columns]
        for row in zip(*columns, strict=True):
            yield "{" + ",".join(f"{k}:{v}" for k, v in zip(keys, row, strict=True)) + "}"


def write_json(table: pa.Table, out: IO[str], *, lines: bool) -> None:
    """A JSON array of row objects, or one object per line (`lines`)."""
    if lines:
        for row in json_rows(table):
            out.write(row + "\n")
        return
    out.write("[")
    for index, row in enumerate(json_rows(table)):
        out.write(("," if index else "") + "\n" + row)
    out.write("\n]\n" if table.num_rows else "]\n")


def _csv_ready(table: pa.Table) -> pa.Table:
    """Columns CSV cannot hold as they are: nested as JSON text, binary as base64."""
    converters: dict[str, Callable[[Any], str | None]] = {}
    for field in table.schema:
        kind = field.type
        if pa.types.is_nested(kind):
            converters[field.name] = lambda v: None if v is None else _encode(_plain(v))
        elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            converters[field.name] = lambda v: None if v is None else _plain(v)
    for name, convert in converters.items():
        index = table.column_names.index(name)
        values = [convert(v) for v in table.column(name).to_pylist()]
        table = table.set_column(index, name, pa.array(values, pa.string()))
    return table


def write_csv(table: pa.Table, out: IO[bytes]) -> None:
    import pyarrow.csv as pacsv

    pacsv.write_csv(_csv_ready(table), out)


def write_parquet(table: pa.Table, path: str | os.PathLike[str]) -> None:
    import pyarrow.parquet as pq

    pq.write_table(table, path)
