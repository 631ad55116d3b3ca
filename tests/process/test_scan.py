"""How a snapshot becomes DuckDB SQL: hive folders when the paths hold the partition values,
one scan per partition otherwise."""

from __future__ import annotations

import datetime as dt
import shutil
import uuid
from dataclasses import replace
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from helpers import sorted_rows
from lakebed import Lakehouse, Table
from lakebed.process import DuckDBEngine
from lakebed.process.scan import ScanLayout, _hive_paths_match, duckdb_types, scan_sql
from lakebed.storage import AsOf, Snapshot, TableName

SPECIAL = [None, "a b", "x/y", "k=v", "50%", "%2F", "ünï €", "it's", "a\\b", "..", "+", "plain"]


def _partitioned(lh: Lakehouse, name: str, data: pa.Table, partition_by: list[str]) -> Table:
    table = lh.create_table(name, data.schema, partition_by=partition_by)
    table.append(data)
    return table


def test_delta_rs_paths_match_their_partition_values_even_with_special_characters(
    lh: Lakehouse,
) -> None:
    data = pa.table({"id": list(range(len(SPECIAL))), "p": SPECIAL})
    table = _partitioned(lh, "silver.special", data, ["p"])
    assert _hive_paths_match(table.snapshot())
    assert lh.sql("select * from silver.special order by id").arrow().to_pylist() == (
        data.to_pylist()
    )


def test_two_partition_columns_match_and_read_back(lh: Lakehouse) -> None:
    n = len(SPECIAL)
    data = pa.table(
        {"id": list(range(n)), "p": SPECIAL, "q": list(reversed(SPECIAL)), "d": [1] * n}
    )
    table = _partitioned(lh, "silver.two", data, ["p", "q"])
    assert _hive_paths_match(table.snapshot())
    got = lh.sql("select id, p, q, d from silver.two order by id").arrow()
    assert got.to_pylist() == data.to_pylist()


def test_unpartitioned_and_string_partitions_are_read_as_hive(lh: Lakehouse) -> None:
    data = pa.table({"id": [1, 2], "p": ["a", "b"]})
    table = _partitioned(lh, "silver.h", data, ["p"])
    layout = ScanLayout.of(lh.engine._con, table.snapshot())
    assert layout.hive
    sql = scan_sql(table.snapshot(), layout, empty_relation="unused")
    assert "hive_partitioning=true" in sql
    assert "UNION ALL" not in sql


def test_partition_values_that_do_not_round_trip_use_one_scan_per_partition(
    lh: Lakehouse,
) -> None:
    # delta-rs writes booleans as `k=true`: the folder text is not str(True).
    data = pa.table({"id": [1, 2, 3], "k": [True, False, None]})
    table = _partitioned(lh, "silver.flags", data, ["k"])
    snapshot = table.snapshot()
    assert not _hive_paths_match(snapshot)
    layout = ScanLayout.of(lh.engine._con, snapshot)
    assert not layout.hive
    sql = scan_sql(snapshot, layout, empty_relation="unused")
    assert sql.count("UNION ALL") == 2
    assert "hive_partitioning=false" in sql
    assert lh.sql("select * from silver.flags order by id").rows() == [
        (1, True),
        (2, False),
        (3, None),
    ]


def _flattened(snapshot: Snapshot, into: str = "flat") -> Snapshot:
    """The same snapshot with every data file copied out of its hive folders."""
    root = Path(snapshot.root)
    (root / into).mkdir(exist_ok=True)
    paths = []
    for relative, absolute in zip(
        snapshot.files.column("path").to_pylist(), snapshot.paths, strict=True
    ):
        target = f"{into}/{uuid.uuid4().hex}.parquet"
        shutil.copyfile(absolute, root / target)
        paths.append(target)
        assert relative != target
    files = snapshot.files.set_column(
        snapshot.files.column_names.index("path"), "path", pa.array(paths, pa.string())
    )
    return replace(snapshot, files=files)


def test_hand_made_snapshot_outside_hive_folders_reads_through_a_union(
    lh: Lakehouse,
) -> None:
    data = pa.table({"id": list(range(len(SPECIAL))), "p": SPECIAL, "v": [1.5] * len(SPECIAL)})
    table = _partitioned(lh, "silver.moved", data, ["p"])
    flat = _flattened(table.snapshot())
    assert not _hive_paths_match(flat)
    flat_name = TableName("silver", "moved")

    def resolve(name: TableName, as_of: AsOf | None) -> Snapshot:
        assert name == flat_name
        return flat

    engine = DuckDBEngine(resolve, lambda: ["silver.moved"])
    try:
        result = engine.sql("select * from silver.moved")
        assert result.arrow().schema.names == ["id", "p", "v"]
        assert sorted_rows(result.arrow()) == sorted_rows(data)
        one = engine.sql("select id from silver.moved where p = 'k=v'")
        assert one.rows() == [(3,)]
        assert one.files_scanned == {"silver.moved": 1}
        nulls = engine.sql("select id from silver.moved where p is null")
        assert nulls.rows() == [(0,)]
    finally:
        engine.close()


def test_a_folder_value_that_disagrees_with_the_log_is_not_trusted(lh: Lakehouse) -> None:
    data = pa.table({"id": [1, 2], "p": ["a", "b"]})
    table = _partitioned(lh, "silver.liar", data, ["p"])
    snapshot = table.snapshot()
    values = snapshot.files.column("partition.p").to_pylist()
    swapped = snapshot.files.set_column(
        snapshot.files.column_names.index("partition.p"),
        "partition.p",
        pa.array(list(reversed(values)), pa.string()),
    )
    assert not _hive_paths_match(replace(snapshot, files=swapped))


@pytest.mark.parametrize(
    ("dtype", "values"),
    [
        (pa.timestamp("us", tz="UTC"), [dt.datetime(2024, 1, 1, 12, 30, tzinfo=dt.UTC), None]),
        (pa.timestamp("us"), [dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 1, 0, 0, 0, 5)]),
        (pa.float64(), [1.0, 1e-7]),
    ],
    ids=["timestamptz", "timestamp", "double"],
)
def test_partition_types_with_lossy_folder_text_read_back_exactly(
    lh: Lakehouse, dtype: pa.DataType, values: list[object]
) -> None:
    data = pa.table({"id": list(range(len(values))), "k": pa.array(values, dtype)})
    table = _partitioned(lh, "silver.lossy", data, ["k"])
    assert lh.sql("select * from silver.lossy order by id").arrow().column("k").to_pylist() == (
        values
    )
    assert sorted_rows(lh.sql("select * from silver.lossy").arrow()) == sorted_rows(table.read())


def test_flat_types_are_named_as_duckdb_names_them() -> None:
    types = [
        pa.int8(),
        pa.int16(),
        pa.int32(),
        pa.int64(),
        pa.uint8(),
        pa.uint16(),
        pa.uint32(),
        pa.uint64(),
        pa.float32(),
        pa.float64(),
        pa.bool_(),
        pa.string(),
        pa.large_string(),
        pa.binary(),
        pa.large_binary(),
        pa.date32(),
        pa.timestamp("us"),
        pa.timestamp("us", tz="UTC"),
        pa.timestamp("us", tz="Europe/Paris"),
        pa.timestamp("ns"),
        pa.timestamp("ms"),
        pa.timestamp("s"),
        pa.decimal128(10, 2),
        pa.decimal128(38, 9),
        pa.time64("us"),
    ]
    schema = pa.schema([pa.field(f"c{i}", dtype) for i, dtype in enumerate(types)])
    con = duckdb.connect()
    asked = con.from_arrow(schema.empty_table()).dtypes
    assert duckdb_types(con, schema) == {f"c{i}": str(dtype) for i, dtype in enumerate(asked)}
    # Nested columns are asked of DuckDB.
    nested = pa.schema([("id", pa.int64()), ("tags", pa.list_(pa.string()))])
    assert duckdb_types(con, nested) == {"id": "BIGINT", "tags": "VARCHAR[]"}
