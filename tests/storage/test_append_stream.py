"""Streamed writes: rows appended (Table.append_stream) or a table created
(DeltaStore.create_from_stream) piece by piece as they arrive, in one commit."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lakebed import Lakehouse, Table
from lakebed.errors import DuplicateTransactionError, SchemaMismatchError, TableExistsError
from lakebed.storage import TableName, absolute_file_path

SCHEMA = pa.schema([("id", pa.int64()), ("p", pa.string())])


def piece(*ids: int) -> pa.Table:
    return pa.table({"id": list(ids), "p": [f"p{i}" for i in ids]}, schema=SCHEMA)


@pytest.fixture
def events(lh: Lakehouse) -> Table:
    table = lh.create_table("bronze.events", SCHEMA)
    table.append(piece(1))
    return table


def ids(table: Table) -> list[int]:
    return sorted(table.read(columns=["id"]).column("id").to_pylist())


def test_pieces_land_in_one_commit_with_the_transaction_and_metadata(events: Table) -> None:
    result = events.append_stream(
        SCHEMA,
        iter([piece(2, 3), piece(4), piece()]),
        app_transaction=("loader", 1),
        metadata={"note": "three pieces"},
    )
    assert result.version == 2
    assert result.operation == "APPEND"
    assert ids(events) == [1, 2, 3, 4]
    assert events.transaction_version("loader") == 1
    assert events.history(1)[0]["note"] == "three pieces"


def test_pieces_are_cast_and_evolve_the_table_like_append(lh: Lakehouse) -> None:
    table = lh.create_table("bronze.typed", pa.schema([("id", pa.int64())]))
    schema = pa.schema([("id", pa.int32()), ("at", pa.timestamp("ns", tz="UTC"))])
    moment = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    pieces = [pa.table({"id": [i], "at": [moment]}, schema=schema) for i in (1, 2)]
    table.append_stream(schema, iter(pieces))
    assert table.schema() == pa.schema([("id", pa.int64()), ("at", pa.timestamp("us", tz="UTC"))])
    assert table.read().sort_by("id").to_pylist() == [
        {"id": 1, "at": moment},
        {"id": 2, "at": moment},
    ]


def test_a_failing_stream_commits_nothing_and_raises_its_own_error(events: Table) -> None:
    def pieces() -> Iterator[pa.Table]:
        yield piece(2)
        raise KeyError("the source broke")

    with pytest.raises(KeyError, match="the source broke"):
        events.append_stream(SCHEMA, pieces(), app_transaction=("loader", 1))
    assert events.version() == 1
    assert ids(events) == [1]
    assert events.transaction_version("loader") is None


def test_a_piece_with_other_columns_is_refused_and_nothing_is_committed(events: Table) -> None:
    other = pa.table({"id": [3]})
    with pytest.raises(SchemaMismatchError):
        events.append_stream(SCHEMA, iter([piece(2), other]))
    assert ids(events) == [1]


def test_a_piece_that_does_not_fit_the_table_is_refused(events: Table) -> None:
    schema = pa.schema([("id", pa.string()), ("p", pa.string())])
    with pytest.raises(SchemaMismatchError, match="id"):
        events.append_stream(schema, iter([pa.table({"id": ["x"], "p": ["y"]}, schema=schema)]))
    assert events.version() == 1


def test_a_repeated_transaction_is_refused_before_writing(events: Table) -> None:
    events.append_stream(SCHEMA, iter([piece(2)]), app_transaction=("loader", 1))
    with pytest.raises(DuplicateTransactionError):
        events.append_stream(SCHEMA, iter([piece(3)]), app_transaction=("loader", 1))
    assert ids(events) == [1, 2]


def encodings(table: Table) -> dict[str, set[str]]:
    """The Parquet encodings of each column over the table's live files."""
    snapshot = table.snapshot()
    found: dict[str, set[str]] = {}
    for path in snapshot.paths:
        metadata = pq.ParquetFile(absolute_file_path(table.path, path)).metadata
        for group in range(metadata.num_row_groups):
            for index in range(metadata.num_columns):
                column = metadata.row_group(group).column(index)
                found.setdefault(column.path_in_schema, set()).update(column.encodings)
    return found


def test_streamed_integers_and_times_are_delta_encoded_and_read_back(lh: Lakehouse) -> None:
    schema = pa.schema(
        [
            ("id", pa.int64()),
            ("day", pa.date32()),
            ("at", pa.timestamp("us", tz="UTC")),
            ("name", pa.string()),
            ("_origin_row", pa.int64()),
        ]
    )
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    pieces = [
        pa.table(
            {
                "id": list(range(first, first + 100)),
                "day": [dt.date(2025, 1, 1 + i % 28) for i in range(100)],
                "at": [start + dt.timedelta(seconds=first + i) for i in range(100)],
                "name": [f"n{i % 3}" for i in range(100)],
                "_origin_row": list(range(first + 2, first + 102)),
            },
            schema=schema,
        )
        for first in (0, 100, 200)
    ]
    lh.storage.create_from_stream(TableName.parse("bronze.encoded"), schema, iter(pieces))
    table = lh.table("bronze.encoded")
    found = encodings(table)
    for name in ("id", "day", "at", "_origin_row"):
        assert "DELTA_BINARY_PACKED" in found[name], name
    assert "RLE_DICTIONARY" in found["name"]
    expected = pa.concat_tables(pieces).to_pylist()
    assert table.read().sort_by("id").to_pylist() == expected
    totals = lh.sql('select sum(id), max("at"), count(distinct day) from bronze.encoded')
    assert totals.rows() == [(sum(range(300)), start + dt.timedelta(seconds=299), 28)]


def test_origin_rows_are_delta_encoded_by_every_append(lh: Lakehouse) -> None:
    table = lh.create_table(
        "bronze.lines", pa.schema([("v", pa.string()), ("_origin_row", pa.int64())])
    )
    table.append(pa.table({"v": ["a", "b"], "_origin_row": [2, 3]}))
    assert "DELTA_BINARY_PACKED" in encodings(table)["_origin_row"]
    text = lh.create_table("silver.lines", pa.schema([("_origin_row", pa.string())]))
    text.append(pa.table({"_origin_row": ["line 2"]}))  # a text column of that name still writes
    assert text.read().to_pylist() == [{"_origin_row": "line 2"}]


def test_a_table_created_from_a_stream_holds_its_rows_in_its_first_commit(lh: Lakehouse) -> None:
    name = TableName.parse("bronze.fresh")
    result = lh.storage.create_from_stream(
        name,
        SCHEMA,
        iter([piece(1, 2), piece(3)]),
        description="made by a stream",
        app_transaction=("loader", 1),
        metadata={"note": "first"},
    )
    assert result.version == 0
    table = lh.table("bronze.fresh")
    assert ids(table) == [1, 2, 3]
    assert table.description() == "made by a stream"
    assert table.transaction_version("loader") == 1
    assert table.history(1)[0]["note"] == "first"
    assert [r.name for r in lh.tables("bronze")] == ["bronze.fresh"]  # in the catalog
    with pytest.raises(TableExistsError):
        lh.storage.create_from_stream(name, SCHEMA, iter([piece(4)]))
    assert ids(table) == [1, 2, 3]


def test_a_failing_stream_creates_no_table(lh: Lakehouse) -> None:
    def pieces() -> Iterator[pa.Table]:
        yield piece(1)
        raise KeyError("the source broke")

    name = TableName.parse("bronze.never")
    with pytest.raises(KeyError, match="the source broke"):
        lh.storage.create_from_stream(name, SCHEMA, pieces())
    assert not lh.storage.exists(name)
