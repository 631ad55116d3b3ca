"""Column lineage edges in the metastore, run identically against SQLite and a real
PostgreSQL server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lakebed.errors import MetastoreError
from lakebed.metastore import Metastore, lineage_store
from lakebed.metastore.lineage_store import LineageEdge


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def metastore_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'metastore.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def metastore(metastore_url: str) -> Iterator[Metastore]:
    """An upgraded, empty metastore on each backend."""
    with Metastore(metastore_url) as store:
        store.upgrade()
        yield store


REVENUE = [
    LineageEdge("gold.revenue", "total", "silver.orders", "amount", "aggregate"),
    LineageEdge("gold.revenue", "customer_id", "silver.orders", "customer_id", "copy"),
    LineageEdge("gold.revenue", "region", "silver.customers", "region", "copy"),
]
ORDERS = [
    LineageEdge("silver.orders", "amount", "bronze.orders", "amount", "expression"),
    LineageEdge("silver.orders", "customer_id", "bronze.orders", "customer", "copy"),
]


def test_replace_then_read_back_sorted_with_the_time_recorded(metastore: Metastore) -> None:
    before = datetime.now(UTC)
    metastore.replace_lineage("gold.revenue", REVENUE)
    metastore.replace_lineage("silver.orders", ORDERS)

    edges = metastore.lineage_edges()
    assert edges == sorted(REVENUE + ORDERS)
    for edge in edges:
        assert edge.recorded_at is not None
        assert edge.recorded_at.utcoffset() == timedelta(0)
        assert before - timedelta(seconds=1) <= edge.recorded_at <= datetime.now(UTC)


def test_edges_filter_by_downstream_upstream_or_both(metastore: Metastore) -> None:
    metastore.replace_lineage("gold.revenue", REVENUE)
    metastore.replace_lineage("silver.orders", ORDERS)

    assert metastore.lineage_edges(downstream="gold.revenue") == sorted(REVENUE)
    assert metastore.lineage_edges(upstream="silver.orders") == sorted(REVENUE[:2])
    assert metastore.lineage_edges(upstream="bronze.orders") == sorted(ORDERS)
    assert metastore.lineage_edges(downstream="gold.revenue", upstream="silver.customers") == [
        REVENUE[2]
    ]
    assert metastore.lineage_edges(downstream="gold.nothing") == []


def test_replace_replaces_only_the_given_tables_edges(metastore: Metastore) -> None:
    metastore.replace_lineage("gold.revenue", REVENUE)
    metastore.replace_lineage("silver.orders", ORDERS)
    changed = [LineageEdge("gold.revenue", "total", "silver.orders", "amount", "window")]

    metastore.replace_lineage("gold.revenue", changed)

    assert metastore.lineage_edges(downstream="gold.revenue") == changed
    assert metastore.lineage_edges(downstream="gold.revenue")[0].transform == "window"
    assert metastore.lineage_edges(downstream="silver.orders") == sorted(ORDERS)


def test_replace_with_no_edges_clears_the_table(metastore: Metastore) -> None:
    metastore.replace_lineage("gold.revenue", REVENUE)
    metastore.replace_lineage("gold.revenue", [])
    assert metastore.lineage_edges() == []


def test_replace_accepts_mappings_and_iterators(metastore: Metastore) -> None:
    rows: list[dict[str, Any]] = [
        {
            "downstream_table": "gold.revenue",
            "downstream_column": "total",
            "upstream_table": "silver.orders",
            "upstream_column": "amount",
            "transform": "aggregate",
        }
    ]
    metastore.replace_lineage("gold.revenue", iter(rows))
    assert metastore.lineage_edges() == [REVENUE[0]]


def test_identical_duplicates_are_stored_once(metastore: Metastore) -> None:
    metastore.replace_lineage("gold.revenue", [REVENUE[0], REVENUE[0]])
    assert metastore.lineage_edges() == [REVENUE[0]]


@pytest.mark.parametrize(
    ("edges", "message"),
    [
        ([ORDERS[0]], "does not lead into gold.revenue"),
        (
            [LineageEdge("gold.revenue", "t", "silver.orders", "a", "magic")],  # type: ignore[arg-type]
            "unknown transform 'magic'",
        ),
        (
            [REVENUE[0], LineageEdge("gold.revenue", "total", "silver.orders", "amount", "copy")],
            "given twice with different transforms",
        ),
        ([{"downstream_table": "gold.revenue", "transform": "copy"}], "lacks downstream_column"),
    ],
)
def test_invalid_edges_raise_and_keep_the_stored_ones(
    metastore: Metastore, edges: list[Any], message: str
) -> None:
    metastore.replace_lineage("gold.revenue", REVENUE)
    with pytest.raises(MetastoreError, match=message):
        metastore.replace_lineage("gold.revenue", edges)
    assert metastore.lineage_edges() == sorted(REVENUE)


def test_a_replace_failing_after_the_delete_rolls_back(
    metastore: Metastore, monkeypatch: pytest.MonkeyPatch
) -> None:
    metastore.replace_lineage("gold.revenue", REVENUE)

    def broken_insert(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(lineage_store, "insert", broken_insert)
    with pytest.raises(RuntimeError, match="disk on fire"):
        metastore.replace_lineage("gold.revenue", REVENUE[:1])
    monkeypatch.undo()

    assert metastore.lineage_edges() == sorted(REVENUE)


def test_edges_persist_across_reopening(metastore: Metastore, metastore_url: str) -> None:
    metastore.replace_lineage("gold.revenue", REVENUE)
    metastore.close()
    with Metastore(metastore_url) as reopened:
        assert reopened.lineage_edges() == sorted(REVENUE)


def test_concurrent_replaces_of_one_table_leave_one_whole_edge_set(metastore_url: str) -> None:
    with Metastore(metastore_url) as store:
        store.upgrade()
    first = REVENUE
    second = [LineageEdge("gold.revenue", "total", "silver.orders", "amount", "window")]
    errors: list[BaseException] = []

    def replace_many(edges: list[LineageEdge]) -> None:
        try:
            with Metastore(metastore_url) as store:
                for _ in range(15):
                    store.replace_lineage("gold.revenue", edges)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=replace_many, args=(e,)) for e in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    with Metastore(metastore_url) as store:
        assert store.lineage_edges() in (sorted(first), sorted(second))


def test_lineage_before_upgrade_raises_with_a_hint(metastore_url: str) -> None:
    with Metastore(metastore_url) as store, pytest.raises(MetastoreError) as caught:
        store.lineage_edges()
    assert caught.value.hint is not None
    assert "upgrade()" in caught.value.hint
