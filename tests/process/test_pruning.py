"""File skipping: golden files of the predicates found per table reference, and behaviour
(pruned results always equal unpruned ones)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlglot

from helpers import golden_cases
from lakebed import Lakehouse, Table
from lakebed.process import Predicate, references
from lakebed.process.pruning import STRING_STAT_TRUNCATION
from lakebed.storage import TableName

FIXTURES = Path(__file__).parent.parent / "fixtures" / "pruning"

# Columns of the tables the golden queries read (unqualified columns resolve against them).
COLUMNS = {
    TableName("silver", "orders"): {"id", "p", "amount", "customer_id", "d", "ts", "paid"},
    TableName("silver", "customers"): {"id", "name", "region"},
    TableName("gold", "revenue"): {"day", "total"},
    TableName("bronze", "events"): {"id", "kind", "at"},
}


# -- golden files ----------------------------------------------------------------------------


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, dt.datetime):
        return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
    if isinstance(value, dt.date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, Decimal | int | float):
        return str(value)
    raise TypeError(f"unexpected literal {value!r}")


def format_predicate(predicate: Predicate) -> str:
    column, op, values = predicate.column, predicate.op, predicate.values
    if op == "is_null":
        return f"{column} is null"
    if op == "not_null":
        return f"{column} is not null"
    if op == "in":
        return f"{column} in ({', '.join(format_value(v) for v in values)})"
    if op == "between":
        return f"{column} between {format_value(values[0])} and {format_value(values[1])}"
    (value,) = values
    return f"{column} {op} {format_value(value)}"


def format_references(query: str) -> list[str]:
    """`layer.name: [[pred, ...], ...]` per table, sorted by name."""
    found = references(sqlglot.parse_one(query, read="duckdb"), COLUMNS.__getitem__)
    return [
        f"{name}: ["
        + ", ".join("[" + ", ".join(format_predicate(p) for p in ref) + "]" for ref in refs)
        + "]"
        for name, refs in sorted(found.items())
    ]


GOLDEN = [
    pytest.param(query, expected, id=f"{path.stem}: {title}")
    for path in sorted(FIXTURES.glob("*.sql"))
    for title, query, expected in golden_cases(path)
]


def test_golden_files_hold_cases() -> None:
    assert len(GOLDEN) >= 40


@pytest.mark.parametrize(("query", "expected"), GOLDEN)
def test_predicates_per_reference(query: str, expected: list[str]) -> None:
    assert format_references(query) == expected


# -- behaviour -------------------------------------------------------------------------------


def hidden(query: str, table: str) -> str:
    """The same query reading `table` through a CTE, which hides every predicate from file
    skipping (a CTE without a WHERE of its own keeps all files)."""
    alias = table.replace(".", "_") + "_all"
    body = query.replace(table, alias)
    if body.lower().startswith("with "):
        return f"WITH {alias} AS (SELECT * FROM {table}), {body[5:]}"
    return f"WITH {alias} AS (SELECT * FROM {table}) {body}"


def assert_pruning_is_invisible(lh: Lakehouse, query: str, table: str) -> tuple[int, int]:
    pruned = lh.sql(query)
    full = lh.sql(hidden(query, table))
    assert full.files_scanned[table] == full.files_total[table]
    assert sorted(map(repr, pruned.rows())) == sorted(map(repr, full.rows())), query
    return pruned.files_scanned[table], pruned.files_total[table]


@pytest.fixture
def ranged(lh: Lakehouse) -> Table:
    """silver.ranged: 5 files with disjoint id ranges 0-9, 10-19, ..., 40-49."""
    schema = pa.schema([("id", pa.int64()), ("grp", pa.string()), ("v", pa.float64())])
    table = lh.create_table("silver.ranged", schema)
    for f in range(5):
        ids = list(range(10 * f, 10 * f + 10))
        table.append(pa.table({"id": ids, "grp": [f"g{f}"] * 10, "v": [i / 2 for i in ids]}))
    return table


def test_selective_filter_scans_fewer_files(lh: Lakehouse, ranged: Table) -> None:
    result = lh.sql("select count(*) from silver.ranged where id >= 42")
    assert result.scalar() == 8
    assert result.files_total == {"silver.ranged": 5}
    assert result.files_scanned == {"silver.ranged": 1}
    assert lh.sql("select * from silver.ranged where id = 15").files_scanned == {"silver.ranged": 1}
    assert lh.sql("select * from silver.ranged where id in (1, 45)").files_scanned == {
        "silver.ranged": 2
    }
    assert lh.sql("select * from silver.ranged where id > 1000").files_scanned == {
        "silver.ranged": 0
    }
    assert lh.sql("select * from silver.ranged where id + 0 > 42").files_scanned == {
        "silver.ranged": 5
    }


@pytest.mark.parametrize(
    "where",
    [
        "id = 15",
        "id != 15",
        "id < 10",
        "id <= 10",
        "id > 39",
        "id >= 40",
        "15 > id",
        "id between 12 and 31",
        "id between 31 and 12",
        "id in (0, 19, 49, 99)",
        "id > 2.5",
        "v >= 20",
        "v < -1",
        "grp = 'g3'",
        "grp > 'g2'",
        "grp between 'g1' and 'g2'",
        "grp in ('g0', 'zzz')",
        "id is null",
        "id is not null",
        "id > 1000",
        "id > 10 and id < 20 and grp = 'g1'",
        "id > 10 or id < 5",
    ],
)
def test_pruned_results_equal_unpruned(lh: Lakehouse, ranged: Table, where: str) -> None:
    assert_pruning_is_invisible(lh, f"select * from silver.ranged where {where}", "silver.ranged")


def test_pruning_in_joins_and_subqueries_keeps_results(lh: Lakehouse, ranged: Table) -> None:
    lh.write("silver.groups", [{"grp": f"g{i}", "label": f"group {i}"} for i in range(6)])
    queries = [
        "select r.id, g.label from silver.ranged r join silver.groups g using (grp) "
        "where r.id > 35",
        "select g.label, r.id from silver.groups g left join silver.ranged r "
        "on r.grp = g.grp and r.id > 35 where g.grp >= 'g3'",
        "select g.label, r.id from silver.ranged r right join silver.groups g "
        "on r.grp = g.grp where r.id > 35 or r.id is null",
        "select a.id, b.id from silver.ranged a join silver.ranged b on a.id = b.id - 30 "
        "where a.id < 5 and b.id >= 30",
        "select id from silver.ranged where id = (select max(id) from silver.ranged where id < 20)",
        "with low as (select * from silver.ranged where id < 12) select * from low where v > 1",
    ]
    for query in queries:
        assert_pruning_is_invisible(lh, query, "silver.ranged")


def test_self_join_reads_the_union_of_the_files_each_side_needs(
    lh: Lakehouse, ranged: Table
) -> None:
    result = lh.sql(
        "select count(*) from silver.ranged a, silver.ranged b where a.id < 10 and b.id >= 40"
    )
    assert result.scalar() == 100
    assert result.files_scanned == {"silver.ranged": 2}


def test_partition_pruning(lh: Lakehouse) -> None:
    data = pa.table({"id": list(range(12)), "p": [None, "a", "b", "c"] * 3})
    table = lh.create_table("silver.parts", data.schema, partition_by=["p"])
    table.append(data)
    for where, files in [
        ("p = 'a'", 1),
        ("p in ('a', 'c')", 2),
        ("p is null", 1),
        ("p is not null", 3),
        ("p > 'a'", 2),
        ("p != 'a'", 2),  # NULL != 'a' is not true: the NULL partition is skipped too
    ]:
        query = f"select * from silver.parts where {where}"
        scanned, total = assert_pruning_is_invisible(lh, query, "silver.parts")
        assert (scanned, total) == (files, 4), where


def test_long_strings_above_the_truncated_max_are_still_found(lh: Lakehouse) -> None:
    # Delta truncates long string statistics; a max that is a prefix is no upper bound.
    assert STRING_STAT_TRUNCATION == 32
    schema = pa.schema([("id", pa.int64()), ("s", pa.string())])
    table = lh.create_table("silver.strings", schema)
    values = [
        "a" * 40 + "z",
        "b" * 31 + "c",
        "c" * 32,
        "é" * 40,
        "€" * 25 + "x",
        "😀" * 20,
        "short",
    ]
    for i, value in enumerate(values):
        table.append(pa.table({"id": [i], "s": [value]}, schema=schema))
    probes = [
        "a" * 40,
        "a" * 40 + "y",
        "b" * 31 + "b",
        "b" * 31 + "c",
        "c" * 31,
        "c" * 32,
        "é" * 39,
        "é" * 40,
        "€" * 25,
        "€" * 25 + "w",
        "😀" * 19,
        "😀" * 20,
        "s",
    ]
    for probe in probes:
        for op in (">", ">=", "=", "<", "<=", "!="):
            query = f"select id from silver.strings where s {op} '{probe}'"
            assert_pruning_is_invisible(lh, query, "silver.strings")


def _typed_table(lh: Lakehouse, name: str, dtype: pa.DataType, files: list[list[Any]]) -> Table:
    schema = pa.schema([("id", pa.int64()), ("x", dtype)])
    table = lh.create_table(name, schema)
    start = 0
    for values in files:
        ids = list(range(start, start + len(values)))
        table.append(pa.table({"id": ids, "x": pa.array(values, dtype)}, schema=schema))
        start += len(values)
    return table


TYPED = [
    (
        pa.timestamp("us"),
        [
            [dt.datetime(2024, 1, 1, 0, 0), dt.datetime(2024, 1, 1, 23, 59, 59, 999999)],
            [dt.datetime(2024, 1, 2, 12, 0), None],
            [None, None],
        ],
        [
            "x > TIMESTAMP '2024-01-01 12:00:00'",
            "x >= '2024-01-02'",
            "x < '2024-01-02 00:00:00'",
            "x = TIMESTAMP '2024-01-02 12:00:00'",
            "x between '2024-01-01 06:00:00' and '2024-01-01 23:00:00'",
            "x >= DATE '2024-01-02'",
            "x is null",
            "x is not null",
        ],
    ),
    (
        pa.timestamp("us", tz="UTC"),
        [
            [
                dt.datetime(2024, 1, 1, 0, 0, tzinfo=dt.UTC),
                dt.datetime(2024, 1, 1, 6, tzinfo=dt.UTC),
            ],
            [dt.datetime(2024, 1, 1, 22, 0, tzinfo=dt.UTC)],
        ],
        [
            "x > TIMESTAMPTZ '2024-01-01 10:00:00+02:00'",
            "x > '2024-01-01 07:00:00+02:00'",
            "x >= '2024-01-01 22:00:00'",
            "x < TIMESTAMP '2024-01-01 01:00:00'",
            "x = '2024-01-02 00:00:00+02:00'",
            "x >= DATE '2024-01-01'",
        ],
    ),
    (
        pa.date32(),
        [[dt.date(2024, 1, 1), dt.date(2024, 1, 31)], [dt.date(2024, 3, 1)]],
        [
            "x = DATE '2024-03-01'",
            "x > '2024-02-01'",
            "x between DATE '2024-01-15' and DATE '2024-02-15'",
            "x < TIMESTAMP '2024-01-01 12:00:00'",
            "x in (DATE '2024-01-31', DATE '2024-12-31')",
        ],
    ),
    (
        pa.decimal128(12, 2),
        [[Decimal("1.05"), Decimal("2.50")], [Decimal("-7.25"), Decimal("-1.00")]],
        ["x > 2", "x >= 2.5", "x = 1.05", "x < -1", "x <= -1.000", "x between -8 and -7.3"],
    ),
    (
        pa.bool_(),
        [[True, True], [False, None], [False]],
        ["x = true", "x = false", "x != true", "x is null", "x"],
    ),
    (
        pa.float64(),
        [[0.5, 1.5], [-2.0, -1.0], [100.0]],
        ["x > 1", "x >= 100", "x = -1", "x between -1.5 and 0.6", "x < 1e2", "x != 0.5"],
    ),
    (
        pa.int16(),
        [[1, 2], [300, 400], [-5]],
        ["x > 2", "x > 100000", "x = 300", "x in (-5, 2)", "x < 1.5"],
    ),
]


@pytest.mark.parametrize(("dtype", "files", "wheres"), TYPED, ids=[str(case[0]) for case in TYPED])
def test_pruning_on_typed_columns_keeps_results(
    lh: Lakehouse, dtype: pa.DataType, files: list[list[Any]], wheres: list[str]
) -> None:
    _typed_table(lh, "silver.typed", dtype, files)
    for where in wheres:
        assert_pruning_is_invisible(lh, f"select * from silver.typed where {where}", "silver.typed")


def test_timestamp_statistics_in_milliseconds_do_not_hide_microseconds(lh: Lakehouse) -> None:
    # Delta statistics keep timestamps in milliseconds: a max of 00:00:00.123 may stand for
    # 00:00:00.123456, so a filter just above it must still read the file.
    for dtype in (pa.timestamp("us"), pa.timestamp("us", tz="UTC")):
        name = "silver.micro_tz" if dtype.tz else "silver.micro"
        tz = dt.UTC if dtype.tz else None
        _typed_table(
            lh,
            name,
            dtype,
            [
                [dt.datetime(2024, 1, 1, 0, 0, 0, 123456, tzinfo=tz)],
                [dt.datetime(2023, 1, 1, tzinfo=tz)],
            ],
        )
        for where in (
            "x > TIMESTAMP '2024-01-01 00:00:00.123'",
            "x >= '2024-01-01 00:00:00.1234'",
            "x = '2024-01-01 00:00:00.123456'",
        ):
            query = f"select id from {name} where {where}"
            assert lh.sql(query).rows() == [(0,)], (dtype, where)


def test_is_null_finds_rows_of_files_written_before_the_column_existed(lh: Lakehouse) -> None:
    table = lh.create_table("silver.evolved", pa.schema([("id", pa.int64())]))
    table.append(pa.table({"id": [1, 2]}))
    table.append(pa.table({"id": [3], "coupon": ["X"]}))
    table.append(pa.table({"id": [4], "coupon": pa.array([None], pa.string())}))
    assert lh.sql("select id from silver.evolved where coupon is null order by id").rows() == [
        (1,),
        (2,),
        (4,),
    ]
    assert lh.sql("select id from silver.evolved where coupon is not null").rows() == [(3,)]
    assert lh.sql("select id from silver.evolved where coupon = 'X'").rows() == [(3,)]


def test_asof_join_results_do_not_depend_on_pruning(lh: Lakehouse) -> None:
    prices = lh.create_table(
        "silver.prices", pa.schema([("ts", pa.int64()), ("price", pa.float64())])
    )
    prices.append(pa.table({"ts": list(range(10)), "price": [200.0] * 10}))
    prices.append(pa.table({"ts": list(range(10, 20)), "price": [50.0] * 10}))
    lh.write("silver.trades", pa.table({"ts": [5, 15]}))
    query = (
        "select t.ts, p.ts as price_ts, p.price from silver.trades t "
        "asof join silver.prices p on t.ts >= p.ts where p.price > 100"
    )
    assert_pruning_is_invisible(lh, query, "silver.prices")


def test_positional_join_results_do_not_depend_on_pruning(lh: Lakehouse, ranged: Table) -> None:
    lh.write("silver.other", pa.table({"k": list(range(50))}))
    query = "select o.k, r.id from silver.other o positional join silver.ranged r where r.id >= 40"
    assert_pruning_is_invisible(lh, query, "silver.ranged")
