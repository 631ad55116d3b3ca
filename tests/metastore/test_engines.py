"""One engine per metastore database in a process: shared by the metastores open on it,
its connections closed when the last one closes, so the database can be replaced."""

from __future__ import annotations

from pathlib import Path

from lakebed.metastore import Metastore


def _url(folder: Path) -> str:
    return f"sqlite:///{folder / 'metastore.db'}"


def test_metastores_of_one_database_share_an_engine_and_its_compiled_statements(
    tmp_path: Path,
) -> None:
    first = Metastore.for_project(tmp_path, _url(tmp_path))
    second = Metastore.for_project(tmp_path, _url(tmp_path))
    other = Metastore.for_project(tmp_path / "b", _url(tmp_path / "b"))
    try:
        assert first._engine is second._engine
        assert other._engine is not first._engine
        first.upsert_table("silver.a", layer="silver", path="/lake/silver/a")
        cached = len(first._engine._compiled_cache or {})
        second.upsert_table("silver.b", layer="silver", path="/lake/silver/b")
        assert len(first._engine._compiled_cache or {}) == cached  # compiled once
        first.close()
        # The other metastore goes on with the engine.
        assert second.table_names() == ["silver.a", "silver.b"]
    finally:
        second.close()
        other.close()


def test_a_database_replaced_once_every_metastore_closed_is_read_anew(tmp_path: Path) -> None:
    store = Metastore.for_project(tmp_path, _url(tmp_path))
    store.upsert_table("silver.a", layer="silver", path="/lake/silver/a")
    engine = store._engine
    store.close()
    for leftover in tmp_path.glob("metastore.db*"):
        leftover.unlink()
    again = Metastore.for_project(tmp_path, _url(tmp_path))
    try:
        assert again._engine is engine  # the same engine, with new connections
        assert again.table_names() == []
        assert (tmp_path / "metastore.db").exists()
    finally:
        again.close()
