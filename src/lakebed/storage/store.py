"""The storage root: one folder per layer, one Delta table per `layer/name` folder."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from lakebed.errors import SchemaMismatchError, StorageError, TableExistsError, TableNotFoundError
from lakebed.storage import parallel_write, streams
from lakebed.storage.naming import CDF_LAYERS, TableName
from lakebed.storage.properties import CHANGE_FEED, check_properties
from lakebed.storage.schema import normalise
from lakebed.storage.table import CommitHook, Table, WriteResult
from lakebed.storage.table_support import creation_error


class DeltaStore:
    """The storage root: one folder per layer, one Delta table per `layer/name` folder."""

    def __init__(
        self,
        root: str | Path,
        storage_options: dict[str, str] | None = None,
        on_commit: CommitHook | None = None,
    ):
        self.root = str(root)
        self._storage_options = storage_options
        self._on_commit = on_commit

    def _handle(self, name: TableName) -> Table:
        return Table(name, self.path(name), self._storage_options, self._on_commit)

    def path(self, name: TableName) -> str:
        return f"{self.root.rstrip('/')}/{name.relative_path}"

    def exists(self, name: TableName) -> bool:
        path = self.path(name)
        # On local disk a table's first commit file says it exists, for a stat() (runs ask
        # this for every model and input); else (cleaned-up log, object storage) ask delta-rs.
        if "://" not in path and os.path.exists(f"{path}/_delta_log/{0:020d}.json"):
            return True
        return bool(DeltaTable.is_deltatable(path, self._storage_options))

    def table(self, name: TableName) -> Table:
        if not self.exists(name):
            raise TableNotFoundError(str(name), [str(n) for n in self.list_tables()])
        return self._handle(name)

    def list_tables(self) -> list[TableName]:
        """Tables found on disk (the catalog in the metastore is the usual source)."""
        root = Path(self.root)
        found: list[TableName] = []
        if "://" in self.root or not root.is_dir():
            return found
        for log in sorted(root.glob("*/*/_delta_log")):
            try:
                found.append(TableName.parse(f"{log.parent.parent.name}.{log.parent.name}"))
            except StorageError:
                continue
        return found

    def create(
        self,
        name: TableName,
        schema: pa.Schema,
        *,
        partition_by: list[str] | None = None,
        description: str | None = None,
        properties: dict[str, str] | None = None,
        exist_ok: bool = False,
    ) -> Table:
        """Create an empty table; silver and gold record a change data feed by default."""
        if self.exists(name):
            if exist_ok:
                return self._handle(name)
            raise TableExistsError(str(name))
        unknown = [c for c in partition_by or [] if c not in schema.names]
        if unknown:
            raise SchemaMismatchError(
                str(name), [f"partition column {c} is not in the schema" for c in unknown]
            )
        configuration = _configuration(name, properties)
        empty = normalise(schema.empty_table(), table=str(name))
        try:
            DeltaTable.create(
                self.path(name),
                empty.schema,
                mode="error",
                partition_by=partition_by or None,
                name=name.name,
                description=description,
                configuration=configuration,
                storage_options=self._storage_options,
            )
        except DeltaError as exc:
            raise creation_error(str(name), exc) from exc
        table = self._handle(name)
        if self._on_commit is not None:
            self._on_commit(table, WriteResult(str(name), 0, "CREATE TABLE"))
        return table

    def create_from_stream(
        self,
        name: TableName,
        schema: pa.Schema,
        pieces: Iterable[pa.Table],
        *,
        description: str | None = None,
        properties: dict[str, str] | None = None,
        app_transaction: tuple[str, int] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> WriteResult:
        """Create an unpartitioned table with its first rows as they arrive: one commit
        defines the table (columns `schema`, as `create` would) and adds the rows, written
        as `Table.append_stream` writes them. Nothing is created when the pieces raise;
        `TableExistsError` when the table exists by the time of the commit."""
        if self.exists(name):
            raise TableExistsError(str(name))
        return streams.create_from_stream(
            self._handle(name),
            schema,
            pieces,
            description=description,
            configuration=_configuration(name, properties),
            app_transaction=app_transaction,
            metadata=metadata,
        )

    def create_from_rows(
        self,
        name: TableName,
        data: pa.Table,
        *,
        description: str | None = None,
        properties: dict[str, str] | None = None,
        app_transaction: tuple[str, int] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> WriteResult:
        """`create_from_stream` for rows already in memory: on local storage they are
        written as one file per core at once (see `parallel_write`)."""
        if "://" in self.root:
            return self.create_from_stream(
                name,
                data.schema,
                [data],
                description=description,
                properties=properties,
                app_transaction=app_transaction,
                metadata=metadata,
            )
        if self.exists(name):
            raise TableExistsError(str(name))
        return parallel_write.create(
            self._handle(name),
            normalise(data, table=str(name)),
            description=description,
            configuration=_configuration(name, properties),
            app_transaction=app_transaction,
            metadata=metadata,
        )

    def drop(self, name: TableName) -> None:
        """Delete a table and all its files (no time travel back)."""
        if not self.exists(name):
            raise TableNotFoundError(str(name), [str(n) for n in self.list_tables()])
        if "://" in self.root:
            raise StorageError("drop is only supported on local storage", table=str(name))
        shutil.rmtree(self.path(name))


def _configuration(name: TableName, properties: dict[str, str] | None) -> dict[str, str | None]:
    """A new table's Delta properties: silver and gold record a change data feed."""
    check_properties(str(name), properties or {})
    configuration: dict[str, str | None] = {}
    if name.layer in CDF_LAYERS:
        configuration[CHANGE_FEED] = "true"
    configuration.update(properties or {})
    return configuration
