"""Table operations through the lakehouse: writes, time travel, maintenance, evolution."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pyarrow as pa
import pytest

from helpers import live_and_folder_files, sorted_rows
from lakebed import Lakehouse, Table, WriteResult
from lakebed.errors import (
    DuplicateTransactionError,
    LakebedError,
    SchemaMismatchError,
    StorageError,
    TableExistsError,
    TableNotFoundError,
    Terminal,
    VersionNotFoundError,
)

SCHEMA = pa.schema([("id", pa.int64()), ("p", pa.string()), ("amount", pa.float64())])


def rows(*triples: tuple[int, str, float]) -> pa.Table:
    ids, parts, amounts = zip(*triples, strict=True) if triples else ((), (), ())
    return pa.table({"id": list(ids), "p": list(parts), "amount": list(amounts)}, schema=SCHEMA)


def content(table: Table, **kwargs: object) -> list[tuple[int, str, float]]:
    data = table.read(**kwargs)  # type: ignore[arg-type]
    return sorted((r["id"], r["p"], r["amount"]) for r in data.to_pylist())


@pytest.fixture
def orders(lh: Lakehouse) -> Table:
    """silver.orders, partitioned by p, holding ids 1..4 (version 1)."""
    table = lh.create_table("silver.orders", SCHEMA, partition_by=["p"])
    table.append(rows((1, "a", 10.0), (2, "a", 20.0), (3, "b", 30.0), (4, "b", 40.0)))
    return table


# -- create ----------------------------------------------------------------------------------


def test_create_makes_an_empty_partitioned_table(lh: Lakehouse) -> None:
    table = lh.create_table("bronze.raw", SCHEMA, partition_by=["p"], description="raw feed")
    assert table.version() == 0
    assert table.partition_by == ["p"]
    assert table.schema() == SCHEMA
    assert table.description() == "raw feed"
    assert table.read().num_rows == 0
    assert table.path == str(Path(lh.storage_root) / "bronze" / "raw")
    table.append(rows((1, "x", 1.0)))
    assert list(Path(table.path).glob("p=x/*.parquet"))


@pytest.mark.parametrize(("layer", "cdf"), [("bronze", False), ("silver", True), ("gold", True)])
def test_silver_and_gold_tables_record_a_change_data_feed(
    lh: Lakehouse, layer: str, cdf: bool
) -> None:
    table = lh.create_table(f"{layer}.t", SCHEMA)
    properties = table.properties()
    assert (properties.get("delta.enableChangeDataFeed") == "true") is cdf
    if not cdf:
        assert "delta.enableChangeDataFeed" not in properties


@pytest.mark.parametrize("partition_by", [None, ["p"]])
def test_the_feed_of_appends_is_read_from_their_files_as_delta_rs_reads_it(
    lh: Lakehouse, partition_by: list[str] | None
) -> None:
    """Appends' feed comes from their added files (every row an insert, at its commit's
    version and time), exactly as delta-rs's feed reader gives it; a range with a commit
    that did more is read by delta-rs."""
    from deltalake import DeltaTable

    from lakebed.storage import changes

    table = lh.create_table("silver.t", SCHEMA, partition_by=partition_by)
    first = table.append(rows((1, "a", 1.0), (2, "b", 2.0))).version
    last = table.append(rows((3, "a", 3.0))).version

    def delta_rs(start: int, end: int) -> pa.Table:
        feed = pa.table(DeltaTable(table.path).load_cdf(start, end).read_all())
        plain = [f.with_type(pa.string()) if f.type == pa.string_view() else f for f in feed.schema]
        return feed.cast(pa.schema(plain))

    def ordered(data: pa.Table) -> list[dict[str, object]]:
        return sorted(data.to_pylist(), key=lambda r: (r["_commit_version"], r["id"]))

    fast = changes._appended_feed(table, first, last)
    assert fast is not None
    assert fast.schema == delta_rs(first, last).schema
    assert ordered(fast) == ordered(delta_rs(first, last))
    assert [r["_change_type"] for r in ordered(fast)] == ["insert"] * 3
    assert ordered(table.changes(first, last) or pa.table({})) == ordered(fast)
    table.delete("id = 1")
    assert changes._appended_feed(table, first, last + 1) is None
    read = table.changes(first, last + 1)
    assert read is not None
    assert sorted(read.column("_change_type").to_pylist()) == [
        "delete",
        "insert",
        "insert",
        "insert",
    ]


def test_create_keeps_extra_properties(lh: Lakehouse) -> None:
    table = lh.create_table("gold.t", SCHEMA, properties={"delta.appendOnly": "true"})
    assert table.properties() == {
        "delta.appendOnly": "true",
        "delta.enableChangeDataFeed": "true",
    }


def test_create_normalises_types_delta_does_not_keep(lh: Lakehouse) -> None:
    schema = pa.schema([("ts", pa.timestamp("ns")), ("s", pa.large_string())])
    table = lh.create_table("bronze.t", schema)
    assert table.schema() == pa.schema([("ts", pa.timestamp("us")), ("s", pa.string())])


def test_create_twice_raises_unless_exist_ok(lh: Lakehouse, orders: Table) -> None:
    with pytest.raises(TableExistsError, match=r"silver\.orders already exists"):
        lh.create_table("silver.orders", SCHEMA)
    again = lh.create_table("silver.orders", SCHEMA, exist_ok=True)
    assert again.read().num_rows == 4


def test_create_with_an_unknown_partition_column_is_rejected(lh: Lakehouse) -> None:
    with pytest.raises(SchemaMismatchError, match="partition column region is not in the schema"):
        lh.create_table("silver.t", SCHEMA, partition_by=["region"])
    with pytest.raises(TableNotFoundError):
        lh.table("silver.t")


# -- append / overwrite ----------------------------------------------------------------------


def test_append_adds_rows_and_returns_the_commit(orders: Table) -> None:
    result = orders.append(rows((5, "c", 50.0)))
    assert isinstance(result, WriteResult)
    assert (result.table, result.version, result.operation) == ("silver.orders", 2, "APPEND")
    assert result.rows_written == 1
    assert [r[0] for r in content(orders)] == [1, 2, 3, 4, 5]


def test_append_of_no_rows_commits_nothing_visible(orders: Table) -> None:
    orders.append(rows())
    assert [r[0] for r in content(orders)] == [1, 2, 3, 4]


def test_append_records_custom_metadata_in_the_commit(orders: Table) -> None:
    orders.append(rows((5, "c", 50.0)), metadata={"run_id": "run-42"})
    assert orders.history(1)[0]["run_id"] == "run-42"


def test_overwrite_replaces_the_whole_table(orders: Table) -> None:
    result = orders.overwrite(rows((9, "z", 90.0)))
    assert result.operation == "OVERWRITE"
    assert result.rows_written == 1
    assert content(orders) == [(9, "z", 90.0)]


def test_overwrite_by_predicate_replaces_only_matching_rows(orders: Table) -> None:
    orders.overwrite(rows((7, "a", 70.0)), predicate="p = 'a'")
    assert content(orders) == [(3, "b", 30.0), (4, "b", 40.0), (7, "a", 70.0)]


def test_overwrite_by_predicate_rejects_rows_outside_it_and_changes_nothing(
    orders: Table,
) -> None:
    before = orders.version()
    with pytest.raises(StorageError, match=r"overwrite on silver\.orders failed"):
        orders.overwrite(rows((7, "b", 70.0)), predicate="p = 'a'")
    assert orders.version() == before
    assert [r[0] for r in content(orders)] == [1, 2, 3, 4]


def test_overwrite_checks_the_schema_like_append(orders: Table) -> None:
    with pytest.raises(SchemaMismatchError, match="column amount"):
        orders.overwrite(pa.table({"id": [1], "p": ["a"], "amount": ["ten"]}))
    assert orders.version() == 1


# -- merge -----------------------------------------------------------------------------------


def test_merge_updates_matches_and_inserts_new_keys(orders: Table) -> None:
    result = orders.merge(rows((2, "a", 21.0), (5, "c", 50.0)), keys=["id"])
    assert result.operation == "MERGE"
    assert result.metrics["num_target_rows_updated"] == 1
    assert result.metrics["num_target_rows_inserted"] == 1
    assert content(orders) == [
        (1, "a", 10.0),
        (2, "a", 21.0),
        (3, "b", 30.0),
        (4, "b", 40.0),
        (5, "c", 50.0),
    ]


def test_merge_with_when_matched_ignore_only_inserts(orders: Table) -> None:
    orders.merge(rows((2, "a", 99.0), (5, "c", 50.0)), keys="id", when_matched="ignore")
    assert content(orders)[1] == (2, "a", 20.0)
    assert [r[0] for r in content(orders)] == [1, 2, 3, 4, 5]


def test_merge_with_when_matched_delete_removes_matches(orders: Table) -> None:
    orders.merge(rows((2, "a", 0.0)), keys="id", when_matched="delete", when_not_matched="ignore")
    assert [r[0] for r in content(orders)] == [1, 3, 4]


def test_merge_with_delete_unmatched_target_is_a_full_sync(orders: Table) -> None:
    orders.merge(rows((2, "a", 22.0), (6, "c", 60.0)), keys=["id"], delete_unmatched_target=True)
    assert content(orders) == [(2, "a", 22.0), (6, "c", 60.0)]


def test_merge_on_a_composite_key(orders: Table) -> None:
    orders.merge(rows((1, "a", 11.0), (1, "b", 12.0)), keys=["id", "p"])
    assert [r for r in content(orders) if r[0] == 1] == [(1, "a", 11.0), (1, "b", 12.0)]


@pytest.mark.parametrize("vectors", [False, True], ids=["copy-on-write", "deletion vectors"])
def test_a_null_key_is_merged_as_a_key(lh: Lakehouse, vectors: bool) -> None:
    """A NULL key matches a NULL key, as GROUP BY and PARTITION BY group them: an upsert
    replaces the row, a delete of the key removes it (no second row for the same key)."""
    properties = {"delta.enableDeletionVectors": "true"} if vectors else None

    def held(table: Table) -> list[tuple[object, ...]]:
        data = table.read().to_pylist()
        return sorted(((r["id"] is None, r["id"], r["p"], r["amount"]) for r in data), key=str)

    table = lh.create_table("silver.totals", SCHEMA, properties=properties)
    table.append(rows((None, "a", 1.0), (1, "a", 10.0)))
    table.merge(rows((None, "a", 2.0), (2, "b", 20.0)), keys=["id"])
    assert held(table) == sorted(
        [(False, 1, "a", 10.0), (False, 2, "b", 20.0), (True, None, "a", 2.0)], key=str
    )
    table.merge(
        rows((3, "c", 30.0)),
        keys=["id"],
        delete_keys=pa.table({"id": pa.array([None], pa.int64())}),
    )
    assert held(table) == sorted(
        [(False, 1, "a", 10.0), (False, 2, "b", 20.0), (False, 3, "c", 30.0)], key=str
    )


def test_merge_rejects_duplicate_source_keys(orders: Table) -> None:
    with pytest.raises(SchemaMismatchError) as info:
        orders.merge(rows((5, "c", 1.0), (5, "c", 2.0), (6, "c", 3.0)), keys=["id"])
    assert info.value.problems == ["1 rows repeat a merge key (id)"]
    assert info.value.hint == "deduplicate the data by its key before merging"
    assert orders.version() == 1


def test_merge_rejects_an_unknown_key_column(orders: Table) -> None:
    with pytest.raises(SchemaMismatchError) as info:
        orders.merge(rows((5, "c", 1.0)), keys=["order_id"])
    assert info.value.problems == ["merge key order_id is not a column of the table"]
    assert orders.version() == 1


def test_merge_adds_new_columns(lh: Lakehouse, orders: Table) -> None:
    data = pa.table({"id": [2, 5], "p": ["a", "c"], "amount": [2.0, 5.0], "note": ["x", "y"]})
    orders.merge(data, keys=["id"])
    assert set(orders.schema().names) == {"id", "p", "amount", "note"}
    got = lh.sql("select id, note from silver.orders order by id").rows()
    assert got == [(1, None), (2, "x"), (3, None), (4, None), (5, "y")]


# -- delete / update -------------------------------------------------------------------------


def test_delete_by_predicate(orders: Table) -> None:
    result = orders.delete("amount > 25")
    assert result.operation == "DELETE"
    assert result.metrics["num_deleted_rows"] == 2
    assert [r[0] for r in content(orders)] == [1, 2]


def test_delete_without_predicate_empties_the_table(orders: Table) -> None:
    orders.delete()
    assert orders.read().num_rows == 0
    assert orders.schema() == SCHEMA


def test_update_sets_sql_expressions_where_the_predicate_holds(orders: Table) -> None:
    result = orders.update({"amount": "amount * 2", "p": "'c'"}, "id >= 3")
    assert result.operation == "UPDATE"
    assert content(orders) == [(1, "a", 10.0), (2, "a", 20.0), (3, "c", 60.0), (4, "c", 80.0)]


def test_update_of_an_unknown_column_is_rejected(orders: Table) -> None:
    with pytest.raises(SchemaMismatchError, match="column status does not exist"):
        orders.update({"status": "'x'"})
    assert orders.version() == 1


# -- history and time travel -----------------------------------------------------------------


def test_history_is_newest_first_with_the_operations(orders: Table) -> None:
    orders.merge(rows((5, "c", 5.0)), keys=["id"])
    orders.delete("id = 1")
    orders.update({"amount": "0"}, "id = 2")
    orders.overwrite(rows((1, "a", 1.0)), predicate="p = 'a'")
    history = orders.history()
    assert [h["version"] for h in history] == [5, 4, 3, 2, 1, 0]
    assert [h["operation"] for h in history] == [
        "WRITE",
        "UPDATE",
        "DELETE",
        "MERGE",
        "WRITE",
        "CREATE TABLE",
    ]
    assert [h["version"] for h in orders.history(limit=2)] == [5, 4]
    stamps = [h["timestamp"] for h in history]
    assert stamps == sorted(stamps, reverse=True)


def test_time_travel_by_version(lh: Lakehouse, orders: Table) -> None:
    orders.delete("p = 'a'")
    orders.append(rows((9, "c", 9.0)))
    assert orders.snapshot(as_of=1).version == 1
    assert orders.snapshot(as_of=1).num_rows == 4
    assert orders.snapshot(as_of="2").num_rows == 2
    assert [r[0] for r in content(orders, as_of=1)] == [1, 2, 3, 4]
    assert [r[0] for r in content(orders, as_of=2)] == [3, 4]
    assert orders.read(as_of=0).num_rows == 0
    result = lh.sql("select id from silver.orders order by id", as_of=2)
    assert result.rows() == [(3,), (4,)]
    assert result.versions == {"silver.orders": 2}
    assert lh.sql("select count(*) from silver.orders").scalar() == 3


def _commit_time(table: Table, version: int) -> dt.datetime:
    (entry,) = [h for h in table.history() if h["version"] == version]
    return dt.datetime.fromtimestamp(entry["timestamp"] / 1000, dt.UTC)


def test_time_travel_by_timestamp(lh: Lakehouse, orders: Table) -> None:
    time.sleep(0.01)
    orders.delete("p = 'a'")
    time.sleep(0.01)
    orders.append(rows((9, "c", 9.0)))
    at_v1, at_v2 = _commit_time(orders, 1), _commit_time(orders, 2)
    between = at_v1 + (at_v2 - at_v1) / 2
    assert orders.snapshot(as_of=at_v1).version == 1
    assert orders.snapshot(as_of=between).version == 1
    assert orders.snapshot(as_of=at_v2.isoformat()).version == 2
    assert orders.read(as_of=between).num_rows == 4
    assert orders.snapshot(as_of=dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).version == 3
    result = lh.sql("select count(*) from silver.orders", as_of=between.isoformat())
    assert result.scalar() == 4
    assert result.versions == {"silver.orders": 1}


def test_time_travel_before_the_table_existed_is_an_error(orders: Table) -> None:
    created = _commit_time(orders, 0)
    with pytest.raises(VersionNotFoundError):
        orders.snapshot(as_of=created - dt.timedelta(days=365))


@pytest.mark.parametrize("as_of", [2, 99, "7", "last tuesday"])
def test_time_travel_to_a_missing_version_raises(
    lh: Lakehouse, orders: Table, as_of: object
) -> None:
    with pytest.raises(VersionNotFoundError) as info:
        orders.snapshot(as_of=as_of)  # type: ignore[arg-type]
    assert info.value.hint is not None
    with pytest.raises(VersionNotFoundError):
        orders.read(as_of=as_of)  # type: ignore[arg-type]
    with pytest.raises(VersionNotFoundError):
        lh.sql("select * from silver.orders", as_of=as_of)  # type: ignore[arg-type]


# -- restore ---------------------------------------------------------------------------------


def test_restore_makes_an_old_version_the_latest(lh: Lakehouse, orders: Table) -> None:
    orders.delete()
    orders.append(rows((9, "c", 9.0)))
    result = orders.restore(1)
    assert (result.operation, result.version) == ("RESTORE", 4)
    assert orders.history(1)[0]["operation"] == "RESTORE"
    assert [r[0] for r in content(orders)] == [1, 2, 3, 4]
    assert [r[0] for r in content(orders, as_of=3)] == [9]
    assert lh.sql("select count(*) from silver.orders").scalar() == 4


def test_restore_by_timestamp(orders: Table) -> None:
    time.sleep(0.01)
    orders.delete()
    orders.restore(_commit_time(orders, 1))
    assert orders.read().num_rows == 4


def test_restore_to_the_current_version_succeeds_and_changes_nothing(orders: Table) -> None:
    before = content(orders)
    orders.restore(orders.version())
    assert content(orders) == before


@pytest.mark.parametrize("version", [-1, 2, 50])
def test_restore_to_a_missing_version_raises_and_changes_nothing(
    orders: Table, version: int
) -> None:
    with pytest.raises(VersionNotFoundError, match=r"has versions 0\.\.1"):
        orders.restore(version)
    assert orders.version() == 1


# -- optimize and vacuum ---------------------------------------------------------------------


def _many_small_files(table: Table) -> None:
    for i in range(6):
        table.append(rows((100 + 10 * i, "a", float(i)), (101 + 10 * i, "b", float(i))))


@pytest.mark.parametrize("zorder_by", [None, ["amount", "id"]])
def test_optimize_reduces_files_and_keeps_the_rows(
    lh: Lakehouse, orders: Table, zorder_by: list[str] | None
) -> None:
    _many_small_files(orders)
    before_rows = content(orders)
    before_files = orders.snapshot().num_files
    result = orders.optimize(zorder_by=zorder_by)
    assert result.operation == "OPTIMIZE"
    assert result.version == orders.version()
    assert orders.snapshot().num_files < before_files
    assert orders.snapshot().num_files == 2  # one per partition
    assert content(orders) == before_rows
    via_sql = lh.sql("select id, p, amount from silver.orders order by id").rows()
    assert via_sql == before_rows


def test_vacuum_refuses_a_short_retention_without_force(orders: Table) -> None:
    orders.overwrite(rows((1, "a", 1.0)))
    with pytest.raises(StorageError) as info:
        orders.vacuum(retain_hours=0)
    assert "below the table's minimum" in info.value.message
    assert info.value.hint is not None
    assert "enforce_retention=False" in info.value.hint


def test_vacuum_with_default_retention_keeps_recent_files(orders: Table) -> None:
    orders.overwrite(rows((1, "a", 1.0)))
    assert orders.vacuum(dry_run=True) == []
    assert orders.vacuum() == []


def test_vacuum_dry_run_lists_unreferenced_files_without_deleting(orders: Table) -> None:
    removed_version_files = set(orders.snapshot().paths)
    orders.overwrite(rows((1, "a", 1.0)))
    live, folder = live_and_folder_files(orders.path, orders.snapshot().paths)
    listed = orders.vacuum(retain_hours=0, dry_run=True, enforce_retention=False)
    resolved = {str((Path(orders.path) / f).resolve()) for f in listed}
    assert resolved == folder - live
    assert {str(Path(p).resolve()) for p in removed_version_files} <= resolved
    assert live_and_folder_files(orders.path, [])[1] == folder  # nothing deleted


def test_vacuum_removes_unreferenced_files_and_the_latest_version_still_reads(
    lh: Lakehouse, orders: Table
) -> None:
    orders.delete("id = 1")
    orders.overwrite(rows((5, "a", 5.0)), predicate="p = 'a'")
    expected = content(orders)
    deleted = orders.vacuum(retain_hours=0, enforce_retention=False)
    assert deleted
    live, folder = live_and_folder_files(orders.path, orders.snapshot().paths)
    assert folder == live
    assert content(orders) == expected
    assert lh.sql("select id, p, amount from silver.orders order by id").rows() == expected


def test_reading_a_vacuumed_version_raises_a_lakebed_error(lh: Lakehouse, orders: Table) -> None:
    orders.overwrite(rows((5, "a", 5.0)))
    orders.vacuum(retain_hours=0, enforce_retention=False)
    with pytest.raises(LakebedError):
        lh.sql("select * from silver.orders", as_of=1)


# -- schema evolution ------------------------------------------------------------------------


def test_append_with_a_new_column_evolves_the_schema(lh: Lakehouse) -> None:
    table = lh.create_table("silver.plain", SCHEMA)
    table.append(rows((1, "a", 1.0), (2, "b", 2.0)))
    table.append(pa.table({"id": [3], "p": ["c"], "amount": [3.0], "coupon": ["SPRING"]}))
    assert table.schema().names == ["id", "p", "amount", "coupon"]
    got = lh.sql("select * from silver.plain order by id").rows()
    assert got == [(1, "a", 1.0, None), (2, "b", 2.0, None), (3, "c", 3.0, "SPRING")]
    assert lh.sql("select * from silver.plain", as_of=1).columns == ["id", "p", "amount"]
    assert sorted_rows(table.read()) == sorted_rows(lh.sql("select * from silver.plain").arrow())


def test_schema_evolution_of_a_partitioned_table_keeps_the_column_order(
    lh: Lakehouse, orders: Table
) -> None:
    orders.append(pa.table({"id": [5], "p": ["c"], "amount": [5.0], "coupon": ["SPRING"]}))
    assert orders.schema().names == ["id", "p", "amount", "coupon"]
    assert lh.sql("select * from silver.orders").columns == ["id", "p", "amount", "coupon"]
    got = lh.sql("select id, coupon from silver.orders order by id").rows()
    assert got == [(1, None), (2, None), (3, None), (4, None), (5, "SPRING")]


def test_append_with_missing_columns_needs_the_opt_in(lh: Lakehouse, orders: Table) -> None:
    with pytest.raises(SchemaMismatchError, match="column amount"):
        orders.append(pa.table({"id": [5], "p": ["c"]}))
    orders.append(pa.table({"id": [5], "p": ["c"]}), allow_missing_columns=True)
    assert lh.sql("select amount from silver.orders where id = 5").scalar() is None


def test_append_widens_values_to_the_table_type(lh: Lakehouse, orders: Table) -> None:
    orders.append(pa.table({"id": pa.array([5], pa.int32()), "p": ["c"], "amount": [5]}))
    assert orders.schema() == SCHEMA
    assert lh.sql("select amount from silver.orders where id = 5").scalar() == 5.0


def test_schema_mode_overwrite_drops_a_column(lh: Lakehouse, orders: Table) -> None:
    orders.overwrite(pa.table({"id": [1], "p": ["a"]}), schema_mode="overwrite")
    assert orders.schema().names == ["id", "p"]
    assert orders.partition_by == ["p"]
    assert lh.sql("select * from silver.orders").dicts() == [{"id": 1, "p": "a"}]


def test_schema_mode_overwrite_retypes_a_column(lh: Lakehouse, orders: Table) -> None:
    data = pa.table({"id": ["one"], "p": ["a"], "amount": [1.0]})
    orders.overwrite(data, schema_mode="overwrite")
    assert orders.schema().field("id").type == pa.string()
    assert lh.sql("select id from silver.orders").rows() == [("one",)]
    assert lh.sql("select id from silver.orders", as_of=1).arrow().column("id").type == pa.int64()


def test_schema_mode_overwrite_can_change_the_partitioning(orders: Table) -> None:
    orders.overwrite(rows((1, "a", 1.0)), schema_mode="overwrite", partition_by=[])
    assert orders.delta().metadata().partition_columns == []


def test_schema_mode_overwrite_needs_the_partition_columns(orders: Table) -> None:
    with pytest.raises(SchemaMismatchError, match="partition column p is missing"):
        orders.overwrite(pa.table({"id": [1]}), schema_mode="overwrite")
    assert orders.version() == 1


def test_schema_mode_overwrite_takes_no_predicate(orders: Table) -> None:
    with pytest.raises(StorageError, match="cannot take a predicate"):
        orders.overwrite(rows((1, "a", 1.0)), schema_mode="overwrite", predicate="p = 'a'")


# -- application transactions ----------------------------------------------------------------


def test_app_transaction_records_the_writer_version(orders: Table) -> None:
    assert orders.transaction_version("kafka-ingest") is None
    orders.append(rows((5, "c", 5.0)), app_transaction=("kafka-ingest", 7))
    assert orders.transaction_version("kafka-ingest") == 7
    assert orders.transaction_version("other") is None


@pytest.mark.parametrize("repeat", [7, 3])
def test_repeated_app_transaction_raises_and_writes_nothing(orders: Table, repeat: int) -> None:
    orders.append(rows((5, "c", 5.0)), app_transaction=("kafka-ingest", 7))
    version = orders.version()
    with pytest.raises(DuplicateTransactionError) as info:
        orders.append(rows((6, "c", 6.0)), app_transaction=("kafka-ingest", repeat))
    assert isinstance(info.value, Terminal)  # the batch is already in: never retry it
    assert "already committed" in info.value.message
    assert orders.version() == version
    assert [r[0] for r in content(orders)] == [1, 2, 3, 4, 5]
    assert orders.transaction_version("kafka-ingest") == 7


def test_app_transactions_guard_merge_and_overwrite_too(orders: Table) -> None:
    orders.merge(rows((5, "c", 5.0)), keys=["id"], app_transaction=("cdc", 1))
    with pytest.raises(DuplicateTransactionError):
        orders.merge(rows((6, "c", 6.0)), keys=["id"], app_transaction=("cdc", 1))
    orders.overwrite(rows((7, "c", 7.0)), predicate="p = 'c'", app_transaction=("cdc", 2))
    with pytest.raises(DuplicateTransactionError):
        orders.overwrite(rows((8, "c", 8.0)), predicate="p = 'c'", app_transaction=("cdc", 2))
    assert orders.transaction_version("cdc") == 2
    assert [r[0] for r in content(orders) if r[1] == "c"] == [7]


def test_repeated_app_transaction_is_refused_at_once_not_retried(
    orders: Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Retrying cannot help (the batch is already in the table); backing off only delays.
    orders.append(rows((5, "c", 5.0)), app_transaction=("kafka-ingest", 7))
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    with pytest.raises(DuplicateTransactionError):
        orders.append(rows((6, "c", 6.0)), app_transaction=("kafka-ingest", 7))
    assert sleeps == []
