"""Rows in memory written as several files at once and committed as add actions: the table
must be what delta-rs's own writer leaves (rows, schema, statistics, transactions, change
feed), and a commit that fails must leave no file behind."""

from __future__ import annotations

import datetime as dt
import os
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake

from lakebed import Lakehouse
from lakebed.errors import DuplicateTransactionError, TableExistsError
from lakebed.storage import TableName, parallel_write
from lakebed.storage.file_stats import stats_from_actions, stats_of, stats_of_written


@pytest.fixture
def small_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    """Row groups of 1,000 rows and three writers, so a few thousand rows make three files."""
    monkeypatch.setattr(parallel_write, "ROW_GROUP_ROWS", 1_000)
    monkeypatch.setattr(parallel_write, "writers", lambda: 3)


def varied(count: int, seed: int = 3) -> pa.Table:
    rng = np.random.default_rng(seed)
    floats = rng.normal(size=count)
    floats[rng.random(count) < 0.1] = np.nan
    nulls = rng.random(count) < 0.05
    start = np.datetime64("2024-01-01T00:00:00", "us")
    return pa.table(
        {
            "id": pa.array(np.arange(count), pa.int64()),
            "small": pa.array(rng.integers(-100, 100, count), pa.int16(), mask=nulls),
            "f": pa.array(floats),
            "s": pa.array([f"name {i % 97:03d}" for i in range(count)], mask=nulls),
            "long": pa.array(["x" * (70 + i % 3) for i in range(count)]),
            "flag": pa.array(rng.random(count) < 0.5),
            "day": pa.array(
                (np.datetime64("2020-01-01") + rng.integers(0, 2000, count)).astype("datetime64[D]")
            ),
            "at": pa.array(start + rng.integers(0, 10**12, count), pa.timestamp("us", tz="UTC")),
            "naive": pa.array(start + rng.integers(0, 10**12, count), pa.timestamp("us")),
            "amount": pa.array(
                [Decimal(i % 1000) / 100 for i in range(count)], pa.decimal128(9, 2)
            ),
            "nested": pa.array([{"a": i, "b": str(i)} for i in range(count)]),
        }
    )


def comparable(data: pa.Table) -> pa.Table:
    """The rows in id order with floats as text (NaN is not equal to itself)."""
    data = data.sort_by("id")
    for index, field in enumerate(data.schema):
        if pa.types.is_floating(field.type):
            data = data.set_column(index, field.name, data.column(index).cast(pa.string()))
    return data


def assert_same_rows(found: pa.Table, expected: pa.Table) -> None:
    assert found.schema == expected.schema
    assert comparable(found).equals(comparable(expected))


def test_statistics_read_from_the_footer_equal_those_computed_from_the_values(
    tmp_path: Path,
) -> None:
    data = varied(5_000)
    collected: list[pq.FileMetaData] = []
    # Several row groups, one of them holding only NaN floats and null strings.
    data = data.set_column(2, "f", pa.array(np.r_[np.full(1_000, np.nan), data["f"][1_000:]]))
    pq.write_table(data, tmp_path / "f.parquet", row_group_size=1_000, metadata_collector=collected)
    assert collected[0].num_row_groups == 5
    assert stats_of_written(data, collected[0]) == stats_of(data)


def test_rows_are_written_as_several_files_and_read_back_whole(
    lh: Lakehouse, small_groups: None
) -> None:
    data = varied(3_500)
    result = lh.storage.create_from_rows(
        TableName.parse("silver.wide"),
        data,
        description="wide rows",
        app_transaction=("writer", 1),
        metadata={"lakebed.test": "yes"},
    )
    table = lh.table("silver.wide")
    assert (result.version, result.rows_written) == (0, 3_500)
    delta = DeltaTable(table.path)
    assert len(delta.file_uris()) == 3
    assert delta.transaction_version("writer") == 1
    assert delta.metadata().description == "wide rows"
    # Silver tables keep a change data feed, as tables delta-rs creates do.
    assert delta.metadata().configuration["delta.enableChangeDataFeed"] == "true"
    assert delta.history(1)[0]["lakebed.test"] == "yes"
    assert_same_rows(table.read(), data)
    assert lh.sql("select count(*), sum(id) from silver.wide").rows() == [(3_500, 3_499 * 1_750)]
    # Each file's statistics are those of its rows, as delta-rs reads them back.
    for row in pa.table(delta.get_add_actions(flatten=True)).to_pylist():
        stats = stats_from_actions(row, data.schema)
        low, high = stats["minValues"]["id"], stats["maxValues"]["id"]
        here = data.slice(low, high - low + 1)
        assert stats["numRecords"] == here.num_rows
        assert stats == stats_of(here)


def test_a_file_smaller_than_two_row_groups_is_one_file(lh: Lakehouse, small_groups: None) -> None:
    lh.storage.create_from_rows(TableName.parse("silver.few"), varied(1_500))
    assert len(DeltaTable(lh.table("silver.few").path).file_uris()) == 1
    lh.storage.create_from_rows(TableName.parse("silver.none"), varied(10).slice(0, 0))
    empty = lh.table("silver.none")
    assert DeltaTable(empty.path).file_uris() == []
    assert empty.read().num_rows == 0
    assert empty.schema() == varied(10).schema


def test_creating_a_table_that_exists_leaves_no_files_behind(
    lh: Lakehouse, small_groups: None
) -> None:
    name = TableName.parse("silver.taken")
    lh.storage.create_from_rows(name, varied(10))
    path = lh.table("silver.taken").path
    before = sorted(os.listdir(path))
    # Another writer created it between the check and the commit.
    with pytest.raises(TableExistsError):
        parallel_write.create(
            lh.storage._handle(name),
            varied(3_000),
            description=None,
            configuration={},
            app_transaction=None,
            metadata=None,
        )
    assert sorted(os.listdir(path)) == before


def test_overwrite_replaces_every_row_in_one_commit_with_a_change_feed(
    lh: Lakehouse, small_groups: None
) -> None:
    first, second = varied(2_500, seed=1), varied(3_200, seed=2)
    lh.storage.create_from_rows(TableName.parse("silver.again"), first)
    table = lh.table("silver.again")
    result = table.overwrite(
        second, schema_mode="overwrite", app_transaction=("model", 2), metadata={"k": "v"}
    )
    assert (result.version, result.operation, result.rows_written) == (1, "OVERWRITE", 3_200)
    delta = DeltaTable(table.path)
    assert len(delta.file_uris()) == 3
    assert_same_rows(table.read(), second)
    assert delta.history(1)[0]["k"] == "v"
    assert delta.transaction_version("model") == 2
    feed = table.changes(1, 1)
    assert feed is not None
    kinds = feed.group_by("_change_type").aggregate([("id", "count")]).to_pylist()
    assert {k["_change_type"]: k["id_count"] for k in kinds} == {"delete": 2_500, "insert": 3_200}
    # The transaction still refuses a repeated version.
    with pytest.raises(DuplicateTransactionError):
        table.overwrite(second, schema_mode="overwrite", app_transaction=("model", 2))


def test_overwrite_with_new_columns_or_partitions_goes_to_delta_rs(
    lh: Lakehouse, small_groups: None
) -> None:
    lh.storage.create_from_rows(TableName.parse("silver.shape"), varied(100))
    table = lh.table("silver.shape")
    narrower = pa.table({"id": pa.array([1, 2], pa.int64()), "p": ["a", "b"]})
    table.overwrite(narrower, schema_mode="overwrite")
    assert table.read().sort_by("id").equals(narrower)
    table.overwrite(narrower, schema_mode="overwrite", partition_by=["p"])
    assert table.partition_by == ["p"]
    assert table.read().sort_by("id").equals(narrower)


def test_a_table_with_a_constraint_is_overwritten_by_delta_rs(tmp_path: Path) -> None:
    path = str(tmp_path / "checked")
    write_deltalake(path, pa.table({"id": pa.array([1, 2], pa.int64())}))
    DeltaTable(path).alter.add_constraint({"positive": "id > 0"})
    assert not parallel_write.overwritable(
        path, DeltaTable(path), pa.table({"id": pa.array([3], pa.int64())})
    )
    timestamps = pa.table({"at": pa.array([dt.datetime(2024, 1, 1)], pa.timestamp("us"))})
    write_deltalake(str(tmp_path / "plain"), timestamps)
    plain = DeltaTable(str(tmp_path / "plain"))
    assert parallel_write.overwritable(str(tmp_path / "plain"), plain, timestamps)
    assert not parallel_write.overwritable("s3://bucket/plain", plain, timestamps)
