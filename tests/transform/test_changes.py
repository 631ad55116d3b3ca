"""Increments of a model that keeps the latest row per key: new rows are compared with the
model's own rows, as a full rebuild over every version would pick."""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lakebed
from helpers import write_model
from lakebed import Lakehouse
from lakebed.storage import TableName
from lakebed.transform.changes import lookup_soon, newer_rows

LATEST = (
    "select id, status, updated_at from silver.events\n"
    "where status <> 'test'\n"
    "qualify row_number() over (partition by id order by updated_at desc) = 1"
)
MERGED = "materialized: incremental\nunique_key: [id]\n"
hours = st.one_of(st.none(), st.integers(0, 9))


def at(hour: int | None) -> datetime | None:
    return None if hour is None else datetime(2026, 1, 1, hour)


@pytest.fixture
def lh(tmp_path: Path) -> Lakehouse:
    lake = lakebed.open(lakebed.init_project(tmp_path / "p"))
    lake.write(
        "silver.events",
        {
            "id": [1, 2, 3, 4, 6, 6],
            "status": ["paid", "new", "new", "paid", "new", "x"],
            "updated_at": [at(5), at(5), at(5), at(5), None, None],
        },
    )
    return lake


def _append(lh: Lakehouse, rows: list[tuple[int, str, int | None]]) -> None:
    lh.table("silver.events").append(
        {
            "id": [r[0] for r in rows],
            "status": [r[1] for r in rows],
            "updated_at": [at(r[2]) for r in rows],
        }
    )


def _latest(lh: Lakehouse) -> dict[int, tuple[str, datetime | None]]:
    rows = lh.sql("select id, status, updated_at from gold.latest").rows()
    return {r[0]: (r[1], r[2]) for r in rows}


def test_new_rows_replace_a_keys_row_only_when_they_come_first(lh: Lakehouse) -> None:
    write_model(lh.root, "gold.latest", LATEST, MERGED)
    assert lh.run().nodes[0].mode == "full"
    before = _latest(lh)
    _append(
        lh,
        [
            (1, "new", 3),  # a late, older version: the current row stays
            (2, "shipped", 7),  # newer: replaces
            (3, "other", 5),  # as new as the current row: the current row stays
            (4, "lost", None),  # no time sorts last: the current row stays
            (6, "dated", 1),  # the current row has no time: any time comes first
            (5, "new", 2),  # a new key
            (2, "test", 9),  # filtered out before it can compete
        ],
    )
    node = lh.run().nodes[0]
    assert node.mode == "incremental"
    assert node.rows == 3  # ids 2, 6 and 5; the keys' other rows were not computed again
    after = _latest(lh)
    assert after == {
        1: before[1],
        2: ("shipped", at(7)),
        3: before[3],
        4: before[4],
        5: ("new", at(2)),
        6: ("dated", at(1)),
    }


def test_an_update_of_the_input_reads_the_keys_rows_again(lh: Lakehouse) -> None:
    """Only an input that gained rows can be compared with the model's rows: an update or
    delete may take away a key's current row, so its other rows are read."""
    write_model(lh.root, "gold.latest", LATEST, MERGED)
    lh.run()
    lh.table("silver.events").delete("id = 1")
    _append(lh, [(1, "old", 1), (2, "newer", 8)])
    assert lh.run().nodes[0].mode == "incremental"
    assert _latest(lh)[1] == ("old", at(1))  # a full rebuild's pick, not the deleted row's
    assert _latest(lh)[2] == ("newer", at(8))


def test_a_key_whose_row_a_check_dropped_stays_dropped(lh: Lakehouse) -> None:
    """A dropped row is not in the model's table to compare with: a late older version of
    its key must not take its place (a full rebuild picks the dropped row again)."""
    checks = "checks:\n  - accepted_values: {column: status, values: [new, paid, shipped]}\n"
    write_model(lh.root, "gold.latest", LATEST, MERGED + checks.replace("]}", "], severity: drop}"))
    lh.table("silver.events").delete("id = 6")
    lh.run()
    _append(lh, [(1, "bogus", 9)])  # the newest row of id 1, dropped by the check
    assert lh.run().nodes[0].quarantined == 1
    assert 1 not in _latest(lh)
    _append(lh, [(1, "paid", 2)])  # older than the dropped row
    assert lh.run().nodes[0].mode == "incremental"
    assert 1 not in _latest(lh)


@pytest.mark.slow
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(
        st.lists(
            st.tuples(st.integers(0, 5), st.sampled_from(["new", "paid", "test"]), hours),
            min_size=1,
            max_size=6,
        ),
        min_size=1,
        max_size=4,
    )
)
def test_appended_rows_give_what_a_full_rebuild_picks(
    batches: list[list[tuple[int, str, int | None]]],
) -> None:
    """Property: after random batches of appended versions (late, tied, undated, filtered
    out), the latest row per key equals the full rebuild's pick (the order is total: ties
    on the time are broken by the status, so the pick is unique)."""
    sql = LATEST.replace("updated_at desc", "updated_at desc, status")
    with tempfile.TemporaryDirectory() as tmp:
        lake = lakebed.open(lakebed.init_project(Path(tmp) / "p"))
        lake.write(
            "silver.events", {"id": [0, 1], "status": ["new", "paid"], "updated_at": [at(5), None]}
        )
        write_model(lake.root, "gold.latest", sql, MERGED)
        assert lake.run().ok
        for batch in batches:
            _append(lake, batch)
            node = lake.run().nodes[0]
            assert node.mode == "incremental"
            built = lake.sql("select * from gold.latest order by all").rows()
            assert built == lake.sql(f"select * from ({sql}) order by all").rows()


def test_a_lookup_started_early_for_other_keys_is_not_compared_with(lh: Lakehouse) -> None:
    """`newer_rows` compares new rows with the current rows of their keys: a lookup begun
    while the SQL ran, for keys that turn out not to be the new rows' own, is looked up
    again rather than taken for "no current row"."""
    write_model(lh.root, "gold.latest", LATEST, MERGED)
    assert lh.run().ok
    model = TableName.parse("gold.latest")
    found = pa.table({"id": [1, 2], "status": ["late", "newer"], "updated_at": [at(1), at(9)]})
    order = [("updated_at", '"updated_at" DESC')]
    early = lookup_soon(lh, model, pa.table({"id": [99]}), ["id"])
    kept, looked_up = newer_rows(lh, model, found, ["id"], order, early)
    assert kept.column("id").to_pylist() == [2]  # id 1's current row (5 o'clock) is newer
    assert looked_up is not None
    assert looked_up.holds(found, ["id"])
    early = lookup_soon(lh, model, found, ["id"])
    assert newer_rows(lh, model, found, ["id"], order, early)[0].column("id").to_pylist() == [2]
