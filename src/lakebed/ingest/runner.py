"""Run a source into bronze exactly once.

Every batch is one Delta commit carrying an application transaction
(`lakebed-ingest:<source>`, n) and, in its commit metadata, the change of the source's
state (manifest entries, cursor values). A crash at any point leaves either the whole batch
and its state committed or neither: a rerun reads on from the last committed state, which
is recovered from the table's own log when the metastore's copy is behind.

A `StreamedBatch` (a large file) is written while it is read: its pieces are parsed and
typed on a worker thread (`Prefetch`) while delta-rs writes the previous ones, still as one
commit, which also creates the bronze table on a source's first load. When a piece shows
the batch needs the whole read (a record to quarantine, a column's type changing), nothing
has been committed: the batch is read whole and goes the usual way.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from lakebed.errors import (
    ConcurrentWriteError,
    DuplicateTransactionError,
    IngestError,
    SchemaContractError,
    TableExistsError,
)
from lakebed.ingest.base import (
    Batch,
    IngestProgress,
    Reject,
    SourceContext,
    StreamAbandonedError,
    StreamedBatch,
    deep_merge,
)
from lakebed.ingest.conform import Conformed, conform
from lakebed.ingest.prefetch import Prefetch
from lakebed.ingest.sources import SourceSpec
from lakebed.metastore import Metastore
from lakebed.storage import DeltaStore, Table, TableName, last_per_key, normalise

STATE_KEY = "lakebed.ingest"
# Pieces of a streamed batch read ahead of the write.
PREFETCH_PIECES = 4

QUARANTINE_SCHEMA = pa.schema(
    [
        ("_source", pa.string()),
        ("_load_id", pa.string()),
        ("_ingested_at", pa.timestamp("us", tz="UTC")),
        ("_origin", pa.string()),
        ("error", pa.string()),
        ("raw", pa.string()),
    ]
)


class Catalog(Protocol):
    """What the runner needs of the lakehouse (kept abstract: ingest sits below it)."""

    root: Path
    storage: DeltaStore
    metastore: Metastore

    def table(self, name: str | TableName) -> Table: ...

    def create_table(
        self,
        name: str | TableName,
        schema: pa.Schema,
        *,
        partition_by: list[str] | None = None,
        description: str | None = None,
        owner: str | None = None,
        domain: str | None = None,
        tags: list[str] | None = None,
        properties: dict[str, str] | None = None,
        exist_ok: bool = False,
    ) -> Table: ...

    def track_run(
        self, kind: str, target: str | None = None, **params: Any
    ) -> AbstractContextManager[Any]: ...


@dataclass
class IngestSummary:
    """What one run of a source did."""

    source: str
    target: str
    rows: int = 0
    quarantined: int = 0
    bytes: int = 0
    batches: int = 0
    seconds: float = 0.0
    status: str = "success"
    error: str | None = None


def recover_state(catalog: Catalog, spec: SourceSpec) -> tuple[int, dict[str, Any]]:
    """(last committed transaction, state) of a source, trusting the bronze table's log."""
    stored = catalog.metastore.get_source_state(spec.name)
    if not catalog.storage.exists(spec.target):
        if stored is not None:  # the table was dropped: start over
            catalog.metastore.clear_source_state(spec.name)
        return 0, {}
    table = catalog.table(spec.target)
    committed = table.transaction_version(spec.app_id) or 0
    if committed == 0:
        return 0, {}
    if stored is not None and stored[1] == committed and stored[0] == str(spec.target):
        return committed, stored[2]
    # The metastore is behind (a crash after the commit) or lost: replay the log.
    base_txn, state = 0, {}
    if stored is not None and stored[1] < committed and stored[0] == str(spec.target):
        base_txn, state = stored[1], stored[2]
    deltas: dict[int, dict[str, Any]] = {}
    for entry in table.history():
        raw = entry.get(STATE_KEY)
        if raw is None:
            continue
        record = json.loads(raw) if isinstance(raw, str) else raw
        if record.get("source") == spec.name and base_txn < int(record["txn"]) <= committed:
            deltas[int(record["txn"])] = record.get("delta") or {}
    for txn in sorted(deltas):
        state = deep_merge(state, deltas[txn])
    catalog.metastore.set_source_state(
        spec.name, target=str(spec.target), txn_version=committed, state=state
    )
    return committed, state


def rewind_state(catalog: Catalog, spec: SourceSpec, restored_version: int) -> None:
    """After the bronze table was restored to an earlier version, make the source's state
    what was committed up to that version, so the next run loads the rest again.

    The table keeps its highest transaction number (a restore does not undo application
    transactions), so the rewound state is stored under it and the next batch goes on
    from there.
    """
    table = catalog.table(spec.target)
    committed = table.transaction_version(spec.app_id) or 0
    state: dict[str, Any] = {}
    entries = [e for e in table.history() if int(e.get("version", -1)) <= restored_version]
    for entry in sorted(entries, key=lambda e: int(e["version"])):
        raw = entry.get(STATE_KEY)
        if raw is None:
            continue
        record = json.loads(raw) if isinstance(raw, str) else raw
        if record.get("source") == spec.name:
            state = deep_merge(state, record.get("delta") or {})
    catalog.metastore.clear_source_state(spec.name)
    catalog.metastore.set_source_state(
        spec.name, target=str(spec.target), txn_version=committed, state=state
    )


def _with_metadata(
    fitted: Conformed,
    source: str,
    load_id: str,
    at: datetime,
    constants: _Constants | None = None,
) -> pa.Table:
    """The records plus lakebed's columns: when, from which source and load, and where."""
    data = fitted.data
    rows = data.num_rows
    if constants is None:
        constants = _Constants(source, load_id, at)
    columns = {
        **constants.columns(rows),
        "_origin": fitted.location,
        "_origin_row": fitted.position,
    }
    for name, column in columns.items():
        if name in data.column_names:
            data = data.drop_columns([name])
        data = data.append_column(name, column)
    return data


class _Constants:
    """The columns that hold one value for a whole batch, built once for its longest piece
    and sliced (without copying) for each piece."""

    def __init__(self, source: str, load_id: str, at: datetime, location: str = "") -> None:
        self._values = {
            "_ingested_at": pa.scalar(at, pa.timestamp("us", tz="UTC")),
            "_source": pa.scalar(source, pa.string()),
            "_load_id": pa.scalar(load_id, pa.string()),
            "_origin": pa.scalar(location, pa.string()),
        }
        self._arrays: dict[str, pa.Array] = {}

    def columns(self, rows: int) -> dict[str, pa.Array]:
        """`_ingested_at`, `_source` and `_load_id` for `rows` records."""
        return {name: self.column(name, rows) for name in ("_ingested_at", "_source", "_load_id")}

    def column(self, name: str, rows: int) -> pa.Array:
        array = self._arrays.get(name)
        if array is None or len(array) < rows:
            array = self._arrays[name] = pa.repeat(self._values[name], rows)
        return array.slice(0, rows)


def _quarantine_rows(rejects: list[Reject], source: str, load_id: str, at: datetime) -> pa.Table:
    def text(raw: str | bytes) -> str:
        return raw if isinstance(raw, str) else raw.decode("utf-8", errors="backslashreplace")

    return pa.table(
        {
            "_source": [source] * len(rejects),
            "_load_id": [load_id] * len(rejects),
            "_ingested_at": [at] * len(rejects),
            "_origin": [r.origin for r in rejects],
            "error": [r.error for r in rejects],
            "raw": [text(r.raw) for r in rejects],
        },
        schema=QUARANTINE_SCHEMA,
    )


class IngestRun:
    """One run of one source: reads batches and commits each exactly once."""

    def __init__(
        self,
        catalog: Catalog,
        spec: SourceSpec,
        report: Callable[[str, int, int | None], None] | None = None,
    ) -> None:
        self.catalog = catalog
        self.spec = spec
        self.progress = IngestProgress(report)

    def _bronze(self, schema: pa.Schema) -> Table:
        if self.catalog.storage.exists(self.spec.target):
            return self.catalog.table(self.spec.target)
        config = self.spec.config
        return self.catalog.create_table(
            self.spec.target,
            schema,
            description=config.description,
            owner=config.owner,
            domain=config.domain,
            exist_ok=True,
        )

    def _write_quarantine(self, rows: pa.Table, txn: int) -> None:
        table = self.catalog.create_table(
            self.spec.quarantine,
            QUARANTINE_SCHEMA,
            description=f"Records of source {self.spec.name} that could not be loaded",
            owner=self.spec.config.owner,
            domain=self.spec.config.domain,
            exist_ok=True,
        )
        # Already there when a crash came between this commit and the bronze one.
        with contextlib.suppress(DuplicateTransactionError):
            table.append(rows, app_transaction=(self.spec.app_id, txn))

    def _metadata(self, state_delta: dict[str, Any], txn: int) -> dict[str, Any]:
        record = {"source": self.spec.name, "txn": txn, "delta": state_delta}
        return {STATE_KEY: json.dumps(record, default=str)}

    def _commit(self, batch: Batch, data: pa.Table, txn: int, first: bool) -> None:
        config = self.spec.config
        metadata = self._metadata(batch.state_delta, txn)
        table = self._bronze(data.schema)
        txn_arg = (self.spec.app_id, txn)
        if batch.replace_predicate is not None:
            table.overwrite(
                data,
                predicate=batch.replace_predicate,
                allow_missing_columns=True,
                app_transaction=txn_arg,
                metadata=metadata,
            )
        elif config.write_disposition == "merge":
            table.merge(
                last_per_key(data, config.primary_key),
                config.primary_key,
                allow_missing_columns=True,
                app_transaction=txn_arg,
                metadata=metadata,
            )
        elif config.write_disposition == "replace" and first:
            table.overwrite(
                data, allow_missing_columns=True, app_transaction=txn_arg, metadata=metadata
            )
        else:
            table.append(
                data, allow_missing_columns=True, app_transaction=txn_arg, metadata=metadata
            )

    def _fitted_pieces(
        self, batch: StreamedBatch, table_schema: pa.Schema | None, load_id: str, at: datetime
    ) -> Iterator[pa.Table]:
        """The pieces of a streamed batch as bronze rows; StreamAbandonedError where the whole
        batch must be read (a record to quarantine, pieces whose columns differ)."""
        spec = self.spec
        schema: pa.Schema | None = None
        constants = _Constants(spec.name, load_id, at, batch.location)
        for piece in batch.pieces():
            rows = piece.data.num_rows
            location = constants.column("_origin", rows)
            try:
                fitted = conform(
                    spec.name,
                    piece.data,
                    location,
                    piece.positions,
                    table_schema,
                    spec.config.schema_policy,
                )
            except SchemaContractError as exc:  # the whole read says how many and where
                raise StreamAbandonedError(str(exc)) from exc
            if fitted.rejects:
                raise StreamAbandonedError("records to quarantine")
            if fitted.data.num_columns == 0:
                raise StreamAbandonedError("no typed columns")
            data = _with_metadata(fitted, spec.name, load_id, at, constants)
            if table_schema is None:
                # Typed as the new table will store them here, not on the writer's thread.
                data = normalise(data, table=str(spec.target))
            if schema is None:
                schema = data.schema
            elif data.schema != schema:
                raise StreamAbandonedError("the pieces' columns differ")
            batch.rows += rows
            yield data

    def _write_streamed(
        self,
        batch: StreamedBatch,
        table_schema: pa.Schema | None,
        txn: int,
        load_id: str,
        at: datetime,
    ) -> bool:
        """Write a streamed batch as commit `txn` while its pieces are read; False when it
        was abandoned (nothing committed: the caller writes `batch.whole()` instead).

        A new table is created by the same commit, unless the source gives it catalog
        entries (description, owner, domain): those are registered with the table, so the
        first batch of such a source is read whole."""
        config = self.spec.config
        if table_schema is None and (config.description or config.owner or config.domain):
            return False
        batch.rows = 0
        pieces = self._fitted_pieces(batch, table_schema, load_id, at)
        with Prefetch(pieces, depth=PREFETCH_PIECES) as ahead:
            try:
                first = next(ahead)
                rows = itertools.chain([first], ahead)
                txn_arg = (self.spec.app_id, txn)
                metadata = self._metadata(batch.state_delta, txn)
                if table_schema is None:
                    self.catalog.storage.create_from_stream(
                        self.spec.target,
                        first.schema,
                        rows,
                        app_transaction=txn_arg,
                        metadata=metadata,
                    )
                else:
                    self.catalog.table(self.spec.target).append_stream(
                        first.schema,
                        rows,
                        allow_missing_columns=True,
                        app_transaction=txn_arg,
                        metadata=metadata,
                    )
            except (StopIteration, StreamAbandonedError, ConcurrentWriteError, TableExistsError):
                return False
        return True

    def run(self) -> IngestSummary:
        spec = self.spec
        summary = IngestSummary(spec.name, str(spec.target))
        started = time.perf_counter()
        at = datetime.now(UTC)
        with self.catalog.track_run("ingest", spec.name, table=str(spec.target)) as run:
            load_id = str(run.run_id)
            txn, state = recover_state(self.catalog, spec)
            # Only appends are written piece by piece: the other dispositions read the batch.
            streaming = spec.config.write_disposition == "append"
            context = SourceContext(spec.name, self.catalog.root, streaming=streaming)
            connector = spec.connector(spec.options, context)
            for item in connector.batches(state, self.progress):
                table_schema = None
                if self.catalog.storage.exists(spec.target):
                    table_schema = self.catalog.table(spec.target).schema()
                if isinstance(item, StreamedBatch):
                    with _one_run_at_a_time(spec.name):
                        streamed = self._write_streamed(item, table_schema, txn + 1, load_id, at)
                    if streamed:
                        txn += 1
                        state = deep_merge(state, item.state_delta)
                        self.catalog.metastore.set_source_state(
                            spec.name, target=str(spec.target), txn_version=txn, state=state
                        )
                        summary.batches += 1
                        summary.rows += item.rows
                        summary.bytes += item.bytes_read
                        run.rows = summary.rows
                        run.bytes = summary.bytes
                        continue
                    item.rows = 0
                    batch = item.whole()
                else:
                    batch = item
                location, position = batch.origin_columns()
                fitted = conform(
                    spec.name,
                    batch.data,
                    location,
                    position,
                    table_schema,
                    spec.config.schema_policy,
                )
                rejects = batch.rejects + fitted.rejects
                if table_schema is None and fitted.data.num_columns == 0 and not rejects:
                    # Nothing to define the table with yet (an empty file): remember the
                    # file only; reading it again after a crash would add nothing.
                    state = deep_merge(state, batch.state_delta)
                    self.catalog.metastore.set_source_state(
                        spec.name, target=str(spec.target), txn_version=txn, state=state
                    )
                    continue
                data = _with_metadata(fitted, spec.name, load_id, at)
                txn += 1
                if rejects:
                    self._write_quarantine(_quarantine_rows(rejects, spec.name, load_id, at), txn)
                with _one_run_at_a_time(spec.name):
                    self._commit(batch, data, txn, first=summary.batches == 0)
                state = deep_merge(state, batch.state_delta)
                self.catalog.metastore.set_source_state(
                    spec.name, target=str(spec.target), txn_version=txn, state=state
                )
                if isinstance(item, StreamedBatch):
                    item.rows = data.num_rows
                summary.batches += 1
                summary.rows += data.num_rows
                summary.quarantined += len(rejects)
                summary.bytes += batch.bytes_read
                run.rows = summary.rows
                run.bytes = summary.bytes
        summary.seconds = time.perf_counter() - started
        return summary


@contextlib.contextmanager
def _one_run_at_a_time(source: str) -> Iterator[None]:
    try:
        yield
    except DuplicateTransactionError as exc:
        raise IngestError(
            "another run of this source committed at the same time",
            source=source,
            hint="run one `lakebed ingest` per source at a time, then rerun",
        ) from exc


def source_state(catalog: Catalog, spec: SourceSpec) -> Mapping[str, Any]:
    """The state a source has committed (for `lakebed sources`)."""
    stored = catalog.metastore.get_source_state(spec.name)
    return {} if stored is None else stored[2]
