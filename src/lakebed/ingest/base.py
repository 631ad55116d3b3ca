"""The connector contract: a connector reads a source into Arrow batches; the runner writes
them to bronze exactly once, with the source's progress committed in the same Delta commit.

A new kind of source is one module: a `Connector` subclass with an options model,
registered with `@register_connector`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from lakebed.errors import ConfigError

WriteDisposition = Literal["append", "replace", "merge"]
SchemaPolicy = Literal["evolve", "freeze", "discard_row"]


class ConnectorOptions(BaseModel):
    """Base of every connector's options (the keys of a source in lakebed.yml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(BaseModel):
    """The keys every source has, whatever its kind."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: str
    target: str | None = Field(default=None, description="bronze table; default bronze.<name>")
    write_disposition: WriteDisposition = "append"
    primary_key: list[str] = Field(default_factory=list)
    schema_policy: SchemaPolicy = Field(default="evolve", alias="schema")
    description: str | None = None
    owner: str | None = None
    domain: str | None = None


@dataclass(frozen=True)
class Reject:
    """A record that could not be parsed: kept in quarantine with its raw text and why."""

    raw: str | bytes
    error: str
    origin: str


@dataclass(frozen=True)
class RowOrigins:
    """Where each record came from, built cheaply for millions of rows: a location (a file,
    a page URL, a table: one for the batch or one per row) and a position per row (the line
    in the file, the index in the page, the row number). Bronze keeps them as the columns
    `_origin` and `_origin_row`."""

    location: str | pa.Array
    position: pa.Array


@dataclass
class Batch:
    """Records read from a source, committed to bronze as one Delta commit.

    `state_delta` is deep-merged into the source's state once the batch is committed (a
    manifest entry, a cursor value); `replace_predicate` (delta-rs SQL over the bronze
    table) names rows this batch replaces, e.g. those of a changed file being reloaded.
    """

    data: pa.Table
    # One "<location>:<position>" string per record, or the cheaper RowOrigins.
    origins: list[str] | RowOrigins
    state_delta: dict[str, Any]
    rejects: list[Reject] = field(default_factory=list)
    bytes_read: int = 0
    label: str = ""
    replace_predicate: str | None = None

    def __post_init__(self) -> None:
        count = (
            len(self.origins.position)
            if isinstance(self.origins, RowOrigins)
            else len(self.origins)
        )
        if count != self.data.num_rows:
            raise ValueError(f"batch {self.label!r}: {count} origins for {self.data.num_rows} rows")

    @property
    def rows(self) -> int:
        return int(self.data.num_rows)

    def origin_columns(self) -> tuple[pa.Array, pa.Array]:
        """(location, position) per record as Arrow arrays (string, int64)."""
        rows = self.data.num_rows
        if isinstance(self.origins, RowOrigins):
            location = self.origins.location
            if isinstance(location, str):
                location = pa.repeat(pa.scalar(location, pa.string()), rows)
            return location.cast(pa.string()), self.origins.position.cast(pa.int64())
        locations: list[str] = []
        positions: list[int | None] = []
        for text in self.origins:
            where, _, at = text.rpartition(":")
            if where and at.isdigit():
                locations.append(where)
                positions.append(int(at))
            else:
                locations.append(text)
                positions.append(None)
        return pa.array(locations, pa.string()), pa.array(positions, pa.int64())


class StreamAbandonedError(Exception):
    """Raised while a `StreamedBatch` is read when its records need the whole read after all
    (a malformed record, a type only the whole input settles). Nothing of the batch is
    committed; the runner takes `StreamedBatch.whole()` instead."""


@dataclass(frozen=True)
class Piece:
    """Some records of a `StreamedBatch`, with their positions (see `RowOrigins`)."""

    data: pa.Table
    positions: pa.Array


class StreamedBatch:
    """A batch the runner writes piece by piece as it is read, still as one Delta commit, so
    that reading the next piece overlaps writing this one.

    Connectors yield these only when `SourceContext.streaming` is set. `pieces()` gives the
    records of one location (`RowOrigins.location`) in order and every piece with the same
    columns and types, or raises `StreamAbandonedError`; `whole()` reads the same input as a plain
    `Batch` (with its rejects), which the runner falls back to. `state_delta` is resolved
    when the runner first asks for it (a checksum may still be computing meanwhile).
    """

    def __init__(
        self,
        *,
        location: str,
        pieces: Callable[[], Iterator[Piece]],
        whole: Callable[[], Batch],
        state_delta: Callable[[], dict[str, Any]],
        bytes_read: int = 0,
        label: str = "",
    ) -> None:
        self.location = location
        self.pieces = pieces
        self.whole = whole
        self._state_delta = state_delta
        self._resolved: dict[str, Any] | None = None
        self.bytes_read = bytes_read
        self.label = label
        self.rows = 0  # records written, set by the runner (progress reports it)

    @property
    def state_delta(self) -> dict[str, Any]:
        if self._resolved is None:
            self._resolved = self._state_delta()
        return self._resolved


class IngestProgress:
    """Progress a connector reports while it reads (the CLI draws it as a bar)."""

    def __init__(self, report: Callable[[str, int, int | None], None] | None = None) -> None:
        self._report = report
        self.counts: dict[str, int] = {}
        self.totals: dict[str, int] = {}

    def total(self, unit: str, count: int) -> None:
        """Announce how many `unit`s (files, pages, rows) the run will read, when known."""
        self.totals[unit] = count
        if self._report is not None:
            self._report(unit, self.counts.get(unit, 0), count)

    def advance(self, unit: str, count: int = 1) -> None:
        self.counts[unit] = self.counts.get(unit, 0) + count
        if self._report is not None:
            self._report(unit, self.counts[unit], self.totals.get(unit))


@dataclass(frozen=True)
class SourceContext:
    """What a connector may know about where it runs."""

    name: str
    project_dir: Path
    # The runner writes `StreamedBatch`es (an append source); without it, plain batches only.
    streaming: bool = False


class Connector(ABC):
    """Reads one source. Subclasses set `kind` and `options_model` and implement `batches`."""

    kind: ClassVar[str]
    options_model: ClassVar[type[ConnectorOptions]]

    def __init__(self, options: ConnectorOptions, context: SourceContext) -> None:
        self.options = options
        self.context = context

    @abstractmethod
    def batches(
        self, state: Mapping[str, Any], progress: IngestProgress
    ) -> Iterator[Batch | StreamedBatch]:
        """Yield the records that are new since `state` (the merged deltas of every batch
        committed so far; empty on the first run). Yield nothing when nothing is new.
        `StreamedBatch`es only when `self.context.streaming` is set.

        Raise `lakebed.errors.IngestError` (or a subclass) for a failure that should fail
        the run, after the connector's own retries.
        """

    def describe_state(self, state: Mapping[str, Any]) -> str:
        """One line for `lakebed sources`: where the source has got to."""
        return json.dumps(state, default=str)[:80] if state else "nothing loaded yet"


_REGISTRY: dict[str, type[Connector]] = {}


def register_connector(cls: type[Connector]) -> type[Connector]:
    """Class decorator: make a connector kind available to `kind:` in lakebed.yml."""
    if cls.kind in _REGISTRY and _REGISTRY[cls.kind] is not cls:
        raise ValueError(f"connector kind {cls.kind!r} is registered twice")
    _REGISTRY[cls.kind] = cls
    return cls


def connector_kinds() -> dict[str, type[Connector]]:
    _load_builtin_connectors()
    return dict(_REGISTRY)


def connector_for(kind: str) -> type[Connector]:
    kinds = connector_kinds()
    if kind not in kinds:
        raise ConfigError(
            f"unknown source kind {kind!r}", hint=f"kinds are {', '.join(sorted(kinds))}"
        )
    return kinds[kind]


def _load_builtin_connectors() -> None:
    # Imported here, not at module import, so the registry has no import-time side effects
    # for code that only needs the contract.
    import importlib

    for module in ("files", "http", "sql"):
        try:
            importlib.import_module(f"lakebed.ingest.connectors.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"lakebed.ingest.connectors.{module}":
                raise


def deep_merge(state: Mapping[str, Any], delta: Mapping[str, Any]) -> dict[str, Any]:
    """`delta` merged into `state`: nested mappings merge, anything else replaces."""
    merged = dict(state)
    for key, value in delta.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()
