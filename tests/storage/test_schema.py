from __future__ import annotations

import datetime as dt

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from lakebed.errors import SchemaMismatchError, StorageError
from lakebed.storage import columns_of, reconcile, to_arrow
from lakebed.storage.schema import normalise, unstorable

TABLE = "silver.t"


def schema(*fields: tuple[str, pa.DataType] | pa.Field) -> pa.Schema:
    return pa.schema(list(fields))


# -- reconcile: columns ----------------------------------------------------------------------


def test_matching_data_is_returned_with_the_table_schema() -> None:
    target = schema(("id", pa.int64()), ("name", pa.string()))
    fitted = reconcile(TABLE, target, pa.table({"name": ["a"], "id": [1]}))
    assert fitted.new_columns == []
    assert fitted.data.schema == target  # reordered to the table's column order
    assert fitted.data.to_pylist() == [{"id": 1, "name": "a"}]


def test_new_columns_are_appended_as_nullable_and_reported() -> None:
    target = schema(("id", pa.int64()))
    fitted = reconcile(TABLE, target, pa.table({"id": [1], "extra": ["x"], "n": [1.5]}))
    assert fitted.new_columns == ["extra", "n"]
    assert fitted.data.schema.names == ["id", "extra", "n"]
    assert fitted.data.schema.field("extra").nullable
    assert fitted.data.schema.field("extra").type == pa.string()


def test_new_large_string_column_is_stored_as_string() -> None:
    data = pa.table({"id": [1], "s": pa.array(["x"], pa.large_string())})
    fitted = reconcile(TABLE, schema(("id", pa.int64())), data)
    assert fitted.data.schema.field("s").type == pa.string()


def test_missing_column_is_an_error_naming_it_with_a_hint() -> None:
    target = schema(("id", pa.int64()), ("amount", pa.float64()))
    with pytest.raises(SchemaMismatchError) as info:
        reconcile(TABLE, target, pa.table({"id": [1]}))
    assert info.value.problems == ["column amount (double) is missing from the data"]
    assert info.value.table == TABLE
    assert info.value.hint is not None
    assert "allow_missing_columns=True" in info.value.hint


def test_allow_missing_columns_fills_nullable_columns_with_nulls() -> None:
    target = schema(("id", pa.int64()), ("amount", pa.float64()))
    fitted = reconcile(TABLE, target, pa.table({"id": [1, 2]}), allow_missing_columns=True)
    assert fitted.data.schema == target
    assert fitted.data.column("amount").to_pylist() == [None, None]


def test_allow_missing_columns_still_requires_not_null_and_partition_columns() -> None:
    target = schema(
        pa.field("id", pa.int64(), nullable=False), ("p", pa.string()), ("x", pa.int8())
    )
    with pytest.raises(SchemaMismatchError) as info:
        reconcile(
            TABLE,
            target,
            pa.table({"x": pa.array([1], pa.int8())}),
            allow_missing_columns=True,
            partition_by=["p"],
        )
    assert sorted(info.value.problems) == [
        "column id (int64) is missing from the data",
        "column p (string) is missing from the data",
    ]


def test_case_mismatch_says_how_the_column_is_spelled() -> None:
    target = schema(("customer_id", pa.int64()))
    with pytest.raises(SchemaMismatchError) as info:
        reconcile(TABLE, target, pa.table({"Customer_ID": [1]}))
    assert info.value.problems == [
        "column customer_id is spelled Customer_ID in the data (names are case-sensitive)"
    ]


def test_duplicate_column_names_are_rejected() -> None:
    data = pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["id", "id"])
    with pytest.raises(SchemaMismatchError, match="column id appears twice"):
        reconcile(TABLE, schema(("id", pa.int64())), data)


def test_all_null_new_column_is_rejected() -> None:
    data = pa.table({"id": [1], "mystery": pa.array([None], pa.null())})
    with pytest.raises(SchemaMismatchError) as info:
        reconcile(TABLE, schema(("id", pa.int64())), data)
    assert info.value.problems == ["new column mystery has only nulls, so its type is unknown"]


def test_all_null_data_for_an_existing_column_is_accepted() -> None:
    data = pa.table({"id": [1], "name": pa.array([None], pa.null())})
    fitted = reconcile(TABLE, schema(("id", pa.int64()), ("name", pa.string())), data)
    assert fitted.data.column("name").type == pa.string()
    assert fitted.data.column("name").to_pylist() == [None]


def test_not_null_violation_counts_the_nulls() -> None:
    target = schema(pa.field("id", pa.int64(), nullable=False))
    with pytest.raises(SchemaMismatchError) as info:
        reconcile(TABLE, target, pa.table({"id": [1, None, None]}))
    assert info.value.problems == ["column id is NOT NULL but has 2 nulls"]


# -- reconcile: types ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "target", "values"),
    [
        (pa.int32(), pa.int64(), [1, -2]),
        (pa.int8(), pa.int16(), [127]),
        (pa.uint16(), pa.int32(), [65535]),
        (pa.int64(), pa.float64(), [2**40]),
        (pa.int16(), pa.float32(), [300]),
        (pa.float32(), pa.float64(), [1.5]),
        (pa.large_string(), pa.string(), ["x"]),
        (pa.string_view(), pa.string(), ["x"]),
        (pa.large_binary(), pa.binary(), [b"x"]),
    ],
)
def test_widening_types_are_cast_to_the_table_type(
    source: pa.DataType, target: pa.DataType, values: list[object]
) -> None:
    fitted = reconcile(TABLE, schema(("c", target)), pa.table({"c": pa.array(values, source)}))
    assert fitted.data.column("c").type == target
    assert fitted.data.column("c").to_pylist() == pa.array(values, source).cast(target).to_pylist()


def test_nanosecond_timestamps_are_stored_as_microseconds() -> None:
    moment = dt.datetime(2024, 5, 1, 12, 30, 15, 123456)
    data = pa.table({"ts": pa.array([moment], pa.timestamp("ns"))})
    fitted = reconcile(TABLE, schema(("ts", pa.timestamp("us"))), data)
    assert fitted.data.column("ts").type == pa.timestamp("us")
    assert fitted.data.column("ts").to_pylist() == [moment]


def test_timestamps_in_another_zone_fit_a_utc_column() -> None:
    data = pa.table({"ts": pa.array([0], pa.timestamp("ms", tz="Europe/Paris"))})
    fitted = reconcile(TABLE, schema(("ts", pa.timestamp("us", tz="UTC"))), data)
    assert fitted.data.column("ts").type == pa.timestamp("us", tz="UTC")


def test_dictionary_encoded_strings_fit_a_string_column() -> None:
    data = pa.table({"s": pa.array(["a", "b", "a"]).dictionary_encode()})
    fitted = reconcile(TABLE, schema(("s", pa.string())), data)
    assert fitted.data.column("s").to_pylist() == ["a", "b", "a"]


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (pa.int64(), pa.int32()),
        (pa.float64(), pa.float32()),
        (pa.float64(), pa.int64()),
        (pa.int64(), pa.float32()),
        (pa.int8(), pa.uint8()),
        (pa.string(), pa.int64()),
        (pa.int64(), pa.string()),
        (pa.timestamp("us"), pa.timestamp("us", tz="UTC")),
        (pa.timestamp("us", tz="UTC"), pa.timestamp("us")),
        (pa.date32(), pa.timestamp("us")),
        (pa.bool_(), pa.int64()),
    ],
)
def test_narrowing_or_incompatible_types_are_rejected_naming_the_column(
    source: pa.DataType, target: pa.DataType
) -> None:
    data = pa.table({"c": pa.nulls(1, source)})
    with pytest.raises(SchemaMismatchError) as info:
        reconcile(TABLE, schema(("c", target)), data)
    assert info.value.problems == [f"column c is {target} in the table but {source}"]
    assert info.value.hint is not None
    assert "schema_mode='overwrite'" in info.value.hint


def test_every_bad_column_is_named_in_one_error() -> None:
    target = schema(("a", pa.int32()), ("b", pa.int64()), ("c", pa.string()))
    data = pa.table({"a": pa.array([1], pa.int64()), "b": ["x"]})
    with pytest.raises(SchemaMismatchError) as info:
        reconcile(TABLE, target, data)
    message = str(info.value)
    assert "column a is int32 in the table but int64" in message
    assert "column b is int64 in the table but string" in message
    assert "column c (string) is missing from the data" in message
    assert message.startswith(f"data written to {TABLE} does not match its schema: ")


def test_unsigned_values_too_large_for_a_signed_column_are_a_schema_mismatch() -> None:
    # uint32 -> int32 and uint64 -> int64 do not always fit; they must be reported as a
    # schema mismatch, not leak pyarrow's ArrowInvalid from the cast.
    for source, target, value in [
        (pa.uint32(), pa.int32(), 3_000_000_000),
        (pa.uint64(), pa.int64(), 2**64 - 1),
    ]:
        data = pa.table({"c": pa.array([value], source)})
        with pytest.raises(SchemaMismatchError, match="column c"):
            reconcile(TABLE, schema(("c", target)), data)


def test_sub_microsecond_timestamps_are_a_schema_mismatch_not_an_arrow_error() -> None:
    # Delta keeps microseconds; nanosecond parts must be reported with the column name.
    data = pa.table({"ts": pa.array([1], pa.timestamp("ns"))})
    with pytest.raises(SchemaMismatchError, match="column ts"):
        reconcile(TABLE, schema(("ts", pa.timestamp("us"))), data)


# -- to_arrow --------------------------------------------------------------------------------

EXPECTED = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]


@pytest.mark.parametrize(
    "data",
    [
        pa.table({"id": [1, 2], "name": ["a", "b"]}),
        pa.RecordBatch.from_pydict({"id": [1, 2], "name": ["a", "b"]}),
        pa.RecordBatchReader.from_batches(
            pa.schema([("id", pa.int64()), ("name", pa.string())]),
            [pa.RecordBatch.from_pydict({"id": [1, 2], "name": ["a", "b"]})],
        ),
        [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        {"id": [1, 2], "name": ["a", "b"]},
        pd.DataFrame({"id": [1, 2], "name": ["a", "b"]}),
        pl.DataFrame({"id": [1, 2], "name": ["a", "b"]}),
    ],
    ids=["arrow", "batch", "reader", "rows", "columns", "pandas", "polars"],
)
def test_to_arrow_accepts_the_usual_tabular_types(data: object) -> None:
    table = to_arrow(data)
    assert isinstance(table, pa.Table)
    assert table.to_pylist() == EXPECTED


def test_to_arrow_drops_an_unnamed_pandas_index() -> None:
    frame = pd.DataFrame({"id": [1, 2]}, index=[10, 20])
    assert to_arrow(frame).column_names == ["id"]


def test_to_arrow_keeps_named_pandas_index_levels_as_columns() -> None:
    frame = pd.DataFrame({"country": ["DE", "FR", "DE"], "day": [1, 1, 2], "n": [1, 2, 3]})
    grouped = frame.groupby(["country", "day"]).n.sum().to_frame()
    assert to_arrow(grouped).to_pylist() == [
        {"country": "DE", "day": 1, "n": 1},
        {"country": "DE", "day": 2, "n": 3},
        {"country": "FR", "day": 1, "n": 2},
    ]
    keyed = frame.set_index("country")
    assert to_arrow(keyed).column_names == ["country", "day", "n"]
    # A Series too; what a filter left of the row numbers is not a column.
    assert to_arrow(frame[frame.n > 1].set_index("day").n).column_names == ["day", "n"]
    assert to_arrow(frame[frame.n > 1].n).column_names == ["n"]


def test_to_arrow_rejects_other_types_with_a_hint() -> None:
    with pytest.raises(StorageError) as info:
        to_arrow(42)
    assert info.value.message == "cannot write data of type int"
    assert info.value.hint is not None
    assert "pandas or Polars DataFrame" in info.value.hint


def test_columns_of_describes_a_schema_for_the_catalog() -> None:
    described = columns_of(schema(pa.field("id", pa.int64(), nullable=False), ("s", pa.string())))
    assert described == [
        {"name": "id", "type": "int64", "nullable": False},
        {"name": "s", "type": "string", "nullable": True},
    ]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (pa.table({"id": [1], "ID": [2]}), "column ID appears as id and ID"),
        (pa.table({"t": pa.array([1], pa.time64("us"))}), "Delta has no time-of-day type"),
        (pa.table({"d": pa.array([1], pa.duration("s"))}), "Delta has no interval type"),
        (
            pa.table({"s": pa.array([{"a": 1}], pa.struct([("a", pa.time32("s"))]))}),
            "column s is struct<a: time32[s]>: Delta has no time-of-day type",
        ),
        (
            pa.table({"x": pa.array([1], pa.decimal256(40, 0))}),
            "Delta decimals hold at most 38 digits",
        ),
    ],
    ids=["names by case", "time", "duration", "nested time", "wide decimal"],
)
def test_types_and_names_delta_cannot_store_are_refused(data: pa.Table, problem: str) -> None:
    assert any(problem in p for p in unstorable(data.schema)), unstorable(data.schema)
    with pytest.raises(SchemaMismatchError) as caught:
        normalise(data, table="silver.x")
    assert "data written to silver.x cannot be stored in Delta" in caught.value.message
    assert problem in caught.value.message


def test_storable_types_pass() -> None:
    data = pa.table(
        {
            "id": [1],
            "tags": [["a"]],
            "at": pa.array([0], pa.timestamp("ns", tz="UTC")),
            "m": pa.array([[("k", 1)]], pa.map_(pa.string(), pa.int64())),
        }
    )
    assert unstorable(data.schema) == []
