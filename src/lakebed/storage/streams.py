"""Writes whose rows arrive piece by piece (a file still being parsed): one commit, written
while the next piece is produced, without holding all the rows in memory.

delta-rs pulls the pieces through an Arrow stream as it writes and commits only once the
stream ends, so an exception raised by the pieces stops the write with nothing committed;
it is raised to the caller as it is (not as what delta-rs made of it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from deltalake import write_deltalake
from deltalake.exceptions import DeltaError

from lakebed.errors import SchemaMismatchError
from lakebed.storage.schema import normalise, reconcile
from lakebed.storage.table_support import (
    creation_error,
    first_commit_properties,
    writer_properties,
)

if TYPE_CHECKING:
    from lakebed.storage.table import Table, WriteResult


class _Pieces:
    """The pieces as an Arrow stream of `fit` pieces, keeping the pieces' own exception."""

    def __init__(
        self,
        table: str,
        schema: pa.Schema,
        pieces: Iterable[pa.Table],
        fit: Callable[[pa.Table], pa.Table],
    ) -> None:
        self.table = table
        self.schema = schema
        self.pieces = pieces
        self.fit = fit
        self.failure: BaseException | None = None

    def reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self.fitted_schema(), self._batches())

    def fitted_schema(self) -> pa.Schema:
        return self.fit(self.schema.empty_table()).schema

    def _batches(self) -> Iterator[pa.RecordBatch]:
        try:
            for piece in self.pieces:
                if piece.schema != self.schema:
                    raise SchemaMismatchError(
                        self.table, [f"a piece has columns {piece.schema}, not {self.schema}"]
                    )
                yield from self.fit(piece).to_batches()
        except BaseException as exc:
            self.failure = exc
            raise

    def raise_failure(self) -> None:
        """Raise the pieces' exception, if the write stopped because of one."""
        if self.failure is not None:
            raise self.failure from None


def append_stream(
    table: Table,
    schema: pa.Schema,
    pieces: Iterable[pa.Table],
    *,
    allow_missing_columns: bool,
    app_transaction: tuple[str, int] | None,
    metadata: dict[str, Any] | None,
) -> WriteResult:
    """See `Table.append_stream`."""
    table_schema = pa.schema(table.delta().schema().to_arrow())
    partition_by = table.partition_by

    def fitted(data: pa.Table) -> Any:
        return reconcile(
            str(table.name),
            table_schema,
            data,
            allow_missing_columns=allow_missing_columns,
            partition_by=partition_by,
        )

    shape = fitted(schema.empty_table())
    merge_schema = table._evolve(shape.data, shape.new_columns)
    stream = _Pieces(str(table.name), schema, pieces, lambda piece: fitted(piece).data)
    commit_properties = table._commit_properties(app_transaction, metadata)
    try:
        with table._errors("append"):
            write_deltalake(
                table.delta(),
                stream.reader(),
                mode="append",
                schema_mode="merge" if merge_schema else None,
                commit_properties=commit_properties,
                writer_properties=writer_properties(stream.fitted_schema()),
            )
    except Exception:
        stream.raise_failure()
        raise
    return table._latest("APPEND")


def create_from_stream(
    table: Table,
    schema: pa.Schema,
    pieces: Iterable[pa.Table],
    *,
    description: str | None,
    configuration: dict[str, str | None],
    app_transaction: tuple[str, int] | None,
    metadata: dict[str, Any] | None,
) -> WriteResult:
    """See `DeltaStore.create_from_stream`; `table` is the handle of the table to be."""
    name = str(table.name)
    stream = _Pieces(name, schema, pieces, lambda piece: normalise(piece, table=name))
    try:
        write_deltalake(
            table.path,
            stream.reader(),
            mode="error",
            name=table.name.name,
            description=description,
            configuration=configuration,
            storage_options=table._storage_options,
            commit_properties=first_commit_properties(app_transaction, metadata),
            writer_properties=writer_properties(stream.fitted_schema()),
        )
    except (DeltaError, OSError) as exc:
        stream.raise_failure()
        raise creation_error(name, exc) from exc
    except Exception:
        stream.raise_failure()
        raise
    return table._latest("APPEND")
