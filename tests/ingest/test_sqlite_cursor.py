"""SQLite keeps timestamps as text in any format: an incremental cursor must still load every
row exactly once (regression: text comparison lost rows and moved the cursor back)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import yaml

import lakebed


def test_mixed_timestamp_formats_load_every_row_exactly_once(tmp_path: Path) -> None:
    db = tmp_path / "shop.db"
    with sqlite3.connect(db) as con:
        con.execute("create table items (id integer primary key, updated_at timestamp)")
        con.execute("insert into items values (1, '2024-01-01 10:00:00')")
    root = lakebed.init_project(tmp_path / "p")
    config = yaml.safe_load((root / "lakebed.yml").read_text())
    config["sources"] = {
        "items": {
            "kind": "sql",
            "url": f"sqlite:///{db}",
            "table": "items",
            "incremental": {"cursor_column": "updated_at"},
        }
    }
    (root / "lakebed.yml").write_text(yaml.safe_dump(config))
    with lakebed.open(root) as lh:
        assert lh.ingest("items").rows == 1
        with sqlite3.connect(db) as con:
            con.execute("insert into items values (2, '2024-01-01 10:00:00')")
        assert lh.ingest("items").rows == 1  # same instant as the cursor, not loaded yet
        with sqlite3.connect(db) as con:
            con.execute("insert into items values (3, '2024-01-01T09:00:00')")  # earlier
            con.execute("insert into items values (4, '2024-01-01T11:00:00')")
        lh.ingest("items")
        lh.ingest("items")
        ids = lh.sql("select id from bronze.items order by id").rows()
        assert ids == [(1,), (2,), (4,)]  # 3 is older than the cursor: never re-read
