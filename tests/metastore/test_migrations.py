"""Schema versioning: migrations, upgrades (also racing ones) and refusing newer schemas."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Connection

from lakebed.errors import MetastoreError
from lakebed.metastore import MIGRATIONS, Metastore, Migration, migrations, schema

LATEST = MIGRATIONS[-1].version


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'metastore.db'}"
    postgres_url: str = request.getfixturevalue("postgres_url")
    return postgres_url


@pytest.fixture
def engine(url: str) -> Iterator[sa.Engine]:
    """A plain engine on the same database, to look behind the Metastore's back."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))
    yield engine
    engine.dispose()


def test_migrations_are_numbered_one_to_n_in_order() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert all(m.description for m in MIGRATIONS)


def test_fresh_database_has_version_zero_and_upgrade_is_idempotent(
    url: str, engine: sa.Engine
) -> None:
    with Metastore(url) as store:
        assert store.schema_version() == 0
        assert store.upgrade() == LATEST
        assert store.upgrade() == LATEST
        assert store.schema_version() == LATEST

    with engine.connect() as conn:
        rows = conn.execute(sa.select(schema.schema_version.c.version)).scalars().all()
    assert sorted(rows) == [m.version for m in MIGRATIONS]


def test_migrated_database_matches_schema_py(url: str, engine: sa.Engine) -> None:
    with Metastore(url) as store:
        store.upgrade()

    inspector = sa.inspect(engine)
    for table in schema.metadata.sorted_tables:
        reflected = {c["name"]: c["nullable"] for c in inspector.get_columns(table.name)}
        assert reflected == {c.name: c.nullable for c in table.columns}, table.name
        indexes = {i["name"] for i in inspector.get_indexes(table.name)}
        assert {i.name for i in table.indexes} <= indexes, table.name


def test_operations_before_upgrade_raise_metastore_error_with_hint(url: str) -> None:
    with Metastore(url) as store, pytest.raises(MetastoreError) as caught:
        store.list_tables()
    assert caught.value.hint is not None
    assert "upgrade()" in caught.value.hint


def test_newer_schema_version_is_rejected(url: str, engine: sa.Engine) -> None:
    with Metastore(url) as store:
        store.upgrade()
    with engine.begin() as conn:
        conn.execute(
            sa.insert(schema.schema_version).values(
                version=LATEST + 1, description="from the future", applied_at=datetime.now(UTC)
            )
        )

    with Metastore(url) as store:
        assert store.schema_version() == LATEST + 1
        with pytest.raises(MetastoreError, match=f"schema version {LATEST + 1}") as caught:
            store.upgrade()
    assert caught.value.hint is not None
    assert "upgrade lakebed" in caught.value.hint


def test_for_project_rejects_a_newer_sqlite_schema(tmp_path: Path) -> None:
    with Metastore.for_project(tmp_path) as store:
        store.upsert_table("bronze.events", layer="bronze", path="/lake/bronze/events")
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'metastore.db'}")
    with engine.begin() as conn:
        conn.execute(
            sa.insert(schema.schema_version).values(
                version=LATEST + 1, description="from the future", applied_at=datetime.now(UTC)
            )
        )
    engine.dispose()

    with pytest.raises(MetastoreError, match="newer than this lakebed knows"):
        Metastore.for_project(tmp_path)


def _add_owner_email(conn: Connection) -> None:
    migrations.add_column(conn, "lakebed_tables", sa.Column("owner_email", sa.String(255)))


def test_appended_migration_runs_once_and_keeps_existing_rows(
    url: str, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Metastore(url) as store:
        store.upgrade()
        store.upsert_table("silver.orders", layer="silver", path="/lake/silver/orders")
    step = Migration(LATEST + 1, "owner e-mail on tables", _add_owner_email)
    monkeypatch.setattr(migrations, "MIGRATIONS", [*MIGRATIONS, step])

    with Metastore(url) as store:
        assert store.upgrade() == LATEST + 1
        assert store.upgrade() == LATEST + 1  # a second run would fail on the duplicate column
        assert store.get_table("silver.orders") is not None

    columns = {c["name"] for c in sa.inspect(engine).get_columns("lakebed_tables")}
    assert "owner_email" in columns


def _half_done(conn: Connection) -> None:
    migrations.add_column(conn, "lakebed_tables", sa.Column("half_done", sa.Integer))
    raise RuntimeError("migration bug")


def test_failing_migration_leaves_the_schema_untouched(
    url: str, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Metastore(url) as store:
        store.upgrade()
    monkeypatch.setattr(
        migrations, "MIGRATIONS", [*MIGRATIONS, Migration(LATEST + 1, "bad", _half_done)]
    )

    with Metastore(url) as store:
        with pytest.raises(RuntimeError, match="migration bug"):
            store.upgrade()
        assert store.schema_version() == LATEST

    columns = {c["name"] for c in sa.inspect(engine).get_columns("lakebed_tables")}
    assert "half_done" not in columns


def _upgrade_in_child(url: str, barrier: Any, results: Any) -> None:
    barrier.wait()  # start together so the upgrades really overlap
    try:
        with Metastore(url) as store:
            results.put(("ok", store.upgrade()))
    except Exception as exc:  # reported to the parent, which fails the test
        results.put(("error", repr(exc)))


def test_concurrent_upgrades_from_several_processes_all_succeed(url: str) -> None:
    processes = 4
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes)
    results = ctx.Queue()
    children = [
        ctx.Process(target=_upgrade_in_child, args=(url, barrier, results))
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=30)

    assert outcomes == [("ok", LATEST)] * processes
    assert [child.exitcode for child in children] == [0] * processes
    with Metastore(url) as store:
        assert store.schema_version() == LATEST
        store.upsert_table("bronze.events", layer="bronze", path="/lake/bronze/events")
