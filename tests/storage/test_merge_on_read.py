"""Merges with deletion vectors: the replaced rows stay in their files, marked deleted.

Every reader (lakehouse SQL, `Table.read`, delta-rs itself, the change data feed) must see
exactly what a copy-on-write merge leaves, and delta-rs's own operations must keep working
on the table afterwards.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from lakebed import Lakehouse, Table
from lakebed.errors import DuplicateTransactionError
from lakebed.storage import deletion_vectors
from lakebed.storage.file_stats import stats_from_actions, stats_of

SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.float64()), ("s", pa.string())])
DV = {"delta.enableDeletionVectors": "true"}


def rows(ids: list[int], tag: str) -> pa.Table:
    return pa.table(
        {"id": ids, "v": [float(i) / 7 for i in ids], "s": [f"{tag}{i % 5}" for i in ids]},
        schema=SCHEMA,
    )


def as_dict(data: pa.Table) -> dict[int, tuple[float, str]]:
    data = data.select(["id", "v", "s"])
    found = {r["id"]: (r["v"], r["s"]) for r in data.to_pylist()}
    assert len(found) == data.num_rows, "a key appears twice"
    return found


def every_reader(lh: Lakehouse, table: Table) -> list[dict[int, tuple[float, str]]]:
    """The table as lakehouse SQL, `Table.read` and delta-rs each read it."""
    via_sql = lh.sql(f"select * from {table.name}").arrow()
    via_delta_rs = pa.table(DeltaTable(table.path).scan()).cast(SCHEMA)
    return [as_dict(via_sql), as_dict(table.read()), as_dict(via_delta_rs)]


def log_entry(path: str, version: int) -> list[dict[str, Any]]:
    with open(f"{path}/_delta_log/{version:020d}.json", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture
def orders(lh: Lakehouse) -> Table:
    """silver.orders with deletion vectors on, ids 0..999 in one file (version 1)."""
    table = lh.create_table("silver.orders", SCHEMA, properties=DV)
    table.append(rows(list(range(1000)), "a"))
    return table


def test_a_table_without_a_change_feed_is_merged_by_its_keys_alone(lh: Lakehouse) -> None:
    """Without pre-images to record, the merge finds the replaced rows by their keys only
    (and writes no change data file); readers see the same rows as ever."""
    no_feed = DV | {"delta.enableChangeDataFeed": "false"}
    table = lh.create_table("silver.orders", SCHEMA, properties=no_feed)
    table.append(rows(list(range(1000)), "a"))
    first = rows([3, 600, 1000], "b")
    result = table.merge(first, ["id"], delete_keys=pa.table({"id": [7, 2000]}))
    assert result.metrics["num_target_rows_updated"] == 2
    assert result.metrics["num_target_rows_inserted"] == 1
    assert result.metrics["num_target_rows_deleted"] == 1
    (old,) = [p for p, gone in table.snapshot().deleted.items()]
    assert table.snapshot().deleted[old].to_pylist() == [3, 7, 600]
    assert not any("cdc" in action for action in log_entry(table.path, result.version))
    expected = as_dict(rows(list(range(1000)), "a")) | as_dict(first)
    del expected[7]
    for seen in every_reader(lh, table):
        assert seen == expected


def test_a_merge_marks_replaced_rows_instead_of_rewriting_their_file(
    lh: Lakehouse, orders: Table
) -> None:
    before = set(orders.snapshot().paths)
    result = orders.merge(rows([5, 500, 999, 1000, 1001], "b"), ["id"])
    assert result.metrics["num_target_rows_updated"] == 3
    assert result.metrics["num_target_rows_inserted"] == 2
    assert result.metrics["num_deletion_vectors_added"] == 1
    snapshot = orders.snapshot()
    assert before < set(snapshot.paths)  # the old file is still live, a new one added
    (old,) = before
    assert snapshot.deleted[old].to_pylist() == [5, 500, 999]
    assert snapshot.num_rows == 1002
    expected = as_dict(rows(list(range(1000)), "a")) | as_dict(rows([5, 500, 999, 1000, 1001], "b"))
    for seen in every_reader(lh, orders):
        assert seen == expected


def test_repeated_merges_and_deletes_leave_what_a_merge_means(lh: Lakehouse, orders: Table) -> None:
    expected = as_dict(rows(list(range(1000)), "a"))
    rng = np.random.default_rng(7)
    for step in range(6):
        # Updates spread over every file written so far, new keys, and deletions.
        fresh = 1000 + 100 * step
        ids = sorted({*rng.choice(fresh, 60).tolist(), *range(fresh, fresh + 40)})
        upserts = rows(ids, f"s{step}")
        doomed = rng.choice(fresh, 10, replace=False).tolist()
        result = orders.merge(
            upserts, ["id"], delete_keys=pa.table({"id": pa.array(doomed, pa.int64())})
        )
        for key in set(doomed) - set(ids):
            expected.pop(key, None)
        expected.update(as_dict(upserts))
        for seen in every_reader(lh, orders):
            assert seen == expected, f"step {step}"
        snapshot = orders.snapshot()
        assert snapshot.num_rows == len(expected)
        # What the merge says it left (for the catalog) is what a reader finds.
        assert result.after == (snapshot.num_rows, snapshot.size_bytes, snapshot.schema)


def test_a_short_log_without_vectors_is_read_as_none_without_asking_delta_rs(
    orders: Table,
) -> None:
    """A DV-enabled table whose commits never gave a file a vector has none; once a merge
    marks rows, the log says so and the vectors are read (delta-rs agrees both times)."""
    dt = DeltaTable(orders.path)
    assert deletion_vectors.never_in_log(orders.path, orders.version())
    assert deletion_vectors.deleted_rows(dt, orders.path) == {}
    assert pa.table(dt.deletion_vectors()).num_rows == 0
    orders.merge(rows([1, 2], "b"), ["id"])  # marks two rows of the first file
    dt = DeltaTable(orders.path)
    assert not deletion_vectors.never_in_log(orders.path, orders.version())
    found = deletion_vectors.deleted_rows(dt, orders.path)
    assert [p.to_pylist() for p in found.values()] == [[1, 2]]
    assert found == deletion_vectors.deleted_rows(dt)


def test_the_change_data_feed_holds_pre_and_post_images(orders: Table) -> None:
    version = orders.merge(
        rows([1, 2, 2000], "b"), ["id"], delete_keys=pa.table({"id": pa.array([3], pa.int64())})
    ).version
    # Read back by a handle that did not write the commit: from the change data file.
    changes = Table(orders.name, orders.path).changes(version, version)
    assert changes is not None
    found = sorted(
        (r["_change_type"], r["id"], r["s"])
        for r in changes.select(["_change_type", "id", "s"]).to_pylist()
    )
    assert found == [
        ("delete", 3, "a3"),
        ("insert", 2000, "b0"),
        ("update_postimage", 1, "b1"),
        ("update_postimage", 2, "b2"),
        ("update_preimage", 1, "a1"),
        ("update_preimage", 2, "a2"),
    ]


def test_the_writing_handle_keeps_its_change_rows_as_delta_rs_reads_them(orders: Table) -> None:
    deleted = pa.table({"id": pa.array([3, 4], pa.int64())})
    version = orders.merge(rows([1, 2, 2000, 2001], "b"), ["id"], delete_keys=deleted).version
    kept = orders.changes(version, version)
    read = Table(orders.name, orders.path).changes(version, version)
    assert kept is not None
    assert read is not None
    assert kept.schema == read.schema
    assert kept.to_pylist() == read.to_pylist()
    # A range of versions is read from the files.
    orders.merge(rows([7], "c"), ["id"])
    both = orders.changes(version, version + 1)
    assert both is not None
    assert sorted(both.column("_commit_version").to_pylist()) == [version] * 8 + [version + 1] * 2


def test_a_merge_of_new_keys_alone_writes_no_change_file_and_reads_as_inserts(
    orders: Table,
) -> None:
    """The Delta protocol reads a commit without change data files from its added files,
    every row an insert: a merge that only adds keys writes none, and the feed (kept by
    the writing handle, read by delta-rs through another) shows its rows inserted."""
    version = orders.merge(rows([2000, 2001], "n"), ["id"]).version
    entry = log_entry(orders.path, version)
    assert not [a for a in entry if "cdc" in a]
    assert [a["add"]["dataChange"] for a in entry if "add" in a] == [True]
    kept = orders.changes(version, version)
    read = Table(orders.name, orders.path).changes(version, version)
    assert kept is not None
    assert read is not None
    assert kept.schema == read.schema
    assert sorted(kept.to_pylist(), key=lambda r: r["id"]) == sorted(
        read.to_pylist(), key=lambda r: r["id"]
    )
    assert sorted((r["_change_type"], r["id"]) for r in read.to_pylist()) == [
        ("insert", 2000),
        ("insert", 2001),
    ]
    # With an update in the same range, the feed still reads both commits right.
    orders.merge(rows([1], "u"), ["id"])
    both = Table(orders.name, orders.path).changes(version, version + 1)
    assert both is not None
    assert sorted((r["_change_type"], r["id"]) for r in both.to_pylist()) == [
        ("insert", 2000),
        ("insert", 2001),
        ("update_postimage", 1),
        ("update_preimage", 1),
    ]


def test_the_merge_commits_its_transaction_and_metadata_once(orders: Table) -> None:
    orders.merge(rows([1], "b"), ["id"], app_transaction=("model", 1), metadata={"k": "v1"})
    assert orders.transaction_version("model") == 1
    assert orders.history(1)[0]["k"] == "v1"
    with pytest.raises(DuplicateTransactionError):
        orders.merge(rows([2], "c"), ["id"], app_transaction=("model", 1))
    assert as_dict(orders.read())[2] == (2 / 7, "a2")


def test_a_file_losing_many_rows_is_rewritten_without_them(lh: Lakehouse, orders: Table) -> None:
    (old,) = orders.snapshot().paths
    result = orders.merge(rows(list(range(0, 1000, 3)), "b"), ["id"])  # a third of the rows
    snapshot = orders.snapshot()
    assert result.after == (snapshot.num_rows, snapshot.size_bytes, snapshot.schema)
    assert old not in snapshot.paths
    assert not snapshot.deleted
    assert snapshot.num_rows == 1000
    for seen in every_reader(lh, orders):
        assert len(seen) == 1000
        assert seen[3] == (3 / 7, "b3")


def test_a_key_held_by_several_rows_is_merged_copy_on_write(lh: Lakehouse, orders: Table) -> None:
    orders.append(rows([7], "dup"))
    result = orders.merge(rows([7], "b"), ["id"])
    assert "num_deletion_vectors_added" not in result.metrics
    assert list(lh.sql("select s from silver.orders where id = 7").rows()) == [
        ("b2",),
        ("b2",),
    ]


def test_delta_rs_operations_keep_the_deleted_rows_deleted(lh: Lakehouse, orders: Table) -> None:
    orders.merge(rows([1, 2, 3], "b"), ["id"])
    orders.delete("id = 10")
    orders.update({"s": "'u'"}, "id = 20")
    orders.merge(rows([30], "c"), ["id"], when_matched="delete", when_not_matched="ignore")
    orders.optimize()
    data = as_dict(lh.sql("select * from silver.orders").arrow())
    assert len(data) == 998
    assert data[1] == (1 / 7, "b1")
    assert data[20][1] == "u"
    assert 10 not in data
    assert 30 not in data


def test_time_travel_reads_the_vectors_of_that_version(lh: Lakehouse, orders: Table) -> None:
    first = orders.merge(rows([1], "b"), ["id"]).version
    orders.merge(rows([2], "c"), ["id"])
    then = as_dict(lh.sql("select * from silver.orders", as_of=first).arrow())
    assert then[1] == (1 / 7, "b1")
    assert then[2] == (2 / 7, "a2")
    assert len(then) == 1000


def test_concurrent_merges_each_land_once(lh: Lakehouse, orders: Table) -> None:
    errors: list[BaseException] = []

    def merge(tag: str, ids: list[int]) -> None:
        try:
            handle = Lakehouse(lh.root).table("silver.orders")
            handle.merge(rows(ids, tag), ["id"])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=merge, args=(f"t{i}", [i * 10 + 1, 2000 + i])) for i in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    data = as_dict(lh.sql("select * from silver.orders").arrow())
    assert len(data) == 1004
    for i in range(4):
        assert data[i * 10 + 1][1] == f"t{i}{(i * 10 + 1) % 5}"


def test_tables_without_the_property_merge_copy_on_write(lh: Lakehouse) -> None:
    table = lh.create_table("silver.plain", SCHEMA)
    table.append(rows([1, 2], "a"))
    result = table.merge(rows([2], "b"), ["id"])
    assert "num_deletion_vectors_added" not in result.metrics
    assert not deletion_vectors.supported(table.delta())


def test_the_serialised_vector_is_what_delta_rs_reads(tmp_path: Path) -> None:
    path = str(tmp_path / "t")
    write_deltalake(path, rows(list(range(70_000)), "a"), configuration=DV)
    positions = np.array([0, 3, 65535, 65536, 69999, *list(range(100, 5300))])
    (add,) = [a["add"] for a in log_entry(path, 0) if "add" in a]
    removal = {"path": add["path"], "dataChange": True, "deletionTimestamp": 1, "size": add["size"]}
    vector = deletion_vectors.inline_descriptor(positions)
    entry = [{"remove": removal}, {"add": {**add, "deletionVector": vector}}]
    with open(f"{path}/_delta_log/{1:020d}.json", "w", encoding="utf-8") as handle:
        handle.write("\n".join(json.dumps(a) for a in entry) + "\n")
    found = deletion_vectors.deleted_rows(DeltaTable(path))
    (rows_found,) = found.values()
    assert rows_found.to_pylist() == sorted(set(positions.tolist()))


def test_file_statistics_match_what_delta_rs_writes(tmp_path: Path) -> None:
    data = pa.table(
        {
            "i8": pa.array([1, 2, None], pa.int8()),
            "i64": pa.array([10**12, -5, 7], pa.int64()),
            "f": pa.array([1.5, float("nan"), -2.0]),
            "s": pa.array(["b", "a", None]),
            "flag": pa.array([True, False, True]),
            "day": pa.array([dt.date(2024, 1, 1), dt.date(2025, 2, 3), None]),
            "at": pa.array(
                [
                    dt.datetime(2024, 1, 1, 1, 2, 3, 456789, tzinfo=dt.UTC),
                    dt.datetime(2024, 1, 2, tzinfo=dt.UTC),
                    None,
                ],
                pa.timestamp("us", tz="UTC"),
            ),
            "naive": pa.array(
                [dt.datetime(2024, 1, 1, 1, 2, 3, 456789), None, None], pa.timestamp("us")
            ),
            "amount": pa.array([Decimal("1.23"), Decimal("-4.50"), None], pa.decimal128(10, 2)),
            "nested": pa.array([{"a": 1}, {"a": 2}, None]),
        }
    )
    path = str(tmp_path / "t")
    write_deltalake(path, data)
    theirs = pa.table(DeltaTable(path).get_add_actions(flatten=True)).to_pylist()[0]
    ours = stats_of(data)
    # Read back through delta-rs's own parsing, our statistics give the same bounds.
    assert stats_from_actions(theirs, data.schema) == ours


def test_queries_skip_deleted_rows_in_pruned_and_partitioned_scans(lh: Lakehouse) -> None:
    table = lh.create_table(
        "silver.parts",
        pa.schema([("id", pa.int64()), ("p", pa.string())]),
        partition_by=["p"],
        properties=DV,
    )
    table.append(
        pa.table({"id": list(range(100)), "p": ["x" if i < 50 else "y" for i in range(100)]})
    )
    # Mark rows 0..9 of the `x` file deleted, as another writer (Spark) would.
    version = table.version()
    (add,) = [
        a["add"]
        for a in log_entry(table.path, version)
        if "add" in a and a["add"]["partitionValues"]["p"] == "x"
    ]
    removal = {"path": add["path"], "dataChange": True, "deletionTimestamp": 1, "size": add["size"]}
    vector = deletion_vectors.inline_descriptor(np.arange(10))
    entry = [{"remove": removal}, {"add": {**add, "deletionVector": vector}}]
    with open(f"{table.path}/_delta_log/{version + 1:020d}.json", "w", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(a) for a in entry) + "\n")
    total = lh.sql("select count(*), min(id) from silver.parts").rows()
    assert total == [(90, 10)]
    assert lh.sql("select count(*) from silver.parts where p = 'x'").rows() == [(40,)]
    assert lh.sql("select count(*) from silver.parts where id >= 50").rows() == [(50,)]
    assert len(table.read()) == 90
    assert table.snapshot().num_rows == 90


def test_vectors_carried_by_a_checkpoint_are_replaced_right(lh: Lakehouse, orders: Table) -> None:
    orders.merge(rows([1, 2], "b"), ["id"])
    orders.delta().create_checkpoint()
    orders.merge(rows([3, 2], "c"), ["id"])  # the same file again: its vector grows
    (old,) = [p for p in orders.snapshot().paths if p in orders.snapshot().deleted]
    assert orders.snapshot().deleted[old].to_pylist() == [1, 2, 3]
    reopened = Lakehouse(lh.root)
    for seen in every_reader(reopened, reopened.table("silver.orders")):
        assert len(seen) == 1000
        assert (seen[1][1], seen[2][1], seen[3][1]) == ("b1", "c2", "c3")


def test_a_lookup_of_the_rows_a_merge_replaces_is_used_only_at_its_version(
    lh: Lakehouse, orders: Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A merge given the rows of its keys found before (at the version it merges into)
    does not scan for them again, and ends as one without; a lookup from an older version
    is not trusted."""
    from lakebed.storage import merge_on_read

    wanted = pa.table({"id": pa.array([1, 2, 3, 2000], pa.int64())})
    looked_up = orders.lookup(wanted, ["id"])
    assert looked_up is not None
    assert sorted(looked_up.rows().column("id").to_pylist()) == [1, 2, 3]
    scans: list[int] = []
    real = merge_on_read.matches
    monkeypatch.setattr(merge_on_read, "matches", lambda *a, **k: scans.append(1) or real(*a, **k))
    version = orders.merge(rows([1, 2, 2000], "b"), ["id"], looked_up=looked_up).version
    assert scans == []  # the lookup's rows were used
    changes = orders.changes(version, version)
    assert changes is not None
    assert sorted(
        (r["_change_type"], r["id"]) for r in changes.select(["_change_type", "id"]).to_pylist()
    ) == [
        ("insert", 2000),
        ("update_postimage", 1),
        ("update_postimage", 2),
        ("update_preimage", 1),
        ("update_preimage", 2),
    ]
    expected = as_dict(rows(list(range(1000)), "a")) | as_dict(rows([1, 2, 2000], "b"))
    assert all(found == expected for found in every_reader(lh, orders))
    # Stale now: the next merge scans, and replaces the rows as they are now.
    orders.merge(rows([1], "c"), ["id"], looked_up=looked_up)
    assert scans == [1]
    assert as_dict(orders.read())[1] == as_dict(rows([1], "c"))[1]
    assert orders.read().num_rows == 1001


def test_a_lookup_in_a_table_without_a_feed_reads_only_keys_and_asked_columns(
    lh: Lakehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a change feed a merge needs no pre-images: a lookup finds where the keys lie
    (and the columns asked for), the merge uses it, and a lookup missing a column a caller
    needs does not pass for one that holds it."""
    from lakebed.storage import merge_on_read

    table = lh.create_table(
        "gold.facts", SCHEMA, properties={**DV, "delta.enableChangeDataFeed": "false"}
    )
    table.append(rows(list(range(100)), "a"))
    wanted = pa.table({"id": pa.array([1, 2, 500], pa.int64())})
    keys_only = table.lookup(wanted, ["id"])
    assert keys_only is not None
    assert keys_only.rows().column_names == ["id"]
    assert not keys_only.holds(wanted, ["id"], ["s"])
    with_s = table.lookup(wanted, ["id"], ["S"])  # columns as a query names them
    assert with_s is not None
    assert with_s.rows().column_names == ["id", "s"]
    assert with_s.holds(wanted, ["id"], ["s"])
    assert sorted(with_s.rows().to_pylist(), key=lambda r: r["id"]) == [
        {"id": 1, "s": "a1"},
        {"id": 2, "s": "a2"},
    ]
    scans: list[int] = []
    real = merge_on_read.matches
    monkeypatch.setattr(merge_on_read, "matches", lambda *a, **k: scans.append(1) or real(*a, **k))
    table.merge(rows([1, 500], "b"), ["id"], looked_up=keys_only)
    assert scans == []  # the keys were enough
    expected = as_dict(rows(list(range(100)), "a")) | as_dict(rows([1, 500], "b"))
    assert all(found == expected for found in every_reader(lh, table))


def test_a_lookup_asking_for_a_column_its_files_predate_gets_nulls(lh: Lakehouse) -> None:
    table = lh.create_table(
        "gold.facts", SCHEMA, properties={**DV, "delta.enableChangeDataFeed": "false"}
    )
    table.append(rows(list(range(100)), "a"))
    later = rows([200], "b").append_column("extra", pa.array(["x"]))
    table.append(later)  # a new column: the first file does not hold it
    wanted = pa.table({"id": pa.array([1, 200], pa.int64())})
    found = table.lookup(wanted, ["id"], ["extra"])
    assert found is not None
    by_id = {r["id"]: r["extra"] for r in found.rows().to_pylist()}
    assert by_id == {1: None, 200: "x"}
    only_old = table.lookup(pa.table({"id": pa.array([1], pa.int64())}), ["id"], ["extra"])
    assert only_old is not None
    assert only_old.rows().to_pylist() == [{"id": 1, "extra": None}]
