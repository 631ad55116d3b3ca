"""Every error lakebed raises, under one root.

    LakebedError
    ├── ConfigError                  lakebed.yml or another project file is invalid
    ├── StorageError                 a Delta table operation failed
    │   ├── TableNotFoundError       a `layer.name` is not in the lakehouse
    │   ├── TableExistsError         create of a table that already exists
    │   ├── InvalidTableNameError    a name is not `layer.name` with a known layer
    │   ├── SchemaMismatchError      written data does not fit the table's schema
    │   ├── VersionNotFoundError     time travel to a version or time the table lacks
    │   ├── ConcurrentWriteError     a commit lost a race with another writer (Retryable)
    │   └── DuplicateTransactionError  an app transaction version was already committed
    ├── MetastoreError               the catalog / run log database failed
    ├── IngestError                  a source could not be read into bronze
    │   ├── SourceUnavailableError   the source did not answer, after retries (Retryable)
    │   ├── SourceAuthError          the source refused the credentials
    │   └── SchemaContractError      records break a source's `schema: freeze` contract
    ├── QueryError                   a SQL query failed
    │   └── SqlSyntaxError           the SQL does not parse
    ├── TransformError               models cannot be loaded, selected or built
    │   └── ModelError               a model file or its settings are invalid
    │       └── CycleError           models depend on each other in a cycle
    ├── QualityError                 data quality checks are misconfigured or failed
    │   ├── CheckConfigError         a check's settings are invalid
    │   └── CheckFailedError         a `fail` check failed on new data: nothing was published
    ├── BusError                     the event bus (embedded log or Kafka) failed
    │   ├── TopicNotFoundError       a topic does not exist
    │   ├── BusUnavailableError      the broker did not answer, after retries (Retryable)
    │   └── RecordError              a record to produce is malformed (bad JSON line, missing key)
    └── StreamError                  a stream pipeline is misconfigured or failed

`Retryable` and `Terminal` are markers: the orchestrator retries a `Retryable` error and
never retries a `Terminal` one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from difflib import get_close_matches


class Retryable:
    """Marker: the same call may succeed if tried again (races, transient I/O)."""


class Terminal:
    """Marker: trying again cannot help until the input or configuration changes."""


class LakebedError(Exception):
    """Root of every error raised by lakebed; `hint` says how to fix it."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n  hint: {hint}")


def _where(file: str | None, line: int | None, key: str | None) -> str:
    """The prefix naming a place in a project file: file:line: `key`: ."""
    where = ""
    if file is not None:
        where = file if line is None else f"{file}:{line}"
        where += ": "
    if key is not None:
        where += f"`{key}`: "
    return where


class ConfigError(LakebedError, Terminal):
    """Raised when a project file (lakebed.yml) is missing, unparsable or invalid."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.key = key
        super().__init__(f"{_where(file, line, key)}{message}", hint=hint)


class StorageError(LakebedError):
    """Raised when a Delta table operation fails."""

    def __init__(self, message: str, *, table: str | None = None, hint: str | None = None):
        self.table = table
        super().__init__(message, hint=hint)


class TableNotFoundError(StorageError, Terminal):
    """Raised when a `layer.name` table does not exist; names the closest matches."""

    def __init__(self, table: str, known: Iterable[str] = ()) -> None:
        self.matches = get_close_matches(table, list(known), n=3, cutoff=0.5)
        hint = (
            f"did you mean {', '.join(self.matches)}?"
            if self.matches
            else "run `lakebed tables` to list the tables"
        )
        super().__init__(f"table {table} does not exist", table=table, hint=hint)


class TableExistsError(StorageError, Terminal):
    """Raised when creating a table that already exists without `exist_ok`."""

    def __init__(self, table: str) -> None:
        super().__init__(
            f"table {table} already exists",
            table=table,
            hint="pass exist_ok=True, or write to it with append/overwrite",
        )


class InvalidTableNameError(StorageError, Terminal):
    """Raised when a table name is not `layer.name` with a known layer."""


class SchemaMismatchError(StorageError, Terminal):
    """Raised when written data does not fit the table schema; lists the columns and why."""

    def __init__(
        self,
        table: str,
        problems: Sequence[str],
        *,
        hint: str | None = None,
        lead: str = "does not match its schema",
    ) -> None:
        self.problems = list(problems)
        detail = "; ".join(self.problems)
        super().__init__(f"data written to {table} {lead}: {detail}", table=table, hint=hint)


class VersionNotFoundError(StorageError, Terminal):
    """Raised when time travel asks for a version or timestamp the table does not have."""


class ConcurrentWriteError(StorageError, Retryable):
    """Raised when a commit conflicts with a concurrent writer and cannot be retried safely."""


class MetastoreError(LakebedError):
    """Raised when the metastore database cannot be reached or its schema is wrong."""


class QueryError(LakebedError, Terminal):
    """Raised when a SQL query fails to bind or execute."""

    def __init__(self, message: str, *, query: str | None = None, hint: str | None = None):
        self.query = query
        super().__init__(message, hint=hint)


class SqlSyntaxError(QueryError):
    """Raised when the SQL does not parse; the message carries the position."""


class DuplicateTransactionError(StorageError, Terminal):
    """Raised when an app transaction (exactly-once writer) repeats a committed version."""


class IngestError(LakebedError):
    """Raised when a source cannot be read into bronze; names the source and where."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        origin: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.source = source
        self.origin = origin
        prefix = f"source {source}: " if source else ""
        where = f" (at {origin})" if origin else ""
        super().__init__(f"{prefix}{message}{where}", hint=hint)


class SourceUnavailableError(IngestError, Retryable):
    """Raised when a source cannot be reached or keeps failing after the connector's retries."""


class SchemaContractError(IngestError, Terminal):
    """Raised when records break a `schema: freeze` contract (new or mistyped fields)."""


class SourceAuthError(IngestError, Terminal):
    """Raised when a source refuses the credentials: retrying cannot help until they change."""


class TransformError(LakebedError):
    """Raised when models cannot be loaded, selected or built (e.g. an unknown selector)."""


class ModelError(TransformError, Terminal):
    """Raised when a model file or its settings are invalid; names the file, line and fix."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        key: str | None = None,
        model: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.key = key
        self.model = model
        super().__init__(f"{_where(file, line, key)}{message}", hint=hint)


class CycleError(ModelError):
    """Raised when models depend on each other in a cycle; the message prints the cycle."""

    def __init__(
        self, cycle: Sequence[str], *, file: str | None = None, line: int | None = None
    ) -> None:
        self.cycle = list(cycle)
        super().__init__(
            "models depend on each other in a cycle: " + " → ".join(self.cycle),
            file=file,
            line=line,
            model=self.cycle[0] if self.cycle else None,
            hint="remove one of the references in the cycle",
        )


class QualityError(LakebedError):
    """Raised when data quality checks cannot be configured or fail; names the table."""

    def __init__(self, message: str, *, table: str | None = None, hint: str | None = None):
        self.table = table
        super().__init__(message, hint=hint)


class CheckConfigError(QualityError, Terminal):
    """Raised when a check's settings are invalid; names the file, table and check."""

    def __init__(
        self,
        message: str,
        *,
        table: str,
        check: str,
        file: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.check = check
        self.file = file
        where = f"{file}: " if file is not None else ""
        super().__init__(f"{where}check {check} on {table}: {message}", table=table, hint=hint)


class CheckFailedError(QualityError, Terminal):
    """Raised when a check of severity `fail` fails, or one of severity `fail` or `drop`
    cannot run (`unevaluated`): none of the new data is published."""

    def __init__(
        self,
        table: str,
        failures: dict[str, int],
        *,
        reasons: dict[str, str] | None = None,
        unevaluated: bool = False,
    ) -> None:
        self.failures = dict(failures)  # check name -> failing rows
        reasons = reasons or {}
        detail = "; ".join(
            f"{name}: {reasons.get(name) or f'{rows:,} failing rows'}"
            for name, rows in self.failures.items()
        )
        count = len(self.failures)
        super().__init__(
            f"{count} check{'s' if count != 1 else ''} failed on {table}, "
            f"nothing was published: {detail}",
            table=table,
            hint=(
                "fix the check or the model so the check can run over its rows"
                if unevaluated
                else "fix the data or the model, or lower the check's severity to warn or drop"
            )
            + "; `lakebed checks` shows the latest results",
        )

    @property
    def checks(self) -> list[str]:
        """The names of the failed checks, in check order."""
        return list(self.failures)


class BusError(LakebedError):
    """The event bus (embedded log or Kafka) failed."""


class TopicNotFoundError(BusError, Terminal):
    """A topic does not exist on the bus."""

    def __init__(self, topic: str, known: Iterable[str] = ()) -> None:
        matches = get_close_matches(topic, list(known), n=3)
        hint = (
            f"did you mean {', '.join(matches)}?"
            if matches
            else "create it with `lakebed topics --create NAME` or produce to it first"
        )
        super().__init__(f"topic {topic!r} does not exist", hint=hint)
        self.topic = topic


class BusUnavailableError(BusError, Retryable):
    """The broker did not answer, after retries."""


class RecordError(BusError, Terminal):
    """A record to produce is malformed: not JSON, not an object, or without its key field."""


class StreamError(LakebedError, Terminal):
    """A stream pipeline is misconfigured or failed."""
