"""The `pipelines:` section of lakebed.yml: stream pipelines from a topic into a Delta table.

pipelines:
  order_events:                       # topic -> bronze, exactly once
    topic: orders
    target: bronze.order_events
    event_time: ts
  revenue_per_minute:                 # streaming SQL, closed windows appended
    target: gold.revenue_per_minute
    allowed_lateness: 10 seconds
    sql: |
      SELECT window_start, window_end, count(*) AS orders, sum(amount) AS revenue
      FROM TUMBLE(topic.orders, ts, INTERVAL '1 minute')
      GROUP BY ALL
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lakebed.config import CONFIG_FILE, config_error, undeclared
from lakebed.errors import ConfigError, StorageError
from lakebed.process.windows import StreamQuery, parse_duration_us, parse_stream_sql
from lakebed.storage import TableName

# Type names a declared `schema:` may use (DuckDB's spelling or Arrow's).
_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "varchar": pa.string(),
    "text": pa.string(),
    "int": pa.int64(),
    "integer": pa.int64(),
    "bigint": pa.int64(),
    "int64": pa.int64(),
    "int32": pa.int32(),
    "double": pa.float64(),
    "float": pa.float64(),
    "float64": pa.float64(),
    "boolean": pa.bool_(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "timestamptz": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(),
    "json": pa.string(),
}


class DedupConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: list[str]
    within: str | float = "1 hour"

    @field_validator("key", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("within")
    @classmethod
    def _duration(cls, value: str | float) -> str | float:
        parse_duration_us(value)
        return value


class PipelineConfig(BaseModel):
    """One pipeline's keys, as written in lakebed.yml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: str | None = None
    target: str | None = None
    sql: str | None = None
    format: Literal["json", "text"] = "json"
    schema_: dict[str, str] | None = Field(default=None, alias="schema")
    event_time: str | None = None
    event_time_unit: Literal["s", "ms", "us"] = "ms"
    allowed_lateness: str | float | None = None
    dedup: DedupConfig | None = None
    output: Literal["append", "upsert"] = "append"
    key: list[str] | None = None
    topic_out: str | None = None
    # Where a new pipeline starts reading: earliest, latest, or an ISO time (the first
    # record at or after it in each partition).
    start: str = "earliest"
    max_batch_records: int = Field(default=200_000, gt=0)
    max_batch_wait: str | float = "500 ms"
    commit_interval: str | float = "5 seconds"
    description: str | None = None
    owner: str | None = None
    domain: str | None = None

    @field_validator("schema_")
    @classmethod
    def _types(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for column, type_name in (value or {}).items():
            if type_name.lower() not in _TYPES:
                known = ", ".join(sorted(_TYPES))
                raise ValueError(f"column {column}: unknown type {type_name!r} (known: {known})")
        return value

    @field_validator("allowed_lateness", "max_batch_wait", "commit_interval")
    @classmethod
    def _duration(cls, value: str | float | None) -> str | float | None:
        if value is not None:
            parse_duration_us(value)
        return value

    @field_validator("key", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("start", mode="before")
    @classmethod
    def _start(cls, value: Any) -> Any:
        if isinstance(value, datetime):
            value = value.isoformat()
        if isinstance(value, str) and value not in ("earliest", "latest"):
            try:
                datetime.fromisoformat(value)
            except ValueError:
                raise ValueError(
                    f"expected earliest, latest or an ISO time like 2026-11-26T12:00:00Z: {value!r}"
                ) from None
        return value

    @property
    def start_ms(self) -> int | None:
        """The start as epoch milliseconds, when it is a time."""
        if self.start in ("earliest", "latest"):
            return None
        moment = datetime.fromisoformat(self.start)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)


@dataclass(frozen=True)
class PipelineSpec:
    """A validated pipeline: where it reads, what it computes, where it writes."""

    name: str
    config: PipelineConfig
    topic: str
    target: TableName
    query: StreamQuery | None

    @property
    def app_id(self) -> str:
        """The Delta application-transaction id of this pipeline's commits."""
        return f"lakebed-stream:{self.name}"

    @property
    def quarantine(self) -> TableName:
        return TableName("quarantine", self.name)

    @property
    def group(self) -> str:
        """The consumer group its progress is mirrored to, for lag tools."""
        return f"lakebed-stream-{self.name}"

    @property
    def declared_schema(self) -> pa.Schema | None:
        declared = self.config.schema_
        if not declared:
            return None
        return pa.schema([(name, _TYPES[kind.lower()]) for name, kind in declared.items()])

    @property
    def event_time_column(self) -> str | None:
        if self.config.event_time is not None:
            return self.config.event_time
        return self.query.window.time_column if self.query and self.query.window else None

    @property
    def lateness_us(self) -> int | None:
        """Allowed lateness; None when the pipeline drops nothing as late."""
        lateness = self.config.allowed_lateness
        if lateness is not None:
            return parse_duration_us(lateness)
        return 0 if self.query is not None and self.query.window is not None else None

    @property
    def upsert_key(self) -> list[str]:
        if self.config.key:
            return list(self.config.key)
        return self.query.group_columns if self.query is not None else []


def pipelines_named(
    pipelines: dict[str, PipelineSpec], names: list[str] | None
) -> list[PipelineSpec]:
    """The pipelines `names` (all of them when None or empty), or a ConfigError naming an
    unknown one with close matches, or saying none are declared."""
    chosen = list(names) if names else sorted(pipelines)
    for name in chosen:
        if name not in pipelines:
            raise undeclared("pipeline", name, pipelines)
    if not chosen:
        raise ConfigError(
            f"no pipelines are declared in {CONFIG_FILE}",
            hint="add a `pipelines:` section (see `lakebed stream --help`)",
        )
    return [pipelines[name] for name in chosen]


def load_pipelines(raw: dict[str, dict[str, Any]], project_dir: Path) -> dict[str, PipelineSpec]:
    """Validate every pipeline; errors name lakebed.yml, the line and the key."""
    path = project_dir / CONFIG_FILE
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    specs: dict[str, PipelineSpec] = {}
    for name, body in raw.items():
        prefix = ("pipelines", name)
        key = ".".join(prefix)
        if not isinstance(body, dict):
            raise ConfigError(
                f"expected a mapping with `topic:` or `sql:`, got {type(body).__name__}",
                file=str(path),
                key=key,
            )
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ConfigError(
                f"pipeline name {name!r} must be a plain lower-case identifier",
                file=str(path),
                key=key,
            )
        try:
            config = PipelineConfig.model_validate(body)
        except ValidationError as exc:
            raise config_error(
                exc, file=str(path), text=text, model=PipelineConfig, loc_prefix=prefix
            ) from exc
        specs[name] = _spec(name, config, path, key)
    return specs


def _spec(name: str, config: PipelineConfig, path: Path, key: str) -> PipelineSpec:
    query = None
    if config.sql is not None:
        try:
            query = parse_stream_sql(config.sql)
        except ConfigError as exc:
            raise ConfigError(exc.message, file=str(path), key=f"{key}.sql", hint=exc.hint) from exc
        if config.topic is not None and config.topic != query.topic:
            raise ConfigError(
                f"`topic: {config.topic}` but the SQL reads topic.{query.topic}",
                file=str(path),
                key=f"{key}.topic",
                hint="drop `topic:` (the SQL names the topic) or make them agree",
            )
    topic = query.topic if query is not None else config.topic
    if topic is None:
        raise ConfigError(
            "a pipeline needs `topic:` (load the topic as it is) or `sql:` reading topic.NAME",
            file=str(path),
            key=key,
        )
    default_layer = "bronze" if query is None else "silver"
    try:
        target = TableName.parse(config.target or f"{default_layer}.{name}")
    except StorageError as exc:
        raise ConfigError(exc.message, file=str(path), key=f"{key}.target") from exc
    if config.output == "upsert":
        keys = config.key or (query.group_columns if query is not None else [])
        if not keys:
            raise ConfigError(
                "output: upsert needs a key: list `key:` or GROUP BY the key columns",
                file=str(path),
                key=f"{key}.key",
            )
    if query is not None and query.aggregates and query.window is None:
        raise ConfigError(
            "an aggregate over an unbounded stream never closes: aggregate per window, "
            "e.g. FROM TUMBLE(topic.NAME, ts, INTERVAL '1 minute') ... GROUP BY ALL",
            file=str(path),
            key=f"{key}.sql",
        )
    session = query is not None and query.window is not None and query.window.kind == "session"
    if session and config.output == "upsert":
        raise ConfigError(
            "SESSION windows are emitted once, when they close: use `output: append`",
            file=str(path),
            key=f"{key}.output",
        )
    window = query.window if query is not None else None
    if (
        config.event_time is not None
        and window is not None
        and config.event_time != window.time_column
    ):
        raise ConfigError(
            f"`event_time: {config.event_time}` but the window is on {window.time_column}",
            file=str(path),
            key=f"{key}.event_time",
            hint="window on the event-time column, or drop `event_time:`",
        )
    return PipelineSpec(name, config, topic, target, query)
